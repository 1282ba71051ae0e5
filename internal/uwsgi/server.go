package uwsgi

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrServerClosed is returned by Server.Serve once Shutdown or Close has
// been called.
var ErrServerClosed = errors.New("uwsgi: server closed")

const (
	defaultReadTimeout  = 60 * time.Second
	defaultWriteTimeout = 60 * time.Second

	// lingerTimeout and lingerMax bound how long, and how much of an unread
	// request body, a connection keeps reading after its response is
	// complete. Closing a socket with unread input makes the kernel send a
	// RST, and the peer may then lose the end of the response it has not
	// read yet; Apache and nginx linger for the same reason.
	lingerTimeout = 2 * time.Second
	lingerMax     = 256 << 10

	readBufSize  = 4 << 10
	writeBufSize = 8 << 10
	// maxPooledVars is the largest vars buffer returned to the pool; the
	// rare 64 KiB packet's buffer is left to the garbage collector.
	maxPooledVars = 16 << 10
)

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufSize) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBufSize) }}
	varsPool   = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

	// aLongTimeAgo is a deadline in the past, to interrupt a blocked Read.
	aLongTimeAgo = time.Unix(1, 0)

	// errHandlerDone is what a request body read returns once its handler
	// has returned (from a goroutine the handler left behind).
	errHandlerDone = errors.New("uwsgi: request body read after the handler returned")
)

// Server accepts connections from nginx's uwsgi_pass (or any uwsgi client)
// and serves each with Handler, as uWSGI would serve them with a WSGI app:
// one request per connection, the response a raw HTTP/1.1 message ended by
// closing the connection.
//
// The request Handler gets is built from the packet's variables (see
// Serve); its context carries an *Origin (OriginFrom) and
// http.LocalAddrContextKey. Its context is cancelled when the handler
// returns or when the peer closes the connection (nginx does when its
// client goes away) once the request body has been read.
//
// The zero value is ready to use; fields must not change once Serve runs.
type Server struct {
	// Handler serves each request. nil answers every request 404.
	Handler http.Handler

	// Logger receives warnings about bad packets and peers and errors from
	// panicking handlers. nil means slog.Default().
	Logger *slog.Logger

	// ReadTimeout bounds the time from accepting a connection to having read
	// its whole packet (header and vars), and then each read of the request
	// body. A peer that is slower gets 400 and is disconnected. Zero means
	// 60s, the default of nginx's uwsgi_send_timeout on the other end.
	ReadTimeout time.Duration

	// WriteTimeout bounds each write of the response: every write to the
	// connection extends the deadline by this much, so a long streamed
	// response is fine as long as the peer keeps reading. Zero means 60s,
	// the default of nginx's uwsgi_read_timeout on the other end.
	WriteTimeout time.Duration

	mu        sync.Mutex
	closed    bool
	done      chan struct{} // closed on Shutdown or Close
	drained   chan struct{} // closed when the last connection ends after Shutdown
	listeners map[*net.Listener]struct{}
	conns     map[*conn]struct{}

	idleOnce  sync.Once
	idleConns chan *conn // goroutines waiting for a connection to serve

	accepted atomic.Int64 // for Stats
}

// Stats returns the number of connections open now and of those accepted
// since the server was made. (A connection carries one request: none is
// ever idle.)
func (s *Server) Stats() (open, accepted int64) {
	s.mu.Lock()
	open = int64(len(s.conns))
	s.mu.Unlock()
	return open, s.accepted.Load()
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Server) readTimeout() time.Duration {
	if s.ReadTimeout > 0 {
		return s.ReadTimeout
	}
	return defaultReadTimeout
}

func (s *Server) writeTimeout() time.Duration {
	if s.WriteTimeout > 0 {
		return s.WriteTimeout
	}
	return defaultWriteTimeout
}

func (s *Server) handler() http.Handler {
	if s.Handler != nil {
		return s.Handler
	}
	return http.NotFoundHandler()
}

