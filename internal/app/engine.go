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

	"portico/internal/ban"
	"portico/internal/config"
	"portico/internal/limit"
	"portico/internal/metrics"
	"portico/internal/realip"
	"portico/internal/server"
	"portico/internal/systemd"
	"portico/internal/worker"
)

// Run serves cfg until ctx ends, then stops gracefully: listeners close,
// in-flight requests finish within cfg.ShutdownTimeout, workers stop.
//
// It starts in this order: the listeners (or the sockets systemd passed,
// opt.Inherited), so that a port in use fails before a slow import; the
// pidfile; the handler chain and its log files; the switch to cfg.User;
// the workers; then serving, and READY=1 to systemd (opt.Notify).
//
// A reload request (opt.Reload) with opt.Load set re-reads the config. An
// invalid config, or one whose new apps cannot start, is logged error by
// error and the running config stays. A valid one takes over atomically:
// apps whose settings did not change keep their pools, whose workers are
// restarted in place to load new code (unless reload_code is false: warm
// workers stay; see build);
// changed and new apps get new pools, started and ready before the switch;
// listeners that stay are never closed, new ones open before the switch,
// removed ones close after it; requests in flight finish on the old
// routing, whose static handlers, access log and retired pools are closed
// once the last of them is done.
func Run(ctx context.Context, cfg *config.Config, opt Options) error {
	e := &engine{log: opt.Logger, stderr: opt.Stderr, listeners: map[string]*listener{}, version: opt.Version, started: time.Now()}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.stderr == nil {
		e.stderr = os.Stderr
	}
	e.bans = ban.New(ban.Options{Logger: e.log})
	e.errc = make(chan error, 16)
	e.reloadReq = make(chan chan error)
	e.notify = opt.Notify
	e.onIdleDrop = opt.OnIdleDrop
	e.inherited = opt.Inherited
	if cfg.Admin != nil {
		e.metrics = metrics.New()
		e.routeStats = e.metricsRouteStats
	}

	// Sockets first, so that a port in use is reported before a slow
	// import, and so that connections made while the apps start wait in
	// the kernel's backlog; then, as root if need be, the pidfile and the
	// handler chain (its log files); then the switch to cfg.User; then
	// the workers, as that user.
	added, err := e.openListeners(cfg)
	if err == nil {
		err = e.openAdmin(cfg)
	}
	closeAll := func() {
		for _, l := range added {
			l.l.Close()
		}
		if e.admin != nil {
			e.admin.l.Close()
		}
		e.closeUnclaimed()
	}
	if err != nil {
		closeAll()
		return err
	}
	e.closeUnclaimed()
	id, err := cfg.Identity()
	if err != nil {
		closeAll()
		return err
	}
	if cfg.PIDFile != "" {
		if err := writePIDFile(cfg.PIDFile); err != nil {
			closeAll()
			return err
		}
		defer removePIDFile(cfg.PIDFile, e.log)
	}
	gen, fresh, _, err := e.prepare(cfg, nil)
	if err != nil {
		closeAll()
		return err
	}
	if id != nil {
		wasRoot := os.Getuid() == 0
		if wasRoot && id.UID >= 0 {
			handOver(logFiles(cfg), id.UID, e.log)
		}
		if err := dropPrivileges(id); err != nil {
			gen.close()
			closeAll()
			return err
		}
		if wasRoot {
			e.identity = id
			e.log.Info("switched user", "user", id.User, "uid", os.Getuid(), "gid", os.Getgid(), "groups", id.Groups)
		}
	}
	if err := e.startPools(ctx, cfg, nil, gen, fresh, nil); err != nil {
		closeAll()
		return err
	}
	e.cur.Store(gen)
	e.attachMetrics(gen)
	e.serve(added)
	e.metricsListeners()
	if e.admin != nil {
		e.serve([]*listener{e.admin})
	}
	if len(cfg.Apps) == 1 {
		a := cfg.Apps[0]
		e.log.Info("ready", "app", a.Module, "workers", a.Workers, "threads", a.Threads)
	} else {
		e.log.Info("ready", "apps", len(cfg.Apps), "sites", len(cfg.Sites))
	}
	e.notifyErr(e.notify.Ready(e.sdStatus()))
	wdCtx, wdStop := context.WithCancel(context.Background())
	defer wdStop()
	go e.notify.Watchdog(wdCtx, e.notifyErr)

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			e.notifyErr(e.notify.Stopping("stopping: finishing in-flight requests"))
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
			e.notifyErr(e.notify.Stopping("stopping: " + runErr.Error()))
			break loop
		case <-opt.Reload:
			e.notifyErr(e.notify.Reloading("reloading"))
			if opt.Load == nil {
				e.reloaded(e.reloadWorkers(ctx))
			} else {
				e.reloaded(e.reload(ctx, opt.Load))
			}
		case <-opt.Reopen:
			for _, f := range e.cur.Load().logs {
				if err := f.Reopen(); err != nil {
					e.log.Error("reopening the access log failed; the old file stays in use", "path", f.Path(), "err", err)
				}
			}
		case reply := <-e.reloadReq:
			e.notifyErr(e.notify.Reloading("reloading"))
			if opt.Load == nil {
				err := e.reloadWorkers(ctx)
				e.reloaded(err)
				reply <- err
			} else {
				err := e.reload(ctx, opt.Load)
				e.reloaded(err)
				reply <- err
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

	// For GET /status.
	version    string
	started    time.Time
	reloads    atomic.Int64                      // reloads applied
	routeStats func(now time.Time) []RouteStatus // per-route traffic; nil: none kept

	notify     *systemd.Notifier // nil: not under systemd's Type=notify
	onIdleDrop func()            // server.Options.OnIdleDrop of every HTTP listener
	inherited  []systemd.Socket  // passed by systemd, not yet taken by a listener
	identity   *config.Identity  // the user switched to at start; nil: none

	bans   *ban.Table    // X-Portico-Block bans: the process's, kept across reloads
	caches cacheRegistry // the route caches, kept across reloads while unchanged
}

// sdStatus is the STATUS= line systemd shows for the running config.
func (e *engine) sdStatus() string {
	g := e.cur.Load()
	return fmt.Sprintf("serving %d apps on %d listeners", len(g.cfg.Apps), len(e.listeners))
}

// reloaded ends a reload for systemd: READY=1 whether it failed or not,
// as the old config keeps serving after a failure.
func (e *engine) reloaded(err error) {
	status := e.sdStatus()
	if err != nil {
		status += "; the last reload failed: " + strings.SplitN(err.Error(), "\n", 2)[0]
	}
	e.notifyErr(e.notify.Ready(status))
}

// generation is one config's routing: the handler chain and the pools it
// uses. Requests hold a reference while they use it.
type generation struct {
	cfg     *config.Config
	handler http.Handler
	router  *router             // for X-Accel-Redirect / X-Sendfile lookups
	close   func()              // closes the chain (static handlers, access log)
	logs    []*LogFile          // the access log files, for reopening
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
	// The defer outside the loop: one inside is allocated on the heap, on
	// every request (6% of the CPU under h2load on a small file).
	g := e.acquire()
	defer g.release()
	g.handler.ServeHTTP(w, r)
}

// acquire returns the current generation, acquired.
func (e *engine) acquire() *generation {
	for {
		if g := e.cur.Load(); g.acquire() {
			return g
		}
	}
}

// build starts the pools cfg needs that prev does not have with the same
// settings, and builds the handler chain. On an error the pools it started
// are stopped.
//
// With prev set (a reload), an app whose settings did not change keeps its
// pool; unless its reload_code is false, that pool's workers are restarted
// in place (worker.Pool.Reload: the new ones are ready before the old ones
// retire), after every new pool has started, so that the new code is
// loaded. A failed restart fails the build: that app's old workers keep
// serving; the other apps, restarted at the same time, keep their new
// workers (there is no going back to old code). One INFO
// record per app says what happens to it and why.
func (e *engine) build(ctx context.Context, cfg *config.Config, prev *generation) (*generation, error) {
	g, fresh, restart, err := e.prepare(cfg, prev)
	if err != nil {
		return nil, err
	}
	if err := e.startPools(ctx, cfg, prev, g, fresh, restart); err != nil {
		return nil, err
	}
	return g, nil
}

// prepare is build's first half: the pools cfg needs (prev's where their
// settings did not change, those among them whose workers are to restart
// with the new code: restart; new ones not yet started: fresh) and the
// handler chain, which opens the log files. Run switches user between the
// two halves, so that the log files are opened as root and the workers
// start as the user. On an error nothing is left open.
func (e *engine) prepare(cfg *config.Config, prev *generation) (g *generation, fresh, restart []*appPool, err error) {
	g = &generation{cfg: cfg, pools: map[string]*appPool{}, done: make(chan struct{})}
	mounts := appMounts(cfg)
	for _, a := range cfg.Apps {
		if prev != nil {
			old, ok := prev.pools[a.Name]
			switch {
			case ok && old.mount == mounts[a.Name] && sameApp(old.app, a):
				g.pools[a.Name] = old
				if a.ReloadCode {
					restart = append(restart, old)
				} else {
					e.log.Info("keeping app workers", "app", a.Name, "reason", "reload_code = false")
				}
				continue
			case ok:
				e.log.Info("restarting app workers", "app", a.Name, "reason", "config changed")
			default:
				e.log.Info("starting app workers", "app", a.Name, "reason", "new app")
			}
		}
		plog := e.log
		if len(cfg.Apps) > 1 {
			plog = e.log.With("app", a.Name)
		}
		ap := &appPool{app: a, mount: mounts[a.Name]}
		wo := workerOptions(&a, ap.mount, plog)
		wo.InternalRedirect = e.internalRedirect
		if e.bans != nil {
			wo.ResponseHead = e.bans.Take
		}
		pool, err := worker.New(wo)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("creating app %s: %w", a.Name, err)
		}
		ap.pool = pool
		fresh = append(fresh, ap)
		g.pools[a.Name] = ap
	}
	apps := map[string]http.Handler{}
	for name, ap := range g.pools {
		apps[name] = ap.pool
	}
	h, rt, closeChain, logs, err := chain(cfg, apps, e.internalRedirect, e.bans, &e.caches, e.log, e.stderr)
	if err != nil {
		return nil, nil, nil, err
	}
	g.handler, g.router, g.close, g.logs = h, rt, closeChain, logs
	e.instrument(g)
	g.trusted, _ = realip.ParseTrusted(cfg.TrustedProxies) // chain checked it
	return g, fresh, restart, nil
}

