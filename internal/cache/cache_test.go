package cache

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"portico/internal/errpage"
	"portico/internal/requestid"
)

// validating is an app that answers with body and validators, and 304
// when the request's validators match (ETag "v<version>", Last-Modified
// at t0 plus version seconds).
type validating struct {
	clk      *clock
	version  int
	etag     bool
	lastMod  bool
	cc       string
	seenINM  string
	seenIMS  string
	notMod   int // 304s sent
	fullSent int
}

func (v *validating) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v.seenINM, v.seenIMS = r.Header.Get("If-None-Match"), r.Header.Get("If-Modified-Since")
	tag := fmt.Sprintf(`"v%d"`, v.version)
	mod := t0.Add(time.Duration(v.version) * time.Second).Format(http.TimeFormat)
	w.Header().Set("Cache-Control", v.cc)
	w.Header().Set("Date", v.clk.now().Format(http.TimeFormat))
	if v.etag {
		w.Header().Set("Etag", tag)
	}
	if v.lastMod {
		w.Header().Set("Last-Modified", mod)
	}
	if (v.etag && v.seenINM == tag) || (!v.etag && v.lastMod && v.seenIMS == mod) {
		v.notMod++
		w.Header().Set("X-Refreshed", "yes")
		w.WriteHeader(http.StatusNotModified)
		return
	}
	v.fullSent++
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "version %d", v.version)
}

// TestRevalidation: a stale entry is revalidated with its ETag or its
// Last-Modified; 304 refreshes it (headers and freshness), 200 replaces it.
func TestRevalidation(t *testing.T) {
	for _, validator := range []string{"etag", "last-modified"} {
		t.Run(validator, func(t *testing.T) {
			clk := newClock()
			app := &validating{clk: clk, version: 1, etag: validator == "etag", lastMod: validator == "last-modified", cc: "max-age=10"}
			h := newCache(t, Options{}, clk).Handler(app)
			expect(t, "first", get(h, "GET", "/"), "MISS", 200, "version 1")
			must(t, app.seenINM == "" && app.seenIMS == "", "a plain miss sent validators")
			clk.add(11 * time.Second)
			w := get(h, "GET", "/")
			expect(t, "stale, 304", w, "REVALIDATED", 200, "version 1")
			if validator == "etag" {
				must(t, app.seenINM == `"v1"`, "If-None-Match %q", app.seenINM)
			} else {
				must(t, app.seenIMS == t0.Add(time.Second).Format(http.TimeFormat), "If-Modified-Since %q", app.seenIMS)
			}
			must(t, w.Header().Get("X-Refreshed") == "yes", "the 304's fields did not refresh the entry")
			must(t, w.Header().Get("Content-Type") == "text/plain", "the stored Content-Type was lost: %q", w.Header().Get("Content-Type"))
			must(t, w.Header().Get("Age") == "0", "Age after refresh %q", w.Header().Get("Age"))
			clk.add(9 * time.Second)
			expect(t, "refreshed freshness", get(h, "GET", "/"), "HIT", 200, "version 1")
			clk.add(2 * time.Second)
			app.version = 2
			expect(t, "stale, 200", get(h, "GET", "/"), "EXPIRED", 200, "version 2")
			expect(t, "replaced", get(h, "GET", "/"), "HIT", 200, "version 2")
			must(t, app.notMod == 1 && app.fullSent == 2, "the app sent %d 304s and %d full answers", app.notMod, app.fullSent)
		})
	}
}

