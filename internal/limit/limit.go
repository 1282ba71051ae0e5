// Package limit pushes back on clients that ask too much, as nginx's
// limit_req and limit_conn modules do:
//
//   - [Limiter] limits the rate of requests per key (a client address, a
//     header, a cookie, a route) with GCRA, the generic cell rate
//     algorithm, which decides exactly as nginx's leaky bucket with a
//     burst: at most Burst+1 requests at once, then one per 1/Rate;
//   - [Concurrency] limits the requests in progress per key;
//   - [Listener] limits open connections, per client address and in all,
//     refusing them at accept time.
//
// Memory is bounded: a Limiter keeps its keys in an LRU of a fixed
// capacity (Options.MaxKeys); an evicted key starts afresh, as if it had
// been idle, so a flood of distinct addresses costs at most that much
// memory and can only make the limit more lenient for the keys it pushes
// out, never wrong for the others. Concurrency and Listener keep only the
// keys with something in progress.
//
// A Limiter's state can live in Redis instead (Options.Store, see
// [NewRedisStore]), so that several Portico nodes share one limit; an
// unreachable Redis makes the limit fail open: requests pass, one record
// says so per outage.
//
// Time is injected: Allow(key) is allow(key, now) at time.Now, and the
// tests call allow (Tailscale's util/limiter is the model).
package limit

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrRate is the sentinel of every bad rate.
var ErrRate = errors.New("limit: bad rate")

// DefaultMaxKeys is a Limiter's LRU capacity when Options.MaxKeys is 0:
// 100,000 keys, about 10 MB (a key, its state and the list links), enough
// for every client of a busy site within the time their limit remembers
// them.
const DefaultMaxKeys = 100_000

// Rate is N requests per Per.
type Rate struct {
	N   int
	Per time.Duration
}

// ParseRate parses nginx's rate syntax: "10r/s" (per second) or "30r/m"
// (per minute); N is a positive integer.
func ParseRate(s string) (Rate, error) {
	num, unit, ok := strings.Cut(strings.TrimSpace(s), "r/")
	if !ok {
		return Rate{}, fmt.Errorf("%w: %q is not like \"10r/s\" or \"30r/m\"", ErrRate, s)
	}
	n, err := strconv.Atoi(num)
	if err != nil || n <= 0 {
		return Rate{}, fmt.Errorf("%w: %q: %q is not a positive number of requests", ErrRate, s, num)
	}
	switch unit {
	case "s":
		return Rate{N: n, Per: time.Second}, nil
	case "m":
		return Rate{N: n, Per: time.Minute}, nil
	}
	return Rate{}, fmt.Errorf("%w: %q: the unit is r/s or r/m, not r/%s", ErrRate, s, unit)
}

func (r Rate) String() string {
	if r.Per == time.Minute {
		return strconv.Itoa(r.N) + "r/m"
	}
	return strconv.Itoa(r.N) + "r/s"
}

// interval is the time between two requests at the rate (GCRA's emission
// interval), at least a nanosecond.
func (r Rate) interval() time.Duration {
	return max(r.Per/time.Duration(r.N), 1)
}

// Options configure a Limiter. The zero value is not useful: Rate is
// required.
type Options struct {
	// Rate is the sustained rate per key. Required (N > 0).
	Rate Rate
	// Burst is how many requests beyond the rate a key may send at once
	// (nginx's burst=): Burst+1 requests pass at once, then one per
	// 1/Rate. Default 0: one at once.
	Burst int
	// Delay makes requests beyond the rate but within the burst wait
	// until the rate lets them through (nginx without nodelay), instead
	// of passing at once (false: nginx's nodelay).
	Delay bool
	// MaxKeys bounds the keys kept in memory (an LRU; an evicted key starts
	// afresh). Default DefaultMaxKeys. With a Store, it bounds only the
	// keys remembered for log sampling.
	MaxKeys int
	// Store, when set, keeps the state instead of memory (shared by the
	// nodes that use the same store). Nil: memory.
	Store Store
}

// Decision is a Limiter's answer for one request.
type Decision struct {
	// OK: the request may pass (after Delay).
	OK bool
	// Delay is how long an accepted request should wait first (only with
	// Options.Delay; zero otherwise).
	Delay time.Duration
	// RetryAfter is, for a refused request, how long until a request of
	// the key would pass.
	RetryAfter time.Duration
}

// Store keeps GCRA state outside the process. Allow decides for key with
// the given emission interval and burst tolerance (interval*Burst); the
// store's own clock decides, so that nodes with skewed clocks agree.
type Store interface {
	Allow(key string, interval, tolerance time.Duration) (Decision, error)
}

// Limiter limits the rate of requests per key. Its methods are safe for
// concurrent use.
type Limiter struct {
	interval  time.Duration // emission interval T
	tolerance time.Duration // Burst*T
	delay     bool
	store     Store

	mu   sync.Mutex
	keys *lru[time.Time] // key → theoretical arrival time (TAT)
}

// New returns a Limiter; it fails only on bad Options.
func New(opt Options) (*Limiter, error) {
	if opt.Rate.N <= 0 || opt.Rate.Per <= 0 {
		return nil, fmt.Errorf("%w: the rate must be positive", ErrRate)
	}
	if opt.Burst < 0 {
		return nil, errors.New("limit: the burst must not be negative")
	}
	if opt.MaxKeys <= 0 {
		opt.MaxKeys = DefaultMaxKeys
	}
	t := opt.Rate.interval()
	return &Limiter{interval: t, tolerance: t * time.Duration(opt.Burst), delay: opt.Delay, store: opt.Store,
		keys: newLRU[time.Time](opt.MaxKeys)}, nil
}

// Allow decides whether a request of key may pass now. With a Store, an
// error of the store is returned with an OK decision (fail open).
func (l *Limiter) Allow(key string) (Decision, error) {
	if l.store != nil {
		d, err := l.store.Allow(key, l.interval, l.tolerance)
		if err != nil {
			return Decision{OK: true}, err
		}
		if !l.delay {
			d.Delay = 0
		}
		return d, nil
	}
	return l.allow(key, time.Now()), nil
}

// allow is GCRA at now. Each key has a theoretical arrival time (TAT): when
// its next request would be on schedule at the rate. A request at now is
// accepted when tat+T-now ≤ τ+T (τ the burst tolerance), i.e. when at most
// Burst requests are ahead of the schedule; it moves TAT on by T. This is
// nginx's leaky bucket: its "excess" is (TAT-now)·rate.
func (l *Limiter) allow(key string, now time.Time) Decision {
	l.mu.Lock()
	defer l.mu.Unlock()
	tat, ok := l.keys.get(key)
	if !ok || tat.Before(now) {
		tat = now
	}
	next := tat.Add(l.interval)
	if over := next.Sub(now) - l.tolerance - l.interval; over > 0 {
		return Decision{RetryAfter: over}
	}
	l.keys.put(key, next)
	d := Decision{OK: true}
	if l.delay {
		d.Delay = tat.Sub(now)
	}
	return d
}

// Len returns the number of keys kept in memory.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.keys.len()
}

// RetryAfterSeconds is the Retry-After value for d: whole seconds, rounded
// up, at least 1.
func RetryAfterSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}
