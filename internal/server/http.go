package server

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Defaults for Options, chosen to match nginx so that a deployment moving
// from nginx keeps the limits it had.
const (
	// DefaultReadHeaderTimeout is nginx's client_header_timeout.
	DefaultReadHeaderTimeout = 60 * time.Second
	// DefaultIdleTimeout is nginx's keepalive_timeout.
	DefaultIdleTimeout = 75 * time.Second
	// DefaultMaxHeaderBytes is 64 KiB: large enough for the cookie-heavy
	// requests that overflow uWSGI's 4 KiB buffer-size default (a top
	// complaint about it), small enough to bound memory per connection.
	DefaultMaxHeaderBytes = 64 << 10
)

// Options configure an HTTP server. The zero value gives nginx-like defaults.
//
// There is deliberately no timeout on the whole request or response (no
// http.Server ReadTimeout or WriteTimeout): a long upload or a long download
// is legitimate as long as it makes progress. Handlers set a deadline per
// operation instead, through http.ResponseController, as nginx does with
// client_body_timeout (between two reads of the body) and send_timeout
// (between two writes of the response).
type Options struct {
	// ReadHeaderTimeout bounds the time a client takes to send the request
	// line and headers, counted from the accept for a connection's first
	// request and from the first byte of each next one (the wait between
	// requests is IdleTimeout's); a slow-headers client (slowloris) is
	// dropped when it passes. Zero means DefaultReadHeaderTimeout (60s, nginx's
	// client_header_timeout); negative means no limit.
	ReadHeaderTimeout time.Duration

	// IdleTimeout bounds how long a keep-alive connection waits for its next
	// request before it is closed. Zero means DefaultIdleTimeout (75s,
	// nginx's keepalive_timeout); negative means no limit.
	IdleTimeout time.Duration

	// MaxHeaderBytes bounds the size of the request line and headers, in
	// bytes. A request past it is answered 431 Request Header Fields Too Large
	// by net/http, which reads up to 4 KiB more than this before it decides.
	// Zero or negative means DefaultMaxHeaderBytes (64 KiB).
	MaxHeaderBytes int

	// Logger receives net/http's own error log (TLS handshake errors, accept
	// errors, handler panics) at warn level. Nil means slog.Default().
	Logger *slog.Logger
}

// HTTP serves an http.Handler on any number of listeners with nginx-like
// defaults (see Options). It is a thin layer over http.Server, which owns the
// protocol: a malformed request gets 400 Bad Request, oversized headers 431,
// and the connection is closed while the server keeps serving others.
type HTTP struct {
	srv *http.Server
}

// NewHTTP returns a server for h. Nothing is listening until Serve. A nil h
// answers 404 to everything (never http.DefaultServeMux, a global).
func NewHTTP(h http.Handler, opt Options) *HTTP {
	if h == nil {
		h = http.NotFoundHandler()
	}
	logger := opt.Logger
	if logger == nil {
		logger = slog.Default()
	}
	return &HTTP{srv: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: timeout(opt.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		IdleTimeout:       timeout(opt.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    maxHeaderBytes(opt.MaxHeaderBytes),
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}}
}

// timeout maps an Options duration to an http.Server one: zero means def,
// negative means none, which http.Server spells as any value <= 0 except 0
// itself (a zero would fall back to ReadTimeout).
func timeout(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return -1
	}
	return d
}

func maxHeaderBytes(n int) int {
	if n <= 0 {
		return DefaultMaxHeaderBytes
	}
	return n
}

// Serve accepts connections on l and serves them until l fails or Shutdown
// is called; it then returns, with http.ErrServerClosed after Shutdown. Serve
// may run on several listeners at once, each in its own goroutine. The
// listener is closed when Serve returns (for a Unix socket from Listen, its
// file is removed).
func (s *HTTP) Serve(l net.Listener) error {
	return s.srv.Serve(l)
}

// Shutdown stops the server gracefully: it closes the listeners (Serve
// returns http.ErrServerClosed at once), then waits for in-flight requests to
// finish and idle connections to close, or for ctx to end, whichever comes
// first; in the latter case it returns ctx's error and the remaining
// connections stay open until Close.
func (s *HTTP) Shutdown(ctx context.Context) error {
	return s.srv.Shutdown(ctx)
}

// Close closes the listeners and every connection at once, in-flight
// requests included: the step after a Shutdown whose grace period ran out.
func (s *HTTP) Close() error {
	return s.srv.Close()
}
