// Package config holds Portico's configuration: the structs that both the
// TOML file (Load) and the `portico run` flags (ParseRun, with defaults from
// a pyproject.toml's [tool.portico]) fill, the defaults in one place, and
// Validate, which reports every problem at once with file:line and key.
//
// Only internal/app imports this package; it turns a Config into each
// feature package's own Options.
package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Defaults, in one place. The README's tables quote these.
const (
	DefaultBind            = "127.0.0.1:8000"
	DefaultTimeout         = 30 * time.Second
	DefaultGrace           = 5 * time.Second
	DefaultMaxBody         = 10 << 20
	DefaultQueueSize       = 1024
	DefaultQueueTimeout    = 30 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
	DefaultSocketMode      = 0o666
	// DefaultMaxHeaderFields is server.DefaultMaxHeaderFields.
	DefaultMaxHeaderFields = 100
)

// Config is everything one Portico process serves. The TOML file (Load)
// and the `portico run` flags (ParseRun) both fill it; Validate checks it.
type Config struct {
	// File is the path the config was read from; "" when it came from flags.
	// Errors name it.
	File string
	// Listeners: HTTP and uwsgi-protocol sockets. At least one.
	Listeners []Listener
	// Apps are the WSGI applications, in file order; each gets its own
	// worker pool. Names are unique.
	Apps []App
	// Sites are matched by the request's Host; each has ordered routes.
	Sites []Site
	// AccessLog is "-" (stderr), "off", or a file path. Default "-".
	AccessLog string
	// AccessLogFormat is "combined" (nginx's) or "json". Default "combined".
	AccessLogFormat string
	// ShutdownTimeout bounds the graceful stop: in-flight requests get this
	// long to finish after the listeners close. Default 30s.
	ShutdownTimeout time.Duration
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string
	// ErrorLog is where Portico's own log goes (supervision events, request
	// failures with their tracebacks): a file path, opened for appending
	// and reopened on SIGUSR1 (logrotate), or "-" or "" for stderr.
	// Default "-". nginx's error_log, gunicorn's --error-logfile, uWSGI's
	// --logto.
	ErrorLog string
	// LogFormat is the shape of Portico's own log records: "text"
	// (key=value, log/slog's TextHandler) or "json" (one JSON object a
	// line, slog's JSONHandler). Default "text". nginx has no equivalent;
	// gunicorn's --log-config-json, uWSGI's --log-encoder json.
	LogFormat string
	// Admin, when set, opens the admin listener (health, readiness, the
	// running config, reload). Nil: no admin listener.
	Admin *Admin
	// TrustedProxies are the peers whose forwarding headers (Forwarded,
	// X-Forwarded-For/-Proto/-Host) and PROXY protocol headers are
	// believed: CIDR prefixes, bare addresses (/32, /128), "unix" (peers
	// on unix-socket listeners) or "*" (everyone). Default none: every
	// client's forwarding headers are stripped (nginx without
	// set_real_ip_from). See internal/realip.
	TrustedProxies []string
	// User, when set, is the user Portico and its workers run as: the
	// listeners are bound (and the log files opened) as root, then the
	// process drops to this user before any worker starts (nginx's `user`,
	// uWSGI's --uid). A name or a numeric uid. Only root can switch; set
	// while not root it is an error, unless it is the current user.
	// Default "": stay as started.
	User string
	// Group is the group to run as with User (uWSGI's --gid); the
	// supplementary groups are User's groups in the group database when
	// Group is empty or User's primary group, else just Group. A name or a
	// numeric gid. Default "": User's primary group. Setting Group alone
	// switches only the group.
	Group string
	// PIDFile, when set, is written with Portico's pid once the listeners
	// are bound (before the privileges are dropped and the apps start), and
	// removed at a clean exit if it still holds that pid (nginx's `pid`,
	// uWSGI's --pidfile). Default "": none; systemd's Type=notify needs
	// none.
	PIDFile string

	// MaxConnections is the max_connections of every [[listener]] that
	// does not set its own: open connections past it are closed at
	// accept. Default 0: no bound (nginx bounds by worker_connections).
	MaxConnections int

	// lines maps a key path ("site[0].route[1].path") to its line in File.
	lines map[string]int
	// names maps a key path to the flag that set it (configs from flags).
	names map[string]string
}

// Listener protocols.
const (
	ProtoHTTP  = "http"
	ProtoUWSGI = "uwsgi"
)

