package config

import (
	"fmt"
	"time"

	"net/http"
	"portico/internal/proxy"
	"regexp"
	"slices"
	"strings"
)

// HostDefault is the host name of the site that serves any Host no other
// site claims.
const HostDefault = "default"

func (c *Config) validateSites(errs *[]error) {
	bad := func(key, format string, args ...any) {
		*errs = append(*errs, c.errorAt(key, format, args...))
	}
	if len(c.Sites) == 0 {
		bad("site", "no site: add a [[site]] with hosts = [\"default\"] and its routes")
	}
	hosts := map[string]string{} // host → key path of the site that claims it
	used := map[string]bool{}
	mounts := map[string]string{} // app → SCRIPT_NAME
	for i, s := range c.Sites {
		key := fmt.Sprintf("site[%d]", i)
		if len(s.Hosts) == 0 {
			bad(key+".hosts", "no host: list names, \"*.example.com\" or \"default\"")
		}
		for _, h := range s.Hosts {
			n := strings.ToLower(h)
			if err := checkHost(n); err != nil {
				bad(key+".hosts", "%v", err)
				continue
			}
			if other, ok := hosts[n]; ok {
				if n == HostDefault {
					bad(key+".hosts", "a second default site (the first is %s)", other)
				} else {
					bad(key+".hosts", "host %q is claimed by %s too", h, other)
				}
				continue
			}
			hosts[n] = key
		}
		if len(s.Routes) == 0 {
			bad(key, "no route: add [[site.route]] tables")
		}
		c.validateAccess(errs, key, s.Access)
		c.validateErrorPages(errs, key, s.ErrorPages)
		seen := map[string]string{}
		names := map[string]string{}
		for j := range s.Routes {
			r := &s.Routes[j]
			rkey := fmt.Sprintf("%s.route[%d]", key, j)
			c.validateRoute(errs, rkey, r, used, mounts)
			c.validateAccess(errs, rkey, r.Access)
			c.validateWAF(errs, rkey, r.WAF)
			c.validateShaping(errs, rkey, r)
			if r.Name != "" {
				if err := checkRouteName(r.Name); err != nil {
					bad(rkey+".name", "%v", err)
				} else if first, ok := names[r.Name]; ok {
					bad(rkey+".name", "%q names %s too", r.Name, first)
				} else {
					names[r.Name] = rkey
				}
			}
			// Two routes with the same path and the same conditions: the
			// second is never chosen.
			kind, p := r.PathKind()
			if kind == PathPrefix && p != "/" {
				p = strings.TrimRight(p, "/")
			}
			ident := kind + " " + p + " " + strings.Join(r.Methods, ",") + " " + headerIdent(r.Header)
			if first, ok := seen[ident]; ok {
				bad(rkey+".path", "%q repeats the path of %s with the same conditions: this route is never used", r.Path, first)
			} else {
				seen[ident] = rkey
			}
		}
	}
	for _, a := range c.Apps {
		if !used[a.Name] {
			bad("app."+a.Name, "no route uses app %q", a.Name)
		}
	}
}

func headerIdent(h map[string]string) string {
	var parts []string
	for k, v := range h {
		parts = append(parts, http.CanonicalHeaderKey(k)+"="+v)
	}
	slices.Sort(parts)
	return strings.Join(parts, "&")
}

func checkHost(h string) error {
	if h == HostDefault {
		return nil
	}
	name := strings.TrimPrefix(h, "*.")
	if name == "" || strings.ContainsAny(name, "*/:[] ") || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") {
		return fmt.Errorf("%q is not a host name, \"*.example.com\" or \"default\"", h)
	}
	return nil
}

var tokenRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

