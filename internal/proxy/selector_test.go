package proxy

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func testUpstreams(weights ...int) []*Upstream {
	ups := make([]*Upstream, len(weights))
	for i, w := range weights {
		ups[i] = &Upstream{Name: fmt.Sprintf("u%d", i), Weight: w, index: i}
	}
	return ups
}

var all = Usable{}

func names(seq []*Upstream) string {
	var b strings.Builder
	for _, u := range seq {
		if u == nil {
			b.WriteString("-")
			continue
		}
		b.WriteString(u.Name[1:])
	}
	return b.String()
}

func TestRoundRobinIsSmooth(t *testing.T) {
	for _, tc := range []struct {
		weights []int
		want    string
	}{
		{[]int{1, 1, 1}, "012012"},
		// nginx's example: weights 5, 1, 1 give a a b a c a a.
		{[]int{5, 1, 1}, "0010200" + "0010200"},
		{[]int{2, 1}, "010010"},
	} {
		ups := testUpstreams(tc.weights...)
		s := NewRoundRobin(len(ups))
		var seq []*Upstream
		for range len(tc.want) {
			seq = append(seq, s.Select(ups, all, nil))
		}
		if got := names(seq); got != tc.want {
			t.Errorf("weights %v: %s, want %s", tc.weights, got, tc.want)
		}
	}
	// An unusable upstream is skipped and its share goes to the others.
	ups := testUpstreams(1, 1, 1)
	s := NewRoundRobin(3)
	var seq []*Upstream
	for range 4 {
		seq = append(seq, s.Select(ups, Usable{avoid: []*Upstream{ups[1]}}, nil))
	}
	if got := names(seq); got != "0202" {
		t.Errorf("with u1 down: %s, want 0202", got)
	}
}

func TestLeastConn(t *testing.T) {
	ups := testUpstreams(1, 1, 2)
	ups[0].inflight.Store(3)
	ups[1].inflight.Store(1)
	ups[2].inflight.Store(3) // 3/2 per weight: more than u1's 1
	s := &LeastConn{}
	if u := s.Select(ups, all, nil); u != ups[1] {
		t.Errorf("chose %s, want u1", u.Name)
	}
	ups[1].inflight.Store(2) // 2/1 vs 3/2: u2
	if u := s.Select(ups, all, nil); u != ups[2] {
		t.Errorf("chose %s, want u2", u.Name)
	}
	// Ties go round.
	idle := testUpstreams(1, 1, 1)
	count := map[string]int{}
	for range 300 {
		count[s.Select(idle, all, nil).Name]++
	}
	for _, u := range idle {
		if count[u.Name] != 100 {
			t.Errorf("idle tie: %v, want 100 each", count)
			break
		}
	}
	if u := s.Select(ups, Usable{avoid: ups}, nil); u != nil {
		t.Errorf("nothing usable: chose %s", u.Name)
	}
}

func TestRandomTwoPrefersLowScore(t *testing.T) {
	ups := testUpstreams(1, 1)
	ups[0].ewma.Store(int64(50 * time.Millisecond))
	ups[1].ewma.Store(int64(time.Millisecond))
	for range 100 {
		if u := (RandomTwo{}).Select(ups, all, nil); u != ups[1] {
			t.Fatalf("chose the slow upstream")
		}
	}
	// Among many, the slowest is never chosen (it loses every pair).
	many := testUpstreams(1, 1, 1, 1)
	for i, u := range many {
		u.ewma.Store(int64(i+1) * int64(time.Millisecond))
	}
	count := map[string]int{}
	for range 2000 {
		count[(RandomTwo{}).Select(many, all, nil).Name]++
	}
	if count["u3"] != 0 || count["u0"] < count["u1"] || count["u1"] < count["u2"] {
		t.Errorf("distribution %v: want u0 > u1 > u2 > u3 = 0", count)
	}
}

func TestFirst(t *testing.T) {
	ups := testUpstreams(1, 1, 1)
	if u := (First{}).Select(ups, all, nil); u != ups[0] {
		t.Errorf("chose %s", u.Name)
	}
	if u := (First{}).Select(ups, Usable{avoid: []*Upstream{ups[0]}}, nil); u != ups[1] {
		t.Errorf("with u0 down chose %s", u.Name)
	}
}