// Listener is one socket.
type Listener struct {
	// Addr is host:port, :port, or unix:/path. Required.
	Addr string
	// Protocol is ProtoHTTP or ProtoUWSGI. Default ProtoHTTP.
	Protocol string
	// SocketMode is the file mode of a unix socket. Default 0666, so that
	// nginx's worker user can connect.
	SocketMode os.FileMode
	// TLS, when set, makes an HTTP listener serve HTTPS (HTTP/2 and
	// HTTP/1.1, TLS 1.2 or later) with these files, re-read on reload.
	// Nil: plain HTTP.
	TLS *TLS
	// ProxyProtocol makes every connection start with a PROXY protocol
	// header (v1 or v2), as nginx's `listen ... proxy_protocol`; its client
	// address is believed when the peer is in TrustedProxies. Default off.
	ProxyProtocol bool
	// RedirectHTTPS makes a plain HTTP listener answer every request with
	// 308 Permanent Redirect to https://HOST/URI: the request's host name
	// without its port, then the port of the first TLS listener of the
	// config unless it is 443 (none: 443, for TLS ended in front of
	// Portico), then the request's path and query as sent. No site or
	// route is consulted; 308 makes clients keep the method and body.
	// nginx: `return 308 https://$host$request_uri;`. Not for TLS or
	// uwsgi listeners. Default off.
	RedirectHTTPS bool

	// LimitConn bounds the open connections of one client address
	// (nginx's limit_conn with a $binary_remote_addr zone): a connection
	// past it is closed at accept, without a byte, and counted. Not on
	// proxy_protocol or uwsgi listeners, whose peer is the proxy in front
	// (use a site's limit_conn there). Default 0: no bound.
	LimitConn int
	// MaxConnections bounds the open connections of the listener: past
	// it, new ones are closed at accept instead of waiting in the
	// kernel's backlog (nginx's worker_connections). Default 0: the
	// top-level max_connections, else no bound.
	MaxConnections int
	// MaxHeaderFields bounds the header lines of a request on an HTTP
	// listener: one more is answered 431 Request Header Fields Too Large
	// and the connection closed. A count; default DefaultMaxHeaderFields
	// (100; a browser sends about 20). 0 means the default; negative is
	// an error. nginx counts no fields (its large_client_header_buffers
	// bound the head's bytes, as Portico's fixed 64 KiB does), so this is
	// the stricter bound. A reload applies it to the listeners that stay.
	MaxHeaderFields int
}

// Admin is the admin listener: GET /healthz, GET /readyz, GET /config,
// GET /metrics (Prometheus), POST /reload (`portico run --admin ADDR`).
// It is for the machine itself and its orchestrator, so it
// listens only on a unix socket or a loopback address.
type Admin struct {
	// Addr is unix:/path or a loopback host:port (127.0.0.1, [::1],
	// localhost). Required.
	Addr string
	// ShutdownDelay is how long /readyz answers 503 before the listeners
	// close on SIGTERM, so that a load balancer polling it stops sending
	// requests first. Default 0.
	ShutdownDelay time.Duration
}

// TLS names a certificate chain and its private key, both PEM files.
type TLS struct {
	// Cert is the certificate chain file (PEM). Required; it must exist.
	Cert string
	// Key is the private key file (PEM). Required; it must exist.
	Key string
}

// App is one WSGI application and its workers.
type App struct {
	// Name identifies the app in routes (app = "NAME") and logs. Required.
	Name string
	// Module is MODULE:CALLABLE, MODULE dotted or a path to a .py file;
	// CALLABLE defaults to application, then app. A factory is called
	// with literal arguments only: create_app(), create_app('testing'),
	// create_app(env="prod", debug=False) (gunicorn's syntax). Required.
	Module string
	// Python is the interpreter: $VIRTUAL_ENV/bin/python, else python3.
	Python string
	// Dir is the directory the app is imported from. Default: current dir.
	Dir string
	// Env is extra KEY=VALUE environment for the workers.
	Env []string
	// Workers is the number of processes. Default: number of CPUs.
	Workers int
	// Threads is concurrent requests per process. Default 1.
	Threads int
	// Timeout bounds a request in the app (504 past it). Default 30s.
	Timeout time.Duration
	// Grace is how long an interrupted request may take to unwind before
	// its worker is killed. Default 5s.
	Grace time.Duration
	// MaxRequests recycles a worker after N requests (+ up to 10% jitter).
	// 0: off.
	MaxRequests int
	// MaxRSS recycles a worker whose memory passes this many bytes. 0: off.
	MaxRSS int64
	// MaxBody is the largest request body in bytes (413 past it). Default 10 MiB.
	MaxBody int64
	// QueueSize bounds requests waiting for a worker (503 past it). Default 1024.
	QueueSize int
	// QueueTimeout bounds a request's wait for a worker (503 past it). Default 30s.
	QueueTimeout time.Duration
	// Reload restarts the workers when a .py file changes (development).
	Reload bool
	// ReloadCode makes a config reload (SIGHUP, POST /reload under
	// `portico serve`) restart this app's workers even when its settings
	// did not change, so that newly deployed code is loaded: new workers
	// import the app and are ready before the old ones retire (uWSGI's
	// touch-chain-reload, gunicorn's SIGHUP). False keeps the warm workers
	// of an unchanged app. Default true. `portico run` restarts its app's
	// workers on SIGHUP in any case.
	ReloadCode bool
	// Sched is the workers' Linux scheduling policy: SchedBatch (the
	// default) or SchedNormal. See worker.Options.NormalSched.
	Sched string
}