// TestClientConditional: a client's If-None-Match / If-Modified-Since gets
// 304 from a fresh entry, and from a miss (the app is asked without them,
// so that the full answer is stored).
func TestClientConditional(t *testing.T) {
	clk := newClock()
	app := &validating{clk: clk, version: 1, etag: true, lastMod: true, cc: "max-age=60"}
	h := newCache(t, Options{}, clk).Handler(app)
	w := get(h, "GET", "/", "If-None-Match", `"v1"`)
	expect(t, "conditional miss", w, "MISS", 304, "")
	must(t, app.seenINM == "" && app.fullSent == 1, "the app saw If-None-Match %q", app.seenINM)
	expect(t, "plain hit", get(h, "GET", "/"), "HIT", 200, "version 1")
	expect(t, "matching If-None-Match", get(h, "GET", "/", "If-None-Match", `"x", W/"v1"`), "HIT", 304, "")
	expect(t, "other If-None-Match", get(h, "GET", "/", "If-None-Match", `"v0"`), "HIT", 200, "version 1")
	expect(t, "If-Modified-Since later", get(h, "GET", "/", "If-Modified-Since", t0.Add(time.Hour).Format(http.TimeFormat)), "HIT", 304, "")
	expect(t, "If-Modified-Since earlier", get(h, "GET", "/", "If-Modified-Since", t0.Format(http.TimeFormat)), "HIT", 200, "version 1")
	must(t, app.fullSent == 1, "the app was asked %d times", app.fullSent)
	// A revalidation answers the client's own conditional request too.
	clk.add(61 * time.Second)
	expect(t, "revalidated conditional", get(h, "GET", "/", "If-None-Match", `"v1"`), "REVALIDATED", 304, "")
	must(t, app.notMod == 1, "the app sent %d 304s", app.notMod)
}

// TestRequestNoCacheRevalidates: request no-cache with a validator is a
// conditional request to the app.
func TestRequestNoCacheRevalidates(t *testing.T) {
	clk := newClock()
	app := &validating{clk: clk, version: 1, etag: true, cc: "max-age=60"}
	h := newCache(t, Options{}, clk).Handler(app)
	get(h, "GET", "/")
	expect(t, "no-cache", get(h, "GET", "/", "Cache-Control", "no-cache"), "REVALIDATED", 200, "version 1")
	must(t, app.seenINM == `"v1"`, "If-None-Match %q", app.seenINM)
}

// TestStaleWhileRevalidate: within the window the stale entry is served at
// once and exactly one background request refreshes it; Close waits for it.
func TestStaleWhileRevalidate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := newClock()
		release := make(chan struct{})
		var mu sync.Mutex
		version, finished := 1, false
		o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			v := version
			mu.Unlock()
			if v > 1 {
				<-release
			}
			w.Header().Set("Cache-Control", "max-age=10, stale-while-revalidate=30")
			fmt.Fprintf(w, "version %d", v)
			mu.Lock()
			finished = v > 1
			mu.Unlock()
		}}
		c, err := New(Options{Now: clk.now})
		if err != nil {
			t.Fatal(err)
		}
		h := c.Handler(o)
		expect(t, "first", get(h, "GET", "/"), "MISS", 200, "version 1")
		mu.Lock()
		version = 2
		mu.Unlock()
		clk.add(15 * time.Second)
		expect(t, "stale", get(h, "GET", "/"), "STALE", 200, "version 1")
		expect(t, "stale again", get(h, "GET", "/"), "STALE", 200, "version 1")
		synctest.Wait()
		must(t, o.calls.Load() == 2, "the app got %d requests, want 2 (one background)", o.calls.Load())
		closed := make(chan struct{})
		go func() { c.Close(); close(closed) }()
		synctest.Wait()
		select {
		case <-closed:
			t.Fatal("Close returned before the background revalidation ended")
		default:
		}
		close(release)
		<-closed
		mu.Lock()
		must(t, finished, "the background revalidation did not finish")
		mu.Unlock()
		expect(t, "refreshed", get(h, "GET", "/"), "HIT", 200, "version 2")
		// Past the window: the client waits for the app.
		clk.add(41 * time.Second)
		expect(t, "past the window", get(h, "GET", "/"), "EXPIRED", 200, "version 2")
		must(t, o.calls.Load() == 3, "the app got %d requests, want 3", o.calls.Load())
		s := c.Stats()
		must(t, s.Stale == 2 && s.Miss == 1 && s.Hit == 1 && s.Expired == 1, "stats %+v", s)
	})
}

// pagerRecorder is the router's writer below the cache: it serves a
// site's error page when asked.
type pagerRecorder struct {
	*httptest.ResponseRecorder
	asked int
}