func reqWith(header, cookie, uri string) *http.Request {
	r := httptest.NewRequest("GET", uri, nil)
	if header != "" {
		r.Header.Set("X-User", header)
	}
	if cookie != "" {
		r.AddCookie(&http.Cookie{Name: "sessionid", Value: cookie})
	}
	r.RemoteAddr = "10.1.2.3:5555"
	return r
}

func TestHashIsConsistent(t *testing.T) {
	for _, key := range []string{"header:X-User", "cookie:sessionid", "uri"} {
		t.Run(key, func(t *testing.T) {
			ups := testUpstreams(1, 1, 1, 1)
			s, err := NewSelector(PolicyHash, key, ups)
			if err != nil {
				t.Fatal(err)
			}
			owner := map[string]*Upstream{}
			count := map[string]int{}
			for i := range 4000 {
				k := fmt.Sprintf("user-%d", i)
				r := reqWith(k, k, "/p/"+k+"?q=1")
				u := s.Select(ups, all, r)
				owner[k] = u
				count[u.Name]++
				if again := s.Select(ups, all, r); again != u {
					t.Fatalf("key %s moved from %s to %s", k, u.Name, again.Name)
				}
			}
			for _, u := range ups {
				if c := count[u.Name]; c < 600 || c > 1400 {
					t.Errorf("distribution %v: want about 1000 each", count)
					break
				}
			}
			// One upstream leaves: only its keys move.
			gone := ups[2]
			moved := 0
			for k, u := range owner {
				r := reqWith(k, k, "/p/"+k+"?q=1")
				now := s.Select(ups, Usable{avoid: []*Upstream{gone}}, r)
				if u != gone && now != u {
					moved++
				}
			}
			if moved != 0 {
				t.Errorf("%d keys of the remaining upstreams moved", moved)
			}
		})
	}
}

func TestHashBoundedLoad(t *testing.T) {
	ups := testUpstreams(1, 1, 1, 1)
	s, _ := NewSelector(PolicyHash, "header:X-User", ups)
	r := reqWith("hot", "", "/")
	home := s.Select(ups, all, r)
	// The hot key's home carries far more than the average: the key spills
	// to the next upstream on the ring.
	home.inflight.Store(10)
	for _, u := range ups {
		if u != home {
			u.inflight.Store(1)
		}
	}
	if u := s.Select(ups, all, r); u == home {
		t.Errorf("an overloaded home kept the key")
	}
	home.inflight.Store(1)
	if u := s.Select(ups, all, r); u != home {
		t.Errorf("the key did not come home once the load fell")
	}
	// No key: least_conn.
	ups[3].inflight.Store(0)
	if u := s.Select(ups, all, reqWith("", "", "/")); u != ups[3] {
		t.Errorf("keyless request chose %s, want the least loaded", u.Name)
	}
}

func TestIPHash(t *testing.T) {
	ups := testUpstreams(1, 1, 1)
	s, _ := NewSelector(PolicyIPHash, "", ups)
	count := map[string]int{}
	for i := range 3000 {
		r := reqWith("", "", "/")
		r.RemoteAddr = fmt.Sprintf("10.%d.%d.%d:%d", i/65536, i/256%256, i%256, 1000+i)
		u := s.Select(ups, all, r)
		r.RemoteAddr = fmt.Sprintf("10.%d.%d.%d:%d", i/65536, i/256%256, i%256, 2000+i)
		if s.Select(ups, all, r) != u {
			t.Fatalf("same IP, other port: other upstream")
		}
		count[u.Name]++
	}
	for _, u := range ups {
		if c := count[u.Name]; c < 700 || c > 1300 {
			t.Errorf("distribution %v", count)
			break
		}
	}
}