// Worker scheduling policies (App.Sched).
const (
	SchedBatch  = "batch"
	SchedNormal = "normal"
)

// Site is a set of host names and the routes that serve them.
type Site struct {
	// Hosts are exact names ("example.com"), wildcards ("*.example.com":
	// any name ending in ".example.com"), or "default" (the site for a Host
	// no other site claims). Matched case-insensitively, port stripped.
	Hosts []string
	// Routes, in file order. See Route.Path for how one is chosen.
	Routes []Route

	// LimitReq, when set, limits the rate of requests to every route of
	// the site, one budget per key across them (nginx's limit_req in a
	// server block). Nil: none.
	LimitReq *LimitReq
	// LimitConn, when set, limits the requests in progress per key across
	// the site's routes (nginx's limit_conn in a server block). Nil: none.
	LimitConn *LimitConn
	// IP rules (README "### IP rules, WAF and bans"): see Access.
	Access
	// ErrorPages maps a status ("404") or a class ("5xx") to the path of
	// a page on this site, served through its routes with the original
	// status in place of Portico's own answers (a static 404, 413, 429,
	// 502, 503, 504) and, on routes with InterceptErrors, of the app's
	// (nginx's error_page). A status wins over its class. Default none.
	ErrorPages map[string]string
}

// Path kinds of a route.
const (
	PathPrefix = "prefix"
	PathExact  = "exact"
	PathRegex  = "regex"
)

// Route sends matching requests to one handler.
type Route struct {
	// Path is "/x" (a prefix, at a segment boundary: /x, /x/ and /x/y, not
	// /xy), "=/x" (exactly /x) or "~REGEX" (Go RE2 syntax, unanchored unless
	// it says ^ or $). Required.
	Path string
	// Name labels the route in the metrics and on the status page (the
	// label "route"): letters, digits, '_', '-' and '.', not only digits,
	// unique in its site. Default "": the route's index in its site ("0",
	// "1", ...). Never the request path, so that the number of series
	// stays bounded. (nginx has no equivalent; its stub_status is per
	// server.)
	Name string
	// Methods, when set, restrict the route to these methods (upper case).
	Methods []string
	// Header, when set, restricts the route to requests whose headers have
	// these exact values.
	Header map[string]string

	// Exactly one handler is set.

	// Static serves a directory.
	Static *StaticRoute
	// App names the [app.NAME] that serves the route. A prefix route
	// mounts it: SCRIPT_NAME is the prefix, PATH_INFO the rest.
	App string
	// Redirect answers with a redirect.
	Redirect *Redirect
	// Respond answers with a fixed status, headers and body.
	Respond *Respond
	// Proxy forwards to upstreams: HTTP, uwsgi or FastCGI servers.
	Proxy *Proxy

	// HeadersAdd are response headers set on every answer of the route.
	HeadersAdd map[string]string
	// HeadersRemove are response headers deleted from every answer.
	HeadersRemove []string

	// LimitReq, when set, limits the rate of requests to the route
	// (nginx's limit_req in a location); a site's applies too. Nil: none.
	LimitReq *LimitReq
	// LimitConn, when set, limits the route's requests in progress per key
	// (nginx's limit_conn in a location). Nil: none.
	LimitConn *LimitConn
	// IP rules, applied after the site's (a client must pass both): see
	// Access.
	Access
	// WAF, when set, inspects the route's requests (Coraza with the OWASP
	// Core Rule Set). Nil (the default): no inspection.
	WAF *WAF

	// Compress compresses the answers of an app or proxy route (brotli,
	// zstd or gzip, as the client accepts; nginx's gzip on). Nil: on for
	// app and proxy routes (see CompressOn); false turns it off.
	Compress *bool
	// Cache, when set, keeps the route's answers in a shared HTTP cache
	// (nginx's proxy_cache / uwsgi_cache). Nil (the default): none.
	Cache *Cache
	// InterceptErrors serves the site's error pages in place of the app's
	// or upstream's own answers with those statuses (nginx's
	// proxy_intercept_errors / uwsgi_intercept_errors). Default false.
	InterceptErrors bool
}