// Serve accepts connections on l and serves each in its own goroutine until
// l fails or the server is shut down; it returns ErrServerClosed after
// Shutdown or Close, and closes l in every case. Serve may be called for
// several listeners at once.
//
// Each connection carries one request packet with modifier1 0 (WSGI) or 30
// (WSGI with SCRIPT_NAME stripped from the front of PATH_INFO, as uWSGI
// does); another modifier1 is answered 501, a malformed or late packet 400.
// The request is built from the CGI variables: REQUEST_METHOD; the URL path
// from PATH_INFO (or the decoded path of REQUEST_URI) and query from
// QUERY_STRING; RequestURI from REQUEST_URI; Proto from SERVER_PROTOCOL
// (default HTTP/1.1); Host from HTTP_HOST, else SERVER_NAME; headers from
// HTTP_* variables (HTTP_X_FOO -> X-Foo) and CONTENT_TYPE; ContentLength from
// CONTENT_LENGTH (the body is exactly that many bytes of the connection);
// RemoteAddr from REMOTE_ADDR and REMOTE_PORT, else the connection's peer;
// TLS set (empty) when HTTPS is "on" or REQUEST_SCHEME is "https", as
// net/http/cgi does. uWSGI's "magic" UWSGI_* variables (UWSGI_SCRIPT,
// UWSGI_CHDIR, UWSGI_SETENV ...) are ignored: Portico never lets a packet
// choose code, directories or environment.
func (s *Server) Serve(l net.Listener) error {
	defer l.Close()
	if !s.trackListener(&l, true) {
		return ErrServerClosed
	}
	defer s.trackListener(&l, false)
	done := s.doneChan()
	var delay time.Duration
	for {
		rwc, err := l.Accept()
		if err != nil {
			if s.shuttingDown() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("uwsgi: accepting connection: %w", err)
			}
			// Running out of descriptors and the like: back off and retry,
			// as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.logger().Warn("uwsgi: accepting connection failed; retrying", "err", err, "delay", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-done:
				t.Stop()
				return ErrServerClosed
			}
			continue
		}
		delay = 0
		s.accepted.Add(1)
		c := &conn{srv: s, rwc: rwc}
		if !s.trackConn(c, true) {
			rwc.Close()
			return ErrServerClosed
		}
		select {
		case s.idle() <- c:
		default:
			go s.serveConns(c)
		}
	}
}

// idleServeTimeout is how long a goroutine that served a connection waits
// for another before it exits.
const idleServeTimeout = 10 * time.Second

func (s *Server) idle() chan *conn {
	s.idleOnce.Do(func() { s.idleConns = make(chan *conn) })
	return s.idleConns
}

// serveConns serves c, then the connections Serve hands it, until none
// comes for idleServeTimeout or the server shuts down. nginx connects once per request: reusing the
// goroutine keeps its grown stack, which a new goroutine per connection
// would grow again (a copy at each doubling) every time.
func (s *Server) serveConns(c *conn) {
	idle, done := s.idle(), s.doneChan()
	t := time.NewTimer(idleServeTimeout)
	defer t.Stop()
	for {
		c.serve()
		t.Reset(idleServeTimeout)
		select {
		case c = <-idle:
		case <-t.C:
			return
		case <-done:
			return
		}
	}
}

// Shutdown stops the server gracefully: it closes the listeners, so Serve
// returns ErrServerClosed, and waits until every connection has finished
// its request, or until ctx is done, returning ctx.Err() then (the
// connections go on; Close ends them).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	err := s.closeLocked()
	if len(s.conns) == 0 {
		s.mu.Unlock()
		return err
	}
	if s.drained == nil {
		s.drained = make(chan struct{})
	}
	drained := s.drained
	s.mu.Unlock()

	select {
	case <-drained:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the server at once: it closes the listeners and every
// connection, interrupting requests in flight. Use it after a Shutdown
// whose context expired.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.closeLocked()
	for c := range s.conns {
		c.rwc.Close()
	}
	return err
}

