package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// readBufSize is the first size of a connection's read buffer; it
	// grows, up to MaxHeaderBytes and a bit, for a larger head.
	readBufSize = 4 << 10
	// maxDrain is how much of a request body the handler left unread is
	// read and dropped to keep the connection (net/http's
	// maxPostHandlerReadBytes); a larger rest closes the connection.
	maxDrain = 256 << 10
)

var readPool = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// Connection states, for Shutdown.
const (
	stateActive int32 = iota
	stateIdle
	stateClosed
	stateHandshake // a TLS connection before its handshake is done
)

// Kinds of the read deadline the server sets itself.
const (
	deadlineNone = iota
	deadlineIdle
	deadlineHeader
	deadlineBody
	deadlineExplicit
)

// conn is one client connection, served by one goroutine: it reads a
// request head, runs the handler, sends the response, and loops while the
// connection may live on. Between requests it holds no buffer: the wait for
// the next request is a readiness wait (RawConn.Read), and a buffer is taken
// from a pool when bytes arrive.
type conn struct {
	srv    *HTTP
	rwc    net.Conn
	raw    syscall.RawConn // nil if rwc has none
	tcp    *net.TCPConn    // for sendfile; nil for other connections
	remote string
	tls    *tls.ConnectionState // for the requests of a TLS connection
	// proxy, until the connection's goroutine has read its PROXY
	// protocol header, is the wrapper that reads it (see ProxyListener);
	// rwc is then the connection it wraps, so that the raw *net.TCPConn
	// serves sendfile, corking and parking as on any other listener.
	proxy *proxyConn

	state atomic.Int32
	// parkFD and parkGen identify the connection in the parker while it is
	// parked (parkGen 0: not parked); the parker's lock guards them.
	parkFD  int32
	parkGen uint64

	// served is set once the connection's first request head has been
	// read: before it, the wait for a byte is bounded by the header
	// timeout, after it by the idle timeout.
	served bool
	// detached is set while the connection is parked without its
	// net.Conn (rwc, raw and tcp are nil; parkFD is a duplicate of its
	// descriptor that the connection owns): see parker.park. The server's
	// lock guards the change of rwc.
	detached bool
	// hijacked is set when the handler took the connection over
	// (response.Hijack): the server no longer reads, writes or closes it.
	hijacked bool

	// The state of a connection that has a goroutine, nil while it is
	// parked (see parker.park): what a parked connection holds is the
	// fields above, 112 bytes instead of 288.
	*connActive
}

// connActive is the part of a conn that only a connection being served
// (one with a goroutine) needs.
type connActive struct {
	bp   *[]byte // pooled read buffer, nil while idle
	buf  []byte
	r, w int

	out  []byte // write buffer, from outPool during a request
	outp *[]byte
	werr error // sticky write error

	now            time.Time // at the start of the current request
	rdKind         int
	rdSet, wrSet   int64 // when the deadlines were set, in mono time
	explicitWrite  bool
	keepAlive      bool
	expectContinue bool
	body           *body
	resp           *response
	// spareHeader is the cleared header map of the last response, for
	// the next (see serveRequest).
	spareHeader http.Header

	// The current request's context and client-gone monitor (see reqCtx).
	ctx     *reqCtx
	mon     *monitor
	bodyEOF atomic.Bool
}

// activePool holds the connActive of parked connections for the ones
// that resume or start.
var activePool = sync.Pool{New: func() any { return new(connActive) }}

// monitor is the state of a request's client-gone monitor (see reqCtx).
type monitor struct {
	mu     sync.Mutex
	wanted bool
	done   chan struct{} // closed when the monitor goroutine ends
	b      [1]byte
	n      int
	err    error
}