// PathKind returns PathPrefix, PathExact or PathRegex, and the path
// without its "=" or "~" marker.
func (r *Route) PathKind() (kind, path string) {
	switch {
	case strings.HasPrefix(r.Path, "="):
		return PathExact, r.Path[1:]
	case strings.HasPrefix(r.Path, "~"):
		return PathRegex, r.Path[1:]
	}
	return PathPrefix, r.Path
}

// StaticRoute serves the files under Dir (the route's prefix is stripped).
type StaticRoute struct {
	// Dir is the directory served. Required; it must exist.
	Dir string
	// Index lists the files served for a directory request. Default
	// ["index.html"]; an empty list serves none.
	Index []string
	// Listing serves an HTML listing of directories without an index.
	// Default off.
	Listing bool
	// SPA serves /index.html (200) for any GET or HEAD of a missing file, as
	// a single-page app in history mode needs (nginx try_files $uri
	// /index.html). Default off.
	SPA bool
	// Fallthrough names an app that gets the requests for missing files
	// (nginx try_files $uri @app). Default none (404).
	Fallthrough string
	// MaxAge sets Cache-Control: public, max-age=N. Files whose names carry
	// a content hash (Django's ManifestStaticFilesStorage) get a year and
	// immutable whatever this is. Default 0: no Cache-Control.
	MaxAge time.Duration
	// Dotfiles serves names starting with a dot (.git, .env). Default off:
	// they are 404, except .well-known.
	Dotfiles bool
	// Internal makes the route unreachable from outside (404), like an
	// nginx `internal;` location: only an app's X-Accel-Redirect or
	// X-Sendfile reaches it. Default off.
	Internal bool
}

// Redirect answers with Status and a Location.
type Redirect struct {
	// To is the Location. "$uri" in it is replaced by the request's path and
	// query, so `to = "https://example.com$uri"` keeps them. Required.
	To string
	// Status is 301, 302, 303, 307 or 308. Default 302.
	Status int
}

// Respond answers with a fixed status, headers and body.
type Respond struct {
	// Status is the HTTP status. Default 200.
	Status int
	// Body is sent as is. Default empty.
	Body string
	// Headers are set on the answer. Content-Type defaults to
	// "text/plain; charset=utf-8" when Body is not empty.
	Headers map[string]string
}

// Proxy forwards to a set of upstreams, balanced, health-checked, with
// retries (nginx's proxy_pass, uwsgi_pass and fastcgi_pass with an
// upstream block).
type Proxy struct {
	// Upstreams: http://host:port, https://host:port, http+unix:///path,
	// uwsgi://host:port, uwsgi+unix:///path, fastcgi://host:port,
	// fastcgi+unix:///path; one family (http, uwsgi, fastcgi) per route.
	// At least one.
	Upstreams []Upstream
	// Policy is least_conn (default), round_robin, random_two, ip_hash,
	// hash or first.
	Policy string
	// HashKey is what the hash policy hashes: "header:NAME",
	// "cookie:NAME" or "uri". Required with policy hash.
	HashKey string
	// Timeout bounds the wait for the response head and then each wait for
	// more of the body (nginx's proxy_read_timeout). Default 60s.
	Timeout time.Duration
	// ConnectTimeout bounds connecting to an upstream (nginx's
	// proxy_connect_timeout). Default 5s.
	ConnectTimeout time.Duration
	// Retries is how many other upstreams a failed request may be tried on
	// (nginx's proxy_next_upstream_tries minus one). Default 2.
	Retries int
	// TryDuration bounds the time spent on retries (nginx's
	// proxy_next_upstream_timeout). Default 0: no bound but Retries.
	TryDuration time.Duration
	// MaxFails failures within FailTimeout take an upstream out for
	// FailTimeout (nginx's max_fails, fail_timeout). Default 1; 0 never.
	MaxFails int
	// FailTimeout: see MaxFails. Default 10s.
	FailTimeout time.Duration
	// Health, when set, runs active health checks. Nil: passive only.
	Health *Health
	// QueueSize bounds the requests waiting while every usable upstream is
	// at its max_conns (503 past it). Default 1024.
	QueueSize int
	// QueueTimeout bounds such a wait (503 past it). Default 30s.
	QueueTimeout time.Duration
	// Buffering reads request bodies completely before they are sent and
	// responses as fast as the upstream sends them (nginx's
	// proxy_request_buffering and proxy_buffering). False streams both
	// ways, for server-sent events. Default true.
	Buffering bool
	// PreserveHost sends the client's Host header instead of the
	// upstream's (nginx: proxy_set_header Host $host). Default false.
	PreserveHost bool
	// HeadersUp are request headers set toward the upstream, in file order
	// (nginx's proxy_set_header); a name starting with "-" removes the
	// header. Values may use $remote_addr, $host, $scheme, $request_uri.
	HeadersUp []HeaderUp
	// MaxBody is the largest request body (413 past it; nginx's
	// client_max_body_size). Default 10 MiB.
	MaxBody int64
	// WebSocketTimeout closes an upgraded (WebSocket) connection idle this
	// long. Default 1h.
	WebSocketTimeout time.Duration

	// FastCGI routes only (Caddy's php_fastcgi):

	// Root is the document root: files under it are served statically,
	// PHP scripts are run by the FastCGI server with SCRIPT_FILENAME under
	// it. Required for fastcgi upstreams.
	Root string
	// Index lists the index scripts of a directory; the first in Root is
	// the front controller. Default ["index.php"].
	Index []string
	// SplitPath lists the suffixes that end a script's name in a path
	// (/index.php/x: SCRIPT_NAME /index.php, PATH_INFO /x). Default [".php"].
	SplitPath []string
}