func (c *Config) validateRoute(errs *[]error, key string, r *Route, used map[string]bool, mounts map[string]string) {
	bad := func(k, format string, args ...any) {
		if k != "" {
			k = "." + k
		}
		*errs = append(*errs, c.errorAt(key+k, format, args...))
	}
	kind, p := r.PathKind()
	switch {
	case r.Path == "":
		bad("path", "missing: \"/prefix\", \"=/exact\" or \"~regex\"")
	case kind == PathRegex:
		if _, err := regexp.Compile(p); err != nil {
			bad("path", "%v", err)
		}
	case !strings.HasPrefix(p, "/"):
		bad("path", "%q must start with / (or =/ for an exact path, ~ for a regex)", r.Path)
	}
	for _, m := range r.Methods {
		if !tokenRE.MatchString(m) || strings.ToUpper(m) != m {
			bad("methods", "%q is not an upper-case method name", m)
		}
	}
	for k := range r.Header {
		if !tokenRE.MatchString(k) {
			bad("header", "%q is not a header name", k)
		}
	}
	for k := range r.HeadersAdd {
		if !tokenRE.MatchString(k) {
			bad("headers_add", "%q is not a header name", k)
		}
	}
	for _, k := range r.HeadersRemove {
		if !tokenRE.MatchString(k) {
			bad("headers_remove", "%q is not a header name", k)
		}
	}
	n := 0
	if r.Static != nil {
		n++
		if r.Static.Dir == "" {
			bad("static.dir", "missing")
		} else {
			c.checkDir(errs, key+".static.dir", r.Static.Dir)
		}
		if kind != PathPrefix {
			bad("static", "a static route needs a prefix path, not %q", r.Path)
		}
		if f := r.Static.Fallthrough; f != "" {
			used[f] = true
			if c.App(f) == nil {
				bad("static.fallthrough", "no [app.%s] is defined", f)
			}
		}
		if r.Static.MaxAge < 0 {
			bad("static.max_age", "must not be negative")
		}
	}
	if r.App != "" {
		n++
		used[r.App] = true
		if c.App(r.App) == nil {
			bad("app", "no [app.%s] is defined", r.App)
		} else {
			mount := ""
			if kind == PathPrefix {
				mount = strings.TrimRight(p, "/")
			}
			if prev, ok := mounts[r.App]; ok && prev != mount {
				bad("app", "app %q is mounted at %q and %q: one app has one SCRIPT_NAME (define a second app)", r.App, prev, mount)
			} else {
				mounts[r.App] = mount
			}
		}
	}
	if r.Redirect != nil {
		n++
		if r.Redirect.To == "" {
			bad("redirect.to", "missing")
		}
		switch r.Redirect.Status {
		case 301, 302, 303, 307, 308:
		default:
			bad("redirect.status", "%d is not 301, 302, 303, 307 or 308", r.Redirect.Status)
		}
	}
	if r.Respond != nil {
		n++
		if r.Respond.Status < 100 || r.Respond.Status > 599 {
			bad("respond.status", "%d is not an HTTP status", r.Respond.Status)
		}
		for k := range r.Respond.Headers {
			if !tokenRE.MatchString(k) {
				bad("respond.headers", "%q is not a header name", k)
			}
		}
	}
	if r.Proxy != nil {
		n++
		c.validateProxy(errs, key+".proxy", r.Proxy)
	}
	switch n {
	case 0:
		bad("", "no handler: set one of static, app, redirect, respond, proxy")
	case 1:
	default:
		bad("", "%d handlers: set exactly one of static, app, redirect, respond, proxy", n)
	}
}