func newConn(srv *HTTP, rwc net.Conn) *conn {
	pc, _ := rwc.(*proxyConn)
	if pc != nil {
		rwc = pc.Conn
	}
	c := &conn{srv: srv, rwc: rwc, remote: rwc.RemoteAddr().String(), proxy: pc}
	c.connActive = activePool.Get().(*connActive)
	if sc, ok := rwc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw = raw
		}
	}
	c.tcp, _ = rwc.(*net.TCPConn)
	if tw, ok := rwc.(TCPWrapper); ok && c.tcp == nil {
		c.tcp = tw.TCPConn()
	}
	return c
}

// TCPWrapper is a connection that wraps a *net.TCPConn and passes its
// bytes through unchanged (one that counts or limits connections, not one
// that encrypts or frames them): the HTTP/1.1 front writes files to the
// socket it names with sendfile(2), and corks it, as it does for a bare
// *net.TCPConn.
type TCPWrapper interface {
	TCPConn() *net.TCPConn
}

// serve serves the connection's requests until it closes, must close, or
// is parked (see parker); a parked connection is resumed by a new
// goroutine running serve again.
func (c *conn) serve() {
	if c.connActive == nil {
		c.connActive = activePool.Get().(*connActive)
	}
	parked := false
	defer func() {
		switch {
		case c.hijacked:
			c.state.Store(stateClosed)
			c.releaseReadForce()
		case !parked:
			c.close()
		}
	}()
	if c.proxy != nil {
		if c.proxy.handshake() != nil {
			c.srv.stats.refused.Add(1)
			return // logged by handshake
		}
		c.remote = c.proxy.RemoteAddr().String()
		c.proxy = nil
	}
	for {
		if c.r == c.w {
			switch c.waitRequest() {
			case waitParked:
				parked = true
				return
			case waitClose:
				return
			}
		} else {
			c.now = time.Now()
		}
		head, err := c.readHead()
		if err != nil {
			if herr, ok := err.(*headError); ok {
				c.srv.logger.Info("bad request", "remote", c.remote, "status", herr.status, "reason", herr.reason)
				c.writeError(herr.status)
			}
			return
		}
		if !c.serveRequest(head) {
			return
		}
	}
}

// resume serves a connection the parker saw become readable.
func (c *conn) resume() {
	if c.detached && !c.attach() {
		c.state.Store(stateClosed)
		c.srv.untrack(c)
		return
	}
	c.serve()
}

// Outcomes of waitRequest.
const (
	waitRequest = iota // bytes of a request are in the buffer
	waitClose          // the connection is to close
	waitParked         // handed to the parker
)

// waitRequest waits for the first bytes of the next request, holding no
// buffer while it waits: parkAfter in this goroutine, then (if the idle
// timeout is longer) parked without one.
func (c *conn) waitRequest() int {
	c.releaseRead()
	if c.srv.shuttingDown() {
		return waitClose
	}
	c.state.Store(stateIdle)
	if c.srv.shuttingDown() {
		// Shutdown may have swept the idle connections before the store.
		return waitClose
	}
	p := c.srv.parker()
	wait := c.srv.waitTimeout(c.served)
	delay := c.srv.parkDelay()
	canPark := p != nil && c.raw != nil && (wait <= 0 || wait > delay)
	if canPark {
		wait = delay
	}
	c.armRead(deadlineIdle, wait, time.Now())
	n, err := c.readIdle()
	if err != nil && canPark && isTimeout(err) && c.state.Load() == stateIdle && p.park(c) {
		return waitParked
	}
	if !c.state.CompareAndSwap(stateIdle, stateActive) || err != nil || n == 0 {
		return waitClose
	}
	c.now = time.Now()
	c.r, c.w = 0, n
	return waitRequest
}