// Upstream is one server of a proxy route.
type Upstream struct {
	// URL is the upstream's address (see Proxy.Upstreams). Required.
	URL string
	// Weight is its share for round_robin and least_conn. Default 1.
	Weight int
	// MaxConns bounds its requests in flight (nginx's max_conns). Default
	// 0: no bound.
	MaxConns int
	// Backup upstreams serve only while no other is usable. Default false.
	Backup bool
}

// HeaderUp sets (or, with Remove, deletes) one request header toward the
// upstreams.
type HeaderUp struct {
	Name   string
	Value  string
	Remove bool
}

// Health configures active health checks of a proxy route's upstreams.
type Health struct {
	// URI is requested with GET. Default "/healthz".
	URI string
	// Interval between two checks of an upstream. Default 5s.
	Interval time.Duration
	// Timeout bounds one check. Default 2s.
	Timeout time.Duration
	// Status is the status of a healthy answer. Default 200.
	Status int
	// Rise is the good checks in a row that bring an upstream back. Default 2.
	Rise int
	// Fall is the bad checks in a row that take it out. Default 3.
	Fall int
}

// Proxy defaults.
const (
	DefaultProxyTimeout     = 60 * time.Second
	DefaultConnectTimeout   = 5 * time.Second
	DefaultRetries          = 2
	DefaultMaxFails         = 1
	DefaultFailTimeout      = 10 * time.Second
	DefaultWebSocketTimeout = time.Hour
	// DefaultFastCGIMaxConns is a fastcgi upstream's max_conns when none is
	// given: php-fpm's pm.max_children in Debian's www.conf. php-fpm gives
	// each open connection a child, so more connections than children
	// would wait in its backlog behind idle ones.
	DefaultFastCGIMaxConns = 5
)

// DefaultProxy returns a Proxy with every default set and no upstream.
func DefaultProxy() *Proxy {
	return &Proxy{
		Policy:           "least_conn",
		Timeout:          DefaultProxyTimeout,
		ConnectTimeout:   DefaultConnectTimeout,
		Retries:          DefaultRetries,
		MaxFails:         DefaultMaxFails,
		FailTimeout:      DefaultFailTimeout,
		QueueSize:        DefaultQueueSize,
		QueueTimeout:     DefaultQueueTimeout,
		Buffering:        true,
		MaxBody:          DefaultMaxBody,
		WebSocketTimeout: DefaultWebSocketTimeout,
	}
}

// DefaultHealth returns the active health check defaults.
func DefaultHealth() *Health {
	return &Health{URI: "/healthz", Interval: 5 * time.Second, Timeout: 2 * time.Second, Status: 200, Rise: 2, Fall: 3}
}

// DefaultRedirectStatus is a redirect route's status when none is given.
const DefaultRedirectStatus = 302

// Default returns a Config with every default set and nothing to serve.
func Default() *Config {
	return &Config{
		AccessLog:       "-",
		AccessLogFormat: "combined",
		ShutdownTimeout: DefaultShutdownTimeout,
		LogLevel:        "info",
		ErrorLog:        "-",
		LogFormat:       "text",
	}
}

