package proxy

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Selector is a balancing policy: it chooses the upstream for a request.
type Selector interface {
	// Select returns one of ups for which usable.OK reports true, or nil
	// when there is none. usable accounts for health, capacity and the
	// upstreams a retry must avoid; a Selector only chooses.
	Select(ups []*Upstream, usable Usable, r *http.Request) *Upstream
}

// Usable says which upstreams a request may go to now: in rotation, below
// capacity, not one a retry must avoid. It is a value, not a func, so that
// choosing allocates nothing.
type Usable struct {
	now   int64 // unix nanoseconds
	avoid []*Upstream
}

// UsableAt returns the Usable of a request at now avoiding avoid.
func UsableAt(now time.Time, avoid []*Upstream) Usable {
	return Usable{now: now.UnixNano(), avoid: avoid}
}

// OK reports whether u may take the request.
func (f Usable) OK(u *Upstream) bool {
	return u.available(f.now) && (len(f.avoid) == 0 || !slices.Contains(f.avoid, u))
}

// Policy names, as the config spells them.
const (
	PolicyLeastConn  = "least_conn"
	PolicyRoundRobin = "round_robin"
	PolicyRandomTwo  = "random_two"
	PolicyIPHash     = "ip_hash"
	PolicyHash       = "hash"
	PolicyFirst      = "first"
)

// NewSelector returns the Selector for a policy name over ups (hashKey for
// PolicyHash: "header:NAME", "cookie:NAME" or "uri"). "" is least_conn.
func NewSelector(policy, hashKey string, ups []*Upstream) (Selector, error) {
	switch policy {
	case "", PolicyLeastConn:
		return &LeastConn{}, nil
	case PolicyRoundRobin:
		return NewRoundRobin(len(ups)), nil
	case PolicyRandomTwo:
		return RandomTwo{}, nil
	case PolicyIPHash:
		return NewHash(ups, clientIPKey), nil
	case PolicyHash:
		key, err := ParseHashKey(hashKey)
		if err != nil {
			return nil, err
		}
		return NewHash(ups, key), nil
	case PolicyFirst:
		return First{}, nil
	}
	return nil, fmt.Errorf("proxy: unknown policy %q", policy)
}

// LeastConn chooses the upstream with the fewest requests in flight
// relative to its weight (nginx's least_conn); ties go round in turn so
// that an idle set is used evenly.
type LeastConn struct{ next atomic.Uint32 }

// Select implements Selector.
func (s *LeastConn) Select(ups []*Upstream, usable Usable, _ *http.Request) *Upstream {
	n := len(ups)
	if n == 0 {
		return nil
	}
	start := int(s.next.Add(1)) % n
	var best *Upstream
	var bestN, bestW int64
	for i := range n {
		u := ups[(start+i)%n]
		if !usable.OK(u) {
			continue
		}
		c, w := u.inflight.Load(), u.weight()
		// c/w < bestN/bestW without division.
		if best == nil || c*bestW < bestN*w {
			best, bestN, bestW = u, c, w
		}
	}
	return best
}

// RoundRobin is nginx's smooth weighted round robin: each choice adds every
// usable upstream's weight to its current weight, takes the largest, and
// subtracts the total from it. Weights 5,1,1 give a a b a c a a, not
// a a a a a b c.
type RoundRobin struct {
	mu      sync.Mutex
	current []int64 // by Upstream.index
}

// NewRoundRobin returns a RoundRobin for n upstreams.
func NewRoundRobin(n int) *RoundRobin { return &RoundRobin{current: make([]int64, n)} }

// Select implements Selector.
func (s *RoundRobin) Select(ups []*Upstream, usable Usable, _ *http.Request) *Upstream {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best *Upstream
	var total int64
	for _, u := range ups {
		if !usable.OK(u) {
			continue
		}
		if u.index >= len(s.current) { // an upstream added later
			s.current = append(s.current, make([]int64, u.index+1-len(s.current))...)
		}
		w := u.weight()
		s.current[u.index] += w
		total += w
		if best == nil || s.current[u.index] > s.current[best.index] {
			best = u
		}
	}
	if best != nil {
		s.current[best.index] -= total
	}
	return best
}

// RandomTwo picks two usable upstreams at random and keeps the one with
// the lower load score, (in-flight + 1) × latency average: the power of
// two choices, which avoids both a herd on the single least loaded server
// and the blindness of plain random. An upstream with no latency measured
// yet scores zero, so it is tried.
type RandomTwo struct{}

// Select implements Selector.
func (RandomTwo) Select(ups []*Upstream, usable Usable, _ *http.Request) *Upstream {
	var buf [16]*Upstream
	cand := buf[:0]
	for _, u := range ups {
		if usable.OK(u) {
			cand = append(cand, u)
		}
	}
	switch len(cand) {
	case 0:
		return nil
	case 1:
		return cand[0]
	}
	i := rand.IntN(len(cand))
	j := rand.IntN(len(cand) - 1)
	if j >= i {
		j++
	}
	a, b := cand[i], cand[j]
	if score(b) < score(a) {
		return b
	}
	return a
}

