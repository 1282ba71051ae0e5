package limit

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Rate
		ok   bool
	}{
		{"10r/s", Rate{10, time.Second}, true},
		{"30r/m", Rate{30, time.Minute}, true},
		{" 1r/s ", Rate{1, time.Second}, true},
		{"0r/s", Rate{}, false},
		{"-1r/s", Rate{}, false},
		{"10/s", Rate{}, false},
		{"10r/h", Rate{}, false},
		{"r/s", Rate{}, false},
		{"1.5r/s", Rate{}, false},
		{"", Rate{}, false},
	} {
		got, err := ParseRate(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v, ok=%t", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseKey(t *testing.T) {
	for _, s := range []string{"ip", "route", "header:X-Api-Key", "cookie:sessionid"} {
		if _, err := ParseKey(s); err != nil {
			t.Errorf("ParseKey(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "ipv4", "header:", "cookie", "query:x", "uri"} {
		if _, err := ParseKey(s); err == nil {
			t.Errorf("ParseKey(%q) accepted", s)
		}
	}
}

func newLimiter(t *testing.T, opt Options) *Limiter {
	t.Helper()
	l, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestNodelay: burst+1 requests pass at once, the next is refused with
// the time until one interval has passed; then one per interval.
func TestNodelay(t *testing.T) {
	l := newLimiter(t, Options{Rate: Rate{10, time.Second}, Burst: 5})
	t0 := time.Unix(1000, 0)
	for i := range 6 {
		if d := l.allow("a", t0); !d.OK || d.Delay != 0 {
			t.Fatalf("request %d at once: %+v, want passed without delay", i, d)
		}
	}
	d := l.allow("a", t0)
	if d.OK || d.RetryAfter != 100*time.Millisecond {
		t.Fatalf("7th at once: %+v, want refused, retry after 100ms", d)
	}
	if d := l.allow("b", t0); !d.OK {
		t.Fatalf("another key is limited by a's requests: %+v", d)
	}
	if d := l.allow("a", t0.Add(99*time.Millisecond)); d.OK || d.RetryAfter != time.Millisecond {
		t.Fatalf("at 99ms: %+v, want refused, retry after 1ms", d)
	}
	if d := l.allow("a", t0.Add(100*time.Millisecond)); !d.OK {
		t.Fatalf("at 100ms: %+v, want passed", d)
	}
	if d := l.allow("a", t0.Add(100*time.Millisecond)); d.OK {
		t.Fatalf("second at 100ms: %+v, want refused", d)
	}
	// Sustained: one per interval passes, forever.
	for i := 2; i < 50; i++ {
		now := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		if d := l.allow("a", now); !d.OK {
			t.Fatalf("at %v: %+v, want passed", now.Sub(t0), d)
		}
		if d := l.allow("a", now); d.OK {
			t.Fatalf("second at %v passed", now.Sub(t0))
		}
	}
	// Idle for a second: the whole burst is back.
	t1 := t0.Add(6 * time.Second)
	for i := range 6 {
		if d := l.allow("a", t1); !d.OK {
			t.Fatalf("after a rest, request %d: %+v", i, d)
		}
	}
	if d := l.allow("a", t1); d.OK {
		t.Fatal("after a rest, the 7th passed")
	}
}

// TestDelay: as nginx without nodelay, the requests within the burst pass
// but are spaced at the rate: the k-th waits k intervals.
func TestDelay(t *testing.T) {
	l := newLimiter(t, Options{Rate: Rate{2, time.Second}, Burst: 3, Delay: true})
	t0 := time.Unix(1000, 0)
	for i := range 4 {
		d := l.allow("a", t0)
		if want := time.Duration(i) * 500 * time.Millisecond; !d.OK || d.Delay != want {
			t.Fatalf("request %d: %+v, want passed after %v", i, d, want)
		}
	}
	if d := l.allow("a", t0); d.OK || d.RetryAfter != 500*time.Millisecond {
		t.Fatalf("5th: %+v, want refused, retry after 500ms", d)
	}
	// At 1s two intervals have passed: the schedule is 1s ahead.
	if d := l.allow("a", t0.Add(time.Second)); !d.OK || d.Delay != time.Second {
		t.Fatalf("at 1s: %+v, want passed after 1s", d)
	}
}

func TestBurstZeroPerMinute(t *testing.T) {
	l := newLimiter(t, Options{Rate: Rate{6, time.Minute}})
	t0 := time.Unix(1000, 0)
	if d := l.allow("a", t0); !d.OK {
		t.Fatal("first refused")
	}
	d := l.allow("a", t0.Add(time.Second))
	if d.OK || d.RetryAfter != 9*time.Second || RetryAfterSeconds(d.RetryAfter) != 9 {
		t.Fatalf("second after 1s: %+v, want refused for 9s", d)
	}
	if d := l.allow("a", t0.Add(10*time.Second)); !d.OK {
		t.Fatal("after 10s: refused")
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{0: 1, time.Millisecond: 1, time.Second: 1, time.Second + 1: 2, 59*time.Second + 500*time.Millisecond: 60} {
		if got := RetryAfterSeconds(d); got != want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}

// TestFloodBounded: a million distinct keys leave the limiter at its
// capacity, never above; an evicted key starts afresh while the recent
// ones keep their state.
func TestFloodBounded(t *testing.T) {
	const capacity = 1000
	l := newLimiter(t, Options{Rate: Rate{1, time.Minute}, MaxKeys: capacity})
	t0 := time.Unix(1000, 0)
	if !l.allow("victim", t0).OK || l.allow("victim", t0).OK {
		t.Fatal("victim: want one request then a refusal")
	}
	n := 1_000_000
	if testing.Short() {
		n = 100_000
	}
	for i := range n {
		k := strconv.Itoa(i)
		if !l.allow(k, t0).OK {
			t.Fatalf("key %d refused on its first request", i)
		}
		if got := l.Len(); got > capacity || (i >= capacity && got != capacity) {
			t.Fatalf("after %d keys the limiter holds %d, capacity %d", i+2, got, capacity)
		}
	}
	// The last keys are remembered (refused), the victim was evicted and
	// passes again.
	if l.allow(strconv.Itoa(n-1), t0).OK {
		t.Fatal("the most recent key was forgotten")
	}
	if !l.allow("victim", t0).OK {
		t.Fatal("an evicted key did not start afresh")
	}
}

func TestLRUOrder(t *testing.T) {
	c := newLRU[int](3)
	c.put("a", 1)
	c.put("b", 2)
	c.put("c", 3)
	c.get("a") // b is now the least recently used
	c.put("d", 4)
	if _, ok := c.get("b"); ok {
		t.Fatal("b was not evicted")
	}
	for k, v := range map[string]int{"a": 1, "c": 3, "d": 4} {
		if got, ok := c.get(k); !ok || got != v {
			t.Fatalf("%s = %d, %t", k, got, ok)
		}
	}
	if c.len() != 3 {
		t.Fatalf("len %d", c.len())
	}
}

func TestMiddleware(t *testing.T) {
	l := newLimiter(t, Options{Rate: Rate{1, time.Minute}, Burst: 1})
	var rejected atomic.Int64
	key, _ := ParseKey("header:X-Api-Key")
	h := l.Middleware(HTTPOptions{Key: key, Route: "api", Name: "route.limit_req", Rejected: &rejected})(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	do := func(apiKey string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/", nil)
		if apiKey != "" {
			r.Header.Set("X-Api-Key", apiKey)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for i := range 2 {
		if w := do("k1"); w.Code != 204 {
			t.Fatalf("request %d: %d", i, w.Code)
		}
	}
	w := do("k1")
	if w.Code != 429 {
		t.Fatalf("third: %d, want 429", w.Code)
	}
	// The next request passes after one interval less the time spent:
	// 59 or 60 seconds, rounded up.
	if ra, _ := strconv.Atoi(w.Header().Get("Retry-After")); ra < 59 || ra > 60 {
		t.Fatalf("Retry-After %q, want about 60", w.Header().Get("Retry-After"))
	}
	if w := do("k2"); w.Code != 204 {
		t.Fatalf("another key: %d", w.Code)
	}
	for range 5 {
		if w := do(""); w.Code != 204 {
			t.Fatalf("no key (not limited, as nginx): %d", w.Code)
		}
	}
	if rejected.Load() != 1 {
		t.Fatalf("rejected = %d, want 1", rejected.Load())
	}
}

func TestKeyOf(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "192.0.2.7:5555"
	r.AddCookie(&http.Cookie{Name: "sid", Value: "abc"})
	for spec, want := range map[string]string{"ip": "192.0.2.7", "cookie:sid": "abc", "cookie:other": "", "route": "route:r1"} {
		k, _ := ParseKey(spec)
		if got := k.of(r, "r1"); got != want {
			t.Errorf("%s: %q, want %q", spec, got, want)
		}
	}
	r.RemoteAddr = "2001:db8::1" // realip's bare form
	k, _ := ParseKey("ip")
	if got := k.of(r, ""); got != "2001:db8::1" {
		t.Errorf("bare address: %q", got)
	}
}

// TestConcurrency: the second request of a key in progress gets 503; the
// others and the same key after the first ends pass; no key is left.
func TestConcurrency(t *testing.T) {
	c, err := NewConcurrency(1)
	if err != nil {
		t.Fatal(err)
	}
	var rejected atomic.Int64
	key, _ := ParseKey("ip")
	entered, release := make(chan struct{}), make(chan struct{})
	h := c.Middleware(HTTPOptions{Key: key, Rejected: &rejected})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		w.WriteHeader(204)
	}))
	do := func(path, addr string) int {
		r := httptest.NewRequest("GET", path, nil)
		r.RemoteAddr = addr
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	done := make(chan int)
	go func() { done <- do("/slow", "192.0.2.1:1") }()
	<-entered
	if code := do("/", "192.0.2.1:2"); code != 503 {
		t.Fatalf("second request in progress: %d, want 503", code)
	}
	if code := do("/", "192.0.2.2:1"); code != 204 {
		t.Fatalf("another address: %d", code)
	}
	close(release)
	if code := <-done; code != 204 {
		t.Fatalf("first: %d", code)
	}
	if code := do("/", "192.0.2.1:3"); code != 204 {
		t.Fatalf("after the first ended: %d", code)
	}
	if c.Len() != 0 || rejected.Load() != 1 {
		t.Fatalf("keys left %d, rejected %d", c.Len(), rejected.Load())
	}
}

func ExampleParseRate() {
	r, _ := ParseRate("30r/m")
	fmt.Println(r, r.interval())
	// Output: 30r/m 2s
}

// TestMiddlewareDelay: with Delay, a request beyond the rate waits for its
// turn; one whose client leaves while it waits is not served.
func TestMiddlewareDelay(t *testing.T) {
	l := newLimiter(t, Options{Rate: Rate{1, time.Minute}, Burst: 2, Delay: true})
	key, _ := ParseKey("route")
	var served atomic.Int64
	h := l.Middleware(HTTPOptions{Key: key, Route: "r"})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
	}))
	r := httptest.NewRequest("GET", "/", nil)
	start := time.Now()
	h.ServeHTTP(httptest.NewRecorder(), r)
	if served.Load() != 1 || time.Since(start) > 30*time.Second {
		t.Fatal("the first request was not served at once")
	}
	// The second is a minute ahead of the rate: it waits, and its client
	// leaves.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(httptest.NewRecorder(), r.WithContext(ctx))
	}()
	cancel()
	<-done
	if served.Load() != 1 {
		t.Fatal("a delayed request whose client left was served")
	}
}