// DefaultApp returns an App with every default set and no module.
func DefaultApp(name string) App {
	return App{
		Name:         name,
		Python:       defaultPython(),
		Workers:      runtime.NumCPU(),
		Threads:      1,
		Timeout:      DefaultTimeout,
		Grace:        DefaultGrace,
		MaxBody:      DefaultMaxBody,
		QueueSize:    DefaultQueueSize,
		QueueTimeout: DefaultQueueTimeout,
		Sched:        SchedBatch,
		ReloadCode:   true,
	}
}

// DefaultListener returns a Listener on addr with the default protocol and
// socket mode.
func DefaultListener(addr string) Listener {
	return Listener{Addr: addr, Protocol: ProtoHTTP, SocketMode: DefaultSocketMode, MaxHeaderFields: DefaultMaxHeaderFields}
}

func defaultPython() string {
	if venv := os.Getenv("VIRTUAL_ENV"); venv != "" {
		return filepath.Join(venv, "bin", "python")
	}
	return "python3"
}

// App returns the app called name, or nil.
func (c *Config) App(name string) *App {
	for i := range c.Apps {
		if c.Apps[i].Name == name {
			return &c.Apps[i]
		}
	}
	return nil
}

// Error is one problem in a config: where (file, line, key) and what.
type Error struct {
	// File is the config file; "" for flags.
	File string
	// Line is the line in File; 0 when unknown.
	Line int
	// Key is the key path ("site[0].route[1].path"), or the flag name.
	Key string
	// Msg says what is wrong.
	Msg string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// errorAt builds an Error for key path, with its line or flag name.
func (c *Config) errorAt(path, format string, args ...any) *Error {
	e := &Error{File: c.File, Key: path, Msg: fmt.Sprintf(format, args...)}
	for p := path; p != ""; p = parentPath(p) {
		if c.names != nil {
			if n, ok := c.names[p]; ok {
				e.Key = n
				break
			}
		}
		if l, ok := c.lines[p]; ok {
			e.Line = l
			break
		}
	}
	return e
}

// parentPath strips the last element of a key path: "a[0].b" → "a[0]" → "a".
func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

// Validate checks the whole config and returns every problem at once, each
// an *Error, joined with errors.Join.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, c.errorAt(key, format, args...))
	}
	if len(c.Listeners) == 0 {
		bad("listener", "no listener")
	}
	seen := map[string]bool{}
	for i, l := range c.Listeners {
		key := fmt.Sprintf("listener[%d]", i)
		if seen[l.Addr] && !strings.HasSuffix(l.Addr, ":0") { // port 0: each gets its own
			bad(key+".addr", "%q is given twice", l.Addr)
		}
		seen[l.Addr] = true
		if err := checkAddr(l.Addr); err != nil {
			bad(key+".addr", "%v", err)
		}
		switch l.Protocol {
		case ProtoHTTP, ProtoUWSGI:
		default:
			bad(key+".protocol", "%q is not http or uwsgi", l.Protocol)
		}
		if l.SocketMode&^0o777 != 0 {
			bad(key+".socket_mode", "%o is not a file mode (like 660)", l.SocketMode)
		}
		if l.TLS != nil {
			errs = append(errs, c.validateTLS(key, l)...)
		}
		if l.RedirectHTTPS && l.TLS != nil {
			bad(key+".redirect_https", "is for plain HTTP listeners; this one serves TLS")
		}
		if l.MaxHeaderFields < 0 {
			bad(key+".max_header_fields", "must not be negative (0: the default, %d)", DefaultMaxHeaderFields)
		}
		if l.MaxHeaderFields > 0 && l.MaxHeaderFields != DefaultMaxHeaderFields && l.Protocol == ProtoUWSGI {
			bad(key+".max_header_fields", "is for HTTP listeners; a uwsgi listener's nginx bounds the headers")
		}
		if l.RedirectHTTPS && l.Protocol == ProtoUWSGI {
			bad(key+".redirect_https", "is for HTTP listeners; a uwsgi listener's nginx redirects itself")
		}
	}
	for i, p := range c.TrustedProxies {
		if err := checkTrusted(p); err != nil {
			bad(fmt.Sprintf("trusted_proxies[%d]", i), "%v", err)
		}
	}
	names := map[string]bool{}
	for _, a := range c.Apps {
		key := "app." + a.Name
		if a.Name == "" || strings.ContainsAny(a.Name, ". \t") {
			bad(key, "app name %q must be non-empty without dots or spaces", a.Name)
		}
		if names[a.Name] {
			bad(key, "app %q is defined twice", a.Name)
		}
		names[a.Name] = true
		c.validateApp(&errs, key, &a)
	}
	c.validateSites(&errs)
	c.validateLimits(&errs)
	if c.Admin != nil {
		if err := checkLoopback(c.Admin.Addr); err != nil {
			bad("admin.addr", "%v", err)
		}
		if c.Admin.ShutdownDelay < 0 {
			bad("admin.shutdown_delay", "must not be negative")
		}
	}
	switch c.AccessLogFormat {
	case "combined", "json":
	default:
		bad("access_log_format", "%q is not combined or json", c.AccessLogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "%q is not debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("log_format", "%q is not text or json", c.LogFormat)
	}
	if c.ErrorLog == "off" {
		bad("error_log", `cannot be "off" (use log_level = "error" for less); a path, or "-" for stderr`)
	}
	if c.ShutdownTimeout <= 0 {
		bad("graceful_timeout", "must be positive")
	}
	if c.User != "" {
		if _, err := LookupUser(c.User); err != nil {
			bad("user", "%v", err)
		}
	}
	if c.Group != "" {
		if _, err := LookupGroup(c.Group); err != nil {
			bad("group", "%v", err)
		}
	}
	return errors.Join(errs...)
}

