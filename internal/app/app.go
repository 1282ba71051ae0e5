// Package app is Portico's composition root: it turns a config.Config into
// each feature package's Options, builds the handler chain, and starts and
// stops everything in order.
package app

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"portico/internal/access"
	"portico/internal/accesslog"
	"portico/internal/ban"
	"portico/internal/config"
	"portico/internal/realip"
	"portico/internal/requestid"
	"portico/internal/static"
	"portico/internal/systemd"
	"portico/internal/uwsgi"
	"portico/internal/waf"
	"portico/internal/worker"
)

// Options are what the command gives Run besides the config.
type Options struct {
	// Logger receives Portico's own log. Nil: slog.Default().
	Logger *slog.Logger
	// Reload delivers a value for each reload request (SIGHUP).
	Reload <-chan struct{}
	// Load, when set, re-reads the config on each reload request: a valid
	// config replaces the running one (see Run); an invalid one is logged
	// and the running one stays. Nil (portico run): a reload request
	// restarts the workers of every app instead.
	Load func() (*config.Config, error)
	// Stderr is where "-" access logs go. Nil: os.Stderr.
	Stderr io.Writer
	// Version is the version GET /status reports. Empty: none.
	Version string
	// Notify receives systemd's sd_notify states: READY=1 once the apps
	// are ready and the listeners serve, RELOADING=1 and READY=1 around
	// each reload, STOPPING=1 when a stop begins, and WATCHDOG=1 pings.
	// Nil: none (systemd.NotifierFromEnv gives nil outside systemd).
	Notify *systemd.Notifier
	// Inherited are the sockets systemd passed (socket activation). Each
	// serves the configured listener (or admin listener) bound to its
	// address or named by its LISTEN_FDNAMES entry, instead of a socket
	// Portico would open; one no listener takes is logged and closed.
	// They stay open across reloads while their listener does.
	Inherited []systemd.Socket
	// Reopen delivers a value for each request to reopen the log files
	// (SIGUSR1, logrotate): the access log files of the running config
	// are opened again at their paths. A file that cannot be reopened
	// keeps the old one, and one error record says why.
	Reopen <-chan struct{}
	// OnIdleDrop is each HTTP listener's server.Options.OnIdleDrop: called
	// after a burst of connections went idle. Nil: nothing.
	OnIdleDrop func()
}

// ImportError is the error Run returns when an app cannot be imported
// (worker.ImportError, named here so that the command need not import
// worker): its Traceback is the Python traceback.
type ImportError = worker.ImportError

// appMounts returns each app's SCRIPT_NAME: the prefix of the prefix routes
// that lead to it (Validate makes sure there is one per app).
func appMounts(cfg *config.Config) map[string]string {
	m := map[string]string{}
	for _, s := range cfg.Sites {
		for _, r := range s.Routes {
			if r.App == "" {
				continue
			}
			if kind, p := r.PathKind(); kind == config.PathPrefix {
				m[r.App] = strings.TrimRight(p, "/")
			}
		}
	}
	return m
}

func workerOptions(a *config.App, scriptName string, log *slog.Logger) worker.Options {
	dir := a.Dir
	if dir != "" {
		if abs, err := filepath.Abs(dir); err == nil {
			dir = abs
		}
	}
	return worker.Options{
		App:          a.Module,
		Python:       a.Python,
		Dir:          dir,
		Env:          a.Env,
		Workers:      a.Workers,
		Threads:      a.Threads,
		Timeout:      a.Timeout,
		Grace:        a.Grace,
		MaxRequests:  a.MaxRequests,
		MaxRSS:       a.MaxRSS,
		MaxBody:      a.MaxBody,
		QueueSize:    a.QueueSize,
		QueueTimeout: a.QueueTimeout,
		ScriptName:   scriptName,
		Watch:        a.Reload,
		NormalSched:  a.Sched == config.SchedNormal,
		Logger:       log,
	}
}