// readIdle reads into a buffer taken from the pool only once the
// connection is readable.
func (c *conn) readIdle() (int, error) {
	if c.raw == nil {
		c.takeRead()
		return c.rwc.Read(c.buf)
	}
	var n int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		c.takeRead()
		for {
			n, rerr = syscall.Read(int(fd), c.buf)
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			c.releaseRead()
			return false
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	return n, nil
}

func (c *conn) takeRead() {
	if c.bp == nil {
		c.bp = readPool.Get().(*[]byte)
		c.buf = *c.bp
		c.r, c.w = 0, 0
	}
}

// releaseRead returns the read buffer to the pool if it holds nothing.
func (c *conn) releaseRead() {
	if c.bp != nil && c.r == c.w {
		if cap(c.buf) == readBufSize {
			*c.bp = c.buf[:cap(c.buf)]
			readPool.Put(c.bp)
		}
		c.bp, c.buf = nil, nil
		c.r, c.w = 0, 0
	}
}

// fill reads more bytes into the buffer, after compacting it or growing it
// up to limit bytes; it fails with errBufferFull past the limit.
func (c *conn) fill(limit int) error {
	c.takeRead()
	if c.r > 0 && c.w == len(c.buf) {
		c.w = copy(c.buf, c.buf[c.r:c.w])
		c.r = 0
	}
	if c.w == len(c.buf) {
		if len(c.buf) >= limit {
			return errBufferFull
		}
		size := min(2*len(c.buf), limit)
		nb := make([]byte, size)
		copy(nb, c.buf[c.r:c.w])
		c.w -= c.r
		c.r = 0
		if cap(c.buf) == readBufSize {
			readPool.Put(c.bp)
		}
		c.buf, c.bp = nb, &nb
	}
	n, err := c.rwc.Read(c.buf[c.w:])
	c.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

var errBufferFull = errors.New("server: request head too large")

// readHead reads up to the end of a request head and parses it. Empty
// lines before the request line are skipped (RFC 9112 2.2).
func (c *conn) readHead() (*requestHead, error) {
	limit := c.srv.maxHeaderBytes
	scan := 0
	armed := false
	checked, fields := 0, 0 // see checkLines
	maxFields := int(c.srv.maxHeaderFields.Load())
	for {
		for c.r < c.w && (c.buf[c.r] == '\r' || c.buf[c.r] == '\n') {
			c.r++
		}
		data := c.buf[c.r:c.w]
		if end := headEnd(data, scan); end >= 0 {
			if end > limit {
				return nil, tooLarge(data[:end])
			}
			head, herr := parseHead(data[:end], maxFields)
			c.r += end
			if herr != nil {
				return nil, herr
			}
			c.served = true
			return head, nil
		}
		if len(data) > limit {
			return nil, tooLarge(data)
		}
		var herr *headError
		if checked, fields, herr = checkLines(data, checked, fields, maxFields); herr != nil {
			return nil, herr
		}
		scan = max(len(data)-3, 0)
		if !armed {
			// The head did not come in one read: from now on the header
			// timeout counts, from the request's first byte.
			armed = true
			c.armRead(deadlineHeader, c.srv.readHeaderTimeout, c.now)
		}
		if err := c.fill(limit + readBufSize); err != nil {
			if errors.Is(err, errBufferFull) {
				return nil, tooLarge(c.buf[c.r:c.w])
			}
			if c.w > c.r && isTimeout(err) {
				c.srv.logger.Info("request head not received in time", "remote", c.remote, "timeout", c.srv.readHeaderTimeout)
			}
			return nil, err
		}
	}
}

// checkLines judges the complete lines of a head not received whole, from
// offset from (where a line starts; 0 is the request line), as parseHead
// will: a malformed head is refused at its first bad line, as nginx does,
// instead of when it ends or its timeout passes. fields counts the header
// lines seen. It returns the offset past the last complete line and the
// new count. The head received in one read, the common case, never comes
// here.
func checkLines(data []byte, from, fields, maxFields int) (int, int, *headError) {
	for {
		i := bytes.IndexByte(data[from:], '\n')
		if i < 0 {
			return from, fields, nil
		}
		line, _, ok := nextLine(string(data[from : from+i+1]))
		if !ok {
			if from == 0 {
				return 0, 0, badRequest("malformed request line")
			}
			return 0, 0, badRequest("malformed header line")
		}
		if from == 0 {
			var h requestHead
			if herr := h.parseRequestLine(line); herr != nil {
				return 0, 0, herr
			}
		} else {
			if line == "" {
				return from, fields, nil // the end: parseHead judges the rest
			}
			if line[0] == ' ' || line[0] == '\t' {
				return 0, 0, badRequest("obsolete line folding in header")
			}
			colon := strings.IndexByte(line, ':')
			if colon <= 0 {
				return 0, 0, badRequest("malformed header line")
			}
			if name := line[:colon]; !isToken(name) || !validHeaderValue(trimOWS(line[colon+1:])) {
				return 0, 0, badRequest("invalid header " + quoteName(name))
			}
			if fields++; fields > maxFields {
				return 0, 0, tooManyFields()
			}
		}
		from += i + 1
	}
}

func tooLarge(data []byte) *headError {
	if bytes.IndexByte(data, '\n') < 0 {
		return &headError{status: http.StatusRequestURITooLong, reason: "request line too long"}
	}
	return &headError{status: http.StatusRequestHeaderFieldsTooLarge, reason: "request head too large"}
}

// headEnd returns the length of the head at the start of b (up to and
// including the empty line that ends it), or -1; from is where to start
// looking.
func headEnd(b []byte, from int) int {
	for i := from; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		switch {
		case i < len(b) && b[i] == '\n':
			return i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i + 2
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// maxSpareHeader bounds the header maps kept for reuse: a larger one is
// left to the collector rather than kept per idle connection.
const maxSpareHeader = 32

// reqState is what one request needs besides its http.Request, in one
// allocation.
type reqState struct {
	ctx  reqCtx
	mon  monitor
	body body
	resp response
}

// serveRequest runs the handler for head and completes the response; it
// reports whether the connection may serve another request.
func (c *conn) serveRequest(head *requestHead) (keep bool) {
	st := &reqState{}
	st.ctx.c = c
	c.keepAlive = head.keepAlive
	c.expectContinue = head.expectContinue
	c.explicitWrite = false
	c.body = nil
	c.ctx, c.mon = &st.ctx, &st.mon
	c.bodyEOF.Store(false)
	req := http.Request{
		Method:        head.method,
		URL:           &head.url,
		Proto:         head.proto,
		ProtoMajor:    head.major,
		ProtoMinor:    head.minor,
		Header:        head.header,
		Body:          http.NoBody,
		ContentLength: head.contentLength,
		Close:         !head.keepAlive,
		Host:          head.host,
		RemoteAddr:    c.remote,
		RequestURI:    head.target,
		TLS:           c.tls,
	}
	if head.chunked || head.contentLength > 0 {
		st.body.c = c
		st.body.chunked = head.chunked
		if head.chunked {
			req.TransferEncoding = []string{"chunked"}
		} else {
			st.body.remaining = head.contentLength
		}
		c.body = &st.body
		req.Body = &st.body
	}
	if head.major == 1 && head.minor == 0 {
		req.Proto = "HTTP/1.0"
	} else {
		req.Proto = "HTTP/1.1"
	}
	r := req.WithContext(&st.ctx)
	w := &st.resp
	w.c, w.req = c, r
	c.resp = w
	c.outp = outPool.Get().(*[]byte)
	c.out = (*c.outp)[:0]

	c.runHandler(w, r)

	// Cancel first: a goroutine the handler left cannot start a monitor
	// after this.
	st.ctx.cancel(context.Canceled)
	if c.hijacked {
		*c.outp = c.out[:0]
		outPool.Put(c.outp)
		c.out, c.outp, c.resp, c.body, c.ctx, c.mon = nil, nil, nil, nil, nil, nil
		return false
	}
	clientGone := c.stopMonitor()
	keep = w.finish() && !clientGone
	if c.body != nil {
		if eof := st.body.finish(); !eof && keep {
			keep = !w.closeAfter && st.body.discard(maxDrain)
		}
	}
	if cap(c.out) <= maxPooledBuf {
		*c.outp = c.out[:0]
		outPool.Put(c.outp)
	}
	if h := w.header; h != nil && len(h) <= maxSpareHeader {
		// The next response on this connection reuses the map, grown
		// already: a page with a dozen header fields (an app's security
		// headers, a cache's Age and X-Cache) would otherwise grow a new
		// one past its first group of 8 on every request. The handler
		// has returned: nothing may touch w's header any more (as with
		// net/http).
		clear(h)
		c.spareHeader = h
	}
	c.out, c.outp, c.resp, c.body, c.ctx, c.mon = nil, nil, nil, nil, nil, nil
	if c.rdKind == deadlineExplicit || c.rdKind == deadlineBody {
		c.rdKind = deadlineNone
	}
	if c.explicitWrite {
		c.wrSet = 0
		c.explicitWrite = false
	}
	return keep && !c.srv.shuttingDown()
}

// runHandler calls the handler, recovering from a panic as net/http does:
// the connection is closed (the panic logged, unless it is
// http.ErrAbortHandler).
func (c *conn) runHandler(w *response, r *http.Request) {
	defer func() {
		if p := recover(); p != nil {
			w.closeAfter = true
			c.werr = errAborted
			if p != http.ErrAbortHandler {
				const size = 64 << 10
				buf := make([]byte, size)
				buf = buf[:runtime.Stack(buf, false)]
				c.srv.logger.Warn(fmt.Sprintf("http: panic serving %v: %v\n%s", c.remote, p, buf))
			}
		}
	}()
	if r.Method == http.MethodOptions && r.RequestURI == "*" {
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
		return
	}
	c.srv.handler.ServeHTTP(w, r)
}

var errAborted = errors.New("server: handler aborted the response")

// decideBody is called when the head is sent: if the handler has not read
// the request body and it cannot be dropped cheaply afterwards, the
// response says the connection closes.
func (c *conn) decideBody(w *response) {
	b := c.body
	if b == nil {
		return
	}
	b.mu.Lock()
	unread := !b.eof && (b.err != nil || b.chunked || b.remaining > maxDrain || c.expectContinue)
	b.mu.Unlock()
	if unread {
		w.closeAfter = true
	}
}

// readBody reads body bytes: from the buffer first, then from the
// connection (straight into p when it is large), each read with the body
// timeout.
func (c *conn) readBody(p []byte) (int, error) {
	if c.r < c.w {
		n := copy(p, c.buf[c.r:c.w])
		c.r += n
		return n, nil
	}
	c.armRead(deadlineBody, c.srv.bodyTimeout, time.Now())
	if len(p) >= readBufSize {
		return c.rwc.Read(p)
	}
	c.r, c.w = 0, 0
	if err := c.fill(readBufSize); err != nil {
		return 0, err
	}
	n := copy(p, c.buf[c.r:c.w])
	c.r += n
	return n, nil
}

// readLine returns the next line of a chunked body (without its CRLF or
// LF), at most max bytes long; it is valid until the next read.
func (c *conn) readLine(max int) ([]byte, error) {
	for {
		if i := bytes.IndexByte(c.buf[c.r:c.w], '\n'); i >= 0 {
			line := c.buf[c.r : c.r+i]
			c.r += i + 1
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			if bytes.IndexByte(line, '\r') >= 0 {
				return nil, fmt.Errorf("%w: CR in a line", errChunkedBody)
			}
			return line, nil
		}
		if c.w-c.r > max {
			return nil, fmt.Errorf("%w: line too long", errChunkedBody)
		}
		c.armRead(deadlineBody, c.srv.bodyTimeout, time.Now())
		if err := c.fill(max + readBufSize); err != nil {
			if err == io.EOF {
				err = errBodyEOF
			}
			return nil, err
		}
	}
}

// readCRLF reads the line end after a chunk's data.
func (c *conn) readCRLF() error {
	line, err := c.readLine(2)
	if err != nil {
		return err
	}
	if len(line) != 0 {
		return fmt.Errorf("%w: no CRLF after chunk data", errChunkedBody)
	}
	return nil
}

// skipTrailers reads the trailer section of a chunked body, up to
// MaxHeaderBytes, and drops it.
func (c *conn) skipTrailers() error {
	total := 0
	for {
		line, err := c.readLine(c.srv.maxHeaderBytes)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			return nil
		}
		if total += len(line); total > c.srv.maxHeaderBytes {
			return fmt.Errorf("%w: trailers too large", errChunkedBody)
		}
	}
}

// scratch returns a buffer to read a body into and drop it.
func (c *conn) scratch() []byte {
	var b [4 << 10]byte
	return b[:]
}

// writeContinue sends "100 Continue" before the first read of a body whose
// client waits for it, unless the response has begun.
func (c *conn) writeContinue() error {
	if c.resp != nil && c.resp.headSent {
		return nil
	}
	return c.write(continueLine)
}

var continueLine = []byte("HTTP/1.1 100 Continue\r\n\r\n")

// write writes b with the send timeout; an error sticks.
func (c *conn) write(b []byte) error {
	if c.werr != nil {
		return c.werr
	}
	c.armWrite()
	if _, err := c.rwc.Write(b); err != nil {
		c.werr = err
	}
	return c.werr
}

// writev writes the non-empty bs in one system call where it can.
func (c *conn) writev(bs ...[]byte) error {
	if c.werr != nil {
		return c.werr
	}
	var one []byte
	n := 0
	for _, b := range bs {
		if len(b) > 0 {
			one = b
			n++
		}
	}
	switch n {
	case 0:
		return nil
	case 1:
		return c.write(one)
	}
	bufs := make(net.Buffers, 0, n)
	for _, b := range bs {
		if len(b) > 0 {
			bufs = append(bufs, b)
		}
	}
	c.armWrite()
	if _, err := bufs.WriteTo(c.rwc); err != nil {
		c.werr = err
	}
	return c.werr
}

// armRead sets the read deadline to now+d for kind, unless a deadline of
// that kind was set less than min(d/8, 1s) ago (a deadline costs a timer
// update; that precision is enough). d <= 0 clears it. An explicit
// deadline from the handler is left alone.
func (c *conn) armRead(kind int, d time.Duration, now time.Time) {
	if c.rdKind == deadlineExplicit && kind == deadlineBody {
		return
	}
	if d <= 0 {
		if c.rdKind != deadlineNone {
			_ = c.rwc.SetReadDeadline(time.Time{})
			c.rdKind = deadlineNone
		}
		return
	}
	m := mono(now)
	if c.rdKind == kind && m-c.rdSet < int64(min(d/8, time.Second)) {
		return
	}
	c.rdKind, c.rdSet = kind, m
	_ = c.rwc.SetReadDeadline(now.Add(d))
}

// epoch is the origin of mono.
var epoch = time.Now()

// mono returns t as nanoseconds since epoch on the monotonic clock (8
// bytes where a time.Time takes 24, in a struct every connection holds).
func mono(t time.Time) int64 { return int64(t.Sub(epoch)) }

func (c *conn) setExplicitReadDeadline(t time.Time) error {
	c.rdKind = deadlineExplicit
	return c.rwc.SetReadDeadline(t)
}

// armWrite sets the write deadline (the send timeout, between two writes)
// unless it was set less than a second ago or the handler set its own.
func (c *conn) armWrite() {
	if c.explicitWrite || c.srv.writeTimeout <= 0 {
		return
	}
	now := time.Now()
	m := mono(now)
	if c.wrSet != 0 && m-c.wrSet < int64(time.Second) {
		return
	}
	c.wrSet = m
	_ = c.rwc.SetWriteDeadline(now.Add(c.srv.writeTimeout))
}

// writeError answers a request the server could not read, and the
// connection closes.
func (c *conn) writeError(status int) {
	text := http.StatusText(status)
	msg := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%d %s\n",
		status, text, len(text)+5, status, text)
	_ = c.write([]byte(msg))
	// Let the client read the answer before the close (which, with unread
	// input, would reset the connection).
	if tc, ok := c.rwc.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
		_ = c.rwc.SetReadDeadline(time.Now().Add(time.Second))
		var drop [4 << 10]byte
		for total := 0; total < 64<<10; {
			n, err := c.rwc.Read(drop[:])
			total += n
			if err != nil {
				break
			}
		}
	}
}

func (c *conn) shuttingDown() bool { return c.srv.shuttingDown() }

func (c *conn) close() {
	if c.connActive != nil {
		c.stopMonitor()
	}
	c.state.Store(stateClosed)
	if c.detached {
		syscall.Close(int(c.parkFD))
	} else {
		_ = c.rwc.Close()
	}
	if c.connActive != nil { // nil: closed while parked
		c.releaseReadForce()
	}
	c.srv.untrack(c)
}

func (c *conn) releaseReadForce() {
	c.r = c.w
	c.releaseRead()
}

// aLongTimeAgo is a deadline in the past, to interrupt a blocked Read.
var aLongTimeAgo = time.Unix(1, 0)

// wantMonitor is called when the handler asks for its context's Done
// channel: the monitor starts now if the request body has been read (it
// would eat the body otherwise), or when it has.
func (c *conn) wantMonitor() {
	m := c.mon
	m.mu.Lock()
	defer m.mu.Unlock()
	m.wanted = true
	if c.body == nil || c.bodyEOF.Load() {
		c.startMonitorLocked(m)
	}
}

// bodyDone is called when the request body has been read to its end.
func (c *conn) bodyDone() {
	c.bodyEOF.Store(true)
	m := c.mon
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.wanted {
		c.startMonitorLocked(m)
	}
}

// startMonitorLocked starts a goroutine that reads one byte of the
// connection: the end of the connection cancels the request's context; a
// byte (the next pipelined request) is kept for later. It does not start if
// bytes of a next request are buffered already (the client is there).
func (c *conn) startMonitorLocked(m *monitor) {
	if m.done != nil || c.resp == nil || c.r < c.w {
		return
	}
	done := make(chan struct{})
	m.done = done
	m.n, m.err = 0, nil
	x := c.ctx
	_ = c.rwc.SetReadDeadline(time.Time{})
	go func() {
		defer close(done)
		n, err := c.rwc.Read(m.b[:])
		m.n, m.err = n, err
		if n == 0 && err != nil && !isTimeout(err) {
			x.cancel(context.Canceled)
		}
	}()
}

// stopMonitor stops the monitor if it runs and reports whether it saw the
// client go away. A byte it read is put back in the read buffer.
func (c *conn) stopMonitor() (clientGone bool) {
	m := c.mon
	if m == nil {
		return false
	}
	m.mu.Lock()
	done := m.done
	m.wanted = false
	m.mu.Unlock()
	if done == nil {
		return false
	}
	_ = c.rwc.SetReadDeadline(aLongTimeAgo)
	<-done
	m.mu.Lock()
	m.done = nil
	m.mu.Unlock()
	c.rdKind = deadlineNone // armRead must set a fresh one
	_ = c.rwc.SetReadDeadline(time.Time{})
	if m.n > 0 {
		c.takeRead()
		c.r, c.w = 0, 1
		c.buf[0] = m.b[0]
		return false
	}
	return m.err != nil && !isTimeout(m.err)
}