func TestParseHashKey(t *testing.T) {
	for _, bad := range []string{"", "header:", "cookie", "url", "body:x"} {
		if _, err := ParseHashKey(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Passive health: max_fails failures within fail_timeout take the upstream
// out for fail_timeout; failures spread wider do not.
func TestPassiveHealthWindow(t *testing.T) {
	now := time.Unix(1000, 0)
	ups := testUpstreams(1, 1)
	p := NewPool(ups, &LeastConn{}, PoolOptions{MaxFails: 3, FailTimeout: 10 * time.Second,
		Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }})
	u := ups[0]
	for range 2 {
		p.Fail(u, fmt.Errorf("x"))
		now = now.Add(6 * time.Second)
	}
	// The window opened 12s ago: it starts over with this failure.
	p.Fail(u, fmt.Errorf("x"))
	p.Fail(u, fmt.Errorf("x"))
	if !u.Healthy(now) {
		t.Fatal("down after failures spread over more than fail_timeout")
	}
	p.Fail(u, fmt.Errorf("x"))
	if u.Healthy(now) {
		t.Fatal("up after 3 failures within fail_timeout")
	}
	if !u.Healthy(now.Add(10*time.Second)) || u.Healthy(now.Add(9*time.Second)) {
		t.Error("want down for exactly fail_timeout")
	}
	if _, err := p.Acquire(t.Context(), httptest.NewRequest("GET", "/", nil), nil, false, false); err != nil {
		t.Fatal(err)
	}
	if u.InFlight() != 0 || ups[1].InFlight() != 1 {
		t.Error("a down upstream was leased")
	}
	// Backups only while no primary is usable.
	ups2 := testUpstreams(1, 1)
	ups2[1].Backup = true
	p2 := NewPool(ups2, &LeastConn{}, PoolOptions{Logger: slog.New(slog.DiscardHandler)})
	l, _ := p2.Acquire(t.Context(), httptest.NewRequest("GET", "/", nil), nil, false, false)
	if l.Upstream() != ups2[0] {
		t.Error("the backup was used while the primary was up")
	}
	ups2[0].activeDown.Store(true)
	l, _ = p2.Acquire(t.Context(), httptest.NewRequest("GET", "/", nil), nil, false, false)
	if l.Upstream() != ups2[1] {
		t.Error("the backup was not used with the primary down")
	}
	ups2[1].activeDown.Store(true)
	if _, err := p2.Acquire(t.Context(), httptest.NewRequest("GET", "/", nil), nil, false, false); err != ErrNoUpstream {
		t.Errorf("all down: %v", err)
	}
}

// Active health: fall bad checks take an upstream out, rise good ones
// bring it back; a change is logged once.
func TestActiveHealth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var healthy atomic.Bool
		var checks atomic.Int64
		healthy.Store(true)
		rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
			checks.Add(1)
			if r.URL.Path != "/healthz" || r.URL.Host != "up" {
				t.Errorf("check of %s", r.URL)
			}
			code := 200
			if !healthy.Load() {
				code = 500
			}
			return &http.Response{StatusCode: code, Body: http.NoBody}, nil
		})
		u := &Upstream{Name: "u", Transport: rt, URL: mustURL("http://up")}
		var logs strings.Builder
		p := NewPool([]*Upstream{u}, &LeastConn{}, PoolOptions{
			Health: &HealthCheck{URI: "/healthz", Interval: time.Second, Rise: 2, Fall: 3},
			Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		})
		p.Start()
		defer p.Stop()
		synctest.Wait()
		healthy.Store(false)
		time.Sleep(2 * time.Second) // checks at 1s, 2s: two bad
		synctest.Wait()
		if !p.Healthy() {
			t.Fatal("down after 2 bad checks, fall is 3")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if p.Healthy() {
			t.Fatal("up after 3 bad checks")
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		healthy.Store(true)
		time.Sleep(time.Second)
		synctest.Wait()
		if p.Healthy() {
			t.Fatal("up after 1 good check, rise is 2")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if !p.Healthy() {
			t.Fatal("down after 2 good checks")
		}
		if n := strings.Count(logs.String(), "upstream down"); n != 1 {
			t.Errorf("logged down %d times:\n%s", n, logs.String())
		}
		if n := strings.Count(logs.String(), "upstream up"); n != 1 {
			t.Errorf("logged up %d times:\n%s", n, logs.String())
		}
		if n := checks.Load(); n != 11 {
			t.Errorf("%d checks in 10s at a 1s interval, want 11", n)
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func mustURL(s string) *url.URL {
	t, err := ParseTarget(s)
	if err != nil {
		panic(err)
	}
	return t.URL
}
