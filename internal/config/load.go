package config

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Load reads, decodes and validates the TOML config file at path. The
// error lists every problem at once, each an *Error naming the file, the
// line and the key path, sorted by file and line (decoding and validation
// find them in different orders).
func Load(path string) (*Config, error) {
	return LoadWith(path, Overrides{})
}

// Overrides are settings given on the command line that replace the
// file's for every app (portico serve's flags). The zero value changes
// nothing.
type Overrides struct {
	// Python, when set, is every app's interpreter (serve --python),
	// whatever the file's python keys say. A path with a slash is made
	// absolute against the current directory.
	Python string
}

// LoadWith is Load with o applied before validation.
func LoadWith(path string, o Overrides) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: reading %s: %w", path, err)
	}
	c, err := Parse(path, data)
	var pe *parseErrors
	if errors.As(err, &pe) {
		// Validate what could be decoded too, so that all errors come at
		// once; keys that failed to decode are not checked twice.
		errs := pe.errs
		o.apply(pe.c)
		if verr := pe.c.Validate(); verr != nil {
			for _, e := range unjoin(verr) {
				if ce, ok := e.(*Error); !ok || !pe.failed[ce.Key] {
					errs = append(errs, e)
				}
			}
		}
		return nil, errors.Join(sortErrors(errs)...)
	}
	if err != nil {
		return nil, err
	}
	o.apply(c)
	if err := c.Validate(); err != nil {
		return nil, errors.Join(sortErrors(unjoin(err))...)
	}
	return c, nil
}

func (o Overrides) apply(c *Config) {
	if o.Python == "" {
		return
	}
	python := o.Python
	if strings.Contains(python, "/") {
		if abs, err := filepath.Abs(python); err == nil {
			python = abs
		}
	}
	if c.names == nil {
		c.names = map[string]string{}
	}
	for i := range c.Apps {
		c.Apps[i].Python = python
		c.names["app."+c.Apps[i].Name+".python"] = "--python"
	}
}

// sortErrors orders errs by file, then line, keeping the order of equal
// ones; errors that are not an *Error come first.
func sortErrors(errs []error) []error {
	slices.SortStableFunc(errs, func(a, b error) int {
		var fa, fb string
		var la, lb int
		if e, ok := a.(*Error); ok {
			fa, la = e.File, e.Line
		}
		if e, ok := b.(*Error); ok {
			fb, lb = e.File, e.Line
		}
		return cmp.Or(cmp.Compare(fa, fb), cmp.Compare(la, lb))
	})
	return errs
}

// parseErrors are decoding errors, with what could be decoded.
type parseErrors struct {
	errs   []error
	c      *Config
	failed map[string]bool // key paths that did not decode
}

func (e *parseErrors) Error() string { return errors.Join(e.errs...).Error() }

// Unwrap gives errors.As the *Error values.
func (e *parseErrors) Unwrap() []error { return e.errs }

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// Parse decodes a config file's contents without validating them; file
// names the file in errors and relative paths are resolved against its
// directory. Wrong types and unknown keys are errors, all reported at once.
func Parse(file string, data []byte) (*Config, error) {
	root, err := parseTree(data)
	if err != nil {
		var le *lineError
		if errors.As(err, &le) {
			return nil, &Error{File: file, Line: le.line, Msg: le.msg}
		}
		return nil, &Error{File: file, Msg: err.Error()}
	}
	dir, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		return nil, fmt.Errorf("config: resolving %s: %w", file, err)
	}
	d := &decoder{c: Default(), dir: dir}
	d.c.File = file
	d.c.lines = map[string]int{}
	d.config(root)
	if len(d.errs) > 0 {
		failed := map[string]bool{}
		for _, e := range d.errs {
			failed[e.(*Error).Key] = true
		}
		return nil, &parseErrors{errs: d.errs, c: d.c, failed: failed}
	}
	return d.c, nil
}

// decoder turns the value tree into a Config, collecting every error.
type decoder struct {
	c    *Config
	dir  string // the config file's directory
	errs []error
}

func (d *decoder) bad(path string, line int, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.c.File, Line: line, Key: path, Msg: fmt.Sprintf(format, args...)})
}

