package config

import (
	"fmt"
	"net/http"
	"net/url"
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
		seen := map[string]string{}
		for j := range s.Routes {
			r := &s.Routes[j]
			rkey := fmt.Sprintf("%s.route[%d]", key, j)
			c.validateRoute(errs, rkey, r, used, mounts)
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
		if len(r.Proxy.Upstreams) == 0 {
			bad("proxy.upstreams", "no upstream")
		}
		for _, u := range r.Proxy.Upstreams {
			pu, err := url.Parse(u)
			if err != nil || (pu.Scheme != "http" && pu.Scheme != "uwsgi" && pu.Scheme != "uwsgi+unix") {
				bad("proxy.upstreams", "%q is not http://host:port, uwsgi://host:port or uwsgi+unix:///path", u)
			}
		}
		bad("proxy", "proxy routes are not supported yet")
	}
	switch n {
	case 0:
		bad("", "no handler: set one of static, app, redirect, respond, proxy")
	case 1:
	default:
		bad("", "%d handlers: set exactly one of static, app, redirect, respond, proxy", n)
	}
}
