package server

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// The plain front enforces the body and send timeouts itself (see
// conn.armRead and conn.armWrite). TLS listeners are served by net/http,
// whose http.Server has only whole-request ReadTimeout and WriteTimeout: a
// legitimate long upload or download would be cut by them, and without
// them a client that stops sending its body, or stops reading a download,
// holds its connection (and the handler) forever. So ServeTLS enforces the
// two timeouts the way the plain front does, per read and per write:
//
//   - send timeout: below TLS, a deadlineConn arms the write deadline
//     before each write of the connection (HTTP/1.1 and HTTP/2 alike: every
//     byte the server sends goes through it), unless net/http or a handler
//     set a write deadline of its own;
//   - and for HTTP/2, also on each stream: a stream whose client stops
//     granting flow-control window stalls its handler with the connection
//     free, so a timedWriter arms the stream's write deadline (through
//     http.ResponseController) before each write of the response;
//   - body timeout: on each request, a timedBody arms the read deadline
//     (through http.ResponseController, so for HTTP/2 the stream's) before
//     each read of the body, and clears it at the body's end. The read side
//     cannot live in the connection: its reads also wait for the next
//     request (net/http's idle timeout), watch for a client going away
//     while a slow handler runs, and, with HTTP/2, carry every stream's
//     frames, none of which the body timeout must cut.

// TLSListener returns a listener of TLS connections over l, with config,
// for ServeTLS: each accepted connection sits on a deadlineConn, through
// which ServeTLS enforces its send timeout. (ServeTLS also serves a
// tls.NewListener of its own, without the send timeout: it logs a warning
// once.)
func TLSListener(l net.Listener, config *tls.Config) net.Listener {
	return tls.NewListener(deadlineListener{l}, config)
}

type deadlineListener struct{ net.Listener }

func (l deadlineListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &deadlineConn{Conn: c}, nil
}

// A deadlineConn arms its write deadline, send from now, before each
// write, unless a deadline set through SetWriteDeadline or SetDeadline is
// in force (a zero deadline hands the control back). Like the plain front,
// it refreshes the deadline at most every min(send/8, 1s), so a write
// times out between send-1s and send after the last progress.
//
// On an HTTP/2 connection (see combineH2) it also combines writes.
// net/http's HTTP/2 server flushes its buffer
// whenever its queue of frames runs empty, which under h2load -c 64 -m 10
// on one core was 2.9 write(2) calls per 1 KiB response (nginx: 1.0), each
// a TLS record, and write(2) was 31% of Portico's CPU. So Write only
// appends the (already encrypted) record to a pending buffer and starts a
// flushing goroutine if none runs; that goroutine runs once the goroutines
// already runnable have had their turn, and writes everything appended by
// then in one call. Measured (h2load -c 64 -m 10, 1 KiB static file,
// server on one core, 3 interleaved runs, medians, a loaded machine):
// 2.85 -> 1.23 write(2) per request, server CPU 70.4 -> 47.9 us/request,
// 7,053 -> 10,375 req/s (nginx 1.22: 1.0 write, 17.3 us). Write blocks while maxPending bytes wait (backpressure, under
// the send timeout as before); a write error is returned by the next
// Write; Close waits for the pending bytes to be written, at most
// closeDrain.
type deadlineConn struct {
	net.Conn
	send     atomic.Int64 // time.Duration; <= 0: none (set by ServeTLS)
	explicit atomic.Bool  // a caller's deadline is in force
	armed    atomic.Int64 // mono time of the last arming; 0: none
	combine  atomic.Bool  // HTTP/2: combine writes (set once, by combineH2)
	decided  atomic.Bool  // combineH2 has looked at the protocol

	mu      sync.Mutex
	drained sync.Cond // signalled when flush wrote a batch or stopped
	pending []byte    // bytes written and not yet sent; nil when idle
	writing bool      // a flush goroutine runs
	err     error     // the first write error: every later Write fails
}

const (
	// maxPending bounds the bytes a deadlineConn holds before Write blocks.
	maxPending = 64 << 10
	// closeDrain bounds how long Close waits for pending bytes (crypto/tls
	// gives its close_notify alert 5 seconds too).
	closeDrain = 5 * time.Second
)

// pendingPool holds the buffers of deadlineConns between bursts, so an
// idle connection keeps none.
var pendingPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func (c *deadlineConn) Write(p []byte) (int, error) {
	if d := time.Duration(c.send.Load()); d > 0 && !c.explicit.Load() {
		now := time.Now()
		m := mono(now)
		if a := c.armed.Load(); a == 0 || m-a >= int64(min(d/8, time.Second)) {
			c.armed.Store(m)
			_ = c.Conn.SetWriteDeadline(now.Add(d))
		}
	}
	if !c.combine.Load() {
		return c.Conn.Write(p)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.drained.L == nil {
		c.drained.L = &c.mu
	}
	for c.err == nil && len(c.pending) >= maxPending {
		c.drained.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	if c.pending == nil {
		c.pending = (*pendingPool.Get().(*[]byte))[:0]
	}
	c.pending = append(c.pending, p...)
	if !c.writing {
		c.writing = true
		go c.flush()
	}
	return len(p), nil
}

// flush writes the pending bytes, batch after batch, until none are left
// or a write fails.
func (c *deadlineConn) flush() {
	c.mu.Lock()
	var spare []byte
	for len(c.pending) > 0 && c.err == nil {
		b := c.pending
		c.pending = spare
		c.mu.Unlock()
		_, err := c.Conn.Write(b)
		c.mu.Lock()
		spare = b[:0]
		if err != nil {
			c.err = err
		}
		c.drained.Broadcast()
	}
	for _, b := range [][]byte{c.pending, spare} {
		if b != nil && cap(b) <= maxPending+16<<10 {
			b = b[:0]
			pendingPool.Put(&b)
		}
	}
	c.pending = nil
	c.writing = false
	c.drained.Broadcast()
	c.mu.Unlock()
}

// combineH2 is ServeTLS's ConnState hook for an active connection: it
// turns on the combining of writes for an HTTP/2 connection. Over
// HTTP/1.1 net/http writes a response in one flush, so there is nothing to
// combine (measured: 2.0 writes per request either way, the flushing
// goroutine only added CPU). tls.Conn serializes the writes under it, so
// the switch, made once before the first stream, cannot reorder bytes.
func combineH2(c net.Conn) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return
	}
	dc, ok := tc.NetConn().(*deadlineConn)
	if !ok || dc.decided.Load() {
		return
	}
	dc.decided.Store(true)
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		dc.combine.Store(true)
	}
}

