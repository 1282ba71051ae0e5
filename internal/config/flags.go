package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// RunUsage is the help text of `portico run`, written for people who know
// gunicorn and uWSGI: each flag names its counterparts.
const RunUsage = `Usage: portico run [flags] MODULE[:CALLABLE]
       portico run [flags] --proxy PREFIX=URL ... [MODULE[:CALLABLE]]

Serve one WSGI application with supervised Python worker processes.
MODULE is a dotted module (mysite.wsgi) or a path to a .py file
(examples/hello/app.py); CALLABLE defaults to "application", then "app";
"create_app()" calls a factory, "create_app('testing', debug=False)" with
literal arguments (strings, numbers, True/False/None, lists, dicts).
With --proxy, the app is optional.

Listening:
  -b, --bind ADDR           HTTP listener: host:port, :port or unix:/path; repeatable
                            (default 127.0.0.1:8000) [gunicorn --bind, uwsgi --http-socket]
      --uwsgi-socket ADDR   uwsgi-protocol listener for nginx's uwsgi_pass; repeatable
                            [uwsgi --socket]
      --tls-cert FILE       serve HTTPS (HTTP/2 and HTTP/1.1, TLS 1.2+) on every --bind
                            listener with this certificate chain, PEM (e.g. fullchain.pem);
                            needs --tls-key; SIGHUP re-reads neither (restart to renew)
                            [gunicorn --certfile, uwsgi --https, nginx ssl_certificate]
      --tls-key FILE        the certificate's private key, PEM; needs --tls-cert
                            [gunicorn --keyfile, nginx ssl_certificate_key]
      --socket-mode MODE    mode of unix sockets, octal (default 666) [uwsgi --chmod-socket]
      --forwarded-allow-ips LIST  comma-separated proxies (CIDR, address, "unix", "*") whose
                            Forwarded/X-Forwarded-* headers are believed; others' are stripped
                            (default none) [gunicorn --forwarded-allow-ips, nginx set_real_ip_from]

Workers:
  -w, --workers N           worker processes (default: number of CPUs) [--workers, --processes]
      --threads N           concurrent requests per worker (default 1) [--threads]
      --python PATH         interpreter (default $VIRTUAL_ENV/bin/python, else python3)
                            [uwsgi --home/--virtualenv]
      --chdir DIR           import the app from DIR (default: current dir) [--chdir]
  -e, --env KEY=VALUE       extra environment for the workers; repeatable [gunicorn -e, uwsgi --env]
      --reload              restart workers when a .py file changes (development)
                            [gunicorn --reload, uwsgi --py-autoreload]

Limits and timeouts:
  -t, --timeout DUR         a request running longer gets 504; the app is interrupted
                            (finally blocks run) and its worker replaced only if it does
                            not unwind within --grace (default 30s) [gunicorn --timeout, uwsgi --harakiri]
      --grace DUR           time an interrupted request has to unwind (default 5s)
      --max-requests N      recycle a worker after N requests, +10% jitter (default 0: off)
                            [--max-requests]
      --max-rss SIZE        recycle a worker whose memory passes SIZE (default 0: off)
                            [uwsgi --reload-on-rss]
      --max-body SIZE       larger request bodies get 413 (default 10MiB) [nginx client_max_body_size]
      --queue-size N        requests that may wait for a free worker; more get 503 (default 1024)
                            [gunicorn --backlog, uwsgi --listen]
      --queue-timeout DUR   longest wait for a free worker before 503 (default 30s)
      --sched POLICY        the workers' Linux scheduling policy: batch (their wake-ups
                            do not preempt the front) or normal (default batch)
      --graceful-timeout DUR  time in-flight requests get on stop (default 30s)
                            [gunicorn --graceful-timeout]
      --limit-req RATE      requests per client address: "5r/s" or "30r/m"; past the burst,
                            429 with Retry-After (default: no limit) [nginx limit_req]
      --limit-burst N       requests a client may send at once beyond --limit-req, passed
                            without delay (default 0) [nginx limit_req burst=N nodelay]
      --limit-conn N        open connections per client address on each --bind listener;
                            more are closed at accept (default 0: no limit) [nginx limit_conn]

Files and logs:
      --static PREFIX=DIR   serve DIR under URL PREFIX without Python; repeatable
                            [uwsgi --static-map, nginx location + alias]
      --proxy PREFIX=URL    forward URL PREFIX to an upstream: http://host:port,
                            https://..., http+unix:///path, uwsgi://host:port,
                            uwsgi+unix:///path; repeatable, several URLs for one
                            PREFIX are balanced (least_conn) [nginx proxy_pass, uwsgi_pass]
      --static-max-age DUR  Cache-Control: public, max-age of --static files; names with a
                            content hash (app.3f9a2b1c.css) keep a year and immutable
                            (default 0: no Cache-Control) [nginx expires]
      --access-log PATH     access log file, "-" for stderr, "off" (default -) [--access-logfile]
      --access-log-format F combined (nginx's) or json (default combined)
      --log-level LEVEL     debug, info, warn, error (default info)
      --error-log PATH      Portico's own log to a file, "-" for stderr (default -)
                            [nginx error_log, gunicorn --error-logfile, uwsgi --logto]
      --log-format F        Portico's own log: text or json (default text)
      --admin ADDR          admin listener (unix:/path or a loopback host:port): the status
                            page at /, /status, /metrics (Prometheus), /healthz, /readyz,
                            /reload (default none)
                            [uwsgi --stats, nginx stub_status]

Responses:
      --compress BOOL       compress the app's and proxies' answers: brotli, zstd or gzip as
                            the client accepts, text types of 1 KiB or more (default true)
                            [nginx gzip on]
      --cache SIZE          keep the app's and each proxy's answers in a shared HTTP cache of
                            SIZE in memory, as their Cache-Control allows (default: none)
                            [nginx proxy_cache/uwsgi_cache, proxy_cache_path max_size]
      --cache-ttl DUR       with --cache, keep answers that carry no freshness information
                            this long (micro-caching), then serve them stale for as long
                            again while one request refreshes them (default 0: not stored)
                            [nginx proxy_cache_valid + proxy_cache_use_stale updating]

Protection:
      --allow CIDR          only clients in CIDR (or an address, or "unix") may come in, on
                            every route; repeatable [nginx allow ...; deny all;]
      --deny CIDR           refuse clients in CIDR (403), on every route; wins over --allow;
                            repeatable [nginx deny]
      --waf MODE            inspect requests with the OWASP Core Rule Set (Coraza), paranoia 1,
                            anomaly threshold 5: block (403) or detect (log only)
                            (default: off) [ModSecurity-nginx + CRS]

Process:
      --user USER           after binding the listeners as root, run portico and its workers
                            as USER, name or uid (default: stay as started) [uwsgi --uid,
                            gunicorn --user, nginx user]
      --group GROUP         group to run as (default: USER's primary group) [uwsgi --gid,
                            gunicorn --group]
      --pidfile PATH        write portico's pid to PATH once the listeners are bound; removed
                            at exit (default: none) [uwsgi --pidfile, gunicorn --pid, nginx pid]

Sizes: 512, 64KiB, 10MiB, 1GiB. Durations: 30s, 2m, 500ms, or seconds.
Signals: SIGTERM/SIGINT stop gracefully; SIGHUP reloads the workers with no failed request
and reopens the log files; SIGUSR1 reopens the log files (logrotate).
`