func (p *pagerRecorder) ServeErrorPage(status int) bool {
	p.asked++
	p.WriteHeader(status)
	io.WriteString(p, "custom error page")
	return true
}

// TestStaleIfError: within the window the app's 500 and 503 and Portico's
// own 502 (through errpage) are replaced by the stale entry; past it the
// error goes out (through the error page writer below).
func TestStaleIfError(t *testing.T) {
	clk := newClock()
	mode := "ok"
	o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
		switch mode {
		case "ok":
			w.Header().Set("Cache-Control", "max-age=10, stale-if-error=60")
			io.WriteString(w, "good")
		case "500", "503":
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(map[string]int{"500": 500, "503": 503}[mode])
			io.WriteString(w, "app error")
		case "portico502":
			w.Header().Set("Retry-After", "1")
			if errpage.Serve(w, http.StatusBadGateway) {
				return
			}
			http.Error(w, "bad gateway", http.StatusBadGateway)
		}
	}}
	h := newCache(t, Options{}, clk).Handler(o)
	expect(t, "first", get(h, "GET", "/"), "MISS", 200, "good")
	clk.add(20 * time.Second)
	for _, m := range []string{"500", "503", "portico502"} {
		mode = m
		expect(t, m+" in the window", get(h, "GET", "/"), "STALE", 200, "good")
	}
	// Portico's own 502 with an error page writer below: the stale entry
	// answers, the error page is not asked for.
	pw := &pagerRecorder{ResponseRecorder: httptest.NewRecorder()}
	h.ServeHTTP(pw, httptest.NewRequest("GET", "http://example.com/", nil))
	must(t, pw.asked == 0, "the error page writer was asked within the window")
	expect(t, "portico502 with pages, in the window", pw.ResponseRecorder, "STALE", 200, "good")
	clk.add(60 * time.Second)
	mode = "503"
	expect(t, "503 past the window", get(h, "GET", "/"), "EXPIRED", 503, "app error")
	mode = "portico502"
	pw = &pagerRecorder{ResponseRecorder: httptest.NewRecorder()}
	h.ServeHTTP(pw, httptest.NewRequest("GET", "http://example.com/", nil))
	must(t, pw.asked == 1, "the error page writer was asked %d times", pw.asked)
	// The 503 before found the entry dead and dropped it: a miss now.
	expect(t, "portico502 past the window", pw.ResponseRecorder, "MISS", 502, "custom error page")
	must(t, pw.Header().Get("Retry-After") == "1", "the caller's Retry-After was lost")
	// The app recovers: a new entry.
	mode = "ok"
	expect(t, "recovered", get(h, "GET", "/"), "MISS", 200, "good")
	expect(t, "recovered hit", get(h, "GET", "/"), "HIT", 200, "good")
	// Without the window (Options nor response), an error goes out.
	clk2 := newClock()
	mode = "ok"
	o2 := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
		switch mode {
		case "ok":
			w.Header().Set("Cache-Control", "max-age=10")
			w.Header().Set("Etag", `"e"`)
			io.WriteString(w, "good")
		case "portico502":
			if !errpage.Serve(w, http.StatusBadGateway) {
				http.Error(w, "bad gateway", http.StatusBadGateway)
			}
		default:
			w.WriteHeader(503)
		}
	}}
	c2 := newCache(t, Options{}, clk2)
	h2 := c2.Handler(o2)
	get(h2, "GET", "/")
	clk2.add(11 * time.Second)
	mode = "503"
	expect(t, "no window", get(h2, "GET", "/"), "EXPIRED", 503, "")
	mode = "portico502"
	expect(t, "no window, Portico's 502", get(h2, "GET", "/"), "EXPIRED", 502, "bad gateway\n")
	s := c2.Stats()
	must(t, s.Miss == 1 && s.Expired == 2 && s.Stale == 0, "stats %+v", s)
	// The Options' window applies when the response does not say.
	clk3 := newClock()
	mode = "ok"
	h3 := newCache(t, Options{StaleIfError: time.Minute}, clk3).Handler(o2)
	get(h3, "GET", "/")
	clk3.add(30 * time.Second)
	mode = "503"
	expect(t, "Options.StaleIfError", get(h3, "GET", "/"), "STALE", 200, "good")
}

