// Package metrics exports Portico's counters in the Prometheus text format
// (GET /metrics on the admin listener) and keeps each route's last minute
// of traffic for the status page.
//
// The packages on the request path do not import Prometheus: they keep
// plain atomic counters and expose snapshots (worker.Pool.Counts,
// proxy.Pool.Status, static.Handler.CacheStats, server.HTTP.Stats ...),
// which the composition root hands over here as Sources of plain values;
// the collectors read them at scrape time. Only the per-route request
// counters are kept here, by the middleware Route.Wrap puts around each
// route's handler.
//
// A reload serves a new generation of sources while the old one finishes
// its requests. Counters must not go backwards for an app, a route or an
// upstream that stays: a counter's value is the sum over the distinct live
// sources that report it plus what retired sources had counted (Detach
// carries their final values); gauges come from the newest generation.
// A series whose app, route or upstream is no longer configured goes away.
// Routes' own counters live in Route objects kept by (site, route) across
// generations.
//
// The registry is the package's own, never the global default one: it has
// the Go runtime and process collectors and this package's.
package metrics

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the set of Portico's metrics. Its methods are safe for
// concurrent use.
type Metrics struct {
	reg *prometheus.Registry
	now func() time.Time

	mu        sync.Mutex
	routes    map[routeKey]*Route
	gens      []*Sources // live generations, oldest first
	base      map[string]*series
	listeners []Listener
}

type routeKey struct{ site, route string }

// New returns an empty set with the Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg:    prometheus.NewRegistry(),
		now:    time.Now,
		routes: map[routeKey]*Route{},
		base:   map[string]*series{},
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		(*collector)(m),
	)
	return m
}

// Handler serves the metrics in the Prometheus text format (or the
// protobuf one, as the scraper asks).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Route returns the counters of a site's route, creating them on first
// use; the same (site, route) gets the same Route across reloads, so that
// its counters go on. site is the site's first host as written ("default"
// included); route its name or index.
func (m *Metrics) Route(site, route string) *Route {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := routeKey{site, route}
	rt := m.routes[k]
	if rt == nil {
		rt = &Route{site: site, name: route, created: m.now()}
		m.routes[k] = rt
	}
	return rt
}

// RouteStats returns every configured route's traffic at now, by site and
// route.
func (m *Metrics) RouteStats(now time.Time) []RouteStats {
	m.mu.Lock()
	routes := make([]*Route, 0, len(m.routes))
	for _, rt := range m.routes {
		routes = append(routes, rt)
	}
	m.mu.Unlock()
	out := make([]RouteStats, len(routes))
	for i, rt := range routes {
		out[i] = rt.stats(now)
	}
	slices.SortFunc(out, func(a, b RouteStats) int {
		if c := strings.Compare(a.Site, b.Site); c != 0 {
			return c
		}
		return compareRoute(a.Route, b.Route)
	})
	return out
}

// compareRoute orders indexes numerically, before names.
func compareRoute(a, b string) int {
	ai, aerr := strconv.Atoi(a)
	bi, berr := strconv.Atoi(b)
	switch {
	case aerr == nil && berr == nil:
		return ai - bi
	case aerr == nil:
		return -1
	case berr == nil:
		return 1
	}
	return strings.Compare(a, b)
}

// Sources are what one generation of the config serves, read at each
// scrape. Key identifies a source across generations (the pool itself): a
// source that two generations share (an app kept by a reload) is counted
// once.
type Sources struct {
	Apps      []App
	Upstreams []UpstreamGroup
	Static    []Static
	// Routes are the (site, route) pairs configured; the others' counters
	// go away.
	Routes [][2]string
	// Limits are the request limits of the routes.
	Limits []Limit
	// Caches are the routes' response caches.
	Caches []ResponseCache
	// Compressors are the routes' compression of app and proxy answers.
	Compressors []Compressor
}

// ResponseCache is one route's HTTP cache (the cache key of a route).
type ResponseCache struct {
	Site, Route string
	Key         any
	Stats       func() ResponseCacheStats
}

// ResponseCacheStats is a snapshot of a route's cache.
type ResponseCacheStats struct {
	// Answers by X-Cache: hit, miss, stale, bypass, expired, revalidated.
	Results map[string]int64
	Stores  int64 // responses stored
	Evicted int64 // entries dropped to make room
	Errors  int64 // failed store operations (Redis down)
	Entries int64 // entries held (memory store; 0 with Redis)
	Bytes   int64 // bytes held (memory store; 0 with Redis)
}

// Compressor is one route's compression.
type Compressor struct {
	Site, Route string
	Key         any
	Stats       func() []CodingStats
}

// CodingStats counts the answers compressed with one coding.
type CodingStats struct {
	Coding    string // br, zstd, gzip
	Responses int64
	BytesIn   int64 // before compression
	BytesOut  int64 // after
}

// Limit is one limit (limit_req, limit_conn) on one route.
type Limit struct {
	Site, Route string
	// Limit names it: "site.limit_req", "route.limit_req",
	// "site.limit_conn", "route.limit_conn".
	Limit    string
	Key      any
	Rejected func() int64 // requests refused since the limit was built
}

