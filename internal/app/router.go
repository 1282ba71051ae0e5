package app

import (
	"net/http"
	"sort"
	"strings"
)

// router sends a request to the route with the longest matching path
// prefix (at a segment boundary: /static matches /static and /static/x, not
// /staticfiles), else to fallback.
type router struct {
	routes   []route // longest prefix first
	fallback http.Handler
}

type route struct {
	prefix string // without trailing slash; "" is the root
	h      http.Handler
}

func (rt *router) add(prefix string, h http.Handler) {
	rt.routes = append(rt.routes, route{strings.TrimRight(prefix, "/"), h})
	sort.SliceStable(rt.routes, func(i, j int) bool { return len(rt.routes[i].prefix) > len(rt.routes[j].prefix) })
}

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	for _, route := range rt.routes {
		if route.prefix == "" || path == route.prefix || (strings.HasPrefix(path, route.prefix) && path[len(route.prefix)] == '/') {
			route.h.ServeHTTP(w, r)
			return
		}
	}
	rt.fallback.ServeHTTP(w, r)
}
