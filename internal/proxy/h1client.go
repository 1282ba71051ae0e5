package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// H1Transport is an HTTP/1.1 client for one plain-HTTP upstream (TCP or a
// unix socket), written for the proxy: the request is written and the
// response head read by the calling goroutine, over a pool of kept-alive
// connections.
//
// net/http's Transport gives every connection a reader and a writer
// goroutine and hands each request to them through channels: three
// goroutines take turns per request. Profiled behind the proxy (an nginx
// upstream answering a short body, both on one CPU), its machinery and the
// switches between those goroutines were about a quarter of Portico's CPU
// per request. Here one goroutine does the exchange, and an idle
// connection costs no goroutine: before reuse it is checked with one
// non-blocking peek (a server that closed it, as gunicorn does after 2 s
// idle, is noticed then instead of by a failed request).
//
// TLS upstreams keep net/http's Transport (see NewHTTPTransport).
type H1Transport struct {
	// Dial opens a connection to the upstream. Required.
	Dial func(ctx context.Context) (net.Conn, error)
	// MaxIdle bounds the idle connections kept. Zero: 256.
	MaxIdle int
	// IdleTimeout closes a connection idle longer than this. Zero: 60s.
	IdleTimeout time.Duration

	mu     sync.Mutex
	idle   []*h1conn // most recently used last
	closed bool
}

var _ http.RoundTripper = (*H1Transport)(nil)

// h1conn is one connection to the upstream.
type h1conn struct {
	t    *H1Transport
	c    net.Conn
	raw  syscall.RawConn // for the liveness peek; nil if c has none
	br   *bufio.Reader
	bw   *bufio.Writer
	used time.Time // when it went idle
}

// errStale: a reused connection was closed by the server before it
// answered anything; errUnread also when the request could not even be
// written (the server had closed its side).
var (
	errStale  = errors.New("proxy: kept-alive upstream connection closed by the server")
	errUnread = errors.New("proxy: the request was not written")
)

// RoundTrip sends req and returns the response with its head read; the
// body streams from the connection, which goes back to the pool once the
// body is read to its end (or is closed when the body is closed before).
// A request whose reused connection turns out closed before any byte of
// the answer is sent again once on a new connection, if its body can be
// replayed (GetBody, or no body): the server never started it.
func (t *H1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		pc, reused, err := t.conn(ctx)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, err := pc.roundTrip(req)
		if err == nil {
			return resp, nil
		}
		pc.close()
		// A server that closed a kept-alive connection never saw a request
		// it could not read; one that closed after reading it might have
		// run it, so that one is sent again only if it is idempotent.
		if reused && attempt == 0 && errors.Is(err, errStale) && ctx.Err() == nil &&
			(errors.Is(err, errUnread) || idempotent(req)) {
			if req.Body == nil || req.Body == http.NoBody {
				continue
			}
			if req.GetBody != nil {
				if body, gerr := req.GetBody(); gerr == nil {
					r2 := *req
					r2.Body = body
					req = &r2
					continue
				}
			}
		}
		closeBody(req)
		return nil, err
	}
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// conn takes the most recently used live idle connection, or dials one.
func (t *H1Transport) conn(ctx context.Context) (*h1conn, bool, error) {
	timeout := t.IdleTimeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	now := time.Now()
	for {
		t.mu.Lock()
		n := len(t.idle)
		if n == 0 {
			t.mu.Unlock()
			break
		}
		pc := t.idle[n-1]
		t.idle[n-1] = nil
		t.idle = t.idle[:n-1]
		t.mu.Unlock()
		if now.Sub(pc.used) > timeout || !pc.alive() {
			pc.close()
			continue
		}
		return pc, true, nil
	}
	c, err := t.Dial(ctx)
	if err != nil {
		return nil, false, err
	}
	pc := &h1conn{t: t, c: c, br: bufio.NewReaderSize(c, 16<<10), bw: bufio.NewWriterSize(c, 16<<10)}
	if sc, ok := c.(syscall.Conn); ok {
		pc.raw, _ = sc.SyscallConn()
	}
	return pc, false, nil
}

// alive peeks at an idle connection without blocking: a server that
// closed it (or sent something unasked) makes it unusable.
func (pc *h1conn) alive() bool {
	if pc.br.Buffered() > 0 {
		return false // bytes nobody asked for
	}
	if pc.raw == nil {
		return true
	}
	ok := false
	_ = pc.raw.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
		return true // never wait for readiness
	})
	return ok
}

// put returns a connection whose exchange ended cleanly to the pool.
func (pc *h1conn) put() {
	t := pc.t
	max := t.MaxIdle
	if max <= 0 {
		max = 256
	}
	pc.used = time.Now()
	t.mu.Lock()
	if t.closed || len(t.idle) >= max {
		t.mu.Unlock()
		pc.close()
		return
	}
	t.idle = append(t.idle, pc)
	t.mu.Unlock()
}

func (pc *h1conn) close() { pc.c.Close() }

// CloseIdleConnections closes the idle connections.
func (t *H1Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, pc := range idle {
		pc.close()
	}
}

// aLongTimeAgo is a deadline in the past: it interrupts a blocked read or
// write.
var aLongTimeAgo = time.Unix(1, 0)