// TestCoalescing: 100 concurrent misses ask the app once and all get the
// answer; an uncacheable answer marks the key hit-for-pass, so that later
// requests go to the app without waiting for each other.
func TestCoalescing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := newClock()
		release := make(chan struct{})
		cc := "max-age=60"
		o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
			<-release
			w.Header().Set("Cache-Control", cc)
			io.WriteString(w, "shared body")
		}}
		c := newCache(t, Options{}, clk)
		h := c.Handler(o)
		run := func(n int, target string) []*httptest.ResponseRecorder {
			out := make([]*httptest.ResponseRecorder, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { out[i] = get(h, "GET", target) })
			}
			synctest.Wait()
			close(release)
			wg.Wait()
			return out
		}
		res := run(100, "/hot")
		must(t, o.calls.Load() == 1, "the app got %d requests, want 1", o.calls.Load())
		hits := 0
		for _, w := range res {
			must(t, w.Code == 200 && w.Body.String() == "shared body", "answer %d %q", w.Code, w.Body.String())
			if w.Header().Get("X-Cache") == "HIT" {
				hits++
			}
		}
		must(t, hits == 99, "%d hits, want 99", hits)

		// Uncacheable: the waiters go to the app themselves...
		release = make(chan struct{})
		cc = "private"
		res = run(10, "/cold")
		n := o.calls.Load() - 1
		must(t, n == 10, "uncacheable: the app got %d requests, want 10", n)
		for _, w := range res {
			must(t, w.Body.String() == "shared body" && w.Header().Get("X-Cache") == "MISS", "answer %q %q", w.Header().Get("X-Cache"), w.Body.String())
		}
		// ...and now the key is hit-for-pass: concurrent requests all
		// reach the app at once, none waits for another.
		release = make(chan struct{})
		before := o.calls.Load()
		var wg sync.WaitGroup
		for range 5 {
			wg.Go(func() { get(h, "GET", "/hot2") })
		}
		synctest.Wait() // the first of /hot2 leads, the others wait
		must(t, o.calls.Load()-before == 1, "a new key is coalesced: %d", o.calls.Load()-before)
		close(release)
		wg.Wait()
		release = make(chan struct{})
		before = o.calls.Load()
		for range 5 {
			wg.Go(func() { get(h, "GET", "/cold") })
		}
		synctest.Wait()
		must(t, o.calls.Load()-before == 5, "hit-for-pass: %d requests reached the app together, want 5", o.calls.Load()-before)
		close(release)
		wg.Wait()
		// After hitForPass, requests are coalesced again.
		clk.add(hitForPass + time.Second)
		release = make(chan struct{})
		before = o.calls.Load()
		for range 5 {
			wg.Go(func() { get(h, "GET", "/cold") })
		}
		synctest.Wait()
		must(t, o.calls.Load()-before == 1, "after hit-for-pass: %d requests reached the app together, want 1", o.calls.Load()-before)
		close(release)
		wg.Wait()
	})
}

// TestWaiterLeaves: a waiter whose client goes away stops waiting.
func TestWaiterLeaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
			<-release
			w.Header().Set("Cache-Control", "max-age=60")
		}}
		h := newCache(t, Options{}, newClock()).Handler(o)
		go get(h, "GET", "/")
		synctest.Wait()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			r := httptest.NewRequestWithContext(ctx, "GET", "http://example.com/", nil)
			h.ServeHTTP(httptest.NewRecorder(), r)
			close(done)
		}()
		synctest.Wait()
		cancel()
		<-done
		close(release)
		synctest.Wait()
		must(t, o.calls.Load() == 1, "calls %d", o.calls.Load())
	})
}

