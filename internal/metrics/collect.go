package metrics

import (
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// The metrics; README.md's "### Metrics" table lists them.
var (
	descRequests = prometheus.NewDesc("portico_http_requests_total",
		"HTTP requests answered, by site, route, method and status class.", []string{"site", "route", "method", "code"}, nil)
	descDuration = prometheus.NewDesc("portico_http_request_duration_seconds",
		"Time from the request's routing to the end of its response.", []string{"site", "route"}, nil)
	descBytesIn = prometheus.NewDesc("portico_http_request_bytes_total",
		"Request body bytes received (the Content-Length, or the bytes read of a chunked body).", []string{"site", "route"}, nil)
	descBytesOut = prometheus.NewDesc("portico_http_response_bytes_total",
		"Response body bytes sent.", []string{"site", "route"}, nil)

	descWorkers = prometheus.NewDesc("portico_app_workers",
		"Worker processes by state.", []string{"app", "state"}, nil)
	descQueue = prometheus.NewDesc("portico_app_queue_length",
		"Requests waiting for a free worker.", []string{"app"}, nil)
	descQueueWait = prometheus.NewDesc("portico_app_queue_wait_seconds",
		"Time requests waited for a free worker (0 for those that found one).", []string{"app"}, nil)
	descShed = prometheus.NewDesc("portico_app_shed_total",
		"Requests answered 503 because the queue was full or the wait passed the queue timeout.", []string{"app"}, nil)
	descTimeouts = prometheus.NewDesc("portico_app_timeouts_total",
		"Requests answered 504 at their timeout, by what became of the app code: unwound after its interrupt, or killed with its worker.", []string{"app", "outcome"}, nil)
	descCrashes = prometheus.NewDesc("portico_app_crashes_total",
		"Serving workers that died on their own (not killed at a timeout).", []string{"app"}, nil)
	descRecycles = prometheus.NewDesc("portico_app_recycles_total",
		"Workers replaced by reason: max_requests, max_rss, reload.", []string{"app", "reason"}, nil)
	descWorkerRSS = prometheus.NewDesc("portico_app_worker_rss_bytes",
		"Resident memory of each live worker process.", []string{"app", "worker"}, nil)
	descWorkerRequests = prometheus.NewDesc("portico_app_worker_requests_total",
		"Requests each live worker process has finished.", []string{"app", "worker"}, nil)

	descUpstreamUp = prometheus.NewDesc("portico_upstream_up",
		"1 while the upstream is in rotation (passive and active health), else 0.", []string{"site", "route", "upstream"}, nil)
	descUpstreamInFlight = prometheus.NewDesc("portico_upstream_in_flight",
		"Requests in flight on the upstream.", []string{"site", "route", "upstream"}, nil)
	descUpstreamRequests = prometheus.NewDesc("portico_upstream_requests_total",
		"Requests sent to the upstream (each try counts).", []string{"site", "route", "upstream"}, nil)
	descUpstreamFailures = prometheus.NewDesc("portico_upstream_failures_total",
		"Failures counted against the upstream: no connection, a timeout, a broken response, a 502/503/504 answer.", []string{"site", "route", "upstream"}, nil)
	descUpstreamRetries = prometheus.NewDesc("portico_upstream_retries_total",
		"Requests that failed on the upstream and were tried on another.", []string{"site", "route", "upstream"}, nil)
	descUpstreamLatency = prometheus.NewDesc("portico_upstream_latency_seconds",
		"Moving average (1/8 weight) of the upstream's response-head latency.", []string{"site", "route", "upstream"}, nil)

	descConns = prometheus.NewDesc("portico_listener_connections",
		"Client connections now: open (all) and idle (waiting for their next request).", []string{"listener", "state"}, nil)
	descAccepted = prometheus.NewDesc("portico_listener_accepted_total",
		"Connections accepted.", []string{"listener"}, nil)
	descRefused = prometheus.NewDesc("portico_listener_refused_total",
		"Connections closed before a request could be read: a PROXY protocol header refused, a TLS handshake failed, a connection limit (limit_conn, max_connections).", []string{"listener"}, nil)

	descCacheHits = prometheus.NewDesc("portico_static_cache_hits_total",
		"Static route lookups answered from a cache: memory (file contents and metadata) or compression (compressed forms).", []string{"site", "route", "cache"}, nil)
	descCacheMisses = prometheus.NewDesc("portico_static_cache_misses_total",
		"Static route lookups the cache could not answer.", []string{"site", "route", "cache"}, nil)

	descRespCache = prometheus.NewDesc("portico_cache_requests_total",
		"Answers of routes with a cache, by X-Cache result: hit, miss, stale, bypass, expired, revalidated.", []string{"site", "route", "result"}, nil)
	descRespCacheStores = prometheus.NewDesc("portico_cache_stores_total",
		"Responses stored into a route's cache.", []string{"site", "route"}, nil)
	descRespCacheEvicted = prometheus.NewDesc("portico_cache_evictions_total",
		"Entries a route's memory cache dropped to make room.", []string{"site", "route"}, nil)
	descRespCacheErrors = prometheus.NewDesc("portico_cache_store_errors_total",
		"Failed operations on a route's cache store (Redis unreachable): the requests passed through uncached.", []string{"site", "route"}, nil)
	descRespCacheEntries = prometheus.NewDesc("portico_cache_entries",
		"Entries held by a route's memory cache.", []string{"site", "route"}, nil)
	descRespCacheBytes = prometheus.NewDesc("portico_cache_bytes",
		"Bytes held by a route's memory cache (keys, headers, bodies).", []string{"site", "route"}, nil)
	descCompressed = prometheus.NewDesc("portico_compress_responses_total",
		"App and proxy answers compressed, by coding.", []string{"site", "route", "coding"}, nil)
	descCompressIn = prometheus.NewDesc("portico_compress_bytes_in_total",
		"Bytes of app and proxy answers before compression, by coding.", []string{"site", "route", "coding"}, nil)
	descCompressOut = prometheus.NewDesc("portico_compress_bytes_out_total",
		"Bytes of app and proxy answers after compression, by coding.", []string{"site", "route", "coding"}, nil)

	descLimitRejected = prometheus.NewDesc("portico_limit_rejected_total",
		"Requests refused by a limit (429 from limit_req, 503 from limit_conn), by site, route and limit (site.limit_req, route.limit_req, site.limit_conn, route.limit_conn).", []string{"site", "route", "limit"}, nil)
)

// series is one counter or histogram series, summed over sources.
type series struct {
	desc   *prometheus.Desc
	labels []string
	value  float64
	hist   *Histogram // set for a histogram
}

func (s *series) merge(o *series) {
	if s.hist == nil {
		s.value += o.value
		return
	}
	for i := range s.hist.Counts {
		if i < len(o.hist.Counts) {
			s.hist.Counts[i] += o.hist.Counts[i]
		}
	}
	s.hist.Sum += o.hist.Sum
}

// accumulator sums counters by series.
type accumulator struct {
	series map[string]*series
	order  []string
}

func newAccumulator() *accumulator { return &accumulator{series: map[string]*series{}} }

func seriesKey(d *prometheus.Desc, labels []string) string {
	return d.String() + "\xff" + strings.Join(labels, "\xff")
}

func (a *accumulator) add(s *series) {
	k := seriesKey(s.desc, s.labels)
	if old := a.series[k]; old != nil {
		old.merge(s)
		return
	}
	a.series[k] = s
	a.order = append(a.order, k)
}

func (a *accumulator) counter(d *prometheus.Desc, v int64, labels ...string) {
	a.add(&series{desc: d, labels: labels, value: float64(v)})
}

func (a *accumulator) histogram(d *prometheus.Desc, h Histogram, labels ...string) {
	c := h
	c.Counts = append([]uint64(nil), h.Counts...)
	a.add(&series{desc: d, labels: labels, hist: &c})
}

func appCounters(a *accumulator, app string, st AppStats) {
	a.counter(descShed, st.Shed, app)
	a.counter(descTimeouts, st.TimeoutsUnwound, app, "unwound")
	a.counter(descTimeouts, st.TimeoutsKilled, app, "killed")
	a.counter(descCrashes, st.Crashes, app)
	a.counter(descRecycles, st.RecyclesMaxRequests, app, "max_requests")
	a.counter(descRecycles, st.RecyclesMaxRSS, app, "max_rss")
	a.counter(descRecycles, st.RecyclesReload, app, "reload")
	a.histogram(descQueueWait, st.QueueWait, app)
}

func upstreamCounters(a *accumulator, site, route string, u UpstreamStats) {
	a.counter(descUpstreamRequests, u.Requests, site, route, u.Name)
	a.counter(descUpstreamFailures, u.Failures, site, route, u.Name)
	a.counter(descUpstreamRetries, u.Retries, site, route, u.Name)
}

func staticCounters(a *accumulator, site, route string, st CacheStats) {
	a.counter(descCacheHits, st.MemoryHits, site, route, "memory")
	a.counter(descCacheMisses, st.MemoryMisses, site, route, "memory")
	a.counter(descCacheHits, st.CompressionHits, site, route, "compression")
	a.counter(descCacheMisses, st.CompressionMisses, site, route, "compression")
}

// cacheResults are the X-Cache values, each a series from the start.
var cacheResults = []string{"hit", "miss", "stale", "bypass", "expired", "revalidated"}

// collector is Metrics as a prometheus.Collector.
type collector Metrics

var allDescs = []*prometheus.Desc{
	descRequests, descDuration, descBytesIn, descBytesOut,
	descWorkers, descQueue, descQueueWait, descShed, descTimeouts, descCrashes, descRecycles, descWorkerRSS, descWorkerRequests,
	descUpstreamUp, descUpstreamInFlight, descUpstreamRequests, descUpstreamFailures, descUpstreamRetries, descUpstreamLatency,
	descConns, descAccepted, descRefused, descCacheHits, descCacheMisses,
	descLimitRejected,
	descRespCache, descRespCacheStores, descRespCacheEvicted, descRespCacheErrors, descRespCacheEntries, descRespCacheBytes,
	descCompressed, descCompressIn, descCompressOut,
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	m := (*Metrics)(c)
	m.mu.Lock()
	routes := make([]*Route, 0, len(m.routes))
	for _, rt := range m.routes {
		routes = append(routes, rt)
	}
	gens := append([]*Sources(nil), m.gens...)
	listeners := m.listeners
	// Counters: the distinct live sources, newest generation first, plus
	// what retired ones counted; gauges: the newest generation's.
	acc := newAccumulator()
	seen := map[any]bool{}
	for i := len(gens) - 1; i >= 0; i-- {
		g, newest := gens[i], i == len(gens)-1
		for _, a := range g.Apps {
			if seen[a.Key] {
				continue
			}
			seen[a.Key] = true
			st := a.Stats()
			appCounters(acc, a.Name, st)
			if newest {
				appGauges(ch, a.Name, st)
			}
		}
		for _, ug := range g.Upstreams {
			if seen[ug.Key] {
				continue
			}
			seen[ug.Key] = true
			for _, u := range ug.Stats() {
				upstreamCounters(acc, ug.Site, ug.Route, u)
				if newest {
					labels := []string{ug.Site, ug.Route, u.Name}
					up := 0.0
					if u.Up {
						up = 1
					}
					ch <- prometheus.MustNewConstMetric(descUpstreamUp, prometheus.GaugeValue, up, labels...)
					ch <- prometheus.MustNewConstMetric(descUpstreamInFlight, prometheus.GaugeValue, float64(u.InFlight), labels...)
					ch <- prometheus.MustNewConstMetric(descUpstreamLatency, prometheus.GaugeValue, u.Latency.Seconds(), labels...)
				}
			}
		}
		for _, st := range g.Static {
			if seen[st.Key] {
				continue
			}
			seen[st.Key] = true
			staticCounters(acc, st.Site, st.Route, st.Stats())
		}
		for _, l := range g.Limits {
			if seen[l.Key] {
				continue
			}
			seen[l.Key] = true
			acc.counter(descLimitRejected, l.Rejected(), l.Site, l.Route, l.Limit)
		}
		for _, rc := range g.Caches {
			if seen[rc.Key] {
				continue
			}
			seen[rc.Key] = true
			st := rc.Stats()
			for _, res := range cacheResults {
				acc.counter(descRespCache, st.Results[res], rc.Site, rc.Route, res)
			}
			acc.counter(descRespCacheStores, st.Stores, rc.Site, rc.Route)
			acc.counter(descRespCacheEvicted, st.Evicted, rc.Site, rc.Route)
			acc.counter(descRespCacheErrors, st.Errors, rc.Site, rc.Route)
			if newest {
				ch <- prometheus.MustNewConstMetric(descRespCacheEntries, prometheus.GaugeValue, float64(st.Entries), rc.Site, rc.Route)
				ch <- prometheus.MustNewConstMetric(descRespCacheBytes, prometheus.GaugeValue, float64(st.Bytes), rc.Site, rc.Route)
			}
		}
		for _, cz := range g.Compressors {
			if seen[cz.Key] {
				continue
			}
			seen[cz.Key] = true
			for _, cs := range cz.Stats() {
				acc.counter(descCompressed, cs.Responses, cz.Site, cz.Route, cs.Coding)
				acc.counter(descCompressIn, cs.BytesIn, cz.Site, cz.Route, cs.Coding)
				acc.counter(descCompressOut, cs.BytesOut, cz.Site, cz.Route, cs.Coding)
			}
		}
	}
	for k, b := range m.base {
		s := acc.series[k]
		if s == nil {
			delete(m.base, k) // its app, route or upstream is gone
			continue
		}
		s.merge(b)
	}
	m.mu.Unlock()

	for _, k := range acc.order {
		s := acc.series[k]
		if s.hist == nil {
			ch <- prometheus.MustNewConstMetric(s.desc, prometheus.CounterValue, s.value, s.labels...)
			continue
		}
		ch <- constHistogram(s.desc, *s.hist, s.labels...)
	}
	for _, rt := range routes {
		rt.collect(ch)
	}
	for _, l := range listeners {
		st := l.Stats()
		ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(st.Open), l.Name, "open")
		ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(st.Idle), l.Name, "idle")
		ch <- prometheus.MustNewConstMetric(descAccepted, prometheus.CounterValue, float64(st.Accepted), l.Name)
		ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(st.Refused), l.Name)
	}
}

