package app

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"portico/internal/cache"
	"portico/internal/compress"
	"portico/internal/static"
)

// router chooses a site by the request's Host, then a route in the site.
//
// Hosts: an exact name beats a wildcard ("*.example.com", the longest
// suffix first), which beats the default site; the port is stripped and
// names compare case-insensitively. No site and no default site: 404.
//
// Routes in a site, as nginx chooses locations: exact paths first, then
// regexes in file order, then the longest matching prefix (at a segment
// boundary: /static matches /static and /static/x, not /staticfiles).
// Regexes before prefixes so that a catch-all "/" does not make every regex
// unreachable, and so that nginx configs translate as they read. Among
// routes with the same path, the first in the file whose methods and
// headers match wins. No route: 404.
type router struct {
	exact     map[string]*site
	wildcards []wildcard // longest suffix first
	def       *site
	proxies   []proxyRoute   // in file order
	caches    []*cache.Cache // the routes' caches, for purges
}

type wildcard struct {
	suffix string // ".example.com"
	site   *site
}

type site struct {
	hosts  []string
	exact  []*route    // file order
	prefix []*route    // longest prefix first, then file order
	regex  []*route    // file order
	pages  *errorPages // nil: none
}

type route struct {
	kind       string // "exact", "prefix", "regex"
	path       string // exact path, prefix without trailing slash ("" for "/"), or regex source
	re         *regexp.Regexp
	methods    []string
	header     map[string]string
	desc       string // the handler, for the table dump
	h          http.Handler
	static     *static.Handler      // a static route's handler, for internal redirects
	root       string               // a static route's directory
	label      string               // the route's name, or its index in the site (metrics)
	limits     []limitCounter       // the limits around h, for the metrics (limits.go)
	cache      *cache.Cache         // the route's cache, or nil
	compressor *compress.Compressor // the route's compression, or nil
}

func (rt *router) addSite(hosts []string) *site {
	s := &site{hosts: hosts}
	if rt.exact == nil {
		rt.exact = map[string]*site{}
	}
	for _, h := range hosts {
		h = strings.ToLower(h)
		switch {
		case h == "default":
			rt.def = s
		case strings.HasPrefix(h, "*."):
			rt.wildcards = append(rt.wildcards, wildcard{h[1:], s})
			slices.SortStableFunc(rt.wildcards, func(a, b wildcard) int { return len(b.suffix) - len(a.suffix) })
		default:
			rt.exact[h] = s
		}
	}
	return s
}

func (s *site) add(r *route) {
	switch r.kind {
	case "exact":
		s.exact = append(s.exact, r)
	case "regex":
		s.regex = append(s.regex, r)
	default:
		s.prefix = append(s.prefix, r)
		slices.SortStableFunc(s.prefix, func(a, b *route) int { return len(b.path) - len(a.path) })
	}
}

// hostSite returns the site for a Host header value, or nil.
func (rt *router) hostSite(host string) *site {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if s, ok := rt.exact[host]; ok {
		return s
	}
	for _, w := range rt.wildcards {
		if strings.HasSuffix(host, w.suffix) && len(host) > len(w.suffix) {
			return w.site
		}
	}
	return rt.def
}

// match returns the route for r in s, or nil.
func (s *site) match(r *http.Request) *route {
	path := r.URL.Path
	for _, rt := range s.exact {
		if path == rt.path && rt.conditions(r) {
			return rt
		}
	}
	for _, rt := range s.regex {
		if rt.re.MatchString(path) && rt.conditions(r) {
			return rt
		}
	}
	for _, rt := range s.prefix {
		if (rt.path == "" || path == rt.path || (strings.HasPrefix(path, rt.path) && path[len(rt.path)] == '/')) && rt.conditions(r) {
			return rt
		}
	}
	return nil
}

func (rt *route) conditions(r *http.Request) bool {
	if len(rt.methods) > 0 && !slices.Contains(rt.methods, r.Method) {
		return false
	}
	for k, v := range rt.header {
		if r.Header.Get(k) != v {
			return false
		}
	}
	return true
}

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := rt.hostSite(r.Host)
	if s == nil {
		http.Error(w, "404 no site for this host", http.StatusNotFound)
		return
	}
	route := s.match(r)
	if route == nil {
		if s.pages == nil || !s.pages.serve(w, r, http.StatusNotFound, false) {
			http.NotFound(w, r)
		}
		return
	}
	route.h.ServeHTTP(w, r)
}