func score(u *Upstream) int64 {
	return (u.inflight.Load() + 1) * u.ewma.Load()
}

// First chooses the first usable upstream in configuration order: the
// others take over only while it is down or full (Caddy's "first").
type First struct{}

// Select implements Selector.
func (First) Select(ups []*Upstream, usable Usable, _ *http.Request) *Upstream {
	for _, u := range ups {
		if usable.OK(u) {
			return u
		}
	}
	return nil
}

// HashKey extracts the key a Hash selector hashes; ok is false when the
// request has none.
type HashKey func(r *http.Request) (key string, ok bool)

// ParseHashKey parses a hash_key setting: "header:NAME", "cookie:NAME" or
// "uri" (the request URI with its query, nginx's hash $request_uri).
func ParseHashKey(s string) (HashKey, error) {
	kind, name, _ := strings.Cut(s, ":")
	switch {
	case kind == "uri" && name == "":
		return func(r *http.Request) (string, bool) { return r.URL.RequestURI(), true }, nil
	case kind == "header" && name != "":
		name = http.CanonicalHeaderKey(name)
		return func(r *http.Request) (string, bool) {
			v := r.Header.Get(name)
			return v, v != ""
		}, nil
	case kind == "cookie" && name != "":
		return func(r *http.Request) (string, bool) {
			c, err := r.Cookie(name)
			if err != nil || c.Value == "" {
				return "", false
			}
			return c.Value, true
		}, nil
	}
	return nil, fmt.Errorf("proxy: hash_key %q is not \"header:NAME\", \"cookie:NAME\" or \"uri\"", s)
}

// clientIPKey is ip_hash's key: the client address (after the trust
// boundary has put the real client in RemoteAddr).
func clientIPKey(r *http.Request) (string, bool) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return host, host != ""
}

// Hash is consistent hashing with bounded loads: every upstream owns
// vnodesPerWeight × weight points on a ring; a key goes to the owner of the
// first point at or after its hash, skipping upstreams that are not usable
// or that already carry more than loadFactor times the average load (so
// one hot key cannot melt one server, and a server that leaves moves only
// its own keys). A request without a key falls back to least_conn.
//
// The ring is built from the upstreams' names with FNV-1a, the same on
// every node and across restarts: several Portico nodes send one user to
// the same upstream.
type Hash struct {
	key      HashKey
	points   []uint64 // sorted
	owners   []*Upstream
	fallback LeastConn
}

const (
	vnodesPerWeight = 160
	// loadFactor is the bound on an upstream's load relative to the
	// average (1.25, as HAProxy's hash-balance-factor 125).
	loadFactorNum, loadFactorDen = 5, 4
)

// NewHash builds the ring over ups.
func NewHash(ups []*Upstream, key HashKey) *Hash {
	type point struct {
		h uint64
		u *Upstream
	}
	var pts []point
	for _, u := range ups {
		for i := range vnodesPerWeight * int(u.weight()) {
			pts = append(pts, point{hash64(fmt.Sprintf("%s#%d", u.Name, i)), u})
		}
	}
	slices.SortFunc(pts, func(a, b point) int {
		switch {
		case a.h < b.h:
			return -1
		case a.h > b.h:
			return 1
		}
		return strings.Compare(a.u.Name, b.u.Name)
	})
	h := &Hash{key: key, points: make([]uint64, len(pts)), owners: make([]*Upstream, len(pts))}
	for i, p := range pts {
		h.points[i], h.owners[i] = p.h, p.u
	}
	return h
}

func hash64(s string) uint64 {
	f := fnv.New64a()
	_, _ = f.Write([]byte(s))
	// FNV's low bits mix poorly for short keys; finish with a
	// multiply-xorshift (splitmix64's finaliser).
	x := f.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Select implements Selector.
func (s *Hash) Select(ups []*Upstream, usable Usable, r *http.Request) *Upstream {
	key, ok := s.key(r)
	if !ok || len(s.points) == 0 {
		return s.fallback.Select(ups, usable, r)
	}
	var total, n int64
	for _, u := range ups {
		if usable.OK(u) {
			total += u.inflight.Load()
			n++
		}
	}
	if n == 0 {
		return nil
	}
	// The bound each upstream may carry, counting this request.
	bound := ((total+1)*loadFactorNum + n*loadFactorDen - 1) / (n * loadFactorDen)
	h := hash64(key)
	start, _ := slices.BinarySearch(s.points, h)
	var first *Upstream
	for i := range len(s.points) {
		u := s.owners[(start+i)%len(s.points)]
		if !usable.OK(u) {
			continue
		}
		if first == nil {
			first = u
		}
		if u.inflight.Load()+1 <= bound {
			return u
		}
	}
	return first
}