func (c *Config) validateTLS(key string, l Listener) []error {
	var errs []error
	if l.Protocol == ProtoUWSGI {
		errs = append(errs, c.errorAt(key+".tls", "TLS is for protocol \"http\" listeners; the uwsgi protocol is spoken in the clear, to a local nginx"))
	}
	n := len(errs)
	if l.TLS.Cert == "" {
		errs = append(errs, c.errorAt(key+".tls.cert", "missing"))
	} else {
		c.checkFile(&errs, key+".tls.cert", l.TLS.Cert)
	}
	if l.TLS.Key == "" {
		errs = append(errs, c.errorAt(key+".tls.key", "missing"))
	} else {
		c.checkFile(&errs, key+".tls.key", l.TLS.Key)
	}
	if len(errs) == n {
		if _, err := tls.LoadX509KeyPair(l.TLS.Cert, l.TLS.Key); err != nil {
			errs = append(errs, c.errorAt(key+".tls", "loading the certificate and key: %v", err))
		}
	}
	return errs
}

func (c *Config) checkFile(errs *[]error, key, path string) {
	if st, err := os.Stat(path); err != nil {
		*errs = append(*errs, c.errorAt(key, "%v", err))
	} else if st.IsDir() {
		*errs = append(*errs, c.errorAt(key, "%s is a directory, not a file", path))
	}
}

func (c *Config) checkDir(errs *[]error, key, path string) {
	if st, err := os.Stat(path); err != nil {
		*errs = append(*errs, c.errorAt(key, "%v", err))
	} else if !st.IsDir() {
		*errs = append(*errs, c.errorAt(key, "%s is not a directory", path))
	}
}

func (c *Config) validateApp(errs *[]error, key string, a *App) {
	bad := func(k, format string, args ...any) {
		*errs = append(*errs, c.errorAt(key+"."+k, format, args...))
	}
	if a.Module == "" {
		bad("module", "no MODULE:CALLABLE given")
	} else if err := checkCallable(a.Module); err != nil {
		bad("module", "%v", err)
	} else if path := strings.SplitN(a.Module, ":", 2)[0]; strings.HasSuffix(path, ".py") {
		if !filepath.IsAbs(path) && a.Dir != "" {
			path = filepath.Join(a.Dir, path)
		}
		c.checkFile(errs, key+".module", path)
	}
	if strings.Contains(a.Python, "/") {
		c.checkFile(errs, key+".python", a.Python)
	}
	if a.Dir != "" {
		c.checkDir(errs, key+".chdir", a.Dir)
	}
	if a.Workers < 1 {
		bad("workers", "must be at least 1, not %d", a.Workers)
	}
	if a.Threads < 1 {
		bad("threads", "must be at least 1, not %d", a.Threads)
	}
	if a.Timeout <= 0 {
		bad("timeout", "must be positive")
	}
	if a.Grace <= 0 {
		bad("grace", "must be positive")
	}
	if a.MaxRequests < 0 {
		bad("max_requests", "must not be negative")
	}
	if a.MaxRSS < 0 {
		bad("max_rss", "must not be negative")
	}
	if a.MaxBody <= 0 {
		bad("max_body", "must be positive")
	}
	if a.QueueSize < 0 {
		bad("queue_size", "must not be negative")
	}
	if a.QueueTimeout <= 0 {
		bad("queue_timeout", "must be positive")
	}
	if a.Sched != SchedBatch && a.Sched != SchedNormal {
		bad("sched", "must be %q or %q, not %q", SchedBatch, SchedNormal, a.Sched)
	}
	for _, kv := range a.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			bad("env", "%q is not KEY=VALUE", kv)
		}
	}
}

