package metrics

import (
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestLatencyBuckets(t *testing.T) {
	prev := -1
	for d := time.Duration(0); d < 90*time.Second; d = d*9/8 + time.Microsecond {
		b := latencyBucket(d)
		if b < prev {
			t.Fatalf("bucket of %v = %d, below the previous %d", d, b, prev)
		}
		prev = b
		if d < 4*time.Microsecond || b == latencyBuckets-1 {
			continue
		}
		if mid := bucketMid(b); math.Abs(float64(mid-d))/float64(d) > 0.13 {
			t.Errorf("%v: bucket %d, middle %v: more than 13%% off", d, b, mid)
		}
	}
	if b := latencyBucket(time.Hour); b != latencyBuckets-1 {
		t.Errorf("an hour: bucket %d, want the last", b)
	}
	if b := latencyBucket(-time.Second); b != 0 {
		t.Errorf("negative: bucket %d", b)
	}
}

// TestWindow feeds a route requests at synthetic times and checks the
// last minute's rate and percentiles, then that old seconds drop out and
// their slots are reused.
func TestWindow(t *testing.T) {
	m := New()
	m.now = func() time.Time { return t0 }
	rt := m.Route("example.com", "api")
	// 30 seconds of 10 requests: 9 of 1 ms, 1 of 100 ms.
	for s := range 30 {
		at := t0.Add(time.Duration(s)*time.Second + 500*time.Millisecond)
		for i := range 10 {
			d := time.Millisecond
			if i == 9 {
				d = 100 * time.Millisecond
			}
			rt.observe("GET", 200, 0, 10, d, at)
		}
	}
	st := one(t, m.RouteStats(t0.Add(30*time.Second)))
	if st.Site != "example.com" || st.Route != "api" || st.Requests != 300 {
		t.Errorf("stats %+v", st)
	}
	if want := 300.0 / 30; math.Abs(st.RPS-want) > 1e-9 {
		t.Errorf("RPS %v, want %v (30 s since the route was made)", st.RPS, want)
	}
	near(t, "p50", st.P50, time.Millisecond)
	near(t, "p99", st.P99, 100*time.Millisecond)

	// 45 s later the first 16 seconds are out of the minute (which
	// holds the second under way and the 59 before it).
	st = one(t, m.RouteStats(t0.Add(75*time.Second)))
	if want := 140.0 / 60; math.Abs(st.RPS-want) > 1e-9 || st.Requests != 140 {
		t.Errorf("RPS %v after 75 s, want %v", st.RPS, want)
	}
	// Two minutes later nothing is left but the total.
	at := t0.Add(200 * time.Second)
	st = one(t, m.RouteStats(at))
	if st.RPS != 0 || st.P50 != 0 || st.P99 != 0 || st.Requests != 0 {
		t.Errorf("idle route: %+v", st)
	}
	// A request in a reused slot counts alone.
	rt.observe("POST", 201, 5, 0, 2*time.Second, at)
	st = one(t, m.RouteStats(at))
	if want := 1.0 / 60; math.Abs(st.RPS-want) > 1e-9 || st.Requests != 1 {
		t.Errorf("after one more request: %+v, want RPS %v", st, want)
	}
	near(t, "p50", st.P50, 2*time.Second)
}

func one(t *testing.T, sts []RouteStats) RouteStats {
	t.Helper()
	if len(sts) != 1 {
		t.Fatalf("%d routes, want 1", len(sts))
	}
	return sts[0]
}

func near(t *testing.T, what string, got, want time.Duration) {
	t.Helper()
	if math.Abs(float64(got-want))/float64(want) > 0.12 {
		t.Errorf("%s = %v, want about %v", what, got, want)
	}
}

func TestRouteStatsOrder(t *testing.T) {
	m := New()
	for _, k := range [][2]string{{"b.com", "10"}, {"a.com", "x"}, {"b.com", "2"}, {"b.com", "api"}} {
		m.Route(k[0], k[1])
	}
	var got []string
	for _, st := range m.RouteStats(time.Now()) {
		got = append(got, st.Site+"/"+st.Route)
	}
	if strings.Join(got, " ") != "a.com/x b.com/2 b.com/10 b.com/api" {
		t.Errorf("order %q", got)
	}
}

// gather returns the value of the series of name with exactly labels.
func gather(t *testing.T, m *Metrics, name string, labels ...string) (float64, bool) {
	t.Helper()
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, mt := range f.Metric {
			if len(mt.Label) != len(labels)/2 {
				continue
			}
			for i := 0; i < len(labels); i += 2 {
				if !hasLabel(mt.Label, labels[i], labels[i+1]) {
					continue next
				}
			}
			switch {
			case mt.Counter != nil:
				return mt.Counter.GetValue(), true
			case mt.Gauge != nil:
				return mt.Gauge.GetValue(), true
			case mt.Histogram != nil:
				return float64(mt.Histogram.GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func hasLabel(lps []*dto.LabelPair, name, value string) bool {
	for _, lp := range lps {
		if lp.GetName() == name && lp.GetValue() == value {
			return true
		}
	}
	return false
}

// fakePool is a source whose counters the test sets.
type fakePool struct {
	crashes int64
	workers []Worker
	waits   []uint64
}

func (p *fakePool) stats() AppStats {
	return AppStats{Crashes: p.crashes, Workers: p.workers, Queued: 2,
		QueueWait: Histogram{Bounds: []float64{0.001, 1}, Counts: p.waits, Sum: 0.5}}
}

func appSource(name string, p *fakePool) App { return App{Name: name, Key: p, Stats: p.stats} }

// TestCountersAcrossGenerations: an app whose pool a reload replaces keeps
// counting from where it was; a pool two generations share counts once;
// gauges are the newest generation's; an app no longer configured goes
// away.
func TestCountersAcrossGenerations(t *testing.T) {
	m := New()
	p1 := &fakePool{crashes: 5, workers: []Worker{{ID: 1, State: "idle", RSS: 100}}, waits: []uint64{3, 1, 0}}
	kept := &fakePool{crashes: 1, waits: []uint64{0, 0, 0}}
	g1 := &Sources{Apps: []App{appSource("web", p1), appSource("kept", kept)}}
	m.Attach(g1)
	want := func(what string, got float64, ok bool, v float64) {
		t.Helper()
		if !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", what, got, ok, v)
		}
	}
	v, ok := gather(t, m, "portico_app_crashes_total", "app", "web")
	want("crashes", v, ok, 5)

	// A reload: web gets a new pool, kept stays.
	p2 := &fakePool{crashes: 2, workers: []Worker{{ID: 1, State: "busy", RSS: 200}, {ID: 2, State: "starting"}}, waits: []uint64{1, 0, 0}}
	g2 := &Sources{Apps: []App{appSource("web", p2), appSource("kept", kept)}}
	m.Attach(g2)
	v, ok = gather(t, m, "portico_app_crashes_total", "app", "web")
	want("crashes with both generations live", v, ok, 7)
	v, ok = gather(t, m, "portico_app_crashes_total", "app", "kept")
	want("kept crashes, shared by the generations", v, ok, 1)
	v, ok = gather(t, m, "portico_app_worker_rss_bytes", "app", "web", "worker", "1")
	want("rss from the newest generation", v, ok, 200)
	v, ok = gather(t, m, "portico_app_workers", "app", "web", "state", "starting")
	want("starting workers", v, ok, 1)

	p1.crashes = 6 // the old pool counted one more while it finished
	m.Detach(g1)
	p2.crashes = 3
	v, ok = gather(t, m, "portico_app_crashes_total", "app", "web")
	want("crashes after the old generation retired", v, ok, 9)
	v, ok = gather(t, m, "portico_app_queue_wait_seconds", "app", "web")
	want("queue waits carried", v, ok, 5)
	v, ok = gather(t, m, "portico_app_crashes_total", "app", "kept")
	want("kept crashes after the detach", v, ok, 1)

	// A reload that drops web.
	g3 := &Sources{Apps: []App{appSource("kept", kept)}}
	m.Attach(g3)
	m.Detach(g2)
	if _, ok := gather(t, m, "portico_app_crashes_total", "app", "web"); ok {
		t.Error("web's series remain after it left the config")
	}
	v, ok = gather(t, m, "portico_app_crashes_total", "app", "kept")
	want("kept crashes at the end", v, ok, 1)
	m.Detach(&Sources{}) // unknown: nothing happens
}

func TestUpstreamsStaticListeners(t *testing.T) {
	m := New()
	ups := []UpstreamStats{{Name: "http://a", Up: true, InFlight: 3, Requests: 10, Failures: 2, Retries: 1, Latency: 20 * time.Millisecond}}
	m.Attach(&Sources{
		Upstreams: []UpstreamGroup{{Site: "s", Route: "0", Key: 1, Stats: func() []UpstreamStats { return ups }}},
		Static:    []Static{{Site: "s", Route: "1", Key: 2, Stats: func() CacheStats { return CacheStats{MemoryHits: 4, CompressionMisses: 1} }}},
		Caches: []ResponseCache{{Site: "s", Route: "2", Key: 3, Stats: func() ResponseCacheStats {
			return ResponseCacheStats{Results: map[string]int64{"hit": 7, "stale": 2}, Stores: 3, Evicted: 1, Errors: 4, Entries: 2, Bytes: 900}
		}}},
		Compressors: []Compressor{{Site: "s", Route: "2", Key: 4, Stats: func() []CodingStats {
			return []CodingStats{{Coding: "br", Responses: 5, BytesIn: 5000, BytesOut: 1000}}
		}}},
	})
	m.SetListeners([]Listener{{Name: "127.0.0.1:80", Stats: func() ListenerStats { return ListenerStats{Open: 5, Idle: 2, Accepted: 9, Refused: 1} }}})
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"portico_upstream_up", []string{"site", "s", "route", "0", "upstream", "http://a"}, 1},
		{"portico_upstream_in_flight", []string{"site", "s", "route", "0", "upstream", "http://a"}, 3},
		{"portico_upstream_failures_total", []string{"site", "s", "route", "0", "upstream", "http://a"}, 2},
		{"portico_upstream_retries_total", []string{"site", "s", "route", "0", "upstream", "http://a"}, 1},
		{"portico_upstream_latency_seconds", []string{"site", "s", "route", "0", "upstream", "http://a"}, 0.02},
		{"portico_static_cache_hits_total", []string{"site", "s", "route", "1", "cache", "memory"}, 4},
		{"portico_static_cache_misses_total", []string{"site", "s", "route", "1", "cache", "compression"}, 1},
		{"portico_listener_connections", []string{"listener", "127.0.0.1:80", "state", "idle"}, 2},
		{"portico_listener_accepted_total", []string{"listener", "127.0.0.1:80"}, 9},
		{"portico_listener_refused_total", []string{"listener", "127.0.0.1:80"}, 1},
		{"portico_cache_requests_total", []string{"site", "s", "route", "2", "result", "hit"}, 7},
		{"portico_cache_requests_total", []string{"site", "s", "route", "2", "result", "stale"}, 2},
		{"portico_cache_requests_total", []string{"site", "s", "route", "2", "result", "revalidated"}, 0},
		{"portico_cache_stores_total", []string{"site", "s", "route", "2"}, 3},
		{"portico_cache_evictions_total", []string{"site", "s", "route", "2"}, 1},
		{"portico_cache_store_errors_total", []string{"site", "s", "route", "2"}, 4},
		{"portico_cache_entries", []string{"site", "s", "route", "2"}, 2},
		{"portico_cache_bytes", []string{"site", "s", "route", "2"}, 900},
		{"portico_compress_responses_total", []string{"site", "s", "route", "2", "coding", "br"}, 5},
		{"portico_compress_bytes_in_total", []string{"site", "s", "route", "2", "coding", "br"}, 5000},
		{"portico_compress_bytes_out_total", []string{"site", "s", "route", "2", "coding", "br"}, 1000},
	} {
		if v, ok := gather(t, m, c.name, c.labels...); !ok || v != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
}

// TestMiddleware: the status class, method and bytes of each request, with
// and without an access log's recorder around it; a panicking handler
// counts as 5xx; a chunked body counts the bytes read.
func TestMiddleware(t *testing.T) {
	m := New()
	rt := m.Route("default", "0")
	g1 := &Sources{Routes: [][2]string{{"default", "0"}}}
	m.Attach(g1)
	h := rt.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/missing":
			http.NotFound(w, r)
		case "/panic":
			panic(http.ErrAbortHandler)
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		case "/nothing":
		}
	}))
	serve := func(method, path string, body io.Reader, chunked bool) {
		req := httptest.NewRequest(method, path, body)
		if chunked {
			req.ContentLength = -1
		}
		defer func() { _ = recover() }()
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	serve("GET", "/missing", nil, false)
	serve("BREW", "/nothing", nil, false)
	serve("GET", "/panic", nil, false)
	serve("POST", "/echo", strings.NewReader("hello"), true)
	serve("PUT", "/echo", strings.NewReader("abc"), false)
	for _, c := range []struct {
		method, code string
		want         float64
	}{{"GET", "4xx", 1}, {"OTHER", "2xx", 1}, {"GET", "5xx", 1}, {"POST", "2xx", 1}, {"PUT", "2xx", 1}} {
		if v, ok := gather(t, m, "portico_http_requests_total", "site", "default", "route", "0", "method", c.method, "code", c.code); !ok || v != c.want {
			t.Errorf("%s %s = %v, want %v", c.method, c.code, v, c.want)
		}
	}
	if v, _ := gather(t, m, "portico_http_request_bytes_total", "site", "default", "route", "0"); v != 8 {
		t.Errorf("request bytes %v, want 8", v)
	}
	notFound := float64(len("404 page not found\n"))
	if v, _ := gather(t, m, "portico_http_response_bytes_total", "site", "default", "route", "0"); v != notFound+8 {
		t.Errorf("response bytes %v, want %v", v, notFound+8)
	}
	if v, _ := gather(t, m, "portico_http_request_duration_seconds", "site", "default", "route", "0"); v != 5 {
		t.Errorf("durations %v, want 5", v)
	}

	// Through a writer that records already (the access log's): it is
	// read, not wrapped again.
	rec := &fakeRecorder{ResponseWriter: httptest.NewRecorder()}
	var seen http.ResponseWriter
	h2 := rt.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = w
		w.WriteHeader(302)
	}))
	rec.status = 302
	rec.written = 7
	h2.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if seen != rec {
		t.Error("the recorder was wrapped again")
	}
	if v, _ := gather(t, m, "portico_http_requests_total", "site", "default", "route", "0", "method", "GET", "code", "3xx"); v != 1 {
		t.Errorf("3xx = %v", v)
	}

	// A reload that drops the route drops its series, once the generation
	// that had it is gone (at the next reload).
	g2 := &Sources{Routes: [][2]string{{"default", "1"}}}
	m.Attach(g2)
	if _, ok := gather(t, m, "portico_http_requests_total", "site", "default", "route", "0", "method", "PUT", "code", "2xx"); !ok {
		t.Error("the route's series went while its old generation still serves")
	}
	m.Detach(g1)
	m.Attach(&Sources{Routes: [][2]string{{"default", "1"}}})
	m.Detach(g2)
	if _, ok := gather(t, m, "portico_http_requests_total", "site", "default", "route", "0", "method", "PUT", "code", "2xx"); ok {
		t.Error("the removed route's series remain")
	}
}