// TestPurge: exact (every variant of one URL) and prefix.
func TestPurge(t *testing.T) {
	clk := newClock()
	o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Language")
		io.WriteString(w, r.URL.String())
	}}
	c := newCache(t, Options{}, clk)
	h := c.Handler(o)
	for _, u := range []string{"/a?x=1", "/a?x=2", "/ab", "/b"} {
		get(h, "GET", u)
	}
	get(h, "GET", "/a?x=1", "Accept-Language", "fr")
	must(t, c.Stats().Entries == 5, "entries %d", c.Stats().Entries)
	n, err := c.Purge(context.Background(), "EXAMPLE.com/a?x=1", false)
	must(t, err == nil && n == 2, "exact purge: %d, %v; want 2", n, err)
	expect(t, "purged", get(h, "GET", "/a?x=1"), "MISS", 200, "http://example.com/a?x=1")
	expect(t, "other query kept", get(h, "GET", "/a?x=2"), "HIT", 200, "http://example.com/a?x=2")
	n, err = c.Purge(context.Background(), "example.com/a", true)
	must(t, err == nil && n == 3, "prefix purge: %d, %v; want 3", n, err)
	expect(t, "prefix purged", get(h, "GET", "/ab"), "MISS", 200, "http://example.com/ab")
	expect(t, "outside the prefix", get(h, "GET", "/b"), "HIT", 200, "http://example.com/b")
	n, _ = c.Purge(context.Background(), "other.org/", true)
	must(t, n == 0, "another host purged %d", n)
}

// TestUnsafeInvalidates: a successful POST invalidates its URL, a failed
// one does not; other methods pass (BYPASS).
func TestUnsafeInvalidates(t *testing.T) {
	clk := newClock()
	status := 200
	o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "GET" {
			w.WriteHeader(status)
			return
		}
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "page")
	}}
	h := newCache(t, Options{}, clk).Handler(o)
	get(h, "GET", "/p")
	status = 500
	expect(t, "failed POST", get(h, "POST", "/p"), "BYPASS", 500, "")
	expect(t, "after the failed POST", get(h, "GET", "/p"), "HIT", 200, "page")
	expect(t, "OPTIONS", get(h, "OPTIONS", "/p"), "BYPASS", 500, "")
	status = 303
	expect(t, "POST", get(h, "POST", "/p"), "BYPASS", 303, "")
	expect(t, "after the POST", get(h, "GET", "/p"), "MISS", 200, "page")
}

// TestBypassCookies: a request with a named cookie neither reads nor
// writes the cache.
func TestBypassCookies(t *testing.T) {
	clk := newClock()
	o := &origin{respond: fixed(clk, 200, "page", "Cache-Control", "max-age=60")}
	h := newCache(t, Options{BypassCookies: []string{"sessionid"}}, clk).Handler(o)
	expect(t, "logged in", get(h, "GET", "/", "Cookie", "csrftoken=a; sessionid=b"), "BYPASS", 200, "page")
	expect(t, "anonymous", get(h, "GET", "/", "Cookie", "csrftoken=a; sessionidx=b"), "MISS", 200, "page")
	expect(t, "anonymous hit", get(h, "GET", "/"), "HIT", 200, "page")
	expect(t, "logged in again", get(h, "GET", "/", "Cookie", "sessionid=b"), "BYPASS", 200, "page")
	must(t, o.calls.Load() == 3, "calls %d", o.calls.Load())
}

// TestMinUses: stored at the MinUses-th miss.
func TestMinUses(t *testing.T) {
	clk := newClock()
	o := &origin{respond: fixed(clk, 200, "page", "Cache-Control", "max-age=60")}
	c := newCache(t, Options{MinUses: 3}, clk)
	h := c.Handler(o)
	for i := range 3 {
		expect(t, fmt.Sprint("miss ", i+1), get(h, "GET", "/"), "MISS", 200, "page")
	}
	expect(t, "stored", get(h, "GET", "/"), "HIT", 200, "page")
	must(t, c.Stats().Stores == 1, "stores %d", c.Stats().Stores)
}

