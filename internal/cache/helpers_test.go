package cache

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// t0 is the tests' epoch: a whole second, so that Date fields (second
// resolution) are exact.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// clock is an injected time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: t0} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// origin is the app behind the cache: it answers with respond and counts
// the requests it gets, keeping the last one.
type origin struct {
	calls   atomic.Int64
	mu      sync.Mutex
	last    *http.Request
	respond func(w http.ResponseWriter, r *http.Request)
}

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.calls.Add(1)
	o.mu.Lock()
	o.last = r
	o.mu.Unlock()
	o.respond(w, r)
}

func (o *origin) lastRequest() *http.Request {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.last
}

// fixed answers with status, the header fields (name, value pairs; "Date"
// given as "now" is the clock's time) and body.
func fixed(clk *clock, status int, body string, fields ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(fields); i += 2 {
			v := fields[i+1]
			if v == "now" {
				v = clk.now().Format(http.TimeFormat)
			}
			w.Header().Add(fields[i], v)
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func newCache(t testing.TB, opt Options, clk *clock) *Cache {
	t.Helper()
	if clk != nil {
		opt.Now = clk.now
	}
	c, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// get sends one request through h; fields are name, value pairs.
func get(h http.Handler, method, target string, fields ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "http://example.com"+target, nil)
	for i := 0; i+1 < len(fields); i += 2 {
		r.Header.Add(fields[i], fields[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func expect(t *testing.T, what string, w *httptest.ResponseRecorder, xcache string, status int, body string) {
	t.Helper()
	if got := w.Header().Get("X-Cache"); got != xcache {
		t.Errorf("%s: X-Cache %q, want %q", what, got, xcache)
	}
	if w.Code != status {
		t.Errorf("%s: status %d, want %d", what, w.Code, status)
	}
	if got := w.Body.String(); got != body {
		t.Errorf("%s: body %q, want %q", what, got, body)
	}
}

func must(t testing.TB, cond bool, format string, args ...any) {
	t.Helper()
	if !cond {
		t.Fatalf(format, args...)
	}
}
