package metrics

import (
	"io"
	"math/bits"
	"net/http"
	"sync"
	"time"
)

// Methods with their own label value; any other is "OTHER", so that a
// client cannot grow the series with made-up methods.
var methods = [...]string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "OTHER"}

func methodIndex(m string) int {
	switch m {
	case "GET":
		return 0
	case "HEAD":
		return 1
	case "POST":
		return 2
	case "PUT":
		return 3
	case "DELETE":
		return 4
	case "PATCH":
		return 5
	case "OPTIONS":
		return 6
	case "CONNECT":
		return 7
	case "TRACE":
		return 8
	}
	return 9
}

var codes = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// codeIndex maps a status to its class; a status outside 100..599 (499,
// which nobody reads, is 4xx) is clamped.
func codeIndex(status int) int {
	return min(max(status/100, 1), 5) - 1
}

// durationBounds are the request-duration histogram's upper bounds: from a
// static file served from memory (under 1 ms) to a request at the default
// 30 s timeout.
var durationBounds = [...]time.Duration{
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second, 30 * time.Second,
}

// Route holds one route's request counters and its last minute of
// traffic. Its fields are guarded by one small mutex, taken once per
// request (measured: see BenchmarkMiddleware) and once per route per
// scrape.
type Route struct {
	site, name string
	created    time.Time

	mu       sync.Mutex
	requests [len(methods)][len(codes)]uint64
	durs     [len(durationBounds) + 1]uint64 // non-cumulative, the last is +Inf
	durSum   time.Duration
	bytesIn  uint64
	bytesOut uint64
	win      window
}

// Wrap returns h observed by the route: once per request, after h returns
// (or panics), the request counts with its method, status class,
// duration and bytes. The request body's bytes are its Content-Length (a
// chunked body counts the bytes h read).
func (rt *Route) Wrap(h http.Handler) http.Handler {
	return &middleware{rt: rt, next: h}
}

type middleware struct {
	rt   *Route
	next http.Handler
}

// recorded is a ResponseWriter that records its status and body size
// already: the access log's. The middleware reads it rather than wrap the
// writer a second time (an allocation per request).
type recorded interface {
	// Status is the final status sent, 0 if none yet.
	Status() int
	// Written is the number of body bytes written.
	Written() int64
}

func (mw *middleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec, ok := w.(recorded)
	if !ok {
		sw := &statusWriter{rw: w, head: r.Method == http.MethodHead}
		rec, w = sw, sw
	}
	var body *countingBody
	if r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody {
		body = &countingBody{rc: r.Body}
		r.Body = body
	}
	completed := false
	defer func() {
		status := rec.Status()
		switch {
		case status != 0:
		case completed:
			status = http.StatusOK // net/http's answer to a handler that sent nothing
		default:
			status = http.StatusInternalServerError // panicked: the client gets a closed connection
		}
		in := r.ContentLength
		if body != nil {
			in = body.n
		}
		end := time.Now()
		mw.rt.observe(r.Method, status, in, rec.Written(), end.Sub(start), end)
	}()
	mw.next.ServeHTTP(w, r)
	completed = true
}

func (rt *Route) observe(method string, status int, in, out int64, d time.Duration, now time.Time) {
	mi, ci := methodIndex(method), codeIndex(status)
	bi := len(durationBounds)
	for i, b := range durationBounds {
		if d <= b {
			bi = i
			break
		}
	}
	li := latencyBucket(d)
	sec := now.Unix()
	rt.mu.Lock()
	rt.requests[mi][ci]++
	rt.durs[bi]++
	rt.durSum += d
	rt.bytesIn += uint64(max(in, 0))
	rt.bytesOut += uint64(max(out, 0))
	rt.win.add(sec, li)
	rt.mu.Unlock()
}

// countingBody counts the bytes read from a body of unknown length.
type countingBody struct {
	rc io.ReadCloser
	n  int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n += int64(n)
	return n, err
}

func (b *countingBody) Close() error { return b.rc.Close() }

// statusWriter records the status and body size when no access log does.
// Like the access log's recorder, it keeps Flush, WriteString and ReadFrom
// (sendfile) reachable, and the rest through Unwrap.
type statusWriter struct {
	rw     http.ResponseWriter
	head   bool
	status int
	bytes  int64
}

var (
	_ http.Flusher    = (*statusWriter)(nil)
	_ io.ReaderFrom   = (*statusWriter)(nil)
	_ io.StringWriter = (*statusWriter)(nil)
)

func (w *statusWriter) Header() http.Header { return w.rw.Header() }

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && (code < 100 || code > 199 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.rw.WriteHeader(code)
}

func (w *statusWriter) implicit() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
}