// closeLocked marks the server closed and closes its listeners, returning
// the first error other than an already-closed listener.
func (s *Server) closeLocked() error {
	if !s.closed {
		s.closed = true
		if s.done == nil {
			s.done = make(chan struct{})
		}
		close(s.done)
	}
	var first error
	for l := range s.listeners {
		if err := (*l).Close(); err != nil && first == nil && !errors.Is(err, net.ErrClosed) {
			first = fmt.Errorf("uwsgi: closing listener: %w", err)
		}
		delete(s.listeners, l)
	}
	return first
}

func (s *Server) doneChan() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == nil {
		s.done = make(chan struct{})
	}
	return s.done
}

func (s *Server) shuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) trackListener(l *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.listeners, l)
		return true
	}
	if s.closed {
		return false
	}
	if s.listeners == nil {
		s.listeners = make(map[*net.Listener]struct{})
	}
	s.listeners[l] = struct{}{}
	return true
}

func (s *Server) trackConn(c *conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.conns, c)
		if len(s.conns) == 0 && s.drained != nil {
			close(s.drained)
			s.drained = nil
		}
		return true
	}
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	s.conns[c] = struct{}{}
	return true
}

// conn is one accepted connection and its one request.
type conn struct {
	srv *Server
	rwc net.Conn
	br  *bufio.Reader
	bw  *bufio.Writer
	dw  deadlineWriter
	// scratch is reused to canonicalise header names.
	scratch []byte

	ctx *reqCtx
	// body is the request body, nil when there is none.
	body *body
	// bgWanted is set when the handler asks for its context's Done: the
	// background reader then runs once the body has been read.
	bgWanted atomic.Bool
	// bgDone is closed when the background reader exits; bgMu guards it.
	bgMu   sync.Mutex
	bgDone chan struct{}
	bgBuf  [64]byte
	// finishing is set when the handler has returned: body reads and the
	// background reader stop.
	finishing atomic.Bool
	// peerGone is set when the background reader saw the peer close.
	peerGone atomic.Bool
}