// startPools is build's second half: it starts the fresh pools of g and
// waits until their workers are ready, then restarts the workers of the
// restart pools in place. On an error it stops the fresh pools and closes
// g's chain.
func (e *engine) startPools(ctx context.Context, cfg *config.Config, prev, g *generation, fresh, restart []*appPool) error {
	for i, ap := range fresh {
		if err := ap.pool.Start(ctx); err != nil {
			if len(cfg.Apps) > 1 || prev != nil {
				err = fmt.Errorf("starting app %s: %w", ap.app.Name, err)
			}
			for j := i; j >= 0; j-- {
				e.stopPool(fresh[j])
			}
			g.close()
			return err
		}
	}
	if err := e.restartWorkers(ctx, restart); err != nil {
		for j := len(fresh) - 1; j >= 0; j-- {
			e.stopPool(fresh[j])
		}
		g.close()
		return err
	}
	return nil
}

// sameApp reports whether a pool started for a serves b unchanged:
// reload_code says what a reload does with the pool, not how it runs.
func sameApp(a, b config.App) bool {
	a.ReloadCode, b.ReloadCode = false, false
	return reflect.DeepEqual(a, b)
}

// restartWorkers restarts the workers of aps in place, all at once, each
// pool's new workers ready before its old ones retire ("code reload"). The
// error names every app whose new workers failed; those keep their old
// workers.
func (e *engine) restartWorkers(ctx context.Context, aps []*appPool) error {
	errs := make([]error, len(aps))
	var wg sync.WaitGroup
	for i, ap := range aps {
		e.log.Info("restarting app workers", "app", ap.app.Name, "reason", "code reload")
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ap.pool.Reload(ctx); err != nil {
				errs[i] = fmt.Errorf("restarting app %s (code reload): %w; its old workers keep serving", ap.app.Name, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
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
func (e *engine) reloadWorkers(ctx context.Context) error {
	g := e.cur.Load()
	var errs []error
	for _, a := range g.cfg.Apps {
		e.log.Info("reloading workers", "app", a.Name)
		if err := g.pools[a.Name].pool.Reload(ctx); err != nil {
			e.log.Error("reload failed; the old workers keep serving", "app", a.Name, "err", err)
			errs = append(errs, fmt.Errorf("reloading app %s: %w; its old workers keep serving", a.Name, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	e.reloads.Add(1)
	return nil
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
	for _, k := range []struct{ key, old, new string }{
		{"user", old.cfg.User, cfg.User}, {"group", old.cfg.Group, cfg.Group}, {"pidfile", old.cfg.PIDFile, cfg.PIDFile},
		// Portico's own log is set up once, by the command, before the
		// config is served (SIGUSR1 and SIGHUP reopen its file).
		{"error_log", old.cfg.ErrorLog, cfg.ErrorLog}, {"log_format", old.cfg.LogFormat, cfg.LogFormat}, {"log_level", old.cfg.LogLevel, cfg.LogLevel},
	} {
		if k.old != k.new {
			err := fmt.Errorf("app: %s changed; restart portico to apply it", k.key)
			e.log.Error("reload failed; the running config stays", "err", err)
			return err
		}
	}
	if err := e.checkListenerLimits(cfg); err != nil {
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
				err = e.privilegeHint(fmt.Errorf("loading the certificate of %s: %w", lc.Addr, err))
				e.log.Error("reload failed; the running config stays", "err", err)
				return err
			}
			certs[l] = &cert
		}
	}
	gen, err := e.build(ctx, cfg, old)
	if err != nil {
		err = e.privilegeHint(err)
		e.log.Error("reload failed; the running config stays", "err", err)
		return err
	}
	// New listeners open after the new apps are ready, unlike at start:
	// a socket bound for a config that then fails would accept
	// connections into its backlog only to reset them when it closes,
	// while the running config serves on. A port in use costs a wasted
	// start of the new apps here, not an outage.
	added, err := e.openListeners(cfg)
	if err != nil {
		e.stopGeneration(gen, old)
		e.log.Error("reload failed; the running config stays", "err", err)
		return err
	}
	e.cur.Store(gen)
	e.reloads.Add(1)
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
	kept := 0 // apps whose workers were not restarted (reload_code = false)
	for _, a := range cfg.Apps {
		if old.pools[a.Name] == gen.pools[a.Name] && !a.ReloadCode {
			kept++
		}
	}
	e.log.Info("reloaded", "apps", len(cfg.Apps), "apps_restarted", len(cfg.Apps)-kept, "apps_kept", kept, "sites", len(cfg.Sites),
		"listeners_added", len(added), "listeners_removed", len(removed))
	return nil
}

// listener is one open socket and its server.
type listener struct {
	l        net.Listener
	key      string // see listenerKeys
	addr     string
	cert     atomic.Pointer[tls.Certificate] // TLS listeners
	redirect atomic.Pointer[httpsRedirect]   // redirect_https listeners; nil: serve
	serve    func() error
	shutdown func(context.Context) error
	close    func() error
	stats    func() metrics.ListenerStats // for the metrics
	limits   *limit.Listener              // limit_conn, max_connections; nil: none

	// setLimits applies the listener's limits (max_header_fields) from a
	// config, at start and on every reload; nil for uwsgi listeners.
	setLimits func(config.Listener)
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
// them and returns them (not yet serving); then it sets the HTTPS
// redirects of cfg's listeners (setRedirects). On an error it closes those
// it opened and records none.
func (e *engine) openListeners(cfg *config.Config) ([]*listener, error) {
	var added []*listener
	for i, key := range listenerKeys(cfg) {
		if _, ok := e.listeners[key]; ok {
			continue
		}
		lc := cfg.Listeners[i]
		nl, inherited, err := e.listen(lc.Addr, lc.SocketMode)
		if err != nil {
			for _, l := range added {
				l.l.Close()
			}
			return nil, e.privilegeHint(fmt.Errorf("listening on %s: %w", lc.Addr, err))
		}
		addr := nl.Addr().String()
		if nl.Addr().Network() == "unix" {
			addr = "unix:" + addr
		}
		l := &listener{key: key, addr: addr}
		if l.limits = listenerLimits(cfg, lc, nl, e.log); l.limits != nil {
			nl = l.limits
		}
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
			nl = server.TLSListener(nl, &tls.Config{
				MinVersion: tls.VersionTLS12,
				NextProtos: []string{"h2", "http/1.1"},
				// The certificate is re-read on reload; the listener stays.
				GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return l.cert.Load(), nil },
			})
		}
		l.l = nl
		switch lc.Protocol {
		case config.ProtoUWSGI:
			s := server.NewHTTP(e, server.Options{Logger: e.log})
			l.serve, l.shutdown, l.close = func() error { return s.ServeUWSGI(nl) }, s.Shutdown, s.Close
			l.stats = uwsgiStats(s, nl)
		default:
			s := server.NewHTTP(e.listenerHandler(l), server.Options{Logger: e.log, MaxHeaderFields: lc.MaxHeaderFields, OnIdleDrop: e.onIdleDrop})
			l.setLimits = func(lc config.Listener) { s.SetMaxHeaderFields(lc.MaxHeaderFields) }
			serve := s.Serve
			if lc.TLS != nil {
				serve = s.ServeTLS // HTTP/2 and HTTP/1.1 by ALPN
			}
			l.serve, l.shutdown, l.close = func() error { return serve(nl) }, s.Shutdown, s.Close
			l.stats = httpStats(s)
		}
		if lim, stats := l.limits, l.stats; lim != nil {
			l.stats = func() metrics.ListenerStats { st := stats(); st.Refused += lim.Rejected(); return st }
		}
		added = append(added, l)
		proto := lc.Protocol
		if lc.TLS != nil {
			proto = "https"
		}
		e.log.Info("listening", "proto", proto, "addr", addr, "proxy_protocol", lc.ProxyProtocol, "inherited", inherited)
	}
	for _, l := range added {
		e.listeners[l.key] = l
	}
	e.setRedirects(cfg)
	e.setListenerLimits(cfg)
	for i, key := range listenerKeys(cfg) {
		if l := e.listeners[key]; l != nil && l.setLimits != nil {
			l.setLimits(cfg.Listeners[i])
		}
	}
	return added, nil
}

// serve starts a Serve goroutine for each listener.
func (e *engine) serve(ls []*listener) {
	for _, l := range ls {
		e.serving.Add(1)
		go func() {
			defer e.serving.Done()
			if err := l.serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
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
