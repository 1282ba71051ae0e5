// Package errpage lets Portico's own error answers (a static 404, a 413, a
// limit's 429, the proxy's 502, 503 and 504) be replaced by a site's custom
// error pages (the error_pages key, nginx's error_page). A leaf: handlers
// call Serve before they write their plain answer, and the router's
// response writer, which knows the site's pages, implements Pager.
//
// Writers between the router and a handler (the cache, compression) pass
// the call on through their Unwrap method, or implement Pager themselves
// when they must see the failure first: the cache, which may serve a
// stale page instead (stale-if-error).
package errpage

import "net/http"

// Pager is a ResponseWriter that can answer for a failed request.
type Pager interface {
	// ServeErrorPage answers with the page for status, with that status,
	// and reports whether it did. False: nothing was written, and the
	// caller writes its own answer. The caller may have set headers on
	// the writer first (Retry-After, Connection: close); they are kept.
	ServeErrorPage(status int) bool
}

// Serve offers status to the first Pager among w and the writers it wraps
// (Unwrap() http.ResponseWriter, as http.ResponseController follows) and
// reports whether it answered.
func Serve(w http.ResponseWriter, status int) bool {
	for w != nil {
		if p, ok := w.(Pager); ok {
			return p.ServeErrorPage(status)
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return false
		}
		w = u.Unwrap()
	}
	return false
}
