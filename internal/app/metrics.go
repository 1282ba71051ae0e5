package app

import (
	"net"
	"slices"
	"strings"
	"time"

	"portico/internal/metrics"
	"portico/internal/proxy"
	"portico/internal/server"
	"portico/internal/static"
	"portico/internal/worker"
)

// The metrics exist when the config has an admin listener, which serves
// them (GET /metrics); without one, no route is wrapped and nothing is
// counted beyond the packages' own atomics.

// instrument wraps each route of g in its metrics middleware and records
// the sources the collectors read. g is not serving yet.
func (e *engine) instrument(g *generation) {
	if e.metrics == nil {
		return
	}
	src := &metrics.Sources{}
	for _, s := range g.router.sites() {
		site := s.hosts[0]
		for _, group := range [][]*route{s.exact, s.regex, s.prefix} {
			for _, r := range group {
				r.h = e.metrics.Route(site, r.label).Wrap(r.h)
				src.Routes = append(src.Routes, [2]string{site, r.label})
				for _, lc := range r.limits {
					src.Limits = append(src.Limits, metrics.Limit{Site: site, Route: r.label, Limit: lc.limit, Key: lc.n, Rejected: lc.n.Load})
				}
				if c := r.cache; c != nil {
					src.Caches = append(src.Caches, metrics.ResponseCache{Site: site, Route: r.label, Key: c,
						Stats: func() metrics.ResponseCacheStats { return responseCacheStats(c) }})
				}
				if cz := r.compressor; cz != nil {
					src.Compressors = append(src.Compressors, metrics.Compressor{Site: site, Route: r.label, Key: cz,
						Stats: func() []metrics.CodingStats { return compressStats(cz) }})
				}
				if r.static != nil {
					h := r.static
					src.Static = append(src.Static, metrics.Static{Site: site, Route: r.label, Key: h,
						Stats: func() metrics.CacheStats { return cacheStats(h.CacheStats()) }})
				}
			}
		}
	}
	names := make([]string, 0, len(g.pools))
	for name := range g.pools {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		pool := g.pools[name].pool
		src.Apps = append(src.Apps, metrics.App{Name: name, Key: pool, Stats: func() metrics.AppStats { return appStats(pool) }})
	}
	for _, pr := range g.router.proxies {
		p := pr.handler.Pool()
		src.Upstreams = append(src.Upstreams, metrics.UpstreamGroup{Site: pr.site, Route: pr.route, Key: p,
			Stats: func() []metrics.UpstreamStats { return upstreamStats(p) }})
	}
	g.metrics = src
}

// metricsRouteStats is each route's traffic over the last minute, for
// GET /status (engine.routeStats).
func (e *engine) metricsRouteStats(now time.Time) []RouteStatus {
	rs := e.metrics.RouteStats(now)
	out := make([]RouteStatus, 0, len(rs))
	for _, r := range rs {
		out = append(out, RouteStatus{Site: r.Site, Route: r.Route, Requests: r.Requests, RPS: r.RPS,
			P50: float64(r.P50) / float64(time.Millisecond), P99: float64(r.P99) / float64(time.Millisecond)})
	}
	return out
}

// attachMetrics makes g's sources the ones whose gauges are reported;
// call it once g is current.
func (e *engine) attachMetrics(g *generation) {
	if e.metrics != nil && g.metrics != nil {
		e.metrics.Attach(g.metrics)
	}
}

// detachMetrics carries the counts of g's sources on once g has stopped.
func (e *engine) detachMetrics(g *generation) {
	if e.metrics != nil && g.metrics != nil {
		e.metrics.Detach(g.metrics)
	}
}

// metricsListeners reports the open listeners (call it from Run's
// goroutine after each change of e.listeners).
func (e *engine) metricsListeners() {
	if e.metrics == nil {
		return
	}
	var ls []metrics.Listener
	for _, l := range e.listeners {
		if l.stats != nil {
			ls = append(ls, metrics.Listener{Name: l.addr, Stats: l.stats})
		}
	}
	slices.SortFunc(ls, func(a, b metrics.Listener) int { return strings.Compare(a.Name, b.Name) })
	e.metrics.SetListeners(ls)
}

// sites returns the router's sites, each once, in a stable order.
func (rt *router) sites() []*site {
	var out []*site
	seen := map[*site]bool{}
	add := func(s *site) {
		if s != nil && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, s := range rt.exact {
		add(s)
	}
	for _, w := range rt.wildcards {
		add(w.site)
	}
	add(rt.def)
	slices.SortFunc(out, func(a, b *site) int { return strings.Compare(a.hosts[0], b.hosts[0]) })
	return out
}

func appStats(pool *worker.Pool) metrics.AppStats {
	c := pool.Counts()
	st := metrics.AppStats{
		Queued:              pool.Queued(),
		Shed:                c.Queue.Shed,
		TimeoutsUnwound:     c.TimeoutsUnwound,
		TimeoutsKilled:      c.TimeoutsKilled,
		Crashes:             c.Crashes,
		RecyclesMaxRequests: c.RecyclesMaxRequests,
		RecyclesMaxRSS:      c.RecyclesMaxRSS,
		RecyclesReload:      c.RecyclesReload,
		QueueWait:           queueWait(c.Queue),
	}
	for _, w := range pool.Workers() {
		st.Workers = append(st.Workers, metrics.Worker{ID: w.ID, State: w.State, RSS: w.RSS, Requests: w.Requests})
	}
	return st
}

func queueWait(q proxy.QueueStats) metrics.Histogram {
	h := metrics.Histogram{Bounds: make([]float64, len(proxy.QueueWaitBounds)), Counts: make([]uint64, len(q.Waits)), Sum: q.WaitSum.Seconds()}
	for i, b := range proxy.QueueWaitBounds {
		h.Bounds[i] = b.Seconds()
	}
	for i, n := range q.Waits {
		h.Counts[i] = uint64(n)
	}
	return h
}

func upstreamStats(p *proxy.Pool) []metrics.UpstreamStats {
	sts := p.Status()
	out := make([]metrics.UpstreamStats, len(sts))
	for i, s := range sts {
		out[i] = metrics.UpstreamStats{Name: s.Name, Up: s.Healthy, InFlight: s.InFlight, Requests: s.Requests,
			Failures: s.Failures, Retries: s.Retries, Latency: time.Duration(s.LatencyMS * float64(time.Millisecond))}
	}
	return out
}

func cacheStats(c static.CacheStats) metrics.CacheStats {
	return metrics.CacheStats{MemoryHits: c.MemoryHits, MemoryMisses: c.MemoryMisses,
		CompressionHits: c.CompressionHits, CompressionMisses: c.CompressionMisses}
}

func httpStats(s *server.HTTP) func() metrics.ListenerStats {
	return func() metrics.ListenerStats {
		st := s.Stats()
		return metrics.ListenerStats{Open: st.Open, Idle: st.Idle, Accepted: st.Accepted, Refused: st.Refused}
	}
}

// uwsgiStats reports a uwsgi listener; l, if it reads PROXY headers,
// counts the connections it refused.
func uwsgiStats(s *server.HTTP, l net.Listener) func() metrics.ListenerStats {
	refused, _ := l.(interface{ Refused() int64 })
	return func() metrics.ListenerStats {
		all := s.Stats()
		st := metrics.ListenerStats{Open: all.Open, Accepted: all.Accepted}
		if refused != nil {
			st.Refused = refused.Refused()
		}
		return st
	}
}