func (w *statusWriter) count(n int64) {
	if !w.head {
		w.bytes += n
	}
}

func (w *statusWriter) Write(p []byte) (int, error) {
	w.implicit()
	n, err := w.rw.Write(p)
	w.count(int64(n))
	return n, err
}

func (w *statusWriter) WriteString(s string) (int, error) {
	w.implicit()
	n, err := io.WriteString(w.rw, s)
	w.count(int64(n))
	return n, err
}

func (w *statusWriter) ReadFrom(src io.Reader) (int64, error) {
	w.implicit()
	var n int64
	var err error
	if rf, ok := w.rw.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(w.rw, src)
	}
	w.count(n)
	return n, err
}

func (w *statusWriter) Flush() { _ = w.FlushError() }

func (w *statusWriter) FlushError() error {
	w.implicit()
	return http.NewResponseController(w.rw).Flush()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.rw }
func (w *statusWriter) Status() int                 { return w.status }
func (w *statusWriter) Written() int64              { return w.bytes }

// The sliding window: the last windowSeconds one-second slots, each a
// request count and a log-scale latency histogram, rotated lazily (a slot
// is cleared when a request of a new second lands in it).
const windowSeconds = 60

// Latency buckets of the window: exact below 4 µs, then four per octave
// (each about 19% wide) up to the last, which takes everything from about
// 60 s up.
const latencyBuckets = 100

type window struct {
	slots [windowSeconds]slot
}

type slot struct {
	sec   int64 // unix second the slot holds; 0: empty
	count uint32
	hist  [latencyBuckets]uint32
}

func (w *window) add(sec int64, bucket int) {
	s := &w.slots[sec%windowSeconds]
	if s.sec != sec {
		*s = slot{sec: sec}
	}
	s.count++
	s.hist[bucket]++
}

// latencyBucket is the window bucket of d.
func latencyBucket(d time.Duration) int {
	us := uint64(max(d, 0) / time.Microsecond)
	if us < 4 {
		return int(us)
	}
	n := bits.Len64(us) // us is in [2^(n-1), 2^n)
	sub := int(us>>(n-3)) & 3
	return min(4*(n-2)+sub, latencyBuckets-1)
}

// bucketMid is a representative latency of bucket i: the middle of its
// range.
func bucketMid(i int) time.Duration {
	if i < 4 {
		return time.Duration(i)*time.Microsecond + time.Microsecond/2
	}
	n, sub := i/4+2, i%4
	lo := uint64(4+sub) << (n - 3)
	hi := uint64(5+sub) << (n - 3)
	return time.Duration(lo+hi) * time.Microsecond / 2
}

// RouteStats is one route's traffic, for the status page.
type RouteStats struct {
	// Site is the site's first host as written in the config ("default").
	Site string `json:"site"`
	// Route is the route's name, or its index in the site ("0", "1", ...).
	Route string `json:"route"`
	// Requests is the number of requests answered in the window: the last
	// minute (the second under way and the 59 before it).
	Requests int64 `json:"requests"`
	// RPS is the request rate over the last minute, or since the route was
	// configured if that is shorter.
	RPS float64 `json:"rps"`
	// P50 and P99 are the median and 99th percentile of the last minute's
	// request durations (about 10% precision); 0 without requests.
	P50 time.Duration `json:"p50"`
	P99 time.Duration `json:"p99"`
}

// stats summarizes the route at now.
func (rt *Route) stats(now time.Time) RouteStats {
	st := RouteStats{Site: rt.site, Route: rt.name}
	var hist [latencyBuckets]uint64
	var inWindow uint64
	nowSec := now.Unix()
	rt.mu.Lock()
	for i := range rt.win.slots {
		s := &rt.win.slots[i]
		if s.sec <= nowSec-windowSeconds || s.sec > nowSec {
			continue
		}
		inWindow += uint64(s.count)
		for j, n := range s.hist {
			hist[j] += uint64(n)
		}
	}
	rt.mu.Unlock()
	span := min(now.Sub(rt.created), windowSeconds*time.Second)
	span = max(span, time.Second)
	st.Requests = int64(inWindow)
	st.RPS = float64(inWindow) / span.Seconds()
	if inWindow > 0 {
		st.P50 = quantile(&hist, inWindow, 0.50)
		st.P99 = quantile(&hist, inWindow, 0.99)
	}
	return st
}

func quantile(hist *[latencyBuckets]uint64, total uint64, q float64) time.Duration {
	rank := uint64(q*float64(total) + 0.5)
	rank = min(max(rank, 1), total)
	var seen uint64
	for i, n := range hist {
		seen += n
		if seen >= rank {
			return bucketMid(i)
		}
	}
	return bucketMid(latencyBuckets - 1)
}