type fakeRecorder struct {
	http.ResponseWriter
	status  int
	written int64
}

func (f *fakeRecorder) Status() int    { return f.status }
func (f *fakeRecorder) Written() int64 { return f.written }

// BenchmarkMiddleware measures the per-request cost of the middleware
// around a handler that writes a small response: "recorded" behind the
// access log's recorder (the default), "own" wrapping the writer itself
// (access_log = "off").
func BenchmarkMiddleware(b *testing.B) {
	m := New()
	rt := m.Route("default", "0")
	body := []byte("hello")
	h := rt.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	req := httptest.NewRequest("GET", "/", nil)
	b.Run("recorded", func(b *testing.B) {
		w := &fakeRecorder{ResponseWriter: nopWriter{}, status: 200}
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(w, req)
		}
	})
	b.Run("own", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(nopWriter{}, req)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			w := &fakeRecorder{ResponseWriter: nopWriter{}, status: 200}
			for pb.Next() {
				h.ServeHTTP(w, req)
			}
		})
	})
}

// BenchmarkBaseline is the handler alone, for comparison.
func BenchmarkBaseline(b *testing.B) {
	body := []byte("hello")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	req := httptest.NewRequest("GET", "/", nil)
	w := &fakeRecorder{ResponseWriter: nopWriter{}, status: 200}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
}

