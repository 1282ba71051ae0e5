package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"portico/internal/uwsgi"
)

const (
	// uwLingerTimeout and uwLingerMax bound how long, and how much of an unread
	// request body, a connection keeps reading after its response is
	// complete. Closing a socket with unread input makes the kernel send a
	// RST, and the peer may then lose the end of the response it has not
	// read yet; Apache and nginx linger for the same reason.
	uwLingerTimeout = 2 * time.Second
	uwLingerMax     = 256 << 10

	uwReadBufSize  = 4 << 10
	uwWriteBufSize = 8 << 10
	// uwMaxPooledVars is the largest vars buffer returned to the pool; the
	// rare 64 KiB packet's buffer is left to the garbage collector.
	uwMaxPooledVars = 16 << 10
)

var (
	uwReaderPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, uwReadBufSize) }}
	uwWriterPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, uwWriteBufSize) }}
	uwVarsPool   = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

	// errUWHandlerDone is what a request body read returns once its handler
	// has returned (from a goroutine the handler left behind).
	errUWHandlerDone = errors.New("uwsgi: request body read after the handler returned")
)

// uwIdleServeTimeout is how long a goroutine that served a uwsgi
// connection waits for another before it exits.
const uwIdleServeTimeout = 10 * time.Second

// ServeUWSGI accepts connections on l from nginx's uwsgi_pass (or any
// uwsgi client) and serves each as uWSGI would serve it with a WSGI app:
// one request per connection, the response a raw HTTP/1.1 message ended by
// closing the connection. It shares the server's lifecycle with Serve (one
// accept loop, connection tracking, Shutdown and Close) and returns as
// Serve does. The request's context carries an *uwsgi.Origin
// (uwsgi.OriginFrom) and http.LocalAddrContextKey, and is cancelled when
// the handler returns or when nginx closes the connection (it does when its
// client goes away) once the request body has been read.
//
// Timeouts: ReadHeaderTimeout bounds the time from accepting a connection
// to having read its whole packet (header and vars), BodyTimeout each read
// of the request body (a peer slower than either gets 400 and is
// disconnected), SendTimeout each write of the response (nginx's
// uwsgi_send_timeout and uwsgi_read_timeout on the other end, 60s by
// default too).
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
func (s *HTTP) ServeUWSGI(l net.Listener) error {
	return s.acceptLoop(l, func(rwc net.Conn) bool {
		c := &uwConn{srv: s, rwc: rwc}
		if !s.trackUWSGI(c, true) {
			return false
		}
		select {
		case s.uwIdle() <- c:
		default:
			go s.serveUWSGIConns(c)
		}
		return true
	})
}

func (s *HTTP) uwIdle() chan *uwConn {
	s.uwIdleOnce.Do(func() { s.uwIdleConns = make(chan *uwConn) })
	return s.uwIdleConns
}

// serveUWSGIConns serves c, then the connections ServeUWSGI hands it, until
// none comes for uwIdleServeTimeout or the server shuts down. nginx
// connects once per request: reusing the goroutine keeps its grown stack,
// which a new goroutine per connection would grow again (a copy at each
// doubling) every time.
func (s *HTTP) serveUWSGIConns(c *uwConn) {
	idle := s.uwIdle()
	t := time.NewTimer(uwIdleServeTimeout)
	defer t.Stop()
	for {
		c.serve()
		t.Reset(uwIdleServeTimeout)
		select {
		case c = <-idle:
		case <-t.C:
			return
		case <-s.stopped:
			return
		}
	}
}

func (s *HTTP) trackUWSGI(c *uwConn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.uwConns, c)
		return true
	}
	if s.shuttingDown() {
		return false
	}
	s.uwConns[c] = struct{}{}
	return true
}

// deadlineIn returns the deadline d from now; none (zero) if d <= 0.
func deadlineIn(d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return time.Now().Add(d)
}

