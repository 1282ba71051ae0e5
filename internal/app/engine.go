package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"portico/internal/config"
	"portico/internal/metrics"
	"portico/internal/realip"
	"portico/internal/server"
	"portico/internal/uwsgi"
	"portico/internal/worker"
)

// Run serves cfg until ctx ends, then stops gracefully: listeners close,
// in-flight requests finish within cfg.ShutdownTimeout, workers stop.
//
// A reload request (opt.Reload) with opt.Load set re-reads the config. An
// invalid config, or one whose new apps cannot start, is logged error by
// error and the running config stays. A valid one takes over atomically:
// apps whose settings did not change keep their pools (warm workers);
// changed and new apps get new pools, started and ready before the switch;
// listeners that stay are never closed, new ones open before the switch,
// removed ones close after it; requests in flight finish on the old
// routing, whose static handlers, access log and retired pools are closed
// once the last of them is done.
func Run(ctx context.Context, cfg *config.Config, opt Options) error {
	e := &engine{log: opt.Logger, stderr: opt.Stderr, listeners: map[string]*listener{}}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.stderr == nil {
		e.stderr = os.Stderr
	}
	e.errc = make(chan error, 16)
	e.reloadReq = make(chan chan error)
	if cfg.Admin != nil {
		e.metrics = metrics.New()
	}

	// Workers first: an app that cannot be imported stops us before any
	// socket is opened.
	gen, err := e.build(ctx, cfg, nil)
	if err != nil {
		return err
	}
	e.cur.Store(gen)
	e.attachMetrics(gen)
	added, err := e.openListeners(cfg)
	if err != nil {
		e.stopGeneration(gen, nil)
		return err
	}
	e.serve(added)
	e.metricsListeners()
	if err := e.openAdmin(); err != nil {
		e.shutdown(context.Background(), added)
		e.serving.Wait()
		e.stopGeneration(gen, nil)
		return err
	}
	if len(cfg.Apps) == 1 {
		a := cfg.Apps[0]
		e.log.Info("ready", "app", a.Module, "workers", a.Workers, "threads", a.Threads)
	} else {
		e.log.Info("ready", "apps", len(cfg.Apps), "sites", len(cfg.Sites))
	}

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			// Readiness turns false first, then (after the admin's
			// shutdown_delay) the listeners close, then in-flight requests
			// finish.
			e.draining.Store(true)
			if a := e.cur.Load().cfg.Admin; a != nil && a.ShutdownDelay > 0 {
				e.log.Info("stopping: not ready; closing the listeners after the delay", "delay", a.ShutdownDelay)
				t := time.NewTimer(a.ShutdownDelay)
				<-t.C
			}
			e.log.Info("stopping: finishing in-flight requests", "grace", e.cur.Load().cfg.ShutdownTimeout)
			break loop
		case err := <-e.errc:
			runErr = fmt.Errorf("serving: %w", err)
			break loop
		case <-opt.Reload:
			if opt.Load == nil {
				e.reloadWorkers(ctx)
			} else {
				_ = e.reload(ctx, opt.Load)
			}
		case reply := <-e.reloadReq:
			if opt.Load == nil {
				e.reloadWorkers(ctx)
				reply <- nil
			} else {
				reply <- e.reload(ctx, opt.Load)
			}
		}
	}

	// Stop in reverse order of start: listeners and in-flight requests,
	// then the routing and the workers.
	cur := e.cur.Load()
	shutCtx, cancel := context.WithTimeout(context.Background(), cur.cfg.ShutdownTimeout)
	defer cancel()
	var ls []*listener
	for _, l := range e.listeners {
		ls = append(ls, l)
	}
	e.shutdown(shutCtx, ls)
	e.closeAdmin(shutCtx)
	e.serving.Wait()
	e.stopGeneration(cur, nil)
	e.retiring.Wait()
	e.log.Info("stopped")
	return runErr
}

// engine holds what Run serves; its fields change only in Run's goroutine,
// except cur, which requests read.
type engine struct {
	log    *slog.Logger
	stderr io.Writer

	cur       atomic.Pointer[generation]
	listeners map[string]*listener // by listenerKey
	errc      chan error           // a listener's Serve failed
	admin     *listener            // nil: none
	reloadReq chan chan error      // POST /reload asks Run's loop
	draining  atomic.Bool          // a stop has begun: /readyz says 503
	metrics   *metrics.Metrics     // nil without an admin listener
	serving   sync.WaitGroup       // Serve goroutines
	retiring  sync.WaitGroup       // goroutines retiring old generations
}

