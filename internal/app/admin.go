package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"portico/internal/config"
	"portico/internal/proxy"
	"portico/internal/server"
)

// adminHandler serves the admin listener:
//
//	GET  /         the status page: HTML that polls /status (status.html)
//	GET  /status   a snapshot of the server, its workers, routes and
//	               upstreams as JSON (Status)
//	GET  /healthz  200 while the process runs
//	GET  /readyz   200 when every app has ready workers, every proxy route
//	               a healthy upstream, and no stop has begun; 503
//	               otherwise (a readiness probe)
//	GET  /upstreams each proxy route's upstreams as JSON: health, in-flight
//	               requests, failures, retries, latency average
//	GET  /config   the running config as JSON (durations in nanoseconds)
//	POST /reload   re-read the config, as SIGHUP does; 200, or 422 with
//	               the errors when the running config stays
//	GET  /metrics  Prometheus metrics (README.md, "### Metrics")
//	GET  /bans     the bans apps asked for (X-Portico-Block) as JSON,
//	               the one ending soonest first
//	DELETE /bans/ADDR  lift ADDR's ban: 200, 404 when it had none, 400
//	               when ADDR is not an IP address
//	POST /purge    remove entries from the route caches: url=URL (every
//	               stored variant of that URL) or prefix=URL (every URL
//	               starting so), in the query or a form; the scheme is
//	               optional; answers {"purged": N}
func (e *engine) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", e.serveStatusPage)
	mux.HandleFunc("GET /status", e.serveStatus)
	if e.metrics != nil {
		mux.Handle("GET /metrics", e.metrics.Handler())
	}
	mux.HandleFunc("GET /bans", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{"bans": e.bans.List()})
	})
	mux.HandleFunc("DELETE /bans/{addr}", func(w http.ResponseWriter, r *http.Request) {
		a, err := netip.ParseAddr(r.PathValue("addr"))
		if err != nil {
			http.Error(w, fmt.Sprintf("%q is not an IP address", r.PathValue("addr")), http.StatusBadRequest)
			return
		}
		if !e.bans.Lift(a) {
			http.Error(w, a.String()+" is not banned", http.StatusNotFound)
			return
		}
		e.log.Info("ban lifted", "client", a.String(), "by", "admin")
		fmt.Fprintln(w, "lifted", a)
	})
	mux.HandleFunc("POST /purge", func(w http.ResponseWriter, r *http.Request) {
		target, prefix := r.FormValue("url"), false
		if target == "" {
			target, prefix = r.FormValue("prefix"), true
		}
		if target == "" {
			http.Error(w, "POST /purge needs url=URL or prefix=URL", http.StatusBadRequest)
			return
		}
		n, err := e.cur.Load().router.purge(r.Context(), purgeTarget(target), prefix)
		if err != nil {
			e.log.Error("purge failed", "target", target, "prefix", prefix, "purged", n, "err", err)
			http.Error(w, "purge failed: "+err.Error(), http.StatusBadGateway)
			return
		}
		e.log.Info("cache purged", "target", target, "prefix", prefix, "purged", n)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]int{"purged": n})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if e.draining.Load() {
			http.Error(w, "stopping", http.StatusServiceUnavailable)
			return
		}
		g := e.cur.Load()
		var notReady []string
		for name, ap := range g.pools {
			if !ap.pool.Ready() {
				notReady = append(notReady, name)
			}
		}
		if len(notReady) > 0 {
			slices.Sort(notReady)
			http.Error(w, "apps without ready workers: "+strings.Join(notReady, ", "), http.StatusServiceUnavailable)
			return
		}
		var down []string
		for _, pr := range g.router.proxies {
			if !pr.handler.Pool().Healthy() {
				down = append(down, pr.site+" "+pr.path)
			}
		}
		if len(down) > 0 {
			http.Error(w, "proxy routes without a healthy upstream: "+strings.Join(down, ", "), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /upstreams", func(w http.ResponseWriter, r *http.Request) {
		type route struct {
			Site      string         `json:"site"`
			Path      string         `json:"path"`
			Queued    int            `json:"queued"`
			Upstreams []proxy.Status `json:"upstreams"`
		}
		routes := []route{}
		for _, pr := range e.cur.Load().router.proxies {
			p := pr.handler.Pool()
			routes = append(routes, route{Site: pr.site, Path: pr.path, Queued: p.Queued(), Upstreams: p.Status()})
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{"routes": routes})
	})
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(e.cur.Load().cfg)
	})
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		reply := make(chan error, 1)
		select {
		case e.reloadReq <- reply:
		case <-r.Context().Done():
			return
		}
		select {
		case err := <-reply:
			if err != nil {
				http.Error(w, err.Error(), http.StatusUnprocessableEntity)
				return
			}
			fmt.Fprintln(w, "reloaded")
		case <-r.Context().Done():
		}
	})
	return mux
}

// openAdmin opens the admin listener, if cfg has one; Run serves it once
// the apps are ready.
func (e *engine) openAdmin(cfg *config.Config) error {
	a := cfg.Admin
	if a == nil {
		return nil
	}
	nl, inherited, err := e.listen(a.Addr, 0o600)
	if err != nil {
		return fmt.Errorf("listening on admin %s: %w", a.Addr, err)
	}
	addr := nl.Addr().String()
	if nl.Addr().Network() == "unix" {
		addr = "unix:" + addr
	}
	s := server.NewHTTP(e.adminHandler(), server.Options{Logger: e.log, OnIdleDrop: e.onIdleDrop})
	e.admin = &listener{l: nl, key: "admin", addr: addr, serve: func() error { return s.Serve(nl) }, shutdown: s.Shutdown, close: s.Close}
	e.log.Info("listening", "proto", "admin", "addr", addr, "inherited", inherited)
	return nil
}

// closeAdmin stops the admin listener, last of all.
func (e *engine) closeAdmin(ctx context.Context) {
	if e.admin != nil {
		e.shutdown(ctx, []*listener{e.admin})
	}
}