// Close closes the connection once its pending bytes are written (or
// failed to be), waiting at most closeDrain for them.
func (c *deadlineConn) Close() error {
	c.mu.Lock()
	if c.writing {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(closeDrain))
		for c.writing {
			c.drained.Wait()
		}
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.explicit.Store(!t.IsZero())
	c.armed.Store(0)
	return c.Conn.SetWriteDeadline(t)
}

func (c *deadlineConn) SetDeadline(t time.Time) error {
	c.explicit.Store(!t.IsZero())
	c.armed.Store(0)
	return c.Conn.SetDeadline(t)
}

// setTLSTimeouts is ServeTLS's ConnState hook for a new connection: it
// gives the connection under c its send timeout.
func (s *HTTP) setTLSTimeouts(c net.Conn) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return
	}
	dc, ok := tc.NetConn().(*deadlineConn)
	if !ok {
		s.warnTLSOnce.Do(func() {
			s.logger.Warn("server: TLS listener not made by server.TLSListener; no send timeout on it")
		})
		return
	}
	dc.send.Store(int64(s.writeTimeout))
}

// tlsHandler wraps the handler of ServeTLS so that each request body is
// read under the body timeout, each HTTP/2 response written under the
// send timeout, and each HTTP/2 handler run on s.h2pool.
func (s *HTTP) tlsHandler(h http.Handler) http.Handler {
	inner := h
	h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 { // see handlerPool
			s.h2pool.serve(inner, w, r)
			return
		}
		inner.ServeHTTP(w, r)
	})
	if s.bodyTimeout <= 0 && s.writeTimeout <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rc *http.ResponseController
		if s.bodyTimeout > 0 && r.Body != nil && r.Body != http.NoBody {
			rc = http.NewResponseController(w)
			r.Body = &timedBody{ReadCloser: r.Body, rc: rc, d: s.bodyTimeout}
		}
		if s.writeTimeout > 0 && r.ProtoMajor == 2 {
			if rc == nil {
				rc = http.NewResponseController(w)
			}
			w = &timedWriter{ResponseWriter: w, rc: rc, d: s.writeTimeout}
		}
		h.ServeHTTP(w, r)
	})
}

// A timedWriter arms the write deadline of an HTTP/2 stream, d from now,
// before each write (at most every min(d/8, 1s)), as deadlineConn does for
// the connection. A handler that sets its own write deadline (through
// Unwrap) sets it again before each write to keep it.
type timedWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	d     time.Duration
	armed int64 // mono time of the last arming; 0: none
}

func (w *timedWriter) arm() {
	now := time.Now()
	if m := mono(now); w.armed == 0 || m-w.armed >= int64(min(w.d/8, time.Second)) {
		if w.rc.SetWriteDeadline(now.Add(w.d)) == nil {
			w.armed = m
		}
	}
}

func (w *timedWriter) Write(p []byte) (int, error) {
	w.arm()
	return w.ResponseWriter.Write(p)
}

func (w *timedWriter) WriteString(p string) (int, error) {
	w.arm()
	return io.WriteString(w.ResponseWriter, p)
}

// Flush sends what is buffered, under the deadline.
func (w *timedWriter) Flush() {
	w.arm()
	_ = w.rc.Flush()
}

// Unwrap gives http.ResponseController the stream's ResponseWriter.
func (w *timedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// A timedBody arms the read deadline, d from now, before each read of a
// request body (at most every min(d/8, 1s)) and clears it at the body's
// end or first error, as nginx's client_body_timeout: a stalled upload
// fails its read, a slow steady one does not. A handler that sets its own
// read deadline sets it again before each read to keep it.
type timedBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	d     time.Duration
	armed int64 // mono time of the last arming; 0: none
	done  bool
}

func (b *timedBody) Read(p []byte) (int, error) {
	if b.done {
		return b.ReadCloser.Read(p)
	}
	now := time.Now()
	if m := mono(now); b.armed == 0 || m-b.armed >= int64(min(b.d/8, time.Second)) {
		if b.rc.SetReadDeadline(now.Add(b.d)) == nil {
			b.armed = m
		}
	}
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.done = true
		if b.armed != 0 {
			// No deadline left behind for net/http's read that watches
			// the connection while the handler runs.
			_ = b.rc.SetReadDeadline(time.Time{})
		}
	}
	return n, err
}