// generation is one config's routing: the handler chain and the pools it
// uses. Requests hold a reference while they use it.
type generation struct {
	cfg     *config.Config
	handler http.Handler
	router  *router             // for X-Accel-Redirect / X-Sendfile lookups
	close   func()              // closes the chain (static handlers, access log)
	pools   map[string]*appPool // by app name
	trusted *realip.Matcher     // trusted_proxies, for PROXY protocol headers
	metrics *metrics.Sources    // what the metrics read (nil: no metrics)

	refs    atomic.Int64
	retired atomic.Bool
	once    sync.Once
	done    chan struct{} // closed when retired and no request holds it
}

// appPool is one app's pool and the settings it was started with.
type appPool struct {
	app   config.App
	mount string
	pool  *worker.Pool
}

// acquire takes a reference, unless g is retired.
func (g *generation) acquire() bool {
	g.refs.Add(1)
	if g.retired.Load() {
		g.release()
		return false
	}
	return true
}

func (g *generation) release() {
	if g.refs.Add(-1) == 0 && g.retired.Load() {
		g.once.Do(func() { close(g.done) })
	}
}

// retire marks g retired; done closes once the last request is gone.
func (g *generation) retire() {
	g.retired.Store(true)
	if g.refs.Load() == 0 {
		g.once.Do(func() { close(g.done) })
	}
}

// internalRedirect serves an app's X-Accel-Redirect or X-Sendfile with the
// current routing (worker.Options.InternalRedirect).
func (e *engine) internalRedirect(w http.ResponseWriter, r *http.Request, status int, header http.Header) {
	e.cur.Load().router.internalRedirect(w, r, status, header, e.log)
}

// ServeHTTP sends the request to the current generation.
func (e *engine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for {
		g := e.cur.Load()
		if g.acquire() {
			defer g.release()
			g.handler.ServeHTTP(w, r)
			return
		}
	}
}

// build starts the pools cfg needs that prev does not have with the same
// settings, and builds the handler chain. On an error the pools it started
// are stopped.
func (e *engine) build(ctx context.Context, cfg *config.Config, prev *generation) (*generation, error) {
	g := &generation{cfg: cfg, pools: map[string]*appPool{}, done: make(chan struct{})}
	mounts := appMounts(cfg)
	var started []*appPool
	fail := func(err error) (*generation, error) {
		for i := len(started) - 1; i >= 0; i-- {
			e.stopPool(started[i])
		}
		return nil, err
	}
	for _, a := range cfg.Apps {
		if prev != nil {
			if old, ok := prev.pools[a.Name]; ok && old.mount == mounts[a.Name] && reflect.DeepEqual(old.app, a) {
				g.pools[a.Name] = old
				continue
			}
		}
		plog := e.log
		if len(cfg.Apps) > 1 {
			plog = e.log.With("app", a.Name)
		}
		ap := &appPool{app: a, mount: mounts[a.Name]}
		wo := workerOptions(&a, ap.mount, plog)
		wo.InternalRedirect = e.internalRedirect
		pool, err := worker.New(wo)
		if err != nil {
			return fail(fmt.Errorf("creating app %s: %w", a.Name, err))
		}
		ap.pool = pool
		started = append(started, ap)
		if err := pool.Start(ctx); err != nil {
			if len(cfg.Apps) > 1 || prev != nil {
				err = fmt.Errorf("starting app %s: %w", a.Name, err)
			}
			return fail(err)
		}
		g.pools[a.Name] = ap
	}
	apps := map[string]http.Handler{}
	for name, ap := range g.pools {
		apps[name] = ap.pool
	}
	h, rt, closeChain, err := chain(cfg, apps, e.internalRedirect, e.log, e.stderr)
	if err != nil {
		return fail(err)
	}
	g.handler, g.router, g.close = h, rt, closeChain
	e.instrument(g)
	g.trusted, _ = realip.ParseTrusted(cfg.TrustedProxies) // chain checked it
	return g, nil
}

func (e *engine) stopPool(ap *appPool) {
	ctx, cancel := context.WithTimeout(context.Background(), ap.app.Timeout+ap.app.Grace+5*time.Second)
	defer cancel()
	if err := ap.pool.Stop(ctx); err != nil {
		e.log.Warn("stopping workers", "app", ap.app.Name, "err", err)
	}
}