// chain builds the fixed handler chain: real IP → request ID → access log
// → bans (nil: none) → router (site by Host, then route by path; each
// route guarded by its IP rules and WAF, see guard). The real-IP middleware
// comes first so that the access log and everything after it see the real
// client, and no untrusted forwarding header gets further; the request ID
// is set before the access log writes it and the app or an upstream sees
// it.
//
// The access log files it opens are returned for reopening.
func chain(cfg *config.Config, apps map[string]http.Handler, redirect redirectFunc, bans *ban.Table, caches *cacheRegistry, log *slog.Logger, stderr io.Writer) (http.Handler, *router, func(), []*LogFile, error) {
	var head func(*http.Request, http.Header) // what proxy routes do with an upstream's response head
	if bans != nil {
		head = bans.Take
	}
	r, closeRouter, err := buildRouter(cfg, apps, redirect, head, caches, log)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	var logs []*LogFile
	closers := []func(){closeRouter}
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	var h http.Handler = r
	if bans != nil {
		h = bans.Middleware(h)
	}
	switch cfg.AccessLog {
	case "off":
	default:
		var w io.Writer = stderr
		if cfg.AccessLog != "-" {
			f, err := OpenLogFile(cfg.AccessLog)
			if err != nil {
				closeAll()
				return nil, nil, nil, nil, fmt.Errorf("access log: %w", err)
			}
			closers = append(closers, func() { f.Close() })
			logs = append(logs, f)
			w = f
		}
		format := accesslog.Combined
		if cfg.AccessLogFormat == "json" {
			format = accesslog.JSON
		}
		h = accesslog.New(w, accesslog.Options{Format: format, Logger: log})(h)
	}
	trusted, err := realip.ParseTrusted(cfg.TrustedProxies)
	if err != nil {
		closeAll()
		return nil, nil, nil, nil, err
	}
	// A request's ID comes from the same peers as its client address: a
	// trusted one (realip then said so with an Origin, or the peer is in
	// the list) or the nginx in front of the uwsgi listener.
	h = requestid.Middleware(requestid.Options{Trusted: func(r *http.Request) bool {
		return uwsgi.OriginFrom(r.Context()) != nil || trusted.Trusted(realip.Peer(r))
	}})(h)
	h = realip.New(realip.Options{Trusted: trusted})(h)
	return h, r, closeAll, logs, nil
}

// redirectFunc serves an upstream's X-Accel-Redirect or X-Sendfile answer.
type redirectFunc func(w http.ResponseWriter, r *http.Request, status int, header http.Header)

