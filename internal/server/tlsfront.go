package server

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// ServeTLS accepts connections on l, a listener of TLS connections
// (TLSListener), completes each handshake in the connection's own
// goroutine under the header timeout, and serves the connection by the
// protocol ALPN chose: HTTP/1.1 on the plain front's own implementation
// (the same parser, limits, timeouts and single-write responses as a
// plain listener, with the request's TLS state set), HTTP/2 with
// Portico's own HTTP/2 server (h2conn.go).
// It returns as Serve does.
//
// Until the HTTP/1.1 front served TLS, net/http served every TLS
// connection: 1 KiB static file over HTTPS/1.1 (wrk -c 64, one core) at
// 0.67x nginx's req/s and 1.85x its CPU per request.
func (s *HTTP) ServeTLS(l net.Listener) error {
	if s.shuttingDown() {
		l.Close()
		return http.ErrServerClosed
	}
	return s.acceptLoop(l, func(rw net.Conn) bool {
		tc, ok := rw.(*tls.Conn)
		if !ok {
			// Not a TLS listener: served as net/http would, by its plain
			// HTTP/1.1 server; here, by the plain front.
			c := newConn(s, rw)
			if !s.track(c) {
				return false
			}
			go c.serve()
			return true
		}
		c := newConn(s, tc)
		c.state.Store(stateHandshake)
		if !s.track(c) {
			return false
		}
		go c.serveTLS(tc)
		return true
	})
}

// serveTLS completes the handshake of tc and serves the connection.
// It is the connection goroutine's first frame, so it stays small: an
// idle HTTP/2 connection waits in a stack shallow enough for the runtime
// to shrink (see h2conn.waitIdle).
func (c *conn) serveTLS(tc *tls.Conn) {
	switch c.handshakeTLS(tc) {
	case tlsServeH2:
		c.srv.serveH2(tc)
	case tlsServeH1:
		c.serve()
	}
}

const (
	tlsDone    = iota // the connection is closed
	tlsServeH1        // HTTP/1.1 on the plain front
	tlsServeH2        // HTTP/2
)

// handshakeTLS completes the handshake of tc and says how to serve it.
//
//go:noinline
func (c *conn) handshakeTLS(tc *tls.Conn) int {
	s := c.srv
	if d := s.readHeaderTimeout; d > 0 {
		_ = tc.SetDeadline(time.Now().Add(d))
	}
	err := tc.HandshakeContext(context.Background())
	if err != nil {
		c.handshakeFailed(tc, err)
		return tlsDone
	}
	_ = tc.SetDeadline(time.Time{})
	if !c.state.CompareAndSwap(stateHandshake, stateActive) {
		c.close() // Shutdown or Close came first
		return tlsDone
	}
	c.remote = tc.RemoteAddr().String() // a PROXY header's client, read by the handshake
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol == "h2" {
		s.untrack(c)
		return tlsServeH2
	}
	c.tls = &cs
	return tlsServeH1
}

// handshakeFailed counts and logs a handshake that did not complete and
// closes the connection. A client that spoke plain HTTP gets nginx's and
// net/http's answer, a 400 that says so.
func (c *conn) handshakeFailed(tc *tls.Conn, err error) {
	s := c.srv
	s.stats.refused.Add(1)
	var re tls.RecordHeaderError
	if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
		_ = re.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		s.logger.Info("bad request", "remote", c.remote, "status", http.StatusBadRequest, "reason", "plain HTTP request on a TLS listener")
	} else if c.state.Load() != stateClosed && !errors.Is(err, io.EOF) {
		// A client that closes before its hello (a health check, a port
		// scan) is not worth a record; Shutdown's close neither.
		s.logger.Info("TLS handshake failed", "remote", c.remote, "err", err)
	}
	c.close()
}

func looksLikeHTTP(h [5]byte) bool {
	switch string(h[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "DELET", "PATCH":
		return true
	}
	return false
}

// serveH2 serves an HTTP/2 connection whose handshake is done, until it
// ends.
func (s *HTTP) serveH2(tc *tls.Conn) { s.serveH2Conn(tc) }

// strictTLS puts in front of h, for the requests of HTTP/2 connections,
// the refusals of the plain front's parser that the HTTP/2 server does not
// make itself: CONNECT (405), a method outside nginx's set, a host
// (:authority or Host) that is not host[:port], a NUL in the decoded path,
// more header fields than MaxHeaderFields (431). Each is logged at info
// level as on the plain front. (HTTP/1.1 over TLS goes through the plain
// front's parser, which makes them itself.)
func (s *HTTP) strictTLS(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if herr := s.checkTLSRequest(r); herr != nil {
			s.logger.Info("bad request", "remote", r.RemoteAddr, "status", herr.status, "reason", herr.reason)
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
