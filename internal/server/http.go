package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Options, chosen to match nginx so that a deployment moving
// from nginx keeps the limits it had.
const (
	// DefaultReadHeaderTimeout is nginx's client_header_timeout.
	DefaultReadHeaderTimeout = 60 * time.Second
	// DefaultIdleTimeout is nginx's keepalive_timeout.
	DefaultIdleTimeout = 75 * time.Second
	// DefaultBodyTimeout is nginx's client_body_timeout.
	DefaultBodyTimeout = 60 * time.Second
	// DefaultSendTimeout is nginx's send_timeout.
	DefaultSendTimeout = 60 * time.Second
	// DefaultMaxHeaderBytes is 64 KiB: large enough for the cookie-heavy
	// requests that overflow uWSGI's 4 KiB buffer-size default (a top
	// complaint about it), small enough to bound memory per connection.
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultMaxHeaderFields is 100 header lines: a browser sends about
	// 20; net/http has no such limit, nginx bounds them by its buffers.
	DefaultMaxHeaderFields = 100
)

// Options configure an HTTP server. The zero value gives nginx-like defaults.
// The same limits apply to every protocol it serves; for the uwsgi listener
// (ServeUWSGI) the "head" is the packet, timed from the accept.
//
// There is deliberately no timeout on the whole request or response: a long
// upload or a long download is legitimate as long as it makes progress. The
// body and send timeouts bound the wait for each read and each write
// instead, as nginx's client_body_timeout and send_timeout do. The server
// refreshes those deadlines at most once a second (each refresh is a timer
// update), so a timeout fires between d-1s and d after the last progress.
type Options struct {
	// ReadHeaderTimeout bounds the time a client takes to send the request
	// line and headers, counted from the first byte of the request; a
	// slow-headers client (slowloris) is dropped when it passes. It also
	// bounds the wait for a new connection's first byte (nginx's
	// client_header_timeout runs from the accept). Zero means
	// DefaultReadHeaderTimeout (60s, nginx's client_header_timeout);
	// negative means no limit.
	ReadHeaderTimeout time.Duration

	// IdleTimeout bounds how long a keep-alive connection waits for its next
	// request before it is closed (a new connection waits for its first
	// request ReadHeaderTimeout, or IdleTimeout if that is negative).
	// Zero means DefaultIdleTimeout (75s, nginx's keepalive_timeout);
	// negative means no limit.
	IdleTimeout time.Duration

	// BodyTimeout bounds each read of a request body: a client that sends
	// nothing for this long while the handler waits for its body fails the
	// read. Zero means DefaultBodyTimeout (60s, nginx's
	// client_body_timeout); negative means no limit. A handler may set its
	// own deadline through http.ResponseController.
	BodyTimeout time.Duration

	// SendTimeout bounds each write of a response: a client that takes
	// nothing for this long is disconnected. Zero means DefaultSendTimeout
	// (60s, nginx's send_timeout); negative means no limit. A handler may
	// set its own deadline through http.ResponseController.
	SendTimeout time.Duration

	// MaxHeaderBytes bounds the size of the request line and headers, in
	// bytes. A request past it is answered 431 Request Header Fields Too
	// Large (414 URI Too Long if the request line alone is). Zero or
	// negative means DefaultMaxHeaderBytes (64 KiB).
	MaxHeaderBytes int

	// MaxHeaderFields bounds the number of header lines of a request
	// (trailers aside). A request past it is answered 431 Request Header
	// Fields Too Large (on plain listeners as soon as the line past the
	// bound arrives). Zero or negative means DefaultMaxHeaderFields (100).
	MaxHeaderFields int
	// OnIdleDrop, when set, is called in a goroutine of its own after a
	// burst of connections went idle (a thousand keep-alive connections
	// parked since the last call, none for a second; at most once every
	// 30s): the memory their requests used is garbage now, which an idle
	// process may not collect for minutes. What to do about it (collect,
	// return memory to the OS) is the program's policy, not the server's:
	// cmd/portico collects and frees. Nil: nothing is called.
	OnIdleDrop func()

	// Logger receives the server's warnings (handler panics, accept errors
	// at warn level; malformed requests and failed TLS handshakes at info).
	// Nil means slog.Default().
	Logger *slog.Logger
}