// TestMaxEntry: a larger body streams through whole and is not stored,
// with or without Content-Length.
func TestMaxEntry(t *testing.T) {
	for _, withLength := range []bool{true, false} {
		t.Run(fmt.Sprint("Content-Length ", withLength), func(t *testing.T) {
			clk := newClock()
			big := strings.Repeat("x", 1000)
			o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=60")
				if withLength {
					w.Header().Set("Content-Length", "1000")
				}
				for i := 0; i < 1000; i += 100 {
					io.WriteString(w, big[i:i+100])
				}
			}}
			c := newCache(t, Options{MaxEntry: 999}, clk)
			h := c.Handler(o)
			expect(t, "first", get(h, "GET", "/"), "MISS", 200, big)
			expect(t, "second", get(h, "GET", "/"), "MISS", 200, big)
			must(t, c.Stats().Entries == 0, "entries %d", c.Stats().Entries)
			c2 := newCache(t, Options{MaxEntry: 1000}, clk)
			h2 := c2.Handler(o)
			get(h2, "GET", "/")
			expect(t, "at the bound", get(h2, "GET", "/"), "HIT", 200, big)
		})
	}
}

// TestLRUBytes: the memory store is bounded by bytes and evicts the least
// recently used.
func TestLRUBytes(t *testing.T) {
	clk := newClock()
	body := strings.Repeat("y", 1000)
	o := &origin{respond: fixed(clk, 200, body, "Cache-Control", "max-age=60")}
	c := newCache(t, Options{Size: 2500}, clk)
	h := c.Handler(o)
	get(h, "GET", "/a")
	get(h, "GET", "/b")
	expect(t, "a", get(h, "GET", "/a"), "HIT", 200, body) // b is now the oldest
	get(h, "GET", "/c")
	s := c.Stats()
	must(t, s.Entries == 2 && s.Evictions == 1 && s.Bytes <= 2500 && s.Bytes > 2000, "stats %+v", s)
	expect(t, "b evicted", get(h, "GET", "/b"), "MISS", 200, body)
	expect(t, "c kept", get(h, "GET", "/c"), "HIT", 200, body)
	// An entry larger than the whole store is not stored, and evicts
	// nothing.
	before := c.Stats()
	big := &origin{respond: fixed(clk, 200, strings.Repeat("z", 3000), "Cache-Control", "max-age=60")}
	get(c.Handler(big), "GET", "/big")
	s = c.Stats()
	must(t, s.Entries == 2 && s.Evictions == before.Evictions && s.Stores == before.Stores && s.StoreErrors == 0,
		"after a too large entry: %+v, before %+v", s, before)
}

// TestHeaderHygiene: the stored response has no hop-by-hop field, no
// request ID and no X-Cache of its own; a hit carries the current ID.
func TestHeaderHygiene(t *testing.T) {
	clk := newClock()
	o := &origin{respond: fixed(clk, 200, "page", "Cache-Control", "max-age=60", "Connection", "X-Private",
		"X-Private", "secret", "Keep-Alive", "timeout=5", requestid.Header, "from-app", "X-Cache", "HIT", "X-Other", "kept")}
	h := newCache(t, Options{}, clk).Handler(o)
	send := func(id string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "http://example.com/", nil)
		w := httptest.NewRecorder()
		w.Header().Set(requestid.Header, id) // as the requestid middleware does
		h.ServeHTTP(w, r)
		return w
	}
	first := send("one")
	must(t, first.Header().Get("X-Cache") == "MISS", "first X-Cache %q", first.Header().Get("X-Cache"))
	w := send("two")
	expect(t, "hit", w, "HIT", 200, "page")
	for _, f := range []string{"X-Private", "Keep-Alive", "Connection"} {
		must(t, w.Header().Get(f) == "", "%s stored: %q", f, w.Header().Get(f))
	}
	must(t, w.Header().Get(requestid.Header) == "two", "request ID %q, want the current one", w.Header()[requestid.Header])
	must(t, w.Header().Get("X-Other") == "kept" && w.Header().Get("Content-Length") == "4", "fields %v", w.Header())
}