// roundTrip runs one exchange on pc.
func (pc *h1conn) roundTrip(req *http.Request) (*http.Response, error) {
	// A cancelled request interrupts the connection's I/O; the connection
	// is then not reused.
	stop := context.AfterFunc(req.Context(), func() { _ = pc.c.SetDeadline(aLongTimeAgo) })
	fail := func(err error) (*http.Response, error) {
		stop()
		if cerr := req.Context().Err(); cerr != nil {
			return nil, fmt.Errorf("%w (%w)", context.Cause(req.Context()), err)
		}
		return nil, err
	}
	if err := pc.writeRequest(req); err != nil {
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
			// The server closed its side: it never read this request.
			err = fmt.Errorf("%w: %w: %w", errStale, errUnread, err)
		}
		return fail(err)
	}
	var resp *http.Response
	for {
		if _, err := pc.br.Peek(1); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
				return fail(fmt.Errorf("%w: %w", errStale, err))
			}
			return fail(fmt.Errorf("reading the response: %w", err))
		}
		var err error
		resp, err = http.ReadResponse(pc.br, req)
		if err != nil {
			return fail(fmt.Errorf("reading the response: %w", err))
		}
		// 1xx answers before the final one (100 Continue, 103 Early
		// Hints) are skipped; a protocol switch is final.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		stop()
		resp.Body = &switchedConn{pc: pc}
		return resp, nil
	}
	resp.Body = &h1body{pc: pc, rc: resp.Body, stop: stop, keep: !resp.Close && !req.Close, length: resp.ContentLength}
	return resp, nil
}

// writeRequest writes req's head and body and flushes.
func (pc *h1conn) writeRequest(req *http.Request) error {
	bw := pc.bw
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(req.URL.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	bw.WriteString(host)
	bw.WriteString("\r\n")
	for name, values := range req.Header {
		switch name {
		case "Host", "Content-Length", "Transfer-Encoding":
			continue // written from the request's fields
		}
		for _, v := range values {
			if v == "" && name == "User-Agent" {
				continue // "no User-Agent" (see forwardHeaders)
			}
			if !validHeaderValue(v) {
				continue
			}
			bw.WriteString(name)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	hasBody := req.Body != nil && req.Body != http.NoBody
	chunked := hasBody && req.ContentLength < 0
	switch {
	case chunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case hasBody || req.ContentLength > 0 || methodWantsLength(method):
		var num [20]byte
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(num[:0], max(req.ContentLength, 0), 10))
		bw.WriteString("\r\n")
	}
	if req.Close {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	if hasBody {
		defer req.Body.Close()
		var err error
		if chunked {
			cw := &chunkWriter{w: bw}
			if _, err = io.Copy(cw, req.Body); err == nil {
				_, err = bw.WriteString("0\r\n\r\n")
			}
		} else {
			var n int64
			n, err = io.Copy(bw, io.LimitReader(req.Body, req.ContentLength))
			if err == nil && n < req.ContentLength {
				err = fmt.Errorf("request body: %d bytes of %d", n, req.ContentLength)
			}
		}
		if err != nil {
			return fmt.Errorf("writing the request: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing the request: %w", err)
	}
	return nil
}

// methodWantsLength: methods whose requests carry a body by definition get
// "Content-Length: 0" when they have none (as net/http sends).
func methodWantsLength(m string) bool {
	return m == http.MethodPost || m == http.MethodPut || m == http.MethodPatch
}

// validHeaderValue rejects a value that would split the head.
func validHeaderValue(v string) bool {
	return !strings.ContainsAny(v, "\r\n\x00")
}

// chunkWriter writes each Write as one chunk.
type chunkWriter struct{ w *bufio.Writer }

func (c *chunkWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var num [16]byte
	c.w.Write(strconv.AppendInt(num[:0], int64(len(p)), 16))
	c.w.WriteString("\r\n")
	c.w.Write(p)
	_, err := c.w.WriteString("\r\n")
	return len(p), err
}

// h1body is a response body; at its end the connection goes back to the
// pool.
type h1body struct {
	pc     *h1conn
	rc     io.ReadCloser
	stop   func() bool
	keep   bool
	length int64 // Content-Length, -1 if none
	read   int64
	done   bool
}

func (b *h1body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	b.read += int64(n)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

// finish ends the exchange: the connection is reused when the body ended
// cleanly, the server did not say close, and no cancellation touched it.
func (b *h1body) finish(clean bool) {
	if b.done {
		return
	}
	b.done = true
	if b.stop() && clean && b.keep {
		b.pc.put()
		return
	}
	b.pc.close()
}

// Close ends the body. A body read up to its Content-Length but not yet to
// its end is finished without a read (its end is known); otherwise the
// connection closes, with what is left unread.
func (b *h1body) Close() error {
	if !b.done {
		if b.length >= 0 && b.read == b.length {
			var one [1]byte
			n, err := b.rc.Read(one[:])
			b.finish(n == 0 && err == io.EOF)
		} else {
			b.finish(false)
		}
	}
	return nil
}

// switchedConn is the body of a 101 answer: the connection itself, both
// ways, for the proxy's tunnel.
type switchedConn struct{ pc *h1conn }

func (s *switchedConn) Read(p []byte) (int, error)  { return s.pc.br.Read(p) }
func (s *switchedConn) Write(p []byte) (int, error) { return s.pc.c.Write(p) }
func (s *switchedConn) Close() error                { return s.pc.c.Close() }