// HTTP serves an http.Handler on any number of listeners with nginx-like
// defaults (see Options).
//
// Plain listeners (Serve) get Portico's own HTTP/1.1 implementation: a
// goroutine per connection that holds no buffer between requests, one write
// per small response, and none of net/http's per-request extras (a
// background read per request, a bufio pair per connection); it is about
// three times as fast as net/http on a small response, and an idle
// keep-alive connection costs a few KiB instead of about 20. TLS listeners
// (ServeTLS) get the same for HTTP/1.1, and Portico's own HTTP/2 server
// (h2conn.go) for the connections that negotiate h2.
//
// A malformed request gets its status (400, 405, 414, 431, 501, 505) and the
// connection is closed while the server keeps serving others; the cause is
// logged at info level.
type HTTP struct {
	handler           http.Handler
	logger            *slog.Logger
	readHeaderTimeout time.Duration
	idleTimeout       time.Duration
	bodyTimeout       time.Duration
	writeTimeout      time.Duration
	maxHeaderBytes    int
	maxHeaderFields   atomic.Int64 // see SetMaxHeaderFields
	onIdleDrop        func()

	shutting  atomic.Bool
	stopped   chan struct{} // closed with shutting set: ends accept backoffs
	stopOnce  sync.Once
	mu        sync.Mutex
	listeners map[*net.Listener]struct{}
	conns     map[*conn]struct{}
	uwConns   map[*uwConn]struct{} // ServeUWSGI's; each carries one request
	h2conns   map[*h2conn]struct{} // serveH2Conn's
	h2handler http.Handler         // the handler of HTTP/2 streams

	h2pool handlerPool // runs the handlers of HTTP/2 streams (h2conn.go)

	uwIdleOnce  sync.Once
	uwIdleConns chan *uwConn // goroutines waiting for a uwsgi connection to serve

	parkOnce      sync.Once
	park          *parker       // nil until needed, or if epoll is unavailable
	parkAfter     time.Duration // zero: the parkAfter constant
	idleDropAfter int           // zero: the releaseAfterParks constant

	stats stats // see Stats
}

// parker returns the server's parker, creating it on first use; nil if
// idle connections cannot be parked.
func (s *HTTP) parker() *parker {
	s.parkOnce.Do(func() { s.park = newParker(s) })
	return s.park
}

// stopParker closes the parker's epoll descriptor (see parker.close) and
// makes sure none is created after the server stopped.
func (s *HTTP) stopParker() {
	s.parkOnce.Do(func() {})
	if s.park != nil {
		s.park.close()
	}
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
	s := &HTTP{
		handler:           h,
		logger:            logger,
		readHeaderTimeout: timeout(opt.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		idleTimeout:       timeout(opt.IdleTimeout, DefaultIdleTimeout),
		bodyTimeout:       timeout(opt.BodyTimeout, DefaultBodyTimeout),
		writeTimeout:      timeout(opt.SendTimeout, DefaultSendTimeout),
		maxHeaderBytes:    maxHeaderBytes(opt.MaxHeaderBytes),
		onIdleDrop:        opt.OnIdleDrop,
		listeners:         map[*net.Listener]struct{}{},
		conns:             map[*conn]struct{}{},
		uwConns:           map[*uwConn]struct{}{},
		h2conns:           map[*h2conn]struct{}{},
		stopped:           make(chan struct{}),
	}
	s.h2handler = s.strictTLS(h)
	s.SetMaxHeaderFields(opt.MaxHeaderFields)
	return s
}

// timeout maps an Options duration: zero means def, negative means none
// (-1).
func timeout(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return -1
	}
	return d
}

// waitTimeout is how long a connection waits for the first byte of a
// request: the header timeout for a new connection's first, the idle
// timeout between requests.
func (s *HTTP) waitTimeout(served bool) time.Duration {
	if served || s.readHeaderTimeout <= 0 {
		return s.idleTimeout
	}
	return s.readHeaderTimeout
}

// SetMaxHeaderFields sets Options.MaxHeaderFields for the requests to come
// (a config reload changes it on a listener that stays).
func (s *HTTP) SetMaxHeaderFields(n int) {
	if n <= 0 {
		n = DefaultMaxHeaderFields
	}
	s.maxHeaderFields.Store(int64(n))
}

func maxHeaderBytes(n int) int {
	if n <= 0 {
		return DefaultMaxHeaderBytes
	}
	return n
}

// Serve accepts connections on l and serves HTTP/1.x on them until l fails
// or Shutdown is called; it then returns, with http.ErrServerClosed after
// Shutdown or Close. Serve may run on several listeners at once, each in
// its own goroutine. The listener is closed when Serve returns (for a Unix
// socket from Listen, its file is removed).
func (s *HTTP) Serve(l net.Listener) error {
	return s.acceptLoop(l, func(rw net.Conn) bool {
		c := newConn(s, rw)
		if !s.track(c) {
			return false
		}
		go c.serve()
		return true
	})
}