func (c *Config) validateProxy(errs *[]error, key string, px *Proxy) {
	bad := func(k, format string, args ...any) {
		*errs = append(*errs, c.errorAt(key+"."+k, format, args...))
	}
	if len(px.Upstreams) == 0 {
		bad("upstreams", "no upstream: list URLs like \"http://127.0.0.1:8080\", \"uwsgi://127.0.0.1:3031\" or \"fastcgi+unix:///run/php/php-fpm.sock\"")
	}
	family := ""
	for i, u := range px.Upstreams {
		uk := fmt.Sprintf("upstreams[%d]", i)
		t, err := proxy.ParseTarget(u.URL)
		if err != nil {
			bad(uk, "%v", err)
			continue
		}
		if family == "" {
			family = t.Family
		} else if t.Family != family {
			bad(uk, "%q is a %s upstream after %s ones: one protocol family per route", u.URL, t.Family, family)
		}
		if u.Weight < 1 {
			bad(uk+".weight", "must be at least 1, not %d", u.Weight)
		}
		if u.MaxConns < 0 {
			bad(uk+".max_conns", "must not be negative")
		}
	}
	switch px.Policy {
	case proxy.PolicyLeastConn, proxy.PolicyRoundRobin, proxy.PolicyRandomTwo, proxy.PolicyIPHash, proxy.PolicyFirst:
		if px.HashKey != "" {
			bad("hash_key", "is for policy \"hash\" only")
		}
	case proxy.PolicyHash:
		if px.HashKey == "" {
			bad("hash_key", "missing: policy \"hash\" needs \"header:NAME\", \"cookie:NAME\" or \"uri\"")
		} else if _, err := proxy.ParseHashKey(px.HashKey); err != nil {
			bad("hash_key", "%q is not \"header:NAME\", \"cookie:NAME\" or \"uri\"", px.HashKey)
		}
	default:
		bad("policy", "%q is not least_conn, round_robin, random_two, ip_hash, hash or first", px.Policy)
	}
	positive := map[string]time.Duration{"timeout": px.Timeout, "connect_timeout": px.ConnectTimeout,
		"fail_timeout": px.FailTimeout, "queue_timeout": px.QueueTimeout, "websocket_timeout": px.WebSocketTimeout}
	for _, k := range []string{"timeout", "connect_timeout", "fail_timeout", "queue_timeout", "websocket_timeout"} {
		if positive[k] <= 0 {
			bad(k, "must be positive")
		}
	}
	if px.TryDuration < 0 {
		bad("try_duration", "must not be negative")
	}
	if px.Retries < 0 {
		bad("retries", "must not be negative")
	}
	if px.MaxFails < 0 {
		bad("max_fails", "must not be negative")
	}
	if px.QueueSize < 0 {
		bad("queue_size", "must not be negative")
	}
	if px.MaxBody <= 0 {
		bad("max_body", "must be positive")
	}
	if h := px.Health; h != nil {
		if !strings.HasPrefix(h.URI, "/") {
			bad("health.uri", "%q must start with /", h.URI)
		}
		if h.Interval <= 0 {
			bad("health.interval", "must be positive")
		}
		if h.Timeout <= 0 {
			bad("health.timeout", "must be positive")
		}
		if h.Status < 100 || h.Status > 599 {
			bad("health.status", "%d is not an HTTP status", h.Status)
		}
		if h.Rise < 1 {
			bad("health.rise", "must be at least 1")
		}
		if h.Fall < 1 {
			bad("health.fall", "must be at least 1")
		}
	}
	for _, h := range px.HeadersUp {
		if !tokenRE.MatchString(h.Name) {
			bad("headers_up", "%q is not a header name", h.Name)
		}
	}
	if family == proxy.FamilyFastCGI {
		if px.Root == "" {
			bad("root", "missing: a fastcgi route needs the document root its scripts live in")
		} else {
			c.checkDir(errs, key+".root", px.Root)
		}
		for _, ix := range px.Index {
			if ix == "" || strings.Contains(ix, "/") {
				bad("index", "%q is not a file name", ix)
			}
		}
		for _, sp := range px.SplitPath {
			if sp == "" || strings.Contains(sp, "/") {
				bad("split_path", "%q is not a suffix like \".php\"", sp)
			}
		}
	} else if family != "" {
		for k, set := range map[string]bool{"root": px.Root != "", "index": px.Index != nil, "split_path": px.SplitPath != nil} {
			if set {
				bad(k, "is for fastcgi upstreams only")
			}
		}
	}
}

// checkRouteName accepts a route name: a metrics label value that cannot
// be taken for a route's index.
func checkRouteName(n string) error {
	digits := true
	for _, c := range n {
		switch {
		case c >= '0' && c <= '9':
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_', c == '-', c == '.':
			digits = false
		default:
			return fmt.Errorf("%q: use letters, digits, '_', '-' and '.'", n)
		}
	}
	if digits {
		return fmt.Errorf("%q: a name of digits only would read as a route's index", n)
	}
	return nil
}