func (c *conn) peer() string {
	if a := c.rwc.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

func (c *conn) serve() {
	s := c.srv
	defer s.trackConn(c, false)

	c.br = readerPool.Get().(*bufio.Reader)
	c.br.Reset(c.rwc)
	c.dw = deadlineWriter{conn: c.rwc, timeout: s.writeTimeout()}
	c.bw = writerPool.Get().(*bufio.Writer)
	c.bw.Reset(&c.dw)
	defer func() {
		c.br.Reset(nil)
		readerPool.Put(c.br)
		c.bw.Reset(nil)
		writerPool.Put(c.bw)
	}()

	c.rwc.SetReadDeadline(time.Now().Add(s.readTimeout()))
	bufp := varsPool.Get().(*[]byte)
	h, vars, err := ReadPacket(c.br, *bufp)
	supported := h.Modifier1 == 0 || h.Modifier1 == 30
	var req *http.Request
	var reqErr error
	if err == nil && supported {
		req, reqErr = c.newRequest(h, vars) // copies what it keeps of vars
	}
	if cap(vars) <= maxPooledVars {
		*bufp = vars[:0]
		varsPool.Put(bufp)
	}

	switch {
	case err == io.EOF:
		// Connected and closed without a byte: a port probe, not a request.
		s.logger().Debug("uwsgi: connection closed before a packet", "peer", c.peer())
		c.rwc.Close()
	case err != nil:
		s.logger().Warn("uwsgi: rejecting packet", "peer", c.peer(), "err", err)
		c.reject(http.StatusBadRequest)
	case !supported:
		s.logger().Warn("uwsgi: rejecting packet with unsupported modifier1",
			"modifier1", h.Modifier1, "modifier2", h.Modifier2, "peer", c.peer())
		c.reject(http.StatusNotImplemented)
	case reqErr != nil:
		s.logger().Warn("uwsgi: rejecting request", "peer", c.peer(), "err", reqErr)
		c.reject(http.StatusBadRequest)
	default:
		c.serveRequest(req)
	}
}

// serveRequest runs the handler and ends the connection.
func (c *conn) serveRequest(req *http.Request) {
	defer c.ctx.cancel(context.Canceled)
	w := &response{c: c, req: req, header: make(http.Header, 8), contentLength: -1}
	if v, stack := c.runHandler(w, req); v != nil {
		unread, _ := c.stopReading()
		if v == http.ErrAbortHandler {
			c.abort()
			return
		}
		c.srv.logger().Error("uwsgi: handler panicked", "peer", c.peer(),
			"method", req.Method, "uri", req.RequestURI, "panic", v, "stack", string(stack))
		if c.dw.n > 0 {
			c.abort() // part of the response is out: only a reset tells nginx it is cut short
			return
		}
		c.bw.Reset(&c.dw) // drop what the handler buffered; nothing was sent yet
		c.writeError(http.StatusInternalServerError)
		c.lingerClose(min(unread, lingerMax))
		return
	}
	err := w.finish()
	unread, peerGone := c.stopReading()
	switch {
	case err != nil:
		c.srv.logger().Debug("uwsgi: writing response failed", "peer", c.peer(), "err", err)
		c.rwc.Close()
	case unread > 0 && !peerGone:
		c.lingerClose(min(unread, lingerMax))
	default:
		c.rwc.Close()
	}
}

// runHandler calls the handler, returning what it panicked with, if it did,
// and the stack then.
func (c *conn) runHandler(w *response, req *http.Request) (panicked any, stack []byte) {
	defer func() {
		w.done = true
		if v := recover(); v != nil {
			panicked = v
			if v != http.ErrAbortHandler {
				stack = debug.Stack()
			}
		}
	}()
	c.srv.handler().ServeHTTP(w, req)
	return nil, nil
}

// startBackgroundRead watches the connection once the request body has
// been read: nginx sends nothing more, so a read returning means the peer
// closed (its client went away), and the request's context is cancelled.
// It starts once, when the handler has asked for its context's Done (see
// reqCtx) and the body has been read.
func (c *conn) startBackgroundRead() {
	c.bgMu.Lock()
	defer c.bgMu.Unlock()
	if c.bgDone != nil || c.finishing.Load() {
		return
	}
	c.rwc.SetReadDeadline(time.Time{})
	done := make(chan struct{})
	c.bgDone = done
	go func() {
		defer close(done)
		for {
			if _, err := c.rwc.Read(c.bgBuf[:]); err != nil {
				if !c.finishing.Load() {
					c.peerGone.Store(true)
					c.ctx.cancel(context.Canceled)
				}
				return
			}
			// Bytes after the body: not ours to interpret; ignore them.
		}
	}()
}

// wantBackgroundRead is called on the first Done of the request's context.
func (c *conn) wantBackgroundRead() {
	c.bgWanted.Store(true)
	if b := c.body; b != nil {
		b.mu.Lock()
		eof := b.remaining == 0
		b.mu.Unlock()
		if !eof {
			return // the body's last read starts it
		}
	}
	c.startBackgroundRead()
}

// stopReading stops body reads from goroutines the handler left behind and
// the background reader, and reports how much of the body is unread and
// whether the peer has gone.
func (c *conn) stopReading() (unread int64, peerGone bool) {
	c.finishing.Store(true)
	if b := c.body; b != nil {
		c.rwc.SetReadDeadline(aLongTimeAgo)
		b.mu.Lock()
		unread = b.remaining
		b.mu.Unlock()
	}
	c.bgMu.Lock()
	bgDone := c.bgDone
	c.bgMu.Unlock()
	if bgDone != nil {
		c.rwc.SetReadDeadline(aLongTimeAgo)
		<-bgDone
	}
	return unread, c.peerGone.Load()
}

// A reqCtx is a request's context: it carries the *Origin and
// http.LocalAddrContextKey, and is cancelled when the handler returns or
// the peer closes the connection. Watching for the close costs a goroutine
// and a read, so it starts only when someone asks for Done (a handler
// waiting for a worker does; one that answers at once does not).
type reqCtx struct {
	c      *conn
	origin *Origin
	local  net.Addr

	mu   sync.Mutex
	done chan struct{}
	err  error
}

func (x *reqCtx) Deadline() (time.Time, bool) { return time.Time{}, false }

func (x *reqCtx) Done() <-chan struct{} {
	x.mu.Lock()
	start := false
	if x.done == nil {
		x.done = make(chan struct{})
		if x.err != nil {
			close(x.done)
		} else {
			start = true
		}
	}
	done := x.done
	x.mu.Unlock()
	if start {
		x.c.wantBackgroundRead()
	}
	return done
}

func (x *reqCtx) Err() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.err
}