// checkCallable checks the CALLABLE of MODULE:CALLABLE as far as Go can:
// a dotted name, optionally followed by factory arguments in parentheses
// (create_app('testing'), create_app(env="prod", debug=False)). That the
// arguments are literals is checked by worker.py (ast.literal_eval) when
// it imports the app. The split is worker.py's: the last colon before any
// "(", since arguments may hold colons.
func checkCallable(spec string) error {
	head, _, _ := strings.Cut(spec, "(")
	i := strings.LastIndexByte(head, ':')
	if i <= 0 {
		return nil // no CALLABLE: application, then app
	}
	attr := spec[i+1:]
	if attr == "" {
		return nil
	}
	name, args, call := strings.Cut(attr, "(")
	if strings.Contains(name, "/") || strings.HasSuffix(name, ".py") {
		return nil // a path, as worker.py reads it
	}
	name = strings.TrimSpace(name)
	for _, part := range strings.Split(name, ".") {
		if !isIdentifier(part) {
			return fmt.Errorf("%q: CALLABLE %q is not a dotted name or a factory call like create_app('testing')", spec, attr)
		}
	}
	if call && !strings.HasSuffix(strings.TrimSpace(args), ")") {
		return fmt.Errorf("%q: the factory call %q does not end with \")\"", spec, attr)
	}
	return nil
}

// isIdentifier reports whether s is a Python identifier: letters and
// underscores, digits after the first.
func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if r != '_' && !unicode.IsLetter(r) && (i == 0 || !unicode.IsDigit(r)) {
			return false
		}
	}
	return true
}

// checkTrusted accepts what realip.ParseTrusted does: a CIDR prefix, a
// bare address, "unix" or "*".
func checkTrusted(s string) error {
	s = strings.TrimSpace(s)
	switch {
	case s == "unix", s == "*":
		return nil
	case strings.Contains(s, "/"):
		if _, err := netip.ParsePrefix(s); err != nil {
			return fmt.Errorf("%q is not a CIDR prefix (like 10.0.0.0/8 or fd00::/8)", s)
		}
		return nil
	}
	if a, err := netip.ParseAddr(s); err != nil || a.Zone() != "" {
		return fmt.Errorf("%q is not an address, a CIDR prefix, \"unix\" or \"*\"", s)
	}
	return nil
}

// checkLoopback accepts unix:/path and loopback host:port addresses only.
func checkLoopback(addr string) error {
	if err := checkAddr(addr); err != nil {
		return err
	}
	if strings.HasPrefix(addr, "unix:") {
		return nil
	}
	host, _, _ := splitHostPort(addr)
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q: the admin listener must be a unix socket or a loopback address (127.0.0.1:PORT, [::1]:PORT, localhost:PORT)", addr)
	}
	return nil
}

func checkAddr(addr string) error {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if path == "" {
			return fmt.Errorf("%q: empty socket path", addr)
		}
		return nil
	}
	host, port, err := splitHostPort(addr)
	if err != nil {
		return err
	}
	_ = host
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: bad port %q", addr, port)
	}
	return nil
}

func splitHostPort(addr string) (string, string, error) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return "", "", fmt.Errorf("%q: want host:port, :port or unix:/path", addr)
	}
	return strings.Trim(addr[:i], "[]"), addr[i+1:], nil
}

// ParseSize parses a size: a number of bytes, or a number with a unit:
// K/KB/KiB, M/MB/MiB, G/GB/GiB (all powers of 1024, as nginx reads them).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') {
		i--
	}
	num, unit := strings.TrimSpace(t[:i]), strings.ToLower(strings.TrimSpace(t[i:]))
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (like 512, 64KiB, 10MiB, 1GiB)", s)
	}
	mult := float64(1)
	switch unit {
	case "", "b":
	case "k", "kb", "kib":
		mult = 1 << 10
	case "m", "mb", "mib":
		mult = 1 << 20
	case "g", "gb", "gib":
		mult = 1 << 30
	default:
		return 0, fmt.Errorf("%q: unknown size unit %q", s, unit)
	}
	return int64(n * mult), nil
}

// ParseDuration parses a duration like "30s", "1m30s", "500ms", or a bare
// number of seconds ("30", as gunicorn and uWSGI take it).
func ParseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if n, err := strconv.ParseFloat(t, 64); err == nil {
		return time.Duration(n * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (like 30s, 2m, 500ms)", s)
	}
	return d, nil
}