// acceptLoop is the accept loop of Serve and ServeUWSGI: it accepts
// connections on l and hands each to serve, which reports false if the
// server is shutting down (the connection is then closed), until l fails
// or Shutdown or Close is called; l is closed when it returns.
func (s *HTTP) acceptLoop(l net.Listener, serve func(net.Conn) bool) error {
	if !s.trackListener(&l, true) {
		l.Close()
		return http.ErrServerClosed
	}
	defer s.trackListener(&l, false)
	defer l.Close()
	var delay time.Duration
	for {
		rw, err := l.Accept()
		if err != nil {
			if s.shuttingDown() {
				return http.ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Running out of descriptors and the like: back off and retry,
			// as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.logger.Warn("accepting a connection failed; retrying", "err", err, "retry_in", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.stopped: // Shutdown does not wait out the backoff
				t.Stop()
				return http.ErrServerClosed
			}
			continue
		}
		delay = 0
		s.stats.accepted.Add(1)
		if !serve(rw) {
			rw.Close()
		}
	}
}

func (s *HTTP) shuttingDown() bool { return s.shutting.Load() }

// markShuttingLocked sets the server shutting down and wakes the Serve loops
// that wait out an accept backoff. s.mu is held.
func (s *HTTP) markShuttingLocked() {
	s.shutting.Store(true)
	s.stopOnce.Do(func() { close(s.stopped) })
}

func (s *HTTP) trackListener(l *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.shuttingDown() {
			return false
		}
		s.listeners[l] = struct{}{}
	} else {
		delete(s.listeners, l)
	}
	return true
}

func (s *HTTP) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shuttingDown() {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *HTTP) trackH2(c *h2conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shuttingDown() {
		return false
	}
	s.h2conns[c] = struct{}{}
	return true
}

func (s *HTTP) untrackH2(c *h2conn) {
	s.mu.Lock()
	delete(s.h2conns, c)
	s.mu.Unlock()
}

func (s *HTTP) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// closeListenersLocked closes the listeners; their Serve returns.
func (s *HTTP) closeListenersLocked() {
	for l := range s.listeners {
		(*l).Close()
	}
}

// Shutdown stops the server gracefully: it closes the listeners (Serve
// returns http.ErrServerClosed at once) and the idle connections, then
// waits for in-flight requests to finish (their connections close after
// the response, which says "Connection: close"; an HTTP/2 connection gets
// a GOAWAY and closes once its streams are done), or for ctx to end,
// whichever comes first; in the latter case it returns ctx's error and the
// remaining connections stay open until Close.
func (s *HTTP) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.markShuttingLocked()
	s.closeListenersLocked()
	s.mu.Unlock()
	s.stopParker()

	t := time.NewTimer(0)
	defer t.Stop()
	wait := time.Millisecond
	for {
		if s.closeIdle() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			t.Reset(wait)
			wait = min(2*wait, 100*time.Millisecond)
		}
	}
}

// closeIdle closes the connections waiting for a request and reports
// whether none is left.
func (s *HTTP) closeIdle() bool {
	s.mu.Lock()
	var parked []*conn
	for c := range s.conns {
		if c.state.CompareAndSwap(stateIdle, stateClosed) || c.state.CompareAndSwap(stateHandshake, stateClosed) {
			if c.rwc != nil { // nil: parked detached, closed below
				c.rwc.Close()
			}
			if s.park != nil && s.park.forget(c) {
				parked = append(parked, c) // no goroutine to clean it up
			}
		}
	}
	for c := range s.h2conns {
		if c.shutStarted.CompareAndSwap(false, true) {
			go c.shutdown() // GOAWAY; closes once its streams are done
		}
	}
	left := len(s.conns) - len(parked) + len(s.uwConns) + len(s.h2conns) // a uwsgi connection is never idle
	s.mu.Unlock()
	for _, c := range parked {
		c.close()
	}
	return left == 0
}

// Close closes the listeners and every connection at once, in-flight
// requests included: the step after a Shutdown whose grace period ran out.
func (s *HTTP) Close() error {
	s.mu.Lock()
	s.markShuttingLocked()
	s.closeListenersLocked()
	var parked []*conn
	for c := range s.conns {
		c.state.Store(stateClosed)
		if c.rwc != nil { // nil: parked detached, closed below
			c.rwc.Close()
		}
		if s.park != nil && s.park.forget(c) {
			parked = append(parked, c)
		}
	}
	for c := range s.uwConns {
		c.rwc.Close()
	}
	for c := range s.h2conns {
		c.tc.Close()
	}
	s.mu.Unlock()
	for _, c := range parked {
		c.close()
	}
	s.stopParker()
	return nil
}