type listValue []string

func (l *listValue) String() string     { return strings.Join(*l, ",") }
func (l *listValue) Set(s string) error { *l = append(*l, s); return nil }

type sizeValue struct{ p *int64 }

func (v sizeValue) String() string {
	if v.p == nil {
		return ""
	}
	return strconv.FormatInt(*v.p, 10)
}
func (v sizeValue) Set(s string) error {
	n, err := ParseSize(s)
	if err != nil {
		return err
	}
	*v.p = n
	return nil
}

type durationValue struct{ p *time.Duration }

func (v durationValue) String() string {
	if v.p == nil {
		return ""
	}
	return v.p.String()
}
func (v durationValue) Set(s string) error {
	d, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*v.p = d
	return nil
}

// ErrHelp is returned by ParseRun for -h/--help after writing the usage.
var ErrHelp = flag.ErrHelp

// ParseRun builds a Config from `portico run` arguments and validates it.
func ParseRun(args []string, out io.Writer) (*Config, error) {
	if out == nil {
		out = io.Discard
	}
	c := Default()
	a := DefaultApp(RunAppName)
	// [tool.portico] in a pyproject.toml in --chdir (or the current
	// directory) gives the defaults; flags override them.
	pydir := chdirArg(args)
	if pydir == "" {
		pydir = "."
	}
	rd, err := readPyproject(pydir, c, &a)
	if err != nil {
		return nil, err
	}
	if rd.mode == "" {
		rd.mode = "666"
	}
	fs := flag.NewFlagSet("portico run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var binds, uwsgiSockets, statics, proxies listValue
	var mode string
	fs.Var(&binds, "bind", "")
	fs.Var(&binds, "b", "")
	fs.Var(&uwsgiSockets, "uwsgi-socket", "")
	fs.StringVar(&mode, "socket-mode", rd.mode, "")
	var tlsCert, tlsKey string
	fs.StringVar(&tlsCert, "tls-cert", "", "")
	fs.StringVar(&tlsKey, "tls-key", "", "")
	var allowIPs string
	fs.StringVar(&allowIPs, "forwarded-allow-ips", "", "")
	fs.IntVar(&a.Workers, "workers", a.Workers, "")
	fs.IntVar(&a.Workers, "w", a.Workers, "")
	fs.IntVar(&a.Threads, "threads", a.Threads, "")
	fs.StringVar(&a.Python, "python", a.Python, "")
	fs.StringVar(&a.Dir, "chdir", "", "")
	fs.Var((*listValue)(&a.Env), "env", "")
	fs.Var((*listValue)(&a.Env), "e", "")
	fs.BoolVar(&a.Reload, "reload", a.Reload, "")
	fs.Var(durationValue{&a.Timeout}, "timeout", "")
	fs.Var(durationValue{&a.Timeout}, "t", "")
	fs.Var(durationValue{&a.Grace}, "grace", "")
	fs.IntVar(&a.MaxRequests, "max-requests", a.MaxRequests, "")
	fs.Var(sizeValue{&a.MaxRSS}, "max-rss", "")
	fs.Var(sizeValue{&a.MaxBody}, "max-body", "")
	fs.IntVar(&a.QueueSize, "queue-size", a.QueueSize, "")
	fs.Var(durationValue{&a.QueueTimeout}, "queue-timeout", "")
	fs.StringVar(&a.Sched, "sched", a.Sched, "")
	fs.Var(durationValue{&c.ShutdownTimeout}, "graceful-timeout", "")
	fs.Var(&statics, "static", "")
	fs.Var(&proxies, "proxy", "")
	fs.StringVar(&c.AccessLog, "access-log", c.AccessLog, "")
	fs.StringVar(&c.AccessLogFormat, "access-log-format", c.AccessLogFormat, "")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "")
	fs.StringVar(&c.User, "user", c.User, "")
	fs.StringVar(&c.Group, "group", c.Group, "")
	fs.StringVar(&c.PIDFile, "pidfile", c.PIDFile, "")
	fs.StringVar(&c.ErrorLog, "error-log", c.ErrorLog, "")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "")
	var admin string
	fs.StringVar(&admin, "admin", "", "")
	var limitReq string
	var limitBurst, limitConn int
	fs.StringVar(&limitReq, "limit-req", "", "")
	fs.IntVar(&limitBurst, "limit-burst", 0, "")
	fs.IntVar(&limitConn, "limit-conn", 0, "")
	var allows, denies listValue
	var wafMode string
	fs.Var(&allows, "allow", "")
	fs.Var(&denies, "deny", "")
	fs.StringVar(&wafMode, "waf", "", "")
	var staticMaxAge, cacheTTL time.Duration
	var cacheSize int64
	compress := true
	fs.Var(durationValue{&staticMaxAge}, "static-max-age", "")
	fs.Var(sizeValue{&cacheSize}, "cache", "")
	fs.Var(durationValue{&cacheTTL}, "cache-ttl", "")
	fs.BoolVar(&compress, "compress", true, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			io.WriteString(out, RunUsage)
			return nil, ErrHelp
		}
		return nil, fmt.Errorf("%w (see portico run --help)", err)
	}
	rest := fs.Args()
	if len(rest) == 0 && rd.module != "" {
		rest = []string{rd.module}
	}
	if len(binds) == 0 && len(uwsgiSockets) == 0 {
		binds, uwsgiSockets = rd.binds, rd.uwsgiSockets
	}
	statics = append(rd.statics, statics...)
	switch len(rest) {
	case 0:
		if len(proxies) > 0 {
			break
		}
		return nil, errors.New("no app given: portico run [flags] MODULE[:CALLABLE] (see --help)")
	case 1:
		a.Module = rest[0]
	default:
		return nil, fmt.Errorf("one app expected, got %q (flags go before the app)", rest)
	}
	m, err := strconv.ParseUint(mode, 8, 32)
	if err != nil {
		return nil, fmt.Errorf("socket-mode: %q is not an octal mode", mode)
	}
	c.names = map[string]string{
		"listener":          "bind",
		"access_log_format": "access-log-format",
		"log_level":         "log-level",
		"error_log":         "error-log",
		"log_format":        "log-format",
		"graceful_timeout":  "graceful-timeout",
		"trusted_proxies":   "forwarded-allow-ips",
		"app." + RunAppName: "app",
		"user":              "user",
		"group":             "group",
		"pidfile":           "pidfile",
	}
	for _, k := range []string{"python", "chdir", "env", "workers", "threads", "timeout", "grace", "max_requests", "max_rss", "max_body", "queue_size", "queue_timeout", "sched"} {
		c.names["app."+RunAppName+"."+k] = strings.ReplaceAll(k, "_", "-")
	}
	if admin != "" {
		c.Admin = &Admin{Addr: admin}
		c.names["admin.addr"] = "admin"
	}
	if len(binds) == 0 && len(uwsgiSockets) == 0 {
		binds = append(binds, DefaultBind)
	}
	var tlsFiles *TLS
	switch {
	case (tlsCert == "") != (tlsKey == ""):
		return nil, errors.New("--tls-cert and --tls-key go together: give both or neither")
	case tlsCert != "" && len(binds) == 0:
		return nil, errors.New("--tls-cert: no --bind listener to serve HTTPS on (uwsgi sockets speak in the clear)")
	case tlsCert != "":
		tlsFiles = &TLS{Cert: absPath(tlsCert), Key: absPath(tlsKey)}
	}
	for _, b := range binds {
		i := len(c.Listeners)
		c.names[fmt.Sprintf("listener[%d]", i)] = "bind"
		l := Listener{Addr: b, Protocol: ProtoHTTP, SocketMode: os.FileMode(m), LimitConn: limitConn}
		if limitConn != 0 {
			c.names[fmt.Sprintf("listener[%d].limit_conn", i)] = "limit-conn"
		}
		if tlsFiles != nil {
			files := *tlsFiles
			l.TLS = &files
			c.names[fmt.Sprintf("listener[%d].tls", i)] = "tls-cert"
			c.names[fmt.Sprintf("listener[%d].tls.cert", i)] = "tls-cert"
			c.names[fmt.Sprintf("listener[%d].tls.key", i)] = "tls-key"
		}
		c.Listeners = append(c.Listeners, l)
	}
	for _, b := range uwsgiSockets {
		c.names[fmt.Sprintf("listener[%d]", len(c.Listeners))] = "uwsgi-socket"
		c.Listeners = append(c.Listeners, Listener{Addr: b, Protocol: ProtoUWSGI, SocketMode: os.FileMode(m)})
	}
	for _, p := range strings.Split(allowIPs, ",") {
		if p = strings.TrimSpace(p); p != "" {
			c.TrustedProxies = append(c.TrustedProxies, p)
		}
	}
	if a.Module != "" {
		c.Apps = []App{a}
	}
	site := Site{Hosts: []string{HostDefault}}
	for _, s := range statics {
		prefix, dir, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("static: %q is not PREFIX=DIR", s)
		}
		c.names[fmt.Sprintf("site[0].route[%d]", len(site.Routes))] = "static"
		site.Routes = append(site.Routes, Route{Path: prefix, Static: &StaticRoute{Dir: dir, MaxAge: staticMaxAge}})
		c.names[fmt.Sprintf("site[0].route[%d].static.max_age", len(site.Routes)-1)] = "static-max-age"
	}
	// One proxy route per prefix, its URLs balanced, in flag order.
	byPrefix := map[string]*Proxy{}
	for _, s := range proxies {
		prefix, u, ok := strings.Cut(s, "=")
		if !ok || prefix == "" || u == "" {
			return nil, fmt.Errorf("proxy: %q is not PREFIX=URL", s)
		}
		if px := byPrefix[prefix]; px != nil {
			px.Upstreams = append(px.Upstreams, Upstream{URL: u, Weight: 1})
			continue
		}
		px := DefaultProxy()
		px.Upstreams = []Upstream{{URL: u, Weight: 1}}
		byPrefix[prefix] = px
		c.names[fmt.Sprintf("site[0].route[%d]", len(site.Routes))] = "proxy"
		site.Routes = append(site.Routes, Route{Path: prefix, Proxy: px})
	}
	if a.Module != "" {
		// The app serves everything the other routes do not: a prefix
		// route on "/" loses to every longer prefix.
		c.names[fmt.Sprintf("site[0].route[%d]", len(site.Routes))] = "app"
		site.Routes = append(site.Routes, Route{Path: "/", App: RunAppName})
	}
	switch {
	case limitReq != "":
		// On the site: one budget per client across the routes run makes.
		site.LimitReq = &LimitReq{Rate: limitReq, Burst: limitBurst, Key: "ip", MaxKeys: DefaultLimitKeys}
		c.names["site[0].limit_req"] = "limit-req"
		c.names["site[0].limit_req.burst"] = "limit-burst"
	case limitBurst != 0:
		return nil, errors.New("--limit-burst needs --limit-req")
	}
	if limitConn != 0 && len(binds) == 0 {
		return nil, errors.New("--limit-conn: no --bind listener (a uwsgi socket's peer is the nginx in front)")
	}
	// --allow, --deny and --waf guard every route run creates.
	for i := range site.Routes {
		rt := &site.Routes[i]
		rt.Allow, rt.Deny = allows, denies
		for j := range allows {
			c.names[fmt.Sprintf("site[0].route[%d].allow[%d]", i, j)] = "allow"
		}
		for j := range denies {
			c.names[fmt.Sprintf("site[0].route[%d].deny[%d]", i, j)] = "deny"
		}
		if wafMode != "" {
			rt.WAF = DefaultWAF()
			rt.WAF.Mode = wafMode
			c.names[fmt.Sprintf("site[0].route[%d].waf.mode", i)] = "waf"
		}
	}
	// --compress, --cache and --cache-ttl shape the answers of the app
	// and of each proxy route (a cache each: one per route, as in a file).
	if cacheTTL != 0 && cacheSize == 0 {
		return nil, errors.New("--cache-ttl needs --cache")
	}
	for i := range site.Routes {
		rt := &site.Routes[i]
		if rt.App == "" && rt.Proxy == nil {
			continue
		}
		if !compress {
			off := false
			rt.Compress = &off
		}
		if cacheSize != 0 {
			rt.Cache = DefaultCache()
			// Micro-caching as nginx's recipes do it: fresh for the TTL,
			// then stale for as long again while one request refreshes
			// the entry, so that clients never queue behind the app at
			// each expiry (proxy_cache_use_stale updating).
			rt.Cache.Size, rt.Cache.DefaultTTL, rt.Cache.StaleWhileRevalidate = cacheSize, cacheTTL, cacheTTL
			if rt.Cache.MaxEntry > cacheSize {
				rt.Cache.MaxEntry = cacheSize
			}
			c.names[fmt.Sprintf("site[0].route[%d].cache", i)] = "cache"
			c.names[fmt.Sprintf("site[0].route[%d].cache.default_ttl", i)] = "cache-ttl"
		}
	}
	c.Sites = []Site{site}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// absPath makes a flag's relative path absolute against the current
// directory, so that --chdir does not change what it names.
func absPath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

// RunAppName is the name of the one app `portico run` serves.
const RunAppName = "app"
