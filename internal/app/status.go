package app

import (
	_ "embed"
	"encoding/json"
	"net/http"
	"os"
	"runtime"
	"time"

	"portico/internal/proxy"
	"portico/internal/worker"
)

// Status is what the admin listener's GET /status answers: a snapshot of
// the server, its apps' workers, its routes' traffic and its proxy routes'
// upstreams, taken at Server.Now. Durations are seconds (float) unless the
// field name says otherwise (p50_ms); elapsed times are computed by the
// server, so that a client needs no clock of its own. The status page
// (GET /) and `portico top` read it; README.md documents it.
type Status struct {
	Server ServerStatus `json:"server"`
	// Apps are in config order.
	Apps []AppStatus `json:"apps"`
	// Routes are the per-route traffic figures over the last minute; empty
	// when the server keeps none.
	Routes []RouteStatus `json:"routes"`
	// Proxies are the proxy routes, in config order.
	Proxies []ProxyStatus `json:"proxies"`
}

// ServerStatus describes the portico process.
type ServerStatus struct {
	Version   string    `json:"version"`
	GoVersion string    `json:"go_version"`
	PID       int       `json:"pid"`
	Started   time.Time `json:"started"`
	Now       time.Time `json:"now"`
	Uptime    float64   `json:"uptime"` // seconds since Started
	// Reloads counts the reloads applied (SIGHUP, POST /reload) since start.
	Reloads int64 `json:"reloads"`
	// Draining is true once a stop has begun.
	Draining bool `json:"draining"`
}

// AppStatus is one app: its settings and its worker processes.
type AppStatus struct {
	Name   string `json:"name"`
	Module string `json:"module"`
	// Configured workers, threads per worker and request timeout (seconds).
	ConfiguredWorkers int     `json:"configured_workers"`
	Threads           int     `json:"threads"`
	Timeout           float64 `json:"timeout"`
	// Queued is the number of requests waiting for a free worker; QueueSize
	// its bound (503 past it).
	Queued    int `json:"queued"`
	QueueSize int `json:"queue_size"`
	// Workers are the live processes, by ID.
	Workers []WorkerStatus `json:"workers"`
}

// WorkerStatus is one worker process (see worker.WorkerStatus).
type WorkerStatus struct {
	ID         int       `json:"id"`
	PID        int       `json:"pid"`
	Generation int       `json:"generation"`
	State      string    `json:"state"` // starting, idle, busy, retiring
	Started    time.Time `json:"started"`
	Uptime     float64   `json:"uptime"`   // seconds since Started
	Requests   int64     `json:"requests"` // finished requests
	RSS        int64     `json:"rss"`      // bytes; 0 if unknown
	// Current are the requests it runs now, one per busy thread.
	Current []CurrentRequest `json:"current"`
}

// CurrentRequest is a request running in a worker.
type CurrentRequest struct {
	Slot    int       `json:"slot"` // the worker thread
	Method  string    `json:"method"`
	URI     string    `json:"uri"`
	Since   time.Time `json:"since"`
	Elapsed float64   `json:"elapsed"` // seconds it has run, at Server.Now
}

// RouteStatus is one route's traffic over the last minute.
type RouteStatus struct {
	Site  string `json:"site"`  // the site's first host
	Route string `json:"route"` // the route's config name or index
	// Requests is the number of requests in the window; RPS their rate.
	Requests int64   `json:"requests"`
	RPS      float64 `json:"rps"`
	// P50 and P99 are latency percentiles, in milliseconds.
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
}

// ProxyStatus is one proxy route and its upstreams.
type ProxyStatus struct {
	Site      string         `json:"site"`
	Route     string         `json:"route"` // the route's path as configured
	Queued    int            `json:"queued"`
	Upstreams []proxy.Status `json:"upstreams"`
}

// statusPage is the status page: one self-contained HTML file (inline CSS
// and script, no outside assets) that polls GET /status.
//
//go:embed status.html
var statusPage []byte

// status takes the snapshot GET /status answers.
func (e *engine) status(now time.Time) Status {
	g := e.cur.Load()
	st := Status{
		Server: ServerStatus{
			Version:   e.version,
			GoVersion: runtime.Version(),
			PID:       os.Getpid(),
			Started:   e.started,
			Now:       now,
			Uptime:    seconds(now.Sub(e.started)),
			Reloads:   e.reloads.Load(),
			Draining:  e.draining.Load(),
		},
		Apps:    []AppStatus{},
		Routes:  []RouteStatus{},
		Proxies: []ProxyStatus{},
	}
	for _, a := range g.cfg.Apps {
		ap := g.pools[a.Name]
		if ap == nil {
			continue
		}
		as := AppStatus{
			Name:              a.Name,
			Module:            a.Module,
			ConfiguredWorkers: a.Workers,
			Threads:           a.Threads,
			Timeout:           seconds(a.Timeout),
			Queued:            ap.pool.Queued(),
			QueueSize:         a.QueueSize,
			Workers:           []WorkerStatus{},
		}
		for _, w := range ap.pool.Workers() {
			as.Workers = append(as.Workers, workerStatus(w, now))
		}
		st.Apps = append(st.Apps, as)
	}
	if e.routeStats != nil {
		st.Routes = append(st.Routes, e.routeStats(now)...)
	}
	for _, pr := range g.router.proxies {
		p := pr.handler.Pool()
		st.Proxies = append(st.Proxies, ProxyStatus{Site: pr.site, Route: pr.path, Queued: p.Queued(), Upstreams: p.Status()})
	}
	return st
}

func workerStatus(w worker.WorkerStatus, now time.Time) WorkerStatus {
	ws := WorkerStatus{
		ID:         w.ID,
		PID:        w.PID,
		Generation: w.Generation,
		State:      w.State,
		Started:    w.Started,
		Uptime:     seconds(now.Sub(w.Started)),
		Requests:   w.Requests,
		RSS:        w.RSS,
		Current:    make([]CurrentRequest, 0, len(w.Current)),
	}
	for _, c := range w.Current {
		ws.Current = append(ws.Current, CurrentRequest{Slot: c.Slot, Method: c.Method, URI: c.URI, Since: c.Since, Elapsed: seconds(now.Sub(c.Since))})
	}
	return ws
}

// seconds is d in seconds, never negative (clocks of different goroutines
// may disagree by a little).
func seconds(d time.Duration) float64 {
	return max(d, 0).Seconds()
}

// serveStatus answers GET /status.
func (e *engine) serveStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(e.status(time.Now()))
}

// serveStatusPage answers GET /.
func (e *engine) serveStatusPage(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// Everything is inline: forbid the rest (script and style from this
	// file only, fetches to this origin only).
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(statusPage)
}