func appGauges(ch chan<- prometheus.Metric, app string, st AppStats) {
	states := map[string]int{"starting": 0, "idle": 0, "busy": 0, "retiring": 0}
	for _, w := range st.Workers {
		states[w.State]++
		id := strconv.Itoa(w.ID)
		ch <- prometheus.MustNewConstMetric(descWorkerRSS, prometheus.GaugeValue, float64(w.RSS), app, id)
		ch <- prometheus.MustNewConstMetric(descWorkerRequests, prometheus.CounterValue, float64(w.Requests), app, id)
	}
	for state, n := range states {
		ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(n), app, state)
	}
	ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(st.Queued), app)
}

// constHistogram turns a Histogram (non-cumulative counts) into a
// Prometheus one (cumulative buckets).
func constHistogram(d *prometheus.Desc, h Histogram, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	var cum uint64
	for i, b := range h.Bounds {
		if i < len(h.Counts) {
			cum += h.Counts[i]
		}
		buckets[b] = cum
	}
	if len(h.Counts) > len(h.Bounds) {
		cum += h.Counts[len(h.Bounds)]
	}
	return prometheus.MustNewConstHistogram(d, cum, h.Sum, buckets, labels...)
}

// collect sends the route's series; only the method and status class pairs
// seen so far are sent.
func (rt *Route) collect(ch chan<- prometheus.Metric) {
	rt.mu.Lock()
	requests := rt.requests
	durs := rt.durs
	sum := rt.durSum
	in, out := rt.bytesIn, rt.bytesOut
	rt.mu.Unlock()
	for mi, byCode := range requests {
		for ci, n := range byCode {
			if n > 0 {
				ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(n), rt.site, rt.name, methods[mi], codes[ci])
			}
		}
	}
	h := Histogram{Bounds: make([]float64, len(durationBounds)), Counts: durs[:], Sum: sum.Seconds()}
	for i, b := range durationBounds {
		h.Bounds[i] = b.Seconds()
	}
	ch <- constHistogram(descDuration, h, rt.site, rt.name)
	ch <- prometheus.MustNewConstMetric(descBytesIn, prometheus.CounterValue, float64(in), rt.site, rt.name)
	ch <- prometheus.MustNewConstMetric(descBytesOut, prometheus.CounterValue, float64(out), rt.site, rt.name)
}
