package app

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"portico/internal/config"
	"portico/internal/errpage"
	"portico/internal/requestid"
)

// A site's custom error pages (the error_pages key, nginx's error_page).
//
// A page replaces Portico's own answer for a status — a static 404, the
// proxy's 413, 502, 503 and 504, a limit's 429 or 503, an IP rule's or the
// WAF's 403: those handlers call errpage.Serve before writing their plain
// answer — and, on a route with intercept_errors, the app's or upstream's
// own answer with that status (its headers and body are dropped).
//
// The page is the site's route for its path, asked with GET (HEAD for a
// HEAD) and no conditional or Range header, answered with the original
// status. A page on a static route is served as an internal redirect
// (static.ServeInternal: no limits, IP rules or metrics of that route; an
// internal route works); on another route, through that route's handler.
// A page that cannot be served — no route, or the route answers anything
// but 200 — leaves the plain answer, and one record in the log says why.
// A page is never served for the answer of a page.

// errorPages is a site's table: a status → path, and a class (4, 5) →
// path. A status wins over its class.
type errorPages struct {
	status map[int]string
	class  map[int]string
	site   *site
	log    *slog.Logger
}

func newErrorPages(pages map[string]string, s *site, log *slog.Logger) *errorPages {
	if len(pages) == 0 {
		return nil
	}
	ep := &errorPages{status: map[int]string{}, class: map[int]string{}, site: s, log: log}
	for k, v := range pages {
		n, _ := config.ErrorPageStatus(k) // Validate checked it
		if n < 10 {
			ep.class[n] = v
		} else {
			ep.status[n] = v
		}
	}
	return ep
}

// page returns the path of the page for status, or "".
func (ep *errorPages) page(status int) string {
	if p, ok := ep.status[status]; ok {
		return p
	}
	return ep.class[status/100]
}

// wrap puts the pages in front of h: h's writer becomes a pageWriter.
// intercept also replaces h's own answers.
func (ep *errorPages) wrap(h http.Handler, intercept bool) http.Handler {
	if ep == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Context().Value(pageRequest{}) != nil {
			h.ServeHTTP(w, r) // a page's own request: no page for it
			return
		}
		pw := &pageWriter{ResponseWriter: w, r: r, pages: ep, intercept: intercept}
		h.ServeHTTP(pw, r)
	})
}

// serve writes the page for status to w, for the request r, and reports
// whether it did; nothing is written when it did not.
func (ep *errorPages) serve(w http.ResponseWriter, r *http.Request, status int, intercepted bool) bool {
	path := ep.page(status)
	if path == "" {
		return false
	}
	fail := func(why string) bool {
		ep.log.Error("error page not served", "uri", r.RequestURI, "status", status, "error_page", path, "err", why)
		return false
	}
	pr, err := http.NewRequestWithContext(context.WithValue(r.Context(), pageRequest{}, true), http.MethodGet, path, nil)
	if err != nil {
		return fail(err.Error())
	}
	if r.Method == http.MethodHead {
		pr.Method = http.MethodHead
	}
	pr.Host, pr.RemoteAddr, pr.RequestURI, pr.Proto, pr.ProtoMajor, pr.ProtoMinor, pr.TLS = r.Host, r.RemoteAddr, path, r.Proto, r.ProtoMajor, r.ProtoMinor, r.TLS
	pr.Header = r.Header.Clone()
	for _, k := range []string{"If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range", "Range", "Content-Length", "Content-Type"} {
		pr.Header.Del(k)
	}
	route := ep.site.match(pr)
	if route == nil {
		return fail("no route for the page")
	}
	hdr := w.Header()
	if intercepted {
		// The app's answer: none of its headers describe the page.
		id := hdr[requestid.Header]
		clear(hdr)
		if id != nil {
			hdr[requestid.Header] = id
		}
	} else {
		// Portico's own answer: keep what it set about the failure
		// (Retry-After, Connection: close), not what describes its body.
		for _, k := range []string{"Content-Type", "Content-Length", "Content-Encoding", "X-Content-Type-Options", "Etag", "Last-Modified", "Accept-Ranges", "Vary"} {
			hdr.Del(k)
		}
	}
	sw := &statusWriter{w: w, status: status}
	if route.static != nil {
		route.static.ServeInternal(sw, pr, strings.TrimPrefix(path, route.path))
	} else {
		route.h.ServeHTTP(sw, pr)
	}
	if sw.failed != 0 {
		return fail("the page's route answered " + http.StatusText(sw.failed))
	}
	return true
}