// stopGeneration retires g and, once its last request is done, closes its
// chain and stops its pools that next does not use. It waits for that.
func (e *engine) stopGeneration(g, next *generation) {
	g.retire()
	<-g.done
	g.close()
	names := make([]string, 0, len(g.pools))
	for _, a := range g.cfg.Apps {
		names = append(names, a.Name)
	}
	for i := len(names) - 1; i >= 0; i-- {
		ap := g.pools[names[i]]
		if ap == nil {
			continue
		}
		if next != nil && next.pools[names[i]] == ap {
			continue
		}
		e.stopPool(ap)
	}
	e.detachMetrics(g)
}

// reloadWorkers restarts the workers of every app (portico run's SIGHUP).
func (e *engine) reloadWorkers(ctx context.Context) {
	g := e.cur.Load()
	for _, a := range g.cfg.Apps {
		e.log.Info("reloading workers", "app", a.Name)
		if err := g.pools[a.Name].pool.Reload(ctx); err != nil {
			e.log.Error("reload failed; the old workers keep serving", "app", a.Name, "err", err)
		}
	}
}

// reload re-reads the config and switches to it if it is valid and its
// apps start; otherwise it logs every error and returns them.
func (e *engine) reload(ctx context.Context, load func() (*config.Config, error)) error {
	e.log.Info("reloading config")
	cfg, err := load()
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			e.log.Error("invalid config", "err", line)
		}
		e.log.Error("reload failed; the running config stays")
		return err
	}
	old := e.cur.Load()
	if !reflect.DeepEqual(old.cfg.Admin, cfg.Admin) {
		err := errors.New("app: the [admin] table changed; restart portico to apply it")
		e.log.Error("reload failed; the running config stays", "err", err)
		return err
	}
	// TLS listeners that stay get their certificate re-read (renewals).
	certs := map[*listener]*tls.Certificate{}
	for i, key := range listenerKeys(cfg) {
		l, ok := e.listeners[key]
		if lc := cfg.Listeners[i]; ok && lc.TLS != nil {
			cert, err := tls.LoadX509KeyPair(lc.TLS.Cert, lc.TLS.Key)
			if err != nil {
				err = fmt.Errorf("loading the certificate of %s: %w", lc.Addr, err)
				e.log.Error("reload failed; the running config stays", "err", err)
				return err
			}
			certs[l] = &cert
		}
	}
	gen, err := e.build(ctx, cfg, old)
	if err != nil {
		e.log.Error("reload failed; the running config stays", "err", err)
		return err
	}
	added, err := e.openListeners(cfg)
	if err != nil {
		e.stopGeneration(gen, old)
		e.log.Error("reload failed; the running config stays", "err", err)
		return err
	}
	e.cur.Store(gen)
	e.attachMetrics(gen)
	for l, cert := range certs {
		l.cert.Store(cert)
	}
	e.serve(added)
	// Listeners the new config does not have close now; their in-flight
	// requests finish first.
	var removed []*listener
	keep := map[string]bool{}
	for _, k := range listenerKeys(cfg) {
		keep[k] = true
	}
	for k, l := range e.listeners {
		if !keep[k] {
			removed = append(removed, l)
			delete(e.listeners, k)
		}
	}
	e.metricsListeners()
	e.retiring.Add(1)
	go func() {
		defer e.retiring.Done()
		if len(removed) > 0 {
			sctx, cancel := context.WithTimeout(context.Background(), old.cfg.ShutdownTimeout)
			e.shutdown(sctx, removed)
			cancel()
		}
		e.stopGeneration(old, gen)
	}()
	kept := 0
	for _, a := range cfg.Apps {
		if old.pools[a.Name] == gen.pools[a.Name] {
			kept++
		}
	}
	e.log.Info("reloaded", "apps", len(cfg.Apps), "apps_kept", kept, "sites", len(cfg.Sites),
		"listeners_added", len(added), "listeners_removed", len(removed))
	return nil
}

// listener is one open socket and its server.
type listener struct {
	l        net.Listener
	key      string // see listenerKeys
	addr     string
	cert     atomic.Pointer[tls.Certificate] // TLS listeners
	serve    func() error
	shutdown func(context.Context) error
	close    func() error
	stats    func() metrics.ListenerStats // for the metrics
}