func (x *reqCtx) Value(key any) any {
	switch key {
	case originKey{}:
		return x.origin
	case http.LocalAddrContextKey:
		return x.local
	}
	return nil
}

func (x *reqCtx) cancel(err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.err == nil {
		x.err = err
		if x.done != nil {
			close(x.done)
		}
	}
}

func (x *reqCtx) String() string { return "uwsgi.reqCtx" }

// reject answers a request that never reached the handler and ends the
// connection.
func (c *conn) reject(code int) {
	c.writeError(code)
	c.lingerClose(lingerMax)
}

// writeError writes a complete short plain-text response.
func (c *conn) writeError(code int) {
	body := strconv.Itoa(code) + " " + http.StatusText(code) + "\n"
	fmt.Fprintf(c.bw, "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\n"+
		"X-Content-Type-Options: nosniff\r\nContent-Length: %d\r\n\r\n%s",
		body[:len(body)-1], len(body), body)
	c.bw.Flush()
}

// lingerClose ends the connection after a complete response: it half-closes
// (nginx sees the end of the response at once), discards up to limit bytes
// of unread input for at most lingerTimeout, then closes.
func (c *conn) lingerClose(limit int64) {
	if cw, ok := c.rwc.(interface{ CloseWrite() error }); ok && limit > 0 {
		if cw.CloseWrite() == nil {
			c.rwc.SetReadDeadline(time.Now().Add(lingerTimeout))
			io.CopyN(io.Discard, c.br, limit)
		}
	}
	c.rwc.Close()
}

// abort ends the connection abruptly; on TCP with a reset, so that nginx
// logs an upstream error and cuts the client's response short instead of
// taking a truncated response for a complete one.
func (c *conn) abort() {
	// An interface, not *net.TCPConn: a PROXY-protocol connection wraps
	// one and passes SetLinger on.
	if tc, ok := c.rwc.(interface{ SetLinger(int) error }); ok {
		tc.SetLinger(0)
	}
	c.rwc.Close()
}

