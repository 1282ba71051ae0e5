package server

import (
	"net/http"
	"strings"
)

// strictTLS puts in front of h, for the requests net/http reads on TLS
// listeners (HTTP/2 and HTTP/1.1), the refusals of the plain front's parser
// that net/http does not make itself: CONNECT (405), a method outside
// nginx's set, a host (Host, :authority or an absolute-form target's) that
// is not host[:port], a NUL in the decoded path, more header fields than
// MaxHeaderFields (431). Each is logged at info level as on the plain
// front; an HTTP/1.1 connection closes after the answer. net/http's own
// framing rules stand (it merges identical Content-Length headers and
// trims tabs around values, where the plain front refuses both).
func (s *HTTP) strictTLS(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if herr := s.checkTLSRequest(r); herr != nil {
			s.logger.Info("bad request", "remote", r.RemoteAddr, "status", herr.status, "reason", herr.reason)
			if r.ProtoMajor == 1 {
				w.Header().Set("Connection", "close")
			}
			http.Error(w, http.StatusText(herr.status), herr.status)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *HTTP) checkTLSRequest(r *http.Request) *headError {
	switch {
	case r.Method == http.MethodConnect:
		return &headError{status: http.StatusMethodNotAllowed, reason: "CONNECT is not served"}
	case !isMethod(r.Method):
		return badRequest("invalid method " + quoteName(r.Method))
	case r.Host == "" && r.ProtoAtLeast(1, 1):
		return badRequest("missing Host header")
	case r.Host != "" && !validAuthority(r.Host):
		return badRequest("invalid host " + quoteName(r.Host))
	case strings.IndexByte(r.URL.Path, 0) >= 0:
		return badRequest("NUL in the request path")
	}
	n := 0
	if r.Host != "" {
		n = 1 // Host, a header line on the plain front
	}
	for _, vs := range r.Header {
		n += len(vs)
	}
	if n > int(s.maxHeaderFields.Load()) {
		return tooManyFields()
	}
	return nil
}