// uwConn is one accepted connection and its one request.
type uwConn struct {
	srv *HTTP
	rwc net.Conn
	br  *bufio.Reader
	bw  *bufio.Writer
	dw  uwDeadlineWriter
	// scratch is reused to canonicalise header names.
	scratch []byte

	ctx *reqCtx
	// uwBody is the request uwBody, nil when there is none.
	body *uwBody
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

func (c *uwConn) peer() string {
	if a := c.rwc.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

func (c *uwConn) serve() {
	s := c.srv
	defer s.trackUWSGI(c, false)

	c.br = uwReaderPool.Get().(*bufio.Reader)
	c.br.Reset(c.rwc)
	c.dw = uwDeadlineWriter{conn: c.rwc, timeout: s.writeTimeout}
	c.bw = uwWriterPool.Get().(*bufio.Writer)
	c.bw.Reset(&c.dw)
	defer func() {
		c.br.Reset(nil)
		uwReaderPool.Put(c.br)
		c.bw.Reset(nil)
		uwWriterPool.Put(c.bw)
	}()

	c.rwc.SetReadDeadline(deadlineIn(s.readHeaderTimeout))
	bufp := uwVarsPool.Get().(*[]byte)
	h, vars, err := uwsgi.ReadPacket(c.br, *bufp)
	supported := h.Modifier1 == 0 || h.Modifier1 == 30
	var req *http.Request
	var reqErr error
	if err == nil && supported {
		req, reqErr = c.newRequest(h, vars) // copies what it keeps of vars
	}
	if cap(vars) <= uwMaxPooledVars {
		*bufp = vars[:0]
		uwVarsPool.Put(bufp)
	}

	switch {
	case err == io.EOF:
		// Connected and closed without a byte: a port probe, not a request.
		s.logger.Debug("uwsgi: connection closed before a packet", "peer", c.peer())
		c.rwc.Close()
	case err != nil:
		s.logger.Warn("uwsgi: rejecting packet", "peer", c.peer(), "err", err)
		c.reject(http.StatusBadRequest)
	case !supported:
		s.logger.Warn("uwsgi: rejecting packet with unsupported modifier1",
			"modifier1", h.Modifier1, "modifier2", h.Modifier2, "peer", c.peer())
		c.reject(http.StatusNotImplemented)
	case reqErr != nil:
		s.logger.Warn("uwsgi: rejecting request", "peer", c.peer(), "err", reqErr)
		c.reject(http.StatusBadRequest)
	default:
		c.serveRequest(req)
	}
}

// serveRequest runs the handler and ends the connection.
func (c *uwConn) serveRequest(req *http.Request) {
	defer c.ctx.cancel(context.Canceled)
	w := &uwResponse{c: c, req: req, header: make(http.Header, 8), contentLength: -1}
	if v, stack := c.runHandler(w, req); v != nil {
		unread, _ := c.stopReading()
		if v == http.ErrAbortHandler {
			c.abort()
			return
		}
		c.srv.logger.Error("uwsgi: handler panicked", "peer", c.peer(),
			"method", req.Method, "uri", req.RequestURI, "panic", v, "stack", string(stack))
		if c.dw.n > 0 {
			c.abort() // part of the uwResponse is out: only a reset tells nginx it is cut short
			return
		}
		c.bw.Reset(&c.dw) // drop what the handler buffered; nothing was sent yet
		c.writeError(http.StatusInternalServerError)
		c.lingerClose(min(unread, uwLingerMax))
		return
	}
	err := w.finish()
	unread, peerGone := c.stopReading()
	switch {
	case err != nil:
		c.srv.logger.Debug("uwsgi: writing response failed", "peer", c.peer(), "err", err)
		c.rwc.Close()
	case unread > 0 && !peerGone:
		c.lingerClose(min(unread, uwLingerMax))
	default:
		c.rwc.Close()
	}
}

// runHandler calls the handler, returning what it panicked with, if it did,
// and the stack then.
func (c *uwConn) runHandler(w *uwResponse, req *http.Request) (panicked any, stack []byte) {
	defer func() {
		w.done = true
		if v := recover(); v != nil {
			panicked = v
			if v != http.ErrAbortHandler {
				stack = debug.Stack()
			}
		}
	}()
	c.srv.handler.ServeHTTP(w, req)
	return nil, nil
}

// startBackgroundRead watches the connection once the request body has
// been read: nginx sends nothing more, so a read returning means the peer
// closed (its client went away), and the request's context is cancelled.
// It starts once, when the handler has asked for its context's Done (see
// reqCtx) and the body has been read.
func (c *uwConn) startBackgroundRead() {
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
func (c *uwConn) wantBackgroundRead() {
	c.bgWanted.Store(true)
	if b := c.body; b != nil {
		b.mu.Lock()
		eof := b.remaining == 0
		b.mu.Unlock()
		if !eof {
			return // the uwBody's last read starts it
		}
	}
	c.startBackgroundRead()
}

// stopReading stops body reads from goroutines the handler left behind and
// the background reader, and reports how much of the body is unread and
// whether the peer has gone.
func (c *uwConn) stopReading() (unread int64, peerGone bool) {
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

// reject answers a request that never reached the handler and ends the
// connection.
func (c *uwConn) reject(code int) {
	c.writeError(code)
	c.lingerClose(uwLingerMax)
}

// writeError writes a complete short plain-text response.
func (c *uwConn) writeError(code int) {
	uwBody := strconv.Itoa(code) + " " + http.StatusText(code) + "\n"
	fmt.Fprintf(c.bw, "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\n"+
		"X-Content-Type-Options: nosniff\r\nContent-Length: %d\r\n\r\n%s",
		uwBody[:len(uwBody)-1], len(uwBody), uwBody)
	c.bw.Flush()
}

// lingerClose ends the connection after a complete response: it half-closes
// (nginx sees the end of the response at once), discards up to limit bytes
// of unread input for at most uwLingerTimeout, then closes.
func (c *uwConn) lingerClose(limit int64) {
	if cw, ok := c.rwc.(interface{ CloseWrite() error }); ok && limit > 0 {
		if cw.CloseWrite() == nil {
			c.rwc.SetReadDeadline(time.Now().Add(uwLingerTimeout))
			io.CopyN(io.Discard, c.br, limit)
		}
	}
	c.rwc.Close()
}

// abort ends the connection abruptly; on TCP with a reset, so that nginx
// logs an upstream error and cuts the client's response short instead of
// taking a truncated response for a complete one.
func (c *uwConn) abort() {
	// An interface, not *net.TCPConn: a PROXY-protocol connection wraps
	// one and passes SetLinger on.
	if tc, ok := c.rwc.(interface{ SetLinger(int) error }); ok {
		tc.SetLinger(0)
	}
	c.rwc.Close()
}

// newRequest builds the request described by a packet's variables.
func (c *uwConn) newRequest(h uwsgi.Header, vars []byte) (*http.Request, error) {
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
		o      = &uwsgi.Origin{Peer: c.rwc.RemoteAddr(), Modifier1: h.Modifier1, Modifier2: h.Modifier2}
	)
	err := uwsgi.ParseVarsString(block, func(k, v string) error {
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
				o.Extra = uwsgi.AppendVar(o.Extra, k, v)
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
		if err != nil || !uwAllDigits(contentLength) {
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
		path = uwsgi.StripMount(path, strings.TrimRight(scriptName, "/"))
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

	c.ctx = &reqCtx{c: c, origin: o}
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
		c.body = &uwBody{c: c, remaining: length}
		req.Body = c.body
	}
	return req.WithContext(c.ctx), nil
}

// addHeader adds the header named by an HTTP_* variable's suffix
// (X_FORWARDED_FOR -> X-Forwarded-For). A name or value nginx would never
// send (a byte that is not a token character; a control character in the
// value) drops the header: passing it on could only confuse what follows.
func (c *uwConn) addHeader(h http.Header, values *[]string, name, value string) {
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
		if !tokenChars[ch] {
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
	key, ok := uwCommonHeaders[string(b)]
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

// uwCommonHeaders interns the names browsers send on most requests, sparing
// an allocation each.
var uwCommonHeaders = func() map[string]string {
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

// uwAllDigits reports whether s is a non-empty run of ASCII digits.
func uwAllDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