// newRequest builds the request described by a packet's variables.
func (c *conn) newRequest(h Header, vars []byte) (*http.Request, error) {
	// One conversion, so that every string of the request shares it.
	block := string(vars)
	var (
		method, requestURI, query, pathInfo, scriptName string
		contentType, contentLength, proto, httpHost     string
		serverName, serverPort, remoteAddr, remotePort  string
		requestScheme, httpsVar                         string
		hasURI, hasQuery, hasPath, hasScript, hasRemote bool
		hasLength                                       bool
		// Sized by a count of "HTTP_" in the block (values may hold
		// some too): a map sized for 16 cost 1.4 KiB a request when
		// nginx sends four headers.
		nhdr   = strings.Count(block, "HTTP_")
		header = make(http.Header, nhdr)
		values = make([]string, nhdr) // one backing array for the values
		o      = &Origin{Peer: c.rwc.RemoteAddr(), Modifier1: h.Modifier1, Modifier2: h.Modifier2}
	)
	err := walkVars(block, func(k, v string) error {
		switch k {
		case "REQUEST_METHOD":
			method = v
		case "REQUEST_URI":
			requestURI, hasURI = v, true
		case "QUERY_STRING":
			query, hasQuery = v, true
		case "PATH_INFO":
			pathInfo, hasPath = v, true
		case "SCRIPT_NAME":
			scriptName, hasScript = v, true
		case "CONTENT_TYPE":
			contentType = v
		case "CONTENT_LENGTH":
			if hasLength && v != contentLength {
				return fmt.Errorf("uwsgi: conflicting CONTENT_LENGTH values %q and %q", contentLength, v)
			}
			contentLength, hasLength = v, true
		case "SERVER_PROTOCOL":
			proto = v
		case "SERVER_NAME":
			serverName = v
		case "SERVER_PORT":
			serverPort = v
		case "REMOTE_ADDR":
			remoteAddr, hasRemote = v, true
		case "REMOTE_PORT":
			remotePort = v
		case "REQUEST_SCHEME":
			requestScheme = v
		case "HTTPS":
			httpsVar = v
		case "HTTP_HOST":
			httpHost = v
		case "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING":
			// CONTENT_TYPE and CONTENT_LENGTH rule, and CONTENT_LENGTH
			// alone frames the body.
		default:
			switch {
			case strings.HasPrefix(k, "HTTP_"):
				c.addHeader(header, &values, k[len("HTTP_"):], v)
			case len(k) >= len("UWSGI_") && strings.EqualFold(k[:len("UWSGI_")], "UWSGI_"),
				strings.HasPrefix(k, "wsgi."):
				// Never acted on, never passed on.
			default:
				o.Extra = AppendVar(o.Extra, k, v)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	if method == "" {
		return nil, errors.New("uwsgi: missing REQUEST_METHOD")
	}
	if !isToken(method) {
		return nil, fmt.Errorf("uwsgi: invalid REQUEST_METHOD %q", method)
	}
	var length int64
	if contentLength != "" {
		n, err := strconv.ParseInt(contentLength, 10, 64)
		if err != nil || !allDigits(contentLength) {
			return nil, fmt.Errorf("uwsgi: invalid CONTENT_LENGTH %q", contentLength)
		}
		length = n
	}
	if proto == "" {
		proto = "HTTP/1.1"
	}
	major, minor, ok := http.ParseHTTPVersion(proto)
	if !ok {
		return nil, fmt.Errorf("uwsgi: invalid SERVER_PROTOCOL %q", proto)
	}

	var path string
	switch {
	case hasPath:
		path = pathInfo
	case hasURI:
		u, err := url.ParseRequestURI(requestURI)
		if err != nil {
			return nil, fmt.Errorf("uwsgi: parsing REQUEST_URI: %w", err)
		}
		path = u.Path
	default:
		return nil, errors.New("uwsgi: neither PATH_INFO nor REQUEST_URI sent")
	}
	fullPath := path
	if h.Modifier1 == 30 {
		path = stripMount(path, strings.TrimRight(scriptName, "/"))
	}
	if !hasQuery && hasURI {
		if i := strings.IndexByte(requestURI, '?'); i >= 0 {
			query = requestURI[i+1:]
		}
	}
	u := &url.URL{Path: path, RawQuery: query}
	if hasURI && path == fullPath {
		// Keep the client's escaping (%2F in a segment, say) when it
		// agrees with the decoded path.
		raw := requestURI
		if i := strings.IndexByte(raw, '?'); i >= 0 {
			raw = raw[:i]
		}
		if strings.IndexByte(raw, '%') >= 0 {
			if p, err := url.PathUnescape(raw); err == nil && p == path {
				u.RawPath = raw
			}
		}
	}
	if !hasURI {
		requestURI = (&url.URL{Path: fullPath, RawQuery: query}).RequestURI()
	}

	https := strings.EqualFold(requestScheme, "https") || strings.EqualFold(httpsVar, "on") || httpsVar == "1"
	o.ServerName, o.ServerPort = serverName, serverPort
	o.RemoteAddr, o.RemotePort = remoteAddr, remotePort
	o.ScriptName, o.HasScriptName = scriptName, hasScript
	o.Scheme = "http"
	if https {
		o.Scheme = "https"
	}

	host := httpHost
	if host == "" {
		host = serverName
	}
	remote := c.peer()
	if hasRemote {
		remote = net.JoinHostPort(remoteAddr, remotePort)
	}
	if contentType != "" {
		header["Content-Type"] = []string{contentType}
	}

	c.ctx = &reqCtx{c: c, origin: o, local: c.rwc.LocalAddr()}
	req := &http.Request{
		Method:        method,
		URL:           u,
		Proto:         proto,
		ProtoMajor:    major,
		ProtoMinor:    minor,
		Header:        header,
		Host:          host,
		RemoteAddr:    remote,
		RequestURI:    requestURI,
		ContentLength: length,
		Close:         true,
		Body:          http.NoBody,
	}
	if https {
		req.TLS = &tls.ConnectionState{HandshakeComplete: true}
	}
	if length > 0 {
		c.body = &body{c: c, remaining: length}
		req.Body = c.body
	}
	return req.WithContext(c.ctx), nil
}

// addHeader adds the header named by an HTTP_* variable's suffix
// (X_FORWARDED_FOR -> X-Forwarded-For). A name or value nginx would never
// send (a byte that is not a token character; a control character in the
// value) drops the header: passing it on could only confuse what follows.
func (c *conn) addHeader(h http.Header, values *[]string, name, value string) {
	if name == "" || !validHeaderValue(value) {
		return
	}
	b := c.scratch[:0]
	upper := true
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if ch == '_' {
			ch = '-'
		}
		if !isTokenChar(ch) {
			return
		}
		switch {
		case upper && 'a' <= ch && ch <= 'z':
			ch -= 'a' - 'A'
		case !upper && 'A' <= ch && ch <= 'Z':
			ch += 'a' - 'A'
		}
		upper = ch == '-'
		b = append(b, ch)
	}
	c.scratch = b
	key, ok := commonHeaders[string(b)]
	if !ok {
		key = string(b)
	}
	if vv, ok := h[key]; ok {
		h[key] = append(vv, value)
		return
	}
	if len(*values) == 0 {
		*values = make([]string, 4)
	}
	h[key] = (*values)[:1:1]
	(*values)[0] = value
	*values = (*values)[1:]
}

// commonHeaders interns the names browsers send on most requests, sparing
// an allocation each.
var commonHeaders = func() map[string]string {
	m := make(map[string]string)
	for _, k := range []string{
		"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control",
		"Connection", "Cookie", "Dnt", "If-Modified-Since", "If-None-Match", "Origin",
		"Pragma", "Priority", "Referer", "Sec-Ch-Ua", "Sec-Ch-Ua-Mobile", "Sec-Ch-Ua-Platform",
		"Sec-Fetch-Dest", "Sec-Fetch-Mode", "Sec-Fetch-Site", "Sec-Fetch-User",
		"Upgrade-Insecure-Requests", "User-Agent", "X-Forwarded-For", "X-Forwarded-Host",
		"X-Forwarded-Proto", "X-Real-Ip", "X-Requested-With", "X-Csrftoken",
	} {
		m[k] = k
	}
	return m
}()

// isTokenChar reports whether c may appear in an HTTP token (RFC 9110
// section 5.6.2): a method or a header name.
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// validHeaderValue rejects control characters other than tab (CR, LF, NUL
// among them).
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