// listenerKeys identifies the listeners of cfg across configs: protocol,
// address and mode, and a count for repeated addresses (port 0).
func listenerKeys(cfg *config.Config) []string {
	n := map[string]int{}
	keys := make([]string, len(cfg.Listeners))
	for i, lc := range cfg.Listeners {
		k := fmt.Sprintf("%s %s %o tls=%t proxy_protocol=%t", lc.Protocol, lc.Addr, lc.SocketMode, lc.TLS != nil, lc.ProxyProtocol)
		n[k]++
		keys[i] = fmt.Sprintf("%s #%d", k, n[k])
	}
	return keys
}

// openListeners opens the listeners of cfg that are not open yet, records
// them and returns them (not yet serving). On an error it closes those it
// opened and records none.
func (e *engine) openListeners(cfg *config.Config) ([]*listener, error) {
	var added []*listener
	for i, key := range listenerKeys(cfg) {
		if _, ok := e.listeners[key]; ok {
			continue
		}
		lc := cfg.Listeners[i]
		nl, err := server.Listen(lc.Addr, lc.SocketMode)
		if err != nil {
			for _, l := range added {
				l.l.Close()
			}
			return nil, fmt.Errorf("listening on %s: %w", lc.Addr, err)
		}
		addr := nl.Addr().String()
		if nl.Addr().Network() == "unix" {
			addr = "unix:" + addr
		}
		l := &listener{key: key, addr: addr}
		if lc.ProxyProtocol {
			// Under TLS: the header comes before the handshake. The
			// trusted list is the current generation's, so a reload that
			// changes trusted_proxies applies to listeners that stay.
			nl = server.ProxyListener(nl, server.ProxyOptions{
				Trusted: func(peer net.Addr) bool { return e.cur.Load().trusted.TrustedAddr(peer) },
				Logger:  e.log,
			})
		}
		if lc.TLS != nil {
			cert, err := tls.LoadX509KeyPair(lc.TLS.Cert, lc.TLS.Key)
			if err != nil {
				nl.Close()
				for _, l := range added {
					l.l.Close()
				}
				return nil, fmt.Errorf("loading the certificate of %s: %w", lc.Addr, err)
			}
			l.cert.Store(&cert)
			nl = tls.NewListener(nl, &tls.Config{
				MinVersion: tls.VersionTLS12,
				NextProtos: []string{"h2", "http/1.1"},
				// The certificate is re-read on reload; the listener stays.
				GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return l.cert.Load(), nil },
			})
		}
		l.l = nl
		switch lc.Protocol {
		case config.ProtoUWSGI:
			s := &uwsgi.Server{Handler: e, Logger: e.log}
			l.serve, l.shutdown, l.close = func() error { return s.Serve(nl) }, s.Shutdown, s.Close
			l.stats = uwsgiStats(s, nl)
		default:
			s := server.NewHTTP(e, server.Options{Logger: e.log})
			serve := s.Serve
			if lc.TLS != nil {
				serve = s.ServeTLS // HTTP/2 and HTTP/1.1 by ALPN
			}
			l.serve, l.shutdown, l.close = func() error { return serve(nl) }, s.Shutdown, s.Close
			l.stats = httpStats(s)
		}
		added = append(added, l)
		proto := lc.Protocol
		if lc.TLS != nil {
			proto = "https"
		}
		e.log.Info("listening", "proto", proto, "addr", addr, "proxy_protocol", lc.ProxyProtocol)
	}
	for _, l := range added {
		e.listeners[l.key] = l
	}
	return added, nil
}

// serve starts a Serve goroutine for each listener.
func (e *engine) serve(ls []*listener) {
	for _, l := range ls {
		e.serving.Add(1)
		go func() {
			defer e.serving.Done()
			if err := l.serve(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, uwsgi.ErrServerClosed) {
				select {
				case e.errc <- err:
				default:
				}
			}
		}()
	}
}

// shutdown stops ls gracefully, in parallel; connections still busy when
// ctx ends are closed.
func (e *engine) shutdown(ctx context.Context, ls []*listener) {
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.shutdown(ctx); err != nil {
				e.log.Warn("in-flight requests did not finish in time; closing their connections", "addr", l.addr, "err", err)
				_ = l.close()
			}
		}()
	}
	wg.Wait()
}