// App is one app's worker pool.
type App struct {
	Name  string
	Key   any
	Stats func() AppStats
}

// AppStats is a snapshot of a worker pool.
type AppStats struct {
	Workers []Worker
	Queued  int
	// Counters since the pool was created.
	Shed                int64 // 503s: queue full or queue timeout
	TimeoutsUnwound     int64 // 504s whose request unwound after its interrupt
	TimeoutsKilled      int64 // 504s whose worker was killed
	Crashes             int64 // serving workers that died on their own
	RecyclesMaxRequests int64
	RecyclesMaxRSS      int64
	RecyclesReload      int64
	QueueWait           Histogram
}

// Worker is one worker process.
type Worker struct {
	ID       int
	State    string // starting, idle, busy, retiring
	RSS      int64  // bytes; 0: unknown
	Requests int64
}

// Histogram is a snapshot of a histogram: Counts[i] observations were at
// most Bounds[i] (and above Bounds[i-1]); the last count, one past Bounds,
// is those above every bound.
type Histogram struct {
	Bounds []float64
	Counts []uint64
	Sum    float64
}

// UpstreamGroup is a proxy route's upstreams.
type UpstreamGroup struct {
	Site, Route string
	Key         any
	Stats       func() []UpstreamStats
}

// UpstreamStats is a snapshot of one upstream.
type UpstreamStats struct {
	Name     string
	Up       bool
	InFlight int64
	Requests int64
	Failures int64
	Retries  int64
	Latency  time.Duration // moving average of the response-head latency
}

// Static is a static route's caches.
type Static struct {
	Site, Route string
	Key         any
	Stats       func() CacheStats
}

// CacheStats counts lookups in a static route's memory (file) cache and
// compression cache.
type CacheStats struct {
	MemoryHits, MemoryMisses           int64
	CompressionHits, CompressionMisses int64
}

// Listener is one listening socket's server.
type Listener struct {
	Name  string // its address
	Stats func() ListenerStats
}

// ListenerStats is a snapshot of a listener.
type ListenerStats struct {
	Open, Idle int64 // connections now; idle: waiting for their next request
	Accepted   int64
	Refused    int64
}

// Attach makes s the newest generation: its gauges are the ones exported.
// Routes that no live generation has are forgotten. Attach only right
// after building s (Route for each of its routes), in the goroutine that
// builds: a route made for a generation not yet attached would be
// forgotten too.
func (m *Metrics) Attach(s *Sources) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gens = append(m.gens, s)
	m.pruneRoutesLocked()
}

// pruneRoutesLocked forgets the routes no live generation has.
func (m *Metrics) pruneRoutesLocked() {
	keep := map[routeKey]bool{}
	for _, g := range m.gens {
		for _, r := range g.Routes {
			keep[routeKey{r[0], r[1]}] = true
		}
	}
	for k := range m.routes {
		if !keep[k] {
			delete(m.routes, k)
		}
	}
}

// Detach retires s, whose sources have stopped counting (its requests are
// done, its pools stopped): the counts of its sources that no live
// generation shares are carried on. Detaching an unknown s does nothing.
func (m *Metrics) Detach(s *Sources) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := slices.Index(m.gens, s)
	if i < 0 {
		return
	}
	m.gens = slices.Delete(m.gens, i, i+1)
	shared := map[any]bool{}
	for _, g := range m.gens {
		g.keys(func(k any) { shared[k] = true })
	}
	acc := newAccumulator()
	s.counters(acc, shared)
	for k, v := range acc.series {
		if b := m.base[k]; b != nil {
			b.merge(v)
		} else {
			m.base[k] = v
		}
	}
}

// SetListeners replaces the listeners reported.
func (m *Metrics) SetListeners(ls []Listener) {
	m.mu.Lock()
	m.listeners = slices.Clone(ls)
	m.mu.Unlock()
}

// keys calls f with each source's key.
func (s *Sources) keys(f func(any)) {
	for _, a := range s.Apps {
		f(a.Key)
	}
	for _, u := range s.Upstreams {
		f(u.Key)
	}
	for _, st := range s.Static {
		f(st.Key)
	}
	for _, l := range s.Limits {
		f(l.Key)
	}
}

// counters adds the counters of s's sources not in skip to acc.
func (s *Sources) counters(acc *accumulator, skip map[any]bool) {
	for _, a := range s.Apps {
		if !skip[a.Key] {
			appCounters(acc, a.Name, a.Stats())
		}
	}
	for _, g := range s.Upstreams {
		if !skip[g.Key] {
			for _, u := range g.Stats() {
				upstreamCounters(acc, g.Site, g.Route, u)
			}
		}
	}
	for _, st := range s.Static {
		if !skip[st.Key] {
			staticCounters(acc, st.Site, st.Route, st.Stats())
		}
	}
	for _, l := range s.Limits {
		if !skip[l.Key] {
			acc.counter(descLimitRejected, l.Rejected(), l.Site, l.Route, l.Limit)
		}
	}
}