// internalRedirect serves the file an app response named, with the app's
// headers (status: what http.ServeContent decides — 200, 206 or 304):
//   - X-Accel-Redirect: a URI, matched against the request's site like an
//     nginx internal redirect; it must land on a static route (typically
//     one marked internal), which serves the file;
//   - X-Sendfile: a file path, which must lie inside the directory of one of
//     the site's static routes: an app cannot make Portico send an
//     arbitrary file of the machine.
//
// Anything else is a 404 for the client and an error in the log, naming
// the header.
func (rt *router) internalRedirect(w http.ResponseWriter, r *http.Request, status int, header http.Header, log *slog.Logger) {
	accel, sendfile := header.Get("X-Accel-Redirect"), header.Get("X-Sendfile")
	h := w.Header()
	for k, v := range header {
		switch k {
		case "X-Accel-Redirect", "X-Sendfile", "Content-Length", "Content-Range", "Accept-Ranges", "Etag", "Last-Modified":
			continue // about the body the app did not send, or ours to set
		}
		h[k] = v
	}
	fail := func(why string) {
		log.Error("internal redirect failed", "uri", r.RequestURI, "x_accel_redirect", accel, "x_sendfile", sendfile, "status", status, "err", why)
		for k := range h {
			delete(h, k)
		}
		http.NotFound(w, r)
	}
	s := rt.hostSite(r.Host)
	if s == nil {
		fail("no site for the host")
		return
	}
	if accel != "" {
		u, err := url.Parse(accel)
		if err != nil || !strings.HasPrefix(u.Path, "/") {
			fail("X-Accel-Redirect is not an absolute URI path")
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path, r2.URL.RawPath, r2.URL.RawQuery = u.Path, "", u.RawQuery
		route := s.match(r2)
		if route == nil || route.static == nil {
			fail("X-Accel-Redirect does not lead to a static route")
			return
		}
		route.static.ServeInternal(w, r, strings.TrimPrefix(u.Path, route.path))
		return
	}
	file := filepath.Clean(sendfile)
	if !filepath.IsAbs(file) {
		fail("X-Sendfile is not an absolute path")
		return
	}
	for _, list := range [][]*route{s.prefix, s.exact, s.regex} {
		for _, route := range list {
			if route.static == nil {
				continue
			}
			root, err := filepath.Abs(route.root)
			if err != nil {
				continue
			}
			if rel, err := filepath.Rel(root, file); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
				route.static.ServeInternal(w, r, "/"+filepath.ToSlash(rel))
				return
			}
		}
	}
	fail("X-Sendfile is outside every static route's directory")
}

// dump writes the route table in the order it is searched: a textual form
// for golden tests and for people.
func (rt *router) dump(w io.Writer) {
	var sites []*site
	seen := map[*site]bool{}
	add := func(s *site) {
		if s != nil && !seen[s] {
			seen[s] = true
			sites = append(sites, s)
		}
	}
	var exact []string
	for h := range rt.exact {
		exact = append(exact, h)
	}
	slices.Sort(exact)
	fmt.Fprintln(w, "hosts (exact, then wildcards longest first, then default):")
	for _, h := range exact {
		fmt.Fprintf(w, "  %s -> site %s\n", h, strings.Join(rt.exact[h].hosts, ","))
		add(rt.exact[h])
	}
	for _, wc := range rt.wildcards {
		fmt.Fprintf(w, "  *%s -> site %s\n", wc.suffix, strings.Join(wc.site.hosts, ","))
		add(wc.site)
	}
	if rt.def != nil {
		fmt.Fprintf(w, "  default -> site %s\n", strings.Join(rt.def.hosts, ","))
		add(rt.def)
	}
	for _, s := range sites {
		fmt.Fprintf(w, "site %s:\n", strings.Join(s.hosts, ","))
		for _, group := range [][]*route{s.exact, s.regex, s.prefix} {
			for _, r := range group {
				path := r.path
				switch r.kind {
				case "exact":
					path = "=" + path
				case "regex":
					path = "~" + path
				case "prefix":
					path += "/"
				}
				cond := ""
				if len(r.methods) > 0 {
					cond += " methods=" + strings.Join(r.methods, ",")
				}
				if len(r.header) > 0 {
					var hs []string
					for k, v := range r.header {
						hs = append(hs, http.CanonicalHeaderKey(k)+":"+v)
					}
					slices.Sort(hs)
					cond += " header=" + strings.Join(hs, ",")
				}
				fmt.Fprintf(w, "  %-6s %s%s -> %s\n", r.kind, path, cond, r.desc)
			}
		}
	}
}