// pageRequest marks the context of a page's own request.
type pageRequest struct{}

// statusWriter sends a page's 200 with the status it stands for, or, when
// the page's route answers anything else, nothing at all (failed).
type statusWriter struct {
	w       http.ResponseWriter
	status  int
	hdr     http.Header // the page route's headers until its status is known
	started bool
	failed  int
}

func (s *statusWriter) Header() http.Header {
	if s.hdr == nil {
		s.hdr = http.Header{}
	}
	return s.hdr
}

func (s *statusWriter) WriteHeader(code int) {
	if s.started || s.failed != 0 || code < 200 {
		return
	}
	if code != http.StatusOK {
		s.failed = code
		return
	}
	s.started = true
	dst := s.w.Header()
	for k, v := range s.hdr {
		switch k {
		case "Etag", "Last-Modified", "Accept-Ranges", "Cache-Control":
			continue // about the page's file, not this answer
		}
		dst[k] = v
	}
	s.w.WriteHeader(s.status)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if !s.started {
		s.WriteHeader(http.StatusOK)
	}
	if s.failed != 0 {
		return len(b), nil
	}
	return s.w.Write(b)
}

// ReadFrom keeps sendfile for a static page.
func (s *statusWriter) ReadFrom(src io.Reader) (int64, error) {
	if !s.started {
		s.WriteHeader(http.StatusOK)
	}
	if s.failed != 0 {
		return io.Copy(io.Discard, src)
	}
	if rf, ok := s.w.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(struct{ io.Writer }{s.w}, src)
}

func (s *statusWriter) Flush() {
	if s.started {
		_ = http.NewResponseController(s.w).Flush()
	}
}

// pageWriter is a route's writer on a site with error pages: an
// errpage.Pager for the handlers' own answers, and, with intercept, a
// filter of the app's.
type pageWriter struct {
	http.ResponseWriter
	r         *http.Request
	pages     *errorPages
	intercept bool
	wrote     bool // a status went out
	swallow   bool // the handler's body is replaced by a page
}

var (
	_ errpage.Pager = (*pageWriter)(nil)
	_ io.ReaderFrom = (*pageWriter)(nil)
)

func (p *pageWriter) ServeErrorPage(status int) bool {
	if p.wrote {
		return false
	}
	if p.pages.serve(p.ResponseWriter, p.r, status, false) {
		p.wrote = true
		return true
	}
	return false
}

func (p *pageWriter) WriteHeader(code int) {
	if p.wrote || code < 200 {
		if !p.wrote {
			p.ResponseWriter.WriteHeader(code)
		}
		return
	}
	p.wrote = true
	if p.intercept && code >= 300 && p.pages.serve(p.ResponseWriter, p.r, code, true) {
		p.swallow = true
		return
	}
	p.ResponseWriter.WriteHeader(code)
}

func (p *pageWriter) Write(b []byte) (int, error) {
	if !p.wrote {
		p.WriteHeader(http.StatusOK)
	}
	if p.swallow {
		return len(b), nil
	}
	return p.ResponseWriter.Write(b)
}

func (p *pageWriter) ReadFrom(src io.Reader) (int64, error) {
	if !p.wrote {
		p.WriteHeader(http.StatusOK)
	}
	if p.swallow {
		return io.Copy(io.Discard, src)
	}
	if rf, ok := p.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(struct{ io.Writer }{p.ResponseWriter}, src)
}

func (p *pageWriter) Flush() {
	if p.swallow {
		return
	}
	p.wrote = true // a flush sends the head (200 if none was written)
	_ = http.NewResponseController(p.ResponseWriter).Flush()
}

func (p *pageWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }
