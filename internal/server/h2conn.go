package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/http2"
)

// Portico's own HTTP/2 server, for the TLS connections that negotiated
// "h2" (RFC 9113). net/http's runs a serve loop, a goroutine per stream
// and per flush, and a write scheduler between them; under h2load -c 64
// -m 10 on a 1 KiB file that design was most of its 40 us of CPU per
// request (nginx: 17). Here:
//
//   - one goroutine per connection reads frames and dispatches them;
//     handlers run on the pooled goroutines of s.h2pool;
//   - a handler encodes its response itself (hpack encoder per
//     connection) straight into the connection's one output buffer,
//     under the connection's lock;
//   - writes are combined: the output is flushed by the last busy party
//     (the reader at the end of a batch of frames it had buffered, or
//     the last running handler to finish), so the responses to requests
//     that arrived together go out in one TLS write; a party that leaves
//     bytes behind while another is still busy wakes the connection's
//     flusher, which writes them once the goroutines runnable have had
//     their turn (a handler busy for long, waiting for an upstream, does
//     not hold the others' responses back);
//   - no map per stream, no goroutine per write, no select in the hot
//     path.
//
// The behaviour is net/http's (its HTTP/2 server is the reference), with
// Portico's limits (Options) and DoS bounds: at most h2MaxStreams
// handlers run per connection and at most 4x that many streams wait for
// one (rapid reset, CVE-2023-44487); a header block is bounded while it
// is read (the Framer, CVE-2024-27316); control frames are answered into
// the output buffer, which is flushed when it grows, so a client that
// floods PINGs and reads nothing stalls its own connection.

const (
	// h2MaxStreams is SETTINGS_MAX_CONCURRENT_STREAMS, net/http's
	// default: more than a browser opens (Chrome: 100).
	h2MaxStreams = 250
	// h2StreamWindow and h2ConnWindow are the receive windows granted to
	// request bodies, net/http's defaults (MaxUploadBufferPerStream and
	// MaxUploadBufferPerConnection): what a connection buffers of bodies
	// its handlers have not read is bounded by h2ConnWindow.
	h2StreamWindow = 1 << 20
	h2ConnWindow   = 1 << 20
	// h2FrameSize is the largest frame read (the default
	// SETTINGS_MAX_FRAME_SIZE, not raised: a read buffer stays small).
	h2FrameSize = 16 << 10
	// h2FlushAt is the output size past which a writer flushes without
	// waiting for the other parties.
	h2FlushAt = 32 << 10
	// h2MaxQueued bounds the streams waiting for a handler slot.
	h2MaxQueued = 4 * h2MaxStreams
	// h2SpareHeaders bounds the response header maps a connection keeps
	// for reuse (as many as the streams h2load -m 10 has in flight).
	h2SpareHeaders = 16
	// h2ReadBufSize is the reader's buffer: a TLS record's plaintext.
	h2ReadBufSize = 16 << 10
)

var errH2StreamClosed = errors.New("server: HTTP/2 stream closed")

// h2conn is one HTTP/2 connection.
type h2conn struct {
	srv      *HTTP
	tc       *tls.Conn
	raw      syscall.RawConn // tc's socket, for waitIdle; nil if it has none
	tlsState tls.ConnectionState
	remote   string
	handler  http.Handler
	rd       h2reader
	fr       *http2.Framer
	block    h2block // the header block being read

	mu   sync.Mutex
	cond sync.Cond // window updates, body data, stream and connection ends

	// Output, under mu.
	out        []byte
	outp       *[]byte
	busy       int  // parties that will flush: the reader in a batch, running handlers
	readerBusy bool // the reader counts in busy
	kick       chan struct{}
	kicked     bool // the flusher has been woken and has not run yet
	flusherOn  bool
	werr       error    // the first write error: every later write fails
	wArmed     int64    // mono time the write deadline was last set; 0: never
	writing    bool     // a party is writing to the connection (see flushLocked)
	hbuf       byteSink // a header block being encoded
	// spareHeaders are response header maps of finished streams, for the
	// next ones; up to h2SpareHeaders.
	spareHeaders []http.Header
	tableUpdate  bool // the next header block starts with a table size update

	// Streams, under mu.
	streams     map[uint32]*h2stream
	maxClientID uint32
	handlers    int         // handlers running (a reset stream's may still run)
	queue       []*h2stream // streams waiting for a handler slot
	goingAway   bool        // a GOAWAY was sent
	closing     bool        // close once no stream and handler are left
	closed      bool
	idle        bool        // no stream, no handler: the idle timeout runs
	idleUntil   time.Time   // the idle timeout's end, while idle; zero: none
	shortWait   bool        // the read deadline is waitIdle's, before idleUntil
	woke        bool        // the reader's: waitLong ended, the wait is to be armed again
	idleNow     atomic.Bool // idle, for the reader's buffer and Stats
	shutStarted atomic.Bool // HTTP.Shutdown has called shutdown

	// Flow control, under mu.
	sendWindow     int64 // connection-level, what the peer allows us
	peerInitWindow int64 // SETTINGS_INITIAL_WINDOW_SIZE of the peer
	peerMaxFrame   int   // SETTINGS_MAX_FRAME_SIZE of the peer
	recvWindow     int64 // connection-level, what we allow the peer
	recvUnacked    int64 // consumed bytes not yet granted back
}

// byteSink is an io.Writer appending to a slice (the hpack encoder's
// destination).
type byteSink struct{ b []byte }

func (s *byteSink) Write(p []byte) (int, error) { s.b = append(s.b, p...); return len(p), nil }

// h2reader buffers a connection's reads. Buffered tells the reader
// whether more frames are in hand (then it does not flush yet).
//
// The buffer is pooled, and a read that may block is made into a small
// buffer of the reader's own: a pooled buffer is taken only when the
// previous read filled its buffer (the TLS record it came from is not
// drained yet, so the next read returns at once), and it goes back when
// it is drained. A connection whose last request was read waits for the
// next one with the small buffer, so an idle connection holds no pooled
// buffer. (Taking the pooled buffer whenever a stream was open kept it
// through the idle time that followed: the reader was already waiting in
// a read when the last stream ended; 2,000 idle connections held 19 MB.)
// Reading a record in two reads costs one more copy of at most
// len(small) bytes and no system call: the rest of the record is
// decrypted in crypto/tls's buffer already.
type h2reader struct {
	r     io.Reader
	idle  *atomic.Bool // the connection has no stream
	bufp  *[]byte
	small [256]byte
	buf   []byte // *bufp or small[:], while i < n
	i, n  int
	full  bool // the last read filled its buffer: more is in hand
	// atFrame is set before a frame is read and cleared once bytes of it
	// are: a read that times out at a frame's start, at the end of an
	// idle connection's wait in the full stack (idleWait), returns
	// errH2Wait; one within a frame waits on.
	atFrame  bool
	idleWait func(error) bool
}

// errH2Wait ends a frame read that waited for parkDelay on an idle
// connection: the reader goes on waiting in waitIdle.
var errH2Wait = errors.New("server: HTTP/2 connection idle")

var h2ReadPool = sync.Pool{New: func() any { b := make([]byte, h2ReadBufSize); return &b }}

func (r *h2reader) Read(p []byte) (int, error) {
	if r.i == r.n {
		if len(p) >= h2ReadBufSize {
			return r.r.Read(p)
		}
		if !r.full || (r.idle != nil && r.idle.Load()) {
			r.buf = r.small[:]
		} else {
			if r.bufp == nil {
				r.bufp = h2ReadPool.Get().(*[]byte)
			}
			r.buf = *r.bufp
		}
		n, err := r.r.Read(r.buf)
		for n == 0 && err != nil && r.idleWait != nil && r.idleWait(err) {
			if r.atFrame {
				err = errH2Wait
				break
			}
			n, err = r.r.Read(r.buf)
		}
		r.i, r.n = 0, n
		r.full = n == len(r.buf)
		if n == 0 {
			r.release()
			return 0, err
		}
	}
	r.atFrame = false
	n := copy(p, r.buf[r.i:r.n])
	r.i += n
	if r.i == r.n {
		r.release()
	}
	return n, nil
}

func (r *h2reader) buffered() int { return r.n - r.i }

// fill reads into the small buffer; the reader's buffer is empty.
func (r *h2reader) fill() (int, error) {
	r.buf = r.small[:]
	n, err := r.r.Read(r.buf)
	r.i, r.n = 0, n
	r.full = n == len(r.buf)
	if n == 0 {
		r.buf = nil
	}
	return n, err
}

func (r *h2reader) release() {
	r.buf = nil
	if r.bufp != nil {
		h2ReadPool.Put(r.bufp)
		r.bufp = nil
	}
	r.i, r.n = 0, 0
}

var h2OutPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// serveH2Conn serves HTTP/2 on tc, a TLS connection whose handshake
// negotiated "h2", until the connection ends; it runs in the connection's
// goroutine and closes tc before it returns.
func (s *HTTP) serveH2Conn(tc *tls.Conn) {
	c := s.newH2conn(tc)
	if !s.trackH2(c) {
		tc.Close()
		return
	}
	defer s.untrackH2(c)
	c.serve()
}

// newH2conn returns the connection's state; apart from serveH2Conn, whose
// frame stays under the reader's (see waitIdle).
//
//go:noinline
func (s *HTTP) newH2conn(tc *tls.Conn) *h2conn {
	c := &h2conn{
		srv:            s,
		tc:             tc,
		tlsState:       tc.ConnectionState(),
		remote:         tc.RemoteAddr().String(),
		handler:        s.h2handler,
		streams:        map[uint32]*h2stream{},
		sendWindow:     65535,
		peerInitWindow: 65535,
		peerMaxFrame:   16384,
		recvWindow:     h2ConnWindow,
		kick:           make(chan struct{}, 1),
		spareHeaders:   make([]http.Header, 0, h2SpareHeaders),
	}
	c.rd.r = tc
	c.rd.idle = &c.idleNow
	c.rd.idleWait = c.idleWait
	switch nc := tc.NetConn().(type) {
	case *net.TCPConn: // not a wrapper that may hold bytes read ahead
		c.raw, _ = nc.SyscallConn()
	case *net.UnixConn:
		c.raw, _ = nc.SyscallConn()
	}
	c.cond.L = &c.mu
	return c
}

func (c *h2conn) serve() {
	defer c.shut()
	c.newFramer()
	c.block.init(c.maxHeaderListSize())

	s := c.srv
	c.mu.Lock()
	c.setIdleLocked(true)
	c.shortWait = false // the preface's deadline is the header timeout's
	c.mu.Unlock()
	if d := s.waitTimeout(false); d > 0 {
		_ = c.tc.SetReadDeadline(time.Now().Add(d))
	}

	// The server preface: our SETTINGS, and the connection window raised
	// to h2ConnWindow.
	c.mu.Lock()
	c.appendSettingsLocked()
	c.appendWindowUpdateLocked(0, h2ConnWindow-65535)
	c.flushLocked()
	c.mu.Unlock()

	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(&c.rd, preface[:]); err != nil || string(preface[:]) != http2.ClientPreface {
		if err == nil {
			s.logger.Info("bad request", "remote", c.remote, "reason", "invalid HTTP/2 connection preface")
			c.goAway(http2.ErrCodeProtocol)
		}
		return
	}
	// The preface came within the header timeout; from now on the idle
	// timeout runs while there is no stream.
	c.mu.Lock()
	if c.idle {
		c.armIdleLocked()
	}
	c.mu.Unlock()
	first := true
	for {
		if c.rd.buffered() == 0 && c.idleNow.Load() {
			if err := c.waitIdle(); err != nil {
				if !c.readError(err) {
					return
				}
				continue
			}
		}
		c.rd.atFrame = true
		f, err := c.fr.ReadFrame()
		if err == errH2Wait {
			err = c.waitLong()
		}
		if err != nil {
			if !c.readError(err) {
				return
			}
			if c.rd.buffered() == 0 {
				c.endBatch()
			}
			continue
		}
		if first {
			first = false
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				c.goAway(http2.ErrCodeProtocol)
				return
			}
		}
		if !c.readerBusy {
			c.mu.Lock()
			c.readerBusy = true
			c.busy++
			c.mu.Unlock()
		}
		if err := c.processFrame(f); err != nil {
			if !c.frameError(err) {
				return
			}
		}
		if c.rd.buffered() == 0 {
			c.endBatch()
		}
	}
}

// readError handles an error of ReadFrame and reports whether the
// connection goes on.
func (c *h2conn) readError(err error) bool {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		return c.frameError(se)
	case errors.As(err, &ce):
		c.goAway(http2.ErrCode(ce))
		return false
	case errors.Is(err, http2.ErrFrameTooLarge):
		c.goAway(http2.ErrCodeFrameSize)
		return false
	case isTimeout(err):
		c.mu.Lock()
		idle := c.idle
		c.mu.Unlock()
		if idle {
			c.goAway(http2.ErrCodeNo) // the idle timeout: net/http says NO_ERROR too
		}
		return false
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return false
	}
	var ne net.Error
	if !errors.As(err, &ne) {
		c.goAway(http2.ErrCodeProtocol) // a malformed frame
	}
	return false
}

// frameError handles the error of processing a frame: a stream error
// resets the stream, a connection error ends the connection. It reports
// whether the connection goes on.
func (c *h2conn) frameError(err error) bool {
	var se http2.StreamError
	if errors.As(err, &se) {
		c.mu.Lock()
		c.resetLocked(se.StreamID, se.Code)
		c.mu.Unlock()
		return true
	}
	code := http2.ErrCodeProtocol
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		code = http2.ErrCode(ce)
	}
	c.goAway(code)
	return false
}

// endBatch is the reader's end of a batch of buffered frames: it flushes
// if no handler is busy, and otherwise leaves the flush to the last.
func (c *h2conn) endBatch() {
	c.mu.Lock()
	if c.readerBusy {
		c.readerBusy = false
		c.busy--
	}
	c.doneLocked()
	c.mu.Unlock()
}

// doneLocked is called by a party that leaves the busy set: the last one
// flushes; one leaving bytes behind while others are busy wakes the
// flusher.
func (c *h2conn) doneLocked() {
	if c.closed {
		c.out = c.out[:0] // nowhere to go
		c.releaseOutLocked()
		return
	}
	if len(c.out) == 0 {
		c.releaseOutLocked()
		return
	}
	if c.busy == 0 {
		c.flushLocked()
		c.releaseOutLocked()
		return
	}
	if !c.kicked {
		c.kicked = true
		if !c.flusherOn {
			c.flusherOn = true
			go c.flusher()
		}
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// flusher writes what the busy parties left behind, once the goroutines
// runnable when it was woken have run: a handler blocked for long does
// not hold the others' responses back.
func (c *h2conn) flusher() {
	for range c.kick {
		runtime.Gosched()
		c.mu.Lock()
		c.kicked = false
		if c.closed {
			c.mu.Unlock()
			return
		}
		c.flushLocked()
		if c.busy == 0 {
			c.releaseOutLocked()
		}
		c.mu.Unlock()
	}
}

// flushLocked writes the output buffer to the connection. The write runs
// without mu (the reader and the other handlers go on meanwhile; a client
// that reads slowly does not stop the reader), so mu is released and
// taken again: callers check their state again after it. One party writes
// at a time: if another is writing, what is in the output is left to it
// (it writes until the output is empty).
func (c *h2conn) flushLocked() {
	if c.writing || len(c.out) == 0 {
		return
	}
	c.writing = true
	for len(c.out) > 0 && c.werr == nil {
		b, bp := c.out, c.outp
		c.out, c.outp = nil, nil // later frames go to a fresh buffer
		if d := c.srv.writeTimeout; d > 0 {
			// The send timeout on the connection's writes, refreshed at
			// most every min(d/8, 1s) as on the HTTP/1.1 front: a client
			// that takes nothing for d loses the connection.
			now := time.Now()
			if m := mono(now); c.wArmed == 0 || m-c.wArmed >= int64(min(d/8, time.Second)) {
				c.wArmed = m
				_ = c.tc.SetWriteDeadline(now.Add(d))
			}
		}
		c.mu.Unlock()
		_, err := c.tc.Write(b)
		c.mu.Lock()
		if cap(b) <= maxPooledBuf {
			*bp = b[:0]
			h2OutPool.Put(bp)
		}
		if err != nil && c.werr == nil {
			c.werr = err
			c.tc.Close() // the reader ends
		}
	}
	if c.werr != nil {
		c.out = c.out[:0]
	}
	c.writing = false
	c.cond.Broadcast() // waiters for room, or for the write's end
}

// drainLocked writes the output out, waiting for another party's write to
// end first: before the connection closes.
func (c *h2conn) drainLocked() {
	for c.werr == nil && (c.writing || len(c.out) > 0) {
		if c.writing {
			c.cond.Wait()
			continue
		}
		c.flushLocked()
	}
}

func (c *h2conn) releaseOutLocked() {
	if c.outp != nil && len(c.out) == 0 {
		if cap(c.out) <= maxPooledBuf {
			*c.outp = c.out[:0]
			h2OutPool.Put(c.outp)
		}
		c.out, c.outp = nil, nil
	}
}

// frameLocked appends a frame header to the output.
func (c *h2conn) frameLocked(typ http2.FrameType, flags http2.Flags, stream uint32, length int) {
	if c.outp == nil {
		c.outp = h2OutPool.Get().(*[]byte)
		c.out = (*c.outp)[:0]
	}
	c.out = append(c.out, byte(length>>16), byte(length>>8), byte(length), byte(typ), byte(flags),
		byte(stream>>24), byte(stream>>16), byte(stream>>8), byte(stream))
}

func (c *h2conn) appendSettingsLocked() {
	settings := []http2.Setting{
		{ID: http2.SettingMaxConcurrentStreams, Val: h2MaxStreams},
		{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow},
		{ID: http2.SettingMaxHeaderListSize, Val: c.maxHeaderListSize()},
	}
	c.frameLocked(http2.FrameSettings, 0, 0, 6*len(settings))
	for _, s := range settings {
		c.out = append(c.out, byte(s.ID>>8), byte(s.ID), byte(s.Val>>24), byte(s.Val>>16), byte(s.Val>>8), byte(s.Val))
	}
}

// maxHeaderListSize is SETTINGS_MAX_HEADER_LIST_SIZE: MaxHeaderBytes,
// plus HPACK's 32 bytes of overhead per field for ten fields, as net/http
// (its size counts each field's name and value and 32 bytes, RFC 9113
// 6.5.2).
func (c *h2conn) maxHeaderListSize() uint32 {
	return uint32(c.srv.maxHeaderBytes + 10*32)
}

func (c *h2conn) appendWindowUpdateLocked(stream uint32, n int64) {
	c.frameLocked(http2.FrameWindowUpdate, 0, stream, 4)
	c.out = append(c.out, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

func (c *h2conn) appendRSTLocked(stream uint32, code http2.ErrCode) {
	c.frameLocked(http2.FrameRSTStream, 0, stream, 4)
	c.out = append(c.out, byte(code>>24), byte(code>>16), byte(code>>8), byte(code))
}

// goAway sends GOAWAY with code and closes the connection (a connection
// error, or the idle timeout).
func (c *h2conn) goAway(code http2.ErrCode) {
	c.mu.Lock()
	if !c.closed {
		c.appendGoAwayLocked(code)
		c.drainLocked()
	}
	c.mu.Unlock()
	c.tc.Close()
}

func (c *h2conn) appendGoAwayLocked(code http2.ErrCode) {
	c.goingAway = true
	c.frameLocked(http2.FrameGoAway, 0, 0, 8)
	id := c.maxClientID
	c.out = append(c.out, byte(id>>24), byte(id>>16), byte(id>>8), byte(id),
		byte(code>>24), byte(code>>16), byte(code>>8), byte(code))
}

// shutdown starts a graceful close (HTTP.Shutdown): GOAWAY, the streams
// in flight finish, then the connection closes.
func (c *h2conn) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.closing {
		return
	}
	c.closing = true
	if !c.goingAway {
		c.appendGoAwayLocked(http2.ErrCodeNo)
		c.flushLocked()
	}
	c.closeIfDoneLocked()
}

// closeIfDoneLocked closes a closing connection once no stream or handler
// is left.
func (c *h2conn) closeIfDoneLocked() {
	if c.closing && len(c.streams) == 0 && c.handlers == 0 && len(c.queue) == 0 {
		c.drainLocked()
		c.tc.Close()
	}
}

// shut ends the connection when the reader stops: every stream is ended,
// waiting handlers are woken, the buffers go back to their pools.
func (c *h2conn) shut() {
	c.tc.Close()
	c.mu.Lock()
	c.closed = true
	if c.werr == nil {
		c.werr = net.ErrClosed
	}
	for id, st := range c.streams {
		st.endLocked(errH2StreamClosed)
		delete(c.streams, id)
	}
	for _, st := range c.queue {
		st.endLocked(errH2StreamClosed)
	}
	c.queue = nil
	c.spareHeaders = nil
	c.out = c.out[:0]
	c.releaseOutLocked()
	if c.flusherOn {
		close(c.kick)
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	c.rd.release()
}

// setIdleLocked records the connection going idle (no stream, no
// handler) or busy: the idle timeout runs while it is idle, and Stats
// counts it idle.
func (c *h2conn) setIdleLocked(idle bool) {
	if c.idle == idle {
		return
	}
	c.idle = idle
	c.idleNow.Store(idle)
	if idle {
		// Memory kept while idle: one spare header map at most.
		if len(c.spareHeaders) > 1 {
			clear(c.spareHeaders[1:])
			c.spareHeaders = c.spareHeaders[:1]
		}
		c.armIdleLocked()
	} else {
		c.shortWait = false
		_ = c.tc.SetReadDeadline(time.Time{})
	}
}

// armIdleLocked starts the idle timeout. The read deadline is the idle
// timeout's end, or sooner the end of waitIdle's wait in the reader's
// full stack.
func (c *h2conn) armIdleLocked() {
	now := time.Now()
	c.idleUntil = time.Time{}
	d := c.srv.idleTimeout
	if d > 0 {
		c.idleUntil = now.Add(d)
	}
	deadline := c.idleUntil
	c.shortWait = false
	if delay := c.srv.parkDelay(); c.raw != nil && (d <= 0 || d > delay) {
		deadline = now.Add(delay)
		c.shortWait = true
	}
	_ = c.tc.SetReadDeadline(deadline)
}

// waitIdle waits for the next bytes of an idle connection, read into the
// reader's small buffer, and returns the read's error if none come.
//
// It waits in the TLS read first, for parkDelay (a browser's next request
// usually comes within it), then, if the connection is still idle, for
// its socket to become readable, in a shallow stack: the read had timed
// out, so crypto/tls holds no complete record (one it holds in part ends
// on the socket). At the next collection the goroutine's stack, grown to
// 8 KiB by the handshake and kept there by the depth of a TLS read under
// a frame read (2.9 KiB used), shrinks to 4 KiB: the runtime halves a
// stack of which less than a quarter, less 800 bytes, is used, and this
// wait uses about 1 KiB (serveTLS and serveH2Conn keep their large
// locals in helpers for it). A read begun while a stream was open ends
// the same way, with errH2Wait. The wait on the socket costs a peek (one
// system call) once per parkDelay of idleness at most; a connection busy
// again waits in the TLS read again. (Parking the connection without its
// goroutine, as the HTTP/1.1 front does, would save the other 4 KiB.)
func (c *h2conn) waitIdle() error {
	if c.woke {
		// Woken by frames that left the connection idle (a PING, the
		// start of a header block): wait in the full stack again for
		// parkDelay at most, then in the shallow one.
		c.woke = false
		c.mu.Lock()
		if c.idle && !c.closed {
			if deadline := time.Now().Add(c.srv.parkDelay()); c.idleUntil.IsZero() || deadline.Before(c.idleUntil) {
				c.shortWait = true
				_ = c.tc.SetReadDeadline(deadline)
			}
		}
		c.mu.Unlock()
	}
	for {
		n, err := c.rd.fill()
		if n > 0 {
			return nil
		}
		if err == nil {
			continue
		}
		if !c.idleWait(err) {
			return err
		}
		if err := c.waitLong(); err != nil {
			return err
		}
	}
}

// idleWait reports whether err, of a read, is the end of an idle
// connection's wait in the reader's full stack (armIdleLocked) rather
// than its idle timeout; the read deadline is then the idle timeout's
// end.
func (c *h2conn) idleWait(err error) bool {
	if c.raw == nil || !isTimeout(err) {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ok := c.shortWait && c.idle && !c.closed
	if ok {
		c.shortWait = false
		_ = c.tc.SetReadDeadline(c.idleUntil)
	}
	return ok
}

func (c *h2conn) newFramer() {
	c.fr = http2.NewFramer(nil, &c.rd)
	c.fr.SetMaxReadFrameSize(h2FrameSize)
	c.fr.SetReuseFrames()
}

// waitLong is the reader's wait on an idle connection once parkDelay has
// passed. It first lets go of what the connection keeps for its next
// request: the Framer's read buffer (as large as the largest frame read:
// 16 KiB after an upload), the header block's field slices, the spare
// response header map, the stream map (grown to the most streams open at
// once); a connection busy again takes new ones, once per parkDelay of
// idleness at most.
func (c *h2conn) waitLong() error {
	if !c.block.active { // else the Framer checks the CONTINUATIONs to come
		c.newFramer()
		c.block.pseudo, c.block.regular = nil, nil
	}
	c.mu.Lock()
	clear(c.spareHeaders)
	c.spareHeaders = c.spareHeaders[:0]
	if len(c.streams) == 0 {
		c.streams = map[uint32]*h2stream{}
	}
	c.mu.Unlock()
	c.woke = true
	if h := testHookWaitLong; h != nil {
		h(c.block.active)
	}
	return c.waitReadable()
}

// testHookWaitLong, if set (by tests, before any connection), is called
// as a connection starts waitLong's wait, with whether a header block is
// open.
var testHookWaitLong func(blockOpen bool)

// waitReadable waits until c's socket is readable (or closed, or past
// its read deadline).
//
//go:noinline
func (c *h2conn) waitReadable() error {
	first := true
	return c.raw.Read(func(fd uintptr) bool {
		if !first {
			return true
		}
		first = false
		var b [1]byte
		_, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		return errno != syscall.EAGAIN
	})
}

func (c *h2conn) updateIdleLocked() {
	c.setIdleLocked(len(c.streams) == 0 && c.handlers == 0 && len(c.queue) == 0)
	c.closeIfDoneLocked()
}

// processFrame acts on one frame from the client.
func (c *h2conn) processFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.HeadersFrame, *http2.ContinuationFrame:
		return c.onBlockFrame(f)
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		c.mu.Lock()
		c.frameLocked(http2.FramePing, http2.FlagPingAck, 0, 8)
		c.out = append(c.out, f.Data[:]...)
		err := c.controlFlushLocked()
		c.mu.Unlock()
		return err
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		defer c.mu.Unlock()
		if f.StreamID > c.maxClientID {
			return http2.ConnectionError(http2.ErrCodeProtocol) // idle stream
		}
		if st := c.streams[f.StreamID]; st != nil {
			c.closeStreamLocked(st, errClientReset)
		} else {
			c.dropQueuedLocked(f.StreamID)
		}
	case *http2.PriorityFrame:
		if f.StreamID == f.StreamDep {
			return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol}
		}
	case *http2.GoAwayFrame:
		// The client will open no more streams: finish those in flight.
		go c.shutdown()
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return nil
}

var errClientReset = errors.New("server: HTTP/2 stream reset by the client")

func (c *h2conn) flushIfLargeLocked() {
	if len(c.out) >= h2FlushAt {
		c.flushLocked()
	}
}

// h2MaxControlOutput bounds the output the reader lets pile up while
// another party writes (answers to PING and SETTINGS of a client that
// sends them and reads nothing): past it the connection ends.
const h2MaxControlOutput = 1 << 20

func (c *h2conn) controlFlushLocked() error {
	if len(c.out) > h2MaxControlOutput {
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
	}
	c.flushIfLargeLocked()
	return nil
}

func (c *h2conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.peerInitWindow
			c.peerInitWindow = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > 1<<31-1 {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
			c.cond.Broadcast()
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = int(s.Val)
		case http2.SettingHeaderTableSize:
			c.tableUpdate = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.frameLocked(http2.FrameSettings, http2.FlagSettingsAck, 0, 0)
	return c.controlFlushLocked()
}

func (c *h2conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := int64(f.Increment)
	if f.StreamID == 0 {
		if n == 0 {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		c.sendWindow += n
		if c.sendWindow > 1<<31-1 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		c.cond.Broadcast()
		return nil
	}
	if f.StreamID > c.maxClientID {
		return http2.ConnectionError(http2.ErrCodeProtocol) // idle stream
	}
	st := c.streams[f.StreamID]
	if st == nil {
		return nil // closed: ignored
	}
	if n == 0 {
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol}
	}
	st.sendWindow += n
	if st.sendWindow > 1<<31-1 {
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl}
	}
	c.cond.Broadcast()
	return nil
}

func (c *h2conn) onData(f *http2.DataFrame) error {
	id := f.StreamID
	n := int64(f.Length)
	data := f.Data()
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > c.recvWindow {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.recvWindow -= n
	st := c.streams[id]
	if st == nil || st.remoteClosed {
		if id > c.maxClientID {
			return http2.ConnectionError(http2.ErrCodeProtocol) // idle stream
		}
		c.creditLocked(nil, n)
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeStreamClosed}
	}
	if n > st.recvWindow {
		c.creditLocked(nil, n)
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeFlowControl}
	}
	st.recvWindow -= n
	if pad := n - int64(len(data)); pad > 0 {
		c.creditLocked(st, pad)
	}
	st.received += int64(len(data))
	if st.declared >= 0 && st.received > st.declared {
		c.creditLocked(nil, int64(len(data)))
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	if len(data) > 0 {
		if st.bodyClosed {
			c.creditLocked(st, int64(len(data)))
		} else {
			st.appendBody(data)
		}
	}
	if f.StreamEnded() {
		if st.declared >= 0 && st.received != st.declared {
			return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
		}
		c.remoteEndLocked(st)
	}
	c.cond.Broadcast()
	return nil
}

// remoteEndLocked records the end of the request (END_STREAM).
func (c *h2conn) remoteEndLocked(st *h2stream) {
	st.remoteClosed = true
	if st.bodyErr == nil {
		st.bodyErr = io.EOF
	}
	if st.localClosed {
		c.removeLocked(st)
	}
}

// creditLocked gives n consumed bytes back to the connection's window
// (and st's, if st is still receiving), in WINDOW_UPDATEs sent once a
// quarter of a window is consumed.
func (c *h2conn) creditLocked(st *h2stream, n int64) {
	c.recvWindow += n
	c.recvUnacked += n
	if c.recvUnacked >= h2ConnWindow/4 {
		c.appendWindowUpdateLocked(0, c.recvUnacked)
		c.recvUnacked = 0
	}
	if st != nil && !st.remoteClosed {
		st.recvWindow += n
		st.recvUnacked += n
		if st.recvUnacked >= h2StreamWindow/4 {
			c.appendWindowUpdateLocked(st.id, st.recvUnacked)
			st.recvUnacked = 0
		}
	}
}

// resetLocked resets stream id with code (a stream error).
func (c *h2conn) resetLocked(id uint32, code http2.ErrCode) {
	if c.werr == nil {
		c.appendRSTLocked(id, code)
	}
	if st := c.streams[id]; st != nil {
		st.localClosed = true
		c.closeStreamLocked(st, errH2StreamClosed)
	} else {
		c.dropQueuedLocked(id)
	}
}

// closeStreamLocked ends st at once (reset by either side).
func (c *h2conn) closeStreamLocked(st *h2stream, err error) {
	st.endLocked(err)
	c.removeLocked(st)
}

// removeLocked forgets a closed stream. Its handler may still run.
func (c *h2conn) removeLocked(st *h2stream) {
	if c.streams[st.id] == st {
		delete(c.streams, st.id)
		// The body the handler never read goes back to the window.
		if left := int64(st.bodyLen()); left > 0 {
			c.creditLocked(nil, left)
			st.bodyBuf, st.bodyOff = st.bodyBuf[:0], 0
		}
		c.updateIdleLocked()
	}
}

func (c *h2conn) dropQueuedLocked(id uint32) {
	for i, st := range c.queue {
		if st.id == id {
			st.endLocked(errClientReset)
			c.queue = append(c.queue[:i], c.queue[i+1:]...)
			c.updateIdleLocked()
			return
		}
	}
}

// waitLocked waits on c.cond until it is signalled or deadline (zero:
// none) passes; it reports false once the deadline has passed.
func (c *h2conn) waitLocked(deadline time.Time) bool {
	if deadline.IsZero() {
		c.cond.Wait()
		return true
	}
	d := time.Until(deadline)
	if d <= 0 {
		return false
	}
	t := time.AfterFunc(d, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	c.cond.Wait()
	t.Stop()
	return time.Now().Before(deadline)
}

// logPanic logs a handler's panic as net/http does.
func (c *h2conn) logPanic(p any) {
	const size = 64 << 10
	buf := make([]byte, size)
	buf = buf[:runtime.Stack(buf, false)]
	c.srv.logger.Warn(fmt.Sprintf("http2: panic serving %v: %v\n%s", c.remote, p, buf))
}