// TestHead: a HEAD miss goes through as HEAD and stores nothing; a HEAD
// is answered from a stored GET.
func TestHead(t *testing.T) {
	clk := newClock()
	o := &origin{respond: fixed(clk, 200, "page", "Cache-Control", "max-age=60")}
	c := newCache(t, Options{}, clk)
	h := c.Handler(o)
	expect(t, "HEAD miss", get(h, "HEAD", "/"), "MISS", 200, "page") // the recorder keeps what the app wrote
	must(t, o.lastRequest().Method == "HEAD" && c.Stats().Entries == 0, "HEAD went as %s; entries %d", o.lastRequest().Method, c.Stats().Entries)
	get(h, "GET", "/")
	w := get(h, "HEAD", "/")
	expect(t, "HEAD hit", w, "HIT", 200, "")
	must(t, w.Header().Get("Content-Length") == "4", "Content-Length %q", w.Header().Get("Content-Length"))
}

// TestStreaming: on a miss the app's flush reaches the client before the
// app finishes, and the whole answer is stored.
func TestStreaming(t *testing.T) {
	next := make(chan struct{})
	o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "first\n")
		http.NewResponseController(w).Flush()
		<-next
		io.WriteString(w, "second\n")
	}}
	c := newCache(t, Options{}, nil)
	srv := httptest.NewServer(c.Handler(o))
	defer srv.Close()
	client := &http.Client{Timeout: 10 * time.Second} // a lost flush fails, not hangs
	res, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(res.Body)
	line, err := br.ReadString('\n')
	must(t, err == nil && line == "first\n", "first line %q %v", line, err)
	close(next)
	rest, _ := io.ReadAll(br)
	res.Body.Close()
	must(t, string(rest) == "second\n", "rest %q", rest)
	res, err = client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	must(t, res.Header.Get("X-Cache") == "HIT" && string(b) == "first\nsecond\n", "second answer %q %q", res.Header.Get("X-Cache"), b)
}

// TestBadStore: a Store that is no URL Portico knows is an error.
func TestBadStore(t *testing.T) {
	for _, s := range []string{"memcached://x", "redis://host:notaport/0", "redis://h/x"} {
		if _, err := New(Options{Store: s}); err == nil {
			t.Errorf("New(Store %q): no error", s)
		}
	}
}

// TestEncoding: an entry survives the Redis encoding; damaged ones are
// refused.
func TestEncoding(t *testing.T) {
	c := newCache(t, Options{}, nil)
	h := http.Header{"Cache-Control": {"max-age=60"}, "Etag": {`"x"`}, "Vary": {"Accept-Encoding"}, "Date": {t0.Format(http.TimeFormat)}, "X-Two": {"a", "b"}}
	e := c.newEntry(203, h, []byte("body"), t0, t0.Add(time.Second))
	b := e.encode()
	d, err := c.decode(b)
	must(t, err == nil, "decode: %v", err)
	must(t, d.status == 203 && string(d.body) == "body" && d.reqTime.Equal(e.reqTime) && d.resTime.Equal(e.resTime) && d.initAge == e.initAge,
		"decoded %+v", d)
	must(t, len(d.header) == len(h) && d.header.Get("X-Two") == "a" && len(d.header["X-Two"]) == 2, "header %v", d.header)
	must(t, d.lifetime == time.Minute && d.etag == `"x"` && len(d.vary) == 1, "policy %+v", d.policy)
	for i := range len(b) - 4 {
		if _, err := c.decode(b[:i]); err == nil {
			t.Fatalf("a truncated entry (%d bytes) decodes", i)
		}
	}
}

func FuzzDecode(f *testing.F) {
	c, _ := New(Options{})
	e := c.newEntry(200, http.Header{"A": {"b"}}, []byte("x"), t0, t0)
	f.Add(e.encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, err := c.decode(b); err == nil {
			d.encode()
		}
	})
}