// buildRouter turns the sites of cfg into a router; apps holds each app's
// handler by name; redirect serves proxy routes' X-Accel-Redirect answers
// (nil: relayed). The returned func closes the static handlers and stops
// the proxy routes' health checks.
func buildRouter(cfg *config.Config, apps map[string]http.Handler, redirect redirectFunc, head func(*http.Request, http.Header), caches *cacheRegistry, log *slog.Logger) (*router, func(), error) {
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	rt := &router{}
	wafs := map[string]*waf.WAF{} // one per distinct settings: the CRS loads once
	for _, sc := range cfg.Sites {
		s := rt.addSite(sc.Hosts)
		s.pages = newErrorPages(sc.ErrorPages, s, log)
		sl, err := newSiteLimits(sc, log)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		closers = append(closers, sl.closeFunc)
		siteAccess, err := access.ParseList("site", sc.Allow, sc.Deny)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("site %s: %w", sc.Hosts[0], err)
		}
		for j, rc := range sc.Routes {
			kind, p := rc.PathKind()
			r := &route{kind: kind, path: p, methods: rc.Methods, header: rc.Header, label: rc.Name}
			if r.label == "" {
				r.label = strconv.Itoa(j)
			}
			switch kind {
			case config.PathRegex:
				re, err := regexp.Compile(p)
				if err != nil {
					closeAll()
					return nil, nil, fmt.Errorf("compiling route %q: %w", rc.Path, err)
				}
				r.re = re
			case config.PathPrefix:
				r.path = strings.TrimRight(p, "/")
			}
			switch {
			case rc.Static != nil:
				sc := rc.Static
				opt := static.Options{Root: sc.Dir, Prefix: p, Logger: log, Index: sc.Index, Listing: sc.Listing,
					SPA: sc.SPA, MaxAge: sc.MaxAge, AllowDotfiles: sc.Dotfiles, Internal: sc.Internal}
				if sc.Fallthrough != "" {
					if opt.Fallthrough = apps[sc.Fallthrough]; opt.Fallthrough == nil {
						closeAll()
						return nil, nil, fmt.Errorf("route %q: no app %q to fall through to", rc.Path, sc.Fallthrough)
					}
				}
				h, err := static.New(opt)
				if err != nil {
					closeAll()
					return nil, nil, fmt.Errorf("static %s: %w", rc.Path, err)
				}
				closers = append(closers, func() { h.Close() })
				r.h, r.desc = h, "static "+sc.Dir
				r.static, r.root = h, sc.Dir
				if sc.Internal {
					r.desc += " internal"
				}
				if sc.Fallthrough != "" {
					r.desc += " fallthrough=" + sc.Fallthrough
				}
			case rc.App != "":
				h, ok := apps[rc.App]
				if !ok {
					closeAll()
					return nil, nil, fmt.Errorf("route %q: no app %q", rc.Path, rc.App)
				}
				r.h, r.desc = h, "app "+rc.App
				if kind == config.PathPrefix {
					r.desc += " SCRIPT_NAME=" + r.path
				}
			case rc.Proxy != nil:
				mount := ""
				if kind == config.PathPrefix {
					mount = r.path
				}
				h, ph, closeRoute, err := buildRoute(rc.Proxy, mount, redirect, head, log)
				if err != nil {
					closeAll()
					return nil, nil, fmt.Errorf("route %q: %w", rc.Path, err)
				}
				closers = append(closers, closeRoute)
				r.h, r.desc = h, describeProxy(rc.Proxy)
				rt.proxies = append(rt.proxies, proxyRoute{site: sc.Hosts[0], path: rc.Path, route: r.label, handler: ph})
			case rc.Redirect != nil:
				r.h = redirectHandler{to: rc.Redirect.To, status: rc.Redirect.Status}
				r.desc = fmt.Sprintf("redirect %d %s", rc.Redirect.Status, rc.Redirect.To)
			case rc.Respond != nil:
				r.h = respondHandler{status: rc.Respond.Status, body: rc.Respond.Body, headers: rc.Respond.Headers}
				r.desc = fmt.Sprintf("respond %d (%d bytes)", rc.Respond.Status, len(rc.Respond.Body))
			default:
				closeAll()
				return nil, nil, fmt.Errorf("route %q: no handler this version can serve", rc.Path)
			}
			closeShape, err := shape(r, rc, sc.Hosts[0], caches, log)
			if err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("route %q: %w", rc.Path, err)
			}
			closers = append(closers, closeShape)
			if r.cache != nil {
				rt.caches = append(rt.caches, r.cache)
			}
			if len(rc.HeadersAdd) > 0 || len(rc.HeadersRemove) > 0 {
				r.h = withHeaders(r.h, rc.HeadersAdd, rc.HeadersRemove)
				var add []string
				for k, v := range rc.HeadersAdd {
					add = append(add, k+"="+v)
				}
				slices.Sort(add)
				r.desc += fmt.Sprintf(" headers_add=[%s] headers_remove=[%s]", strings.Join(add, " "), strings.Join(rc.HeadersRemove, " "))
			}
			// Outermost first: the rate and connection limits (cheap, and
			// what turns a flood away), then the IP rules, then the WAF
			// (the costly one), then the handler.
			if err := guard(r, rc, sc.Access, siteAccess, wafs, &closers, log); err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("route %q: %w", rc.Path, err)
			}
			closeLimits, err := wrapLimits(r, sl, rc, log)
			if err != nil {
				closeAll()
				return nil, nil, err
			}
			closers = append(closers, closeLimits)
			// Innermost of what the metrics see: a page replaces the
			// answer of the limits, the IP rules and the handler alike.
			r.h = s.pages.wrap(r.h, rc.InterceptErrors)
			s.add(r)
		}
	}
	return rt, closeAll, nil
}

// ParseRun builds and validates the config of `portico run` from its
// arguments; out receives --help. The command goes through app so that only
// this package imports config.
func ParseRun(args []string, out io.Writer) (*config.Config, error) {
	return config.ParseRun(args, out)
}

// Config is the configuration Run serves (config.Config, named here so that
// the command need not import config).
type Config = config.Config

// LoadConfig reads and validates a TOML config file; the error lists every
// problem, each with file:line and key, sorted by line.
func LoadConfig(path string) (*config.Config, error) {
	return config.Load(path)
}

// LoadConfigPython is LoadConfig with python, when not empty, as the
// interpreter of every app (portico serve --python).
func LoadConfigPython(path, python string) (*config.Config, error) {
	return config.LoadWith(path, config.Overrides{Python: python})
}

// RunUsage is the help text of `portico run`.
const RunUsage = config.RunUsage

// ErrHelp is returned by ParseRun after writing the help text.
var ErrHelp = config.ErrHelp