type nopWriter struct{}

func (nopWriter) Header() http.Header         { return http.Header{} }
func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (nopWriter) WriteHeader(int)             {}

// BenchmarkScrape is the CPU of one GET /metrics (text format; "gzip" as
// Prometheus asks for it) for a typical server: one app of 4 workers, 5
// routes with traffic, a proxy route of 2 upstreams, a static route, 2
// listeners, the Go runtime and process collectors. The app's snapshot
// here is a fake: the real one reads each worker's RSS from /proc (about
// 10 µs per worker).
func BenchmarkScrape(b *testing.B) {
	m := New()
	src := &Sources{}
	now := time.Now()
	for i := range 5 {
		name := strconv.Itoa(i)
		rt := m.Route("example.com", name)
		src.Routes = append(src.Routes, [2]string{"example.com", name})
		for j, meth := range []string{"GET", "POST", "HEAD"} {
			for _, code := range []int{200, 404, 503} {
				rt.observe(meth, code, 10, 1000, time.Duration(j+1)*time.Millisecond, now)
			}
		}
	}
	p := &fakePool{crashes: 1, waits: make([]uint64, 14)}
	for i := range 4 {
		p.workers = append(p.workers, Worker{ID: i + 1, State: "idle", RSS: 50 << 20, Requests: 1000})
	}
	src.Apps = []App{appSource("web", p)}
	ups := []UpstreamStats{{Name: "http://10.0.0.1:8080", Up: true}, {Name: "http://10.0.0.2:8080", Up: true}}
	src.Upstreams = []UpstreamGroup{{Site: "example.com", Route: "3", Key: 1, Stats: func() []UpstreamStats { return ups }}}
	src.Static = []Static{{Site: "example.com", Route: "1", Key: 2, Stats: func() CacheStats { return CacheStats{MemoryHits: 5} }}}
	m.Attach(src)
	ls := func() ListenerStats { return ListenerStats{Open: 10, Idle: 5, Accepted: 1000} }
	m.SetListeners([]Listener{{Name: "0.0.0.0:80", Stats: ls}, {Name: "0.0.0.0:443", Stats: ls}})
	h := m.Handler()
	for _, enc := range []string{"identity", "gzip"} {
		b.Run(enc, func(b *testing.B) {
			req := httptest.NewRequest("GET", "/metrics", nil)
			req.Header.Set("Accept-Encoding", enc)
			var size int
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				size = w.Body.Len()
			}
			b.ReportMetric(float64(size), "bytes/scrape")
		})
	}
}