// TestRefreshWithoutDate: a 304 without Date dates the refreshed entry at
// its arrival, not with the stored Date (RFC 9110 6.6.1).
func TestRefreshWithoutDate(t *testing.T) {
	clk := newClock()
	first := true
	o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("Etag", `"e"`)
		if first {
			first = false
			w.Header().Set("Date", clk.now().Format(http.TimeFormat))
			io.WriteString(w, "page")
			return
		}
		w.Header().Del("Date")
		w.WriteHeader(http.StatusNotModified)
	}}
	h := newCache(t, Options{}, clk).Handler(o)
	get(h, "GET", "/")
	clk.add(11 * time.Second)
	expect(t, "revalidated", get(h, "GET", "/"), "REVALIDATED", 200, "page")
	clk.add(5 * time.Second)
	w := get(h, "GET", "/")
	expect(t, "fresh again", w, "HIT", 200, "page")
	must(t, w.Header().Get("Date") == t0.Add(11*time.Second).Format(http.TimeFormat) && w.Header().Get("Age") == "5",
		"Date %q Age %q", w.Header().Get("Date"), w.Header().Get("Age"))
}

// TestLockTimeout: a waiter whose leader takes longer than lockTimeout
// asks the app itself.
func TestLockTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Slow") != "" {
				<-release
			}
			w.Header().Set("Cache-Control", "max-age=60")
			io.WriteString(w, "page")
		}}
		h := newCache(t, Options{}, newClock()).Handler(o)
		go get(h, "GET", "/", "X-Slow", "1")
		synctest.Wait()
		start := time.Now()
		expect(t, "waiter", get(h, "GET", "/"), "MISS", 200, "page")
		must(t, time.Since(start) == lockTimeout, "the waiter waited %v", time.Since(start))
		must(t, o.calls.Load() == 2, "calls %d", o.calls.Load())
		close(release)
		synctest.Wait()
	})
}

// TestRange: a range request passes through on a miss, stores nothing,
// and a hit answers it whole.
func TestRange(t *testing.T) {
	clk := newClock()
	o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		if r.Header.Get("Range") != "" {
			w.Header().Set("Content-Range", "bytes 0-1/4")
			w.WriteHeader(206)
			io.WriteString(w, "pa")
			return
		}
		io.WriteString(w, "page")
	}}
	c := newCache(t, Options{}, clk)
	h := c.Handler(o)
	expect(t, "range miss", get(h, "GET", "/", "Range", "bytes=0-1"), "MISS", 206, "pa")
	must(t, c.Stats().Entries == 0, "a range answer was stored")
	must(t, !c.passing("example.com/\x00http", clk.now()), "a range answer made the URL hit-for-pass")
	expect(t, "whole", get(h, "GET", "/"), "MISS", 200, "page")
	expect(t, "range hit", get(h, "GET", "/", "Range", "bytes=0-1"), "HIT", 200, "page")
}

// TestShortBody: an answer shorter than its Content-Length is not stored.
func TestShortBody(t *testing.T) {
	clk := newClock()
	o := &origin{respond: fixed(clk, 200, "abc", "Cache-Control", "max-age=60", "Content-Length", "10")}
	c := newCache(t, Options{}, clk)
	get(c.Handler(o), "GET", "/")
	must(t, c.Stats().Entries == 0, "a short answer was stored")
}

// TestBackgroundAbort: a background revalidation whose handler aborts
// (http.ErrAbortHandler) does not take the process down, and the next
// stale request tries again.
func TestBackgroundAbort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := newClock()
		abort := false
		o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
			if abort {
				panic(http.ErrAbortHandler)
			}
			w.Header().Set("Cache-Control", "max-age=10, stale-while-revalidate=60")
			io.WriteString(w, "page")
		}}
		c, _ := New(Options{Now: clk.now})
		h := c.Handler(o)
		get(h, "GET", "/")
		clk.add(20 * time.Second)
		abort = true
		expect(t, "stale", get(h, "GET", "/"), "STALE", 200, "page")
		synctest.Wait()
		expect(t, "stale again", get(h, "GET", "/"), "STALE", 200, "page")
		synctest.Wait()
		must(t, o.calls.Load() == 3, "calls %d, want 3", o.calls.Load())
		c.Close()
	})
}