// get returns t[key] if present and of kind k (else records an error and
// returns nil), marks it used and records its line.
func (d *decoder) get(t *value, path, key string, k kind) *value {
	v, ok := t.tab[key]
	if !ok {
		return nil
	}
	t.used[key] = true
	p := join(path, key)
	d.c.lines[p] = v.line
	if v.kind != k {
		d.bad(p, v.line, "want %s, not %s", k, v.kind)
		return nil
	}
	return v
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// unknown reports every key of t the decoder did not read.
func (d *decoder) unknown(t *value, path string, known string) {
	for _, k := range t.keys {
		if !t.used[k] {
			d.bad(join(path, k), t.tab[k].line, "unknown key (known here: %s)", known)
		}
	}
}

func (d *decoder) str(t *value, path, key string, dst *string) {
	if v := d.get(t, path, key, kString); v != nil {
		*dst = v.str
	}
}

func (d *decoder) path(t *value, path, key string, dst *string) {
	if v := d.get(t, path, key, kString); v != nil {
		*dst = v.str
		if v.str != "" && !filepath.IsAbs(v.str) {
			*dst = filepath.Join(d.dir, v.str)
		}
	}
}

func (d *decoder) boolean(t *value, path, key string, dst *bool) {
	if v := d.get(t, path, key, kBool); v != nil {
		*dst = v.b
	}
}

func (d *decoder) integer(t *value, path, key string, dst *int) {
	if v := d.get(t, path, key, kInt); v != nil {
		*dst = int(v.i)
	}
}

func (d *decoder) duration(t *value, path, key string, dst *time.Duration) {
	decodeUnit(d, t, path, key, dst, ParseDuration, func(n int64) time.Duration { return time.Duration(n) * time.Second }, `a duration like "30s"`)
}

func (d *decoder) size(t *value, path, key string, dst *int64) {
	decodeUnit(d, t, path, key, dst, ParseSize, func(n int64) int64 { return n }, `a size like "10MiB"`)
}

// decodeUnit decodes a value given as a string with a unit (parse) or as a
// bare integer (fromInt: seconds, bytes).
func decodeUnit[T any](d *decoder, t *value, path, key string, dst *T, parse func(string) (T, error), fromInt func(int64) T, want string) {
	v, ok := t.tab[key]
	if !ok {
		return
	}
	t.used[key] = true
	p := join(path, key)
	d.c.lines[p] = v.line
	switch v.kind {
	case kString:
		x, err := parse(v.str)
		if err != nil {
			d.bad(p, v.line, "%v", err)
			return
		}
		*dst = x
	case kInt:
		*dst = fromInt(v.i)
	default:
		d.bad(p, v.line, "want %s, not %s", want, v.kind)
	}
}

func (d *decoder) strings(t *value, path, key string, dst *[]string) {
	v := d.get(t, path, key, kArray)
	if v == nil {
		return
	}
	*dst = []string{}
	for i, e := range v.arr {
		if e.kind != kString {
			d.bad(fmt.Sprintf("%s[%d]", join(path, key), i), e.line, "want a string, not %s", e.kind)
			continue
		}
		*dst = append(*dst, e.str)
	}
}

// stringTable decodes a table of strings, keys in file order.
func (d *decoder) stringTable(t *value, path, key string) ([]string, map[string]string) {
	v := d.get(t, path, key, kTable)
	if v == nil {
		return nil, nil
	}
	m := map[string]string{}
	var keys []string
	for _, k := range v.keys {
		e := v.tab[k]
		if e.kind != kString {
			d.bad(join(join(path, key), k), e.line, "want a string, not %s", e.kind)
			continue
		}
		keys = append(keys, k)
		m[k] = e.str
	}
	return keys, m
}

// tables returns the tables of an array of tables (or of an inline array of
// inline tables).
func (d *decoder) tables(t *value, key string) []*value {
	v := d.get(t, "", key, kArray)
	if v == nil {
		return nil
	}
	var out []*value
	for i, e := range v.arr {
		if e.kind != kTable {
			d.bad(fmt.Sprintf("%s[%d]", key, i), e.line, "want a table, not %s", e.kind)
			continue
		}
		out = append(out, e)
	}
	return out
}

const (
	topKeys      = "access_log, access_log_format, log_level, error_log, log_format, graceful_timeout, trusted_proxies, user, group, pidfile, max_connections, [admin], [[listener]], [app.NAME], [[site]]"
	listenerKeys = "addr, protocol, socket_mode, tls, proxy_protocol, redirect_https, max_header_fields, limit_conn, max_connections"
	appKeys      = "module, python, chdir, env, workers, threads, timeout, grace, max_requests, max_rss, max_body, queue_size, queue_timeout, reload, reload_code, sched"
	siteKeys     = "hosts, allow, deny, limit_req, limit_conn, error_pages, [[site.route]]"
	routeKeys    = "path, name, methods, header, static, app, redirect, respond, proxy, headers_add, headers_remove, allow, deny, waf, limit_req, limit_conn, compress, cache, intercept_errors"
)

func (d *decoder) config(root *value) {
	c := d.c
	d.str(root, "", "access_log", &c.AccessLog)
	if c.AccessLog != "-" && c.AccessLog != "off" && c.AccessLog != "" && !filepath.IsAbs(c.AccessLog) {
		c.AccessLog = filepath.Join(d.dir, c.AccessLog)
	}
	d.str(root, "", "access_log_format", &c.AccessLogFormat)
	d.str(root, "", "log_level", &c.LogLevel)
	d.str(root, "", "error_log", &c.ErrorLog)
	if c.ErrorLog != "-" && c.ErrorLog != "off" && c.ErrorLog != "" && !filepath.IsAbs(c.ErrorLog) {
		c.ErrorLog = filepath.Join(d.dir, c.ErrorLog)
	}
	d.str(root, "", "log_format", &c.LogFormat)
	d.duration(root, "", "graceful_timeout", &c.ShutdownTimeout)
	d.strings(root, "", "trusted_proxies", &c.TrustedProxies)
	d.str(root, "", "user", &c.User)
	d.str(root, "", "group", &c.Group)
	d.path(root, "", "pidfile", &c.PIDFile)
	d.integer(root, "", "max_connections", &c.MaxConnections)
	if t := d.get(root, "", "admin", kTable); t != nil {
		c.Admin = &Admin{}
		d.str(t, "admin", "addr", &c.Admin.Addr)
		if path, ok := strings.CutPrefix(c.Admin.Addr, "unix:"); ok && path != "" && !filepath.IsAbs(path) {
			c.Admin.Addr = "unix:" + filepath.Join(d.dir, path)
		}
		d.duration(t, "admin", "shutdown_delay", &c.Admin.ShutdownDelay)
		d.unknown(t, "admin", "addr, shutdown_delay")
	}
	for i, t := range d.tables(root, "listener") {
		d.listener(t, fmt.Sprintf("listener[%d]", i))
	}
	if apps := d.get(root, "", "app", kTable); apps != nil {
		for _, name := range apps.keys {
			t := apps.tab[name]
			apps.used[name] = true
			p := "app." + name
			c.lines[p] = t.line
			if t.kind != kTable {
				d.bad(p, t.line, "want a table [app.%s], not %s", name, t.kind)
				continue
			}
			d.app(t, p, name)
		}
	}
	for i, t := range d.tables(root, "site") {
		d.site(t, fmt.Sprintf("site[%d]", i))
	}
	d.unknown(root, "", topKeys)
}

func (d *decoder) listener(t *value, p string) {
	d.c.lines[p] = t.line
	l := DefaultListener("")
	d.str(t, p, "addr", &l.Addr)
	if l.Addr == "" {
		d.bad(p+".addr", t.line, "missing: host:port, :port or unix:/path")
	}
	if path, ok := strings.CutPrefix(l.Addr, "unix:"); ok && path != "" && !filepath.IsAbs(path) {
		l.Addr = "unix:" + filepath.Join(d.dir, path)
	}
	d.str(t, p, "protocol", &l.Protocol)
	if v, ok := t.tab["socket_mode"]; ok {
		t.used["socket_mode"] = true
		d.c.lines[p+".socket_mode"] = v.line
		switch v.kind {
		case kString:
			m, err := strconv.ParseUint(v.str, 8, 32)
			if err != nil {
				d.bad(p+".socket_mode", v.line, "%q is not an octal mode (like \"660\")", v.str)
			}
			l.SocketMode = os.FileMode(m)
		case kInt:
			l.SocketMode = os.FileMode(v.i)
		default:
			d.bad(p+".socket_mode", v.line, "want an octal mode like \"660\" or 0o660, not %s", v.kind)
		}
	}
	if tt := d.get(t, p, "tls", kTable); tt != nil {
		l.TLS = &TLS{}
		d.path(tt, p+".tls", "cert", &l.TLS.Cert)
		d.path(tt, p+".tls", "key", &l.TLS.Key)
		d.unknown(tt, p+".tls", "cert, key")
	}
	d.boolean(t, p, "proxy_protocol", &l.ProxyProtocol)
	d.boolean(t, p, "redirect_https", &l.RedirectHTTPS)
	d.integer(t, p, "max_header_fields", &l.MaxHeaderFields)
	if l.MaxHeaderFields == 0 {
		l.MaxHeaderFields = DefaultMaxHeaderFields
	}
	d.listenerLimits(t, p, &l)
	d.unknown(t, p, listenerKeys)
	d.c.Listeners = append(d.c.Listeners, l)
}

func (d *decoder) app(t *value, p, name string) {
	a := DefaultApp(name)
	a.Dir = d.dir
	d.str(t, p, "module", &a.Module)
	if a.Module == "" {
		if _, ok := t.tab["module"]; !ok {
			d.bad(p+".module", t.line, "missing: MODULE:CALLABLE")
		}
	}
	d.str(t, p, "python", &a.Python)
	if strings.Contains(a.Python, "/") && !filepath.IsAbs(a.Python) {
		a.Python = filepath.Join(d.dir, a.Python)
	}
	d.path(t, p, "chdir", &a.Dir)
	d.boolean(t, p, "reload_code", &a.ReloadCode)
	d.appSettings(t, p, &a)
	d.unknown(t, p, appKeys)
	d.c.Apps = append(d.c.Apps, a)
}

func (d *decoder) site(t *value, p string) {
	d.c.lines[p] = t.line
	var s Site
	d.strings(t, p, "hosts", &s.Hosts)
	if rv := d.get(t, p, "route", kArray); rv != nil {
		for i, e := range rv.arr {
			rp := fmt.Sprintf("%s.route[%d]", p, i)
			if e.kind != kTable {
				d.bad(rp, e.line, "want a table, not %s", e.kind)
				continue
			}
			s.Routes = append(s.Routes, d.route(e, rp))
		}
	}
	d.limits(t, p, &s.LimitReq, &s.LimitConn)
	d.access(t, p, &s.Access)
	_, s.ErrorPages = d.stringTable(t, p, "error_pages")
	d.unknown(t, p, siteKeys)
	d.c.Sites = append(d.c.Sites, s)
}

func (d *decoder) route(t *value, p string) Route {
	d.c.lines[p] = t.line
	var r Route
	d.str(t, p, "path", &r.Path)
	d.str(t, p, "name", &r.Name)
	d.strings(t, p, "methods", &r.Methods)
	_, r.Header = d.stringTable(t, p, "header")
	if st := d.get(t, p, "static", kTable); st != nil {
		r.Static = &StaticRoute{Index: []string{"index.html"}}
		sp := p + ".static"
		d.path(st, sp, "dir", &r.Static.Dir)
		d.strings(st, sp, "index", &r.Static.Index)
		d.boolean(st, sp, "listing", &r.Static.Listing)
		d.boolean(st, sp, "spa", &r.Static.SPA)
		d.str(st, sp, "fallthrough", &r.Static.Fallthrough)
		d.duration(st, sp, "max_age", &r.Static.MaxAge)
		d.boolean(st, sp, "dotfiles", &r.Static.Dotfiles)
		d.boolean(st, sp, "internal", &r.Static.Internal)
		d.unknown(st, sp, "dir, index, listing, spa, fallthrough, max_age, dotfiles, internal")
	}
	d.str(t, p, "app", &r.App)
	if rt := d.get(t, p, "redirect", kTable); rt != nil {
		r.Redirect = &Redirect{Status: DefaultRedirectStatus}
		d.str(rt, p+".redirect", "to", &r.Redirect.To)
		d.integer(rt, p+".redirect", "status", &r.Redirect.Status)
		d.unknown(rt, p+".redirect", "to, status")
	}
	if rt := d.get(t, p, "respond", kTable); rt != nil {
		r.Respond = &Respond{Status: 200}
		d.integer(rt, p+".respond", "status", &r.Respond.Status)
		d.str(rt, p+".respond", "body", &r.Respond.Body)
		_, r.Respond.Headers = d.stringTable(rt, p+".respond", "headers")
		d.unknown(rt, p+".respond", "status, body, headers")
	}
	if pt := d.get(t, p, "proxy", kTable); pt != nil {
		r.Proxy = d.proxy(pt, p+".proxy")
	}
	_, r.HeadersAdd = d.stringTable(t, p, "headers_add")
	d.strings(t, p, "headers_remove", &r.HeadersRemove)
	d.limits(t, p, &r.LimitReq, &r.LimitConn)
	d.access(t, p, &r.Access)
	r.WAF = d.waf(t, p)
	d.shaping(t, p, &r)
	d.unknown(t, p, routeKeys)
	return r
}

const (
	proxyKeys    = "upstreams, policy, hash_key, timeout, connect_timeout, retries, try_duration, max_fails, fail_timeout, health, queue_size, queue_timeout, buffering, preserve_host, headers_up, max_body, websocket_timeout, root, index, split_path"
	upstreamKeys = "url, weight, max_conns, backup"
	healthKeys   = "uri, interval, timeout, status, rise, fall"
)

func (d *decoder) proxy(t *value, p string) *Proxy {
	px := DefaultProxy()
	if v := d.get(t, p, "upstreams", kArray); v != nil {
		for i, e := range v.arr {
			up := fmt.Sprintf("%s.upstreams[%d]", p, i)
			d.c.lines[up] = e.line
			switch e.kind {
			case kString:
				px.Upstreams = append(px.Upstreams, Upstream{URL: e.str, Weight: 1})
			case kTable:
				u := Upstream{Weight: 1}
				d.str(e, up, "url", &u.URL)
				d.integer(e, up, "weight", &u.Weight)
				d.integer(e, up, "max_conns", &u.MaxConns)
				d.boolean(e, up, "backup", &u.Backup)
				d.unknown(e, up, upstreamKeys)
				px.Upstreams = append(px.Upstreams, u)
			default:
				d.bad(up, e.line, "want a URL or a table { url = ..., weight = 1, max_conns = 0, backup = false }, not %s", e.kind)
			}
		}
	}
	d.str(t, p, "policy", &px.Policy)
	d.str(t, p, "hash_key", &px.HashKey)
	d.duration(t, p, "timeout", &px.Timeout)
	d.duration(t, p, "connect_timeout", &px.ConnectTimeout)
	d.integer(t, p, "retries", &px.Retries)
	d.duration(t, p, "try_duration", &px.TryDuration)
	d.integer(t, p, "max_fails", &px.MaxFails)
	d.duration(t, p, "fail_timeout", &px.FailTimeout)
	if ht := d.get(t, p, "health", kTable); ht != nil {
		px.Health = DefaultHealth()
		hp := p + ".health"
		d.str(ht, hp, "uri", &px.Health.URI)
		d.duration(ht, hp, "interval", &px.Health.Interval)
		d.duration(ht, hp, "timeout", &px.Health.Timeout)
		d.integer(ht, hp, "status", &px.Health.Status)
		d.integer(ht, hp, "rise", &px.Health.Rise)
		d.integer(ht, hp, "fall", &px.Health.Fall)
		d.unknown(ht, hp, healthKeys)
	}
	d.integer(t, p, "queue_size", &px.QueueSize)
	d.duration(t, p, "queue_timeout", &px.QueueTimeout)
	d.boolean(t, p, "buffering", &px.Buffering)
	d.boolean(t, p, "preserve_host", &px.PreserveHost)
	keys, headers := d.stringTable(t, p, "headers_up")
	for _, k := range keys {
		if name, ok := strings.CutPrefix(k, "-"); ok {
			px.HeadersUp = append(px.HeadersUp, HeaderUp{Name: name, Remove: true})
		} else {
			px.HeadersUp = append(px.HeadersUp, HeaderUp{Name: k, Value: headers[k]})
		}
	}
	d.size(t, p, "max_body", &px.MaxBody)
	d.duration(t, p, "websocket_timeout", &px.WebSocketTimeout)
	d.path(t, p, "root", &px.Root)
	d.strings(t, p, "index", &px.Index)
	d.strings(t, p, "split_path", &px.SplitPath)
	d.unknown(t, p, proxyKeys)
	return px
}

// appSettings decodes the worker settings an [app.NAME] table and
// [tool.portico] in pyproject.toml share.
func (d *decoder) appSettings(t *value, p string, a *App) {
	keys, env := d.stringTable(t, p, "env")
	for _, k := range keys {
		a.Env = append(a.Env, k+"="+env[k])
	}
	d.integer(t, p, "workers", &a.Workers)
	d.integer(t, p, "threads", &a.Threads)
	d.duration(t, p, "timeout", &a.Timeout)
	d.duration(t, p, "grace", &a.Grace)
	d.integer(t, p, "max_requests", &a.MaxRequests)
	d.size(t, p, "max_rss", &a.MaxRSS)
	d.size(t, p, "max_body", &a.MaxBody)
	d.integer(t, p, "queue_size", &a.QueueSize)
	d.duration(t, p, "queue_timeout", &a.QueueTimeout)
	d.boolean(t, p, "reload", &a.Reload)
	d.str(t, p, "sched", &a.Sched)
}
