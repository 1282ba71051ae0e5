package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// h2response is the http.ResponseWriter of an HTTP/2 stream. As with
// net/http, the header map is read when WriteHeader is called (later
// changes have no effect, but for trailers); the body is buffered up to
// writeBufSize, so a handler that returns within it gets one HEADERS and
// one DATA frame with an exact content-length, encoded into the
// connection's output with the other streams' responses.
type h2response struct {
	st     *h2stream
	header http.Header
	snap   []hfield // the header at WriteHeader, but what the server owns

	status      int
	wroteHeader bool
	headSent    bool
	bodyAllowed bool
	isHead      bool
	hasDate     bool // a Date header (a nil one suppresses it)
	hasCT       bool // Content-Type or Content-Encoding: no sniffing
	declared    int64
	written     int64
	trailers    []string // declared with the Trailer header
	done        bool

	bufp *[]byte
	buf  []byte

	snapArr [12]hfield // snap's first backing array
}

type hfield struct {
	name headerName
	vals []string
}

var (
	_ http.ResponseWriter = (*h2response)(nil)
	_ http.Flusher        = (*h2response)(nil)
	_ io.StringWriter     = (*h2response)(nil)
)

func (w *h2response) init(st *h2stream) {
	w.st = st
	w.declared = -1
	w.snap = w.snapArr[:0]
	c := st.c
	if n := len(c.spareHeaders); n > 0 {
		w.header = c.spareHeaders[n-1]
		c.spareHeaders = c.spareHeaders[:n-1]
	}
}

func (w *h2response) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header, 8)
	}
	return w.header
}

// WriteHeader records the status and takes the snapshot of the headers.
// A 1xx status (but 101) is sent at once; a second final one is ignored;
// a code outside 100-999 panics, as with net/http.
func (w *h2response) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if w.wroteHeader || w.done {
		return
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		c := w.st.c
		c.mu.Lock()
		if !w.st.localClosed && c.werr == nil {
			w.snapshot()
			w.beginHeadLocked(code)
			c.headerFramesLocked(w.st.id, false)
			c.flushLocked()
			w.snap = w.snap[:0]
		}
		c.mu.Unlock()
		return
	}
	w.wroteHeader = true
	w.status = code
	w.bodyAllowed = code != http.StatusNoContent && code != http.StatusNotModified
	w.isHead = w.st.req.Method == http.MethodHead
	w.snapshot()
}

// snapshot records the headers to send, but Content-Length (taken as the
// declared length) and the connection-specific ones.
func (w *h2response) snapshot() {
	w.snap = w.snap[:0]
	w.trailers = w.trailers[:0]
	w.hasDate, w.hasCT = false, false
	for k, vs := range w.header {
		switch k {
		case "Content-Length":
			if len(vs) > 0 && w.status != http.StatusNotModified {
				if n, ok := parseContentLength(strings.TrimSpace(vs[0])); ok {
					w.declared = n
				}
			}
			continue
		case "Date":
			w.hasDate = true
		case "Content-Type", "Content-Encoding":
			w.hasCT = true
		case "Trailer":
			for _, v := range vs {
				for t := range strings.SplitSeq(v, ",") {
					if t = http.CanonicalHeaderKey(trimOWS(t)); t != "" {
						w.trailers = append(w.trailers, t)
					}
				}
			}
		case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade":
			continue // RFC 9113 8.2.2
		}
		name, ok := lookupName(k)
		if !ok || len(vs) == 0 {
			continue
		}
		w.snap = append(w.snap, hfield{name: name, vals: vs})
	}
}

func (w *h2response) Write(p []byte) (int, error) {
	if err := w.beforeWrite(len(p)); err != nil {
		return 0, err
	}
	w.written += int64(len(p))
	if w.isHead {
		return len(p), nil
	}
	if w.bufp == nil {
		w.bufp = outPool.Get().(*[]byte)
		w.buf = (*w.bufp)[:0]
	}
	if len(w.buf)+len(p) <= cap(w.buf) {
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	if err := w.send(p, false); err != nil {
		w.written -= int64(len(p))
		return 0, err
	}
	return len(p), nil
}

func (w *h2response) WriteString(s string) (int, error) {
	if w.bufp != nil && len(w.buf)+len(s) <= cap(w.buf) && w.wroteHeader && w.bodyAllowed && !w.isHead {
		if err := w.beforeWrite(len(s)); err != nil {
			return 0, err
		}
		w.written += int64(len(s))
		w.buf = append(w.buf, s...)
		return len(s), nil
	}
	return w.Write([]byte(s))
}

func (w *h2response) beforeWrite(n int) error {
	if w.done {
		return errWriteAfterReturn
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	switch {
	case !w.bodyAllowed:
		return http.ErrBodyNotAllowed
	case w.declared >= 0 && w.written+int64(n) > w.declared:
		return http.ErrContentLength
	}
	return nil
}

// Flush sends the head and what is buffered.
func (w *h2response) Flush() { _ = w.FlushError() }

// FlushError is Flush returning the write error, for
// http.ResponseController.
func (w *h2response) FlushError() error {
	if w.done {
		return errWriteAfterReturn
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.send(nil, false)
}

// SetReadDeadline sets the deadline of the request body's reads (the
// body timeout no longer applies), for http.ResponseController.
func (w *h2response) SetReadDeadline(t time.Time) error {
	return w.setDeadline(&w.st.readDeadline, t)
}

// SetWriteDeadline sets the deadline of the response's writes (the send
// timeout no longer applies), for http.ResponseController.
func (w *h2response) SetWriteDeadline(t time.Time) error {
	return w.setDeadline(&w.st.writeDeadline, t)
}

// setDeadline sets one of the stream's deadlines, under the connection's
// lock, and wakes the waits that may now time out.
func (w *h2response) setDeadline(d *time.Time, t time.Time) error {
	if w.done {
		return errWriteAfterReturn
	}
	c := w.st.c
	c.mu.Lock()
	*d = t
	c.cond.Broadcast()
	c.mu.Unlock()
	return nil
}

// EnableFullDuplex reports success: an HTTP/2 handler may always read the
// body while it writes.
func (w *h2response) EnableFullDuplex() error { return nil }

// send sends the head if it is not sent, what is buffered, and p, flushing
// the connection.
func (w *h2response) send(p []byte, final bool) error {
	c := w.st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	err := w.sendLocked(p, false)
	if err == nil {
		c.flushLocked()
		err = c.werr
	}
	return err
}

// sendLocked sends the head if it is not sent, then the buffered body and
// p as DATA frames; final ends the stream (with the trailers, if any).
func (w *h2response) sendLocked(p []byte, final bool) error {
	st := w.st
	c := st.c
	if st.localClosed {
		return errH2StreamClosed
	}
	if c.werr != nil {
		return c.werr
	}
	var trailers []hfield
	if final {
		trailers = w.collectTrailers()
	}
	body := len(w.buf) + len(p)
	if !w.headSent {
		w.headSent = true
		end := final && body == 0 && trailers == nil
		w.beginHeadLocked(w.status)
		hb := c.hbuf.b
		clen := int64(-1)
		switch {
		case w.declared >= 0 && w.bodyAllowed:
			clen = w.declared
		case final && w.bodyAllowed && (body > 0 || !w.isHead):
			clen = int64(body)
		case final && w.isHead && w.written > 0:
			clen = w.written
		}
		if clen >= 0 {
			var num [20]byte
			hb = appendHPACKInt(hb, 0, 4, 28) // content-length
			n := strconv.AppendInt(num[:0], clen, 10)
			hb = appendHPACKInt(hb, 0, 7, uint64(len(n)))
			hb = append(hb, n...)
		}
		if !w.hasCT && w.bodyAllowed && body > 0 {
			b := w.buf
			if len(b) == 0 {
				b = p
			}
			hb = appendHPACKField(hb, 31, "", http.DetectContentType(b))
		}
		if !w.hasDate {
			hb = appendHPACKField(hb, 33, "", h2Date(time.Now()))
		}
		c.hbuf.b = hb
		c.headerFramesLocked(st.id, end)
		if end {
			w.endLocked()
			return nil
		}
	}
	if len(w.buf) > 0 {
		if err := w.dataLocked(w.buf, final && len(p) == 0 && trailers == nil); err != nil {
			return err
		}
		w.buf = w.buf[:0]
	}
	if len(p) > 0 || final && trailers == nil && body == 0 {
		if err := w.dataLocked(p, final && trailers == nil); err != nil {
			return err
		}
	}
	if trailers != nil {
		c.hbuf.b = c.startBlockLocked(c.hbuf.b[:0])
		for _, f := range trailers {
			c.hbuf.b = appendFields(c.hbuf.b, f)
		}
		c.headerFramesLocked(st.id, true)
	}
	if final {
		w.endLocked()
	}
	return nil
}

// endLocked records the END_STREAM sent: a request still sending its body
// is told to stop (RST_STREAM NO_ERROR, RFC 9113 8.1).
func (w *h2response) endLocked() {
	st := w.st
	c := st.c
	st.localClosed = true
	if !st.remoteClosed {
		c.appendRSTLocked(st.id, http2.ErrCodeNo)
		st.remoteClosed = true
	}
	c.removeLocked(st)
}

// collectTrailers returns the trailers to send: the declared ones set by
// now, and those named with http.TrailerPrefix.
func (w *h2response) collectTrailers() []hfield {
	var out []hfield
	for _, k := range w.trailers {
		if vs := w.header[k]; len(vs) > 0 {
			if name, ok := lookupName(k); ok {
				out = append(out, hfield{name: name, vals: vs})
			}
		}
	}
	for k, vs := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) && len(vs) > 0 {
			if name, ok := lookupName(http.CanonicalHeaderKey(k[len(http.TrailerPrefix):])); ok {
				out = append(out, hfield{name: name, vals: vs})
			}
		}
	}
	return out
}

// beginHeadLocked encodes :status and the snapshot's fields into c.hbuf.
func (w *h2response) beginHeadLocked(status int) {
	c := w.st.c
	b := c.startBlockLocked(c.hbuf.b[:0])
	b = appendHPACKStatus(b, status)
	for _, f := range w.snap {
		if len(w.trailers) > 0 && w.isTrailer(f.name.lower) {
			continue
		}
		b = appendFields(b, f)
	}
	c.hbuf.b = b
}

// appendFields appends the values of f (those that may be sent).
func appendFields(b []byte, f hfield) []byte {
	for _, v := range f.vals {
		if validHeaderValue(v) {
			b = appendHPACKField(b, f.name.idx, f.name.lower, v)
		}
	}
	return b
}

// startBlockLocked begins a header block: with a dynamic table size update
// to 0 after the peer changed SETTINGS_HEADER_TABLE_SIZE (RFC 7541 4.2;
// the table stays empty).
func (c *h2conn) startBlockLocked(b []byte) []byte {
	if c.tableUpdate {
		c.tableUpdate = false
		b = append(b, 0x20)
	}
	return b
}

func (w *h2response) isTrailer(name string) bool {
	for _, t := range w.trailers {
		if len(t) == len(name) && strings.EqualFold(t, name) {
			return true
		}
	}
	return false
}

// headerFramesLocked sends the encoded block in c.hbuf as HEADERS and, past
// the peer's frame size, CONTINUATION frames.
func (c *h2conn) headerFramesLocked(id uint32, end bool) {
	b := c.hbuf.b
	typ := http2.FrameHeaders
	var flags http2.Flags
	if end {
		flags = http2.FlagHeadersEndStream
	}
	for {
		n := min(len(b), c.peerMaxFrame)
		f := flags
		if n == len(b) {
			f |= http2.FlagHeadersEndHeaders
		}
		c.frameLocked(typ, f, id, n)
		c.out = append(c.out, b[:n]...)
		b = b[n:]
		if len(b) == 0 {
			return
		}
		typ, flags = http2.FrameContinuation, 0
	}
}

// dataLocked sends p as DATA frames, as the peer's frame size and the flow
// control windows allow, waiting (under the send timeout) while a window
// is empty; end sets END_STREAM on the last.
func (w *h2response) dataLocked(p []byte, end bool) error {
	st := w.st
	c := st.c
	var deadline time.Time
	for {
		if st.localClosed || st.ended {
			return errH2StreamClosed
		}
		if c.werr != nil {
			return c.werr
		}
		n := min(int64(len(p)), int64(c.peerMaxFrame), st.sendWindow, c.sendWindow)
		if n <= 0 && len(p) > 0 {
			if deadline.IsZero() {
				deadline = st.writeDeadline
				if deadline.IsZero() && c.srv.writeTimeout > 0 {
					deadline = time.Now().Add(c.srv.writeTimeout)
				}
			}
			if len(c.out) > 0 && !c.writing {
				c.flushLocked()
				continue // mu was released: look again
			}
			if !c.waitLocked(deadline) && !st.localClosed && min(st.sendWindow, c.sendWindow) <= 0 {
				c.resetLocked(st.id, http2.ErrCodeInternal)
				return os.ErrDeadlineExceeded
			}
			continue
		}
		var flags http2.Flags
		if end && n == int64(len(p)) {
			flags = http2.FlagDataEndStream
		}
		c.frameLocked(http2.FrameData, flags, st.id, int(n))
		c.out = append(c.out, p[:n]...)
		st.sendWindow -= n
		c.sendWindow -= n
		p = p[n:]
		if len(p) == 0 {
			return nil
		}
		c.flushIfLargeLocked()
		// Backpressure: while another party writes, the output grows to
		// a bound at most.
		for c.writing && len(c.out) >= 4*h2FlushAt && c.werr == nil && !st.localClosed {
			if deadline.IsZero() {
				deadline = st.writeDeadline
				if deadline.IsZero() && c.srv.writeTimeout > 0 {
					deadline = time.Now().Add(c.srv.writeTimeout)
				}
			}
			if !c.waitLocked(deadline) {
				c.resetLocked(st.id, http2.ErrCodeInternal)
				return os.ErrDeadlineExceeded
			}
		}
	}
}

// writeContinueLocked sends 100 Continue (the handler reads the body of a
// request that expects it).
func (w *h2response) writeContinueLocked() {
	c := w.st.c
	c.hbuf.b = appendHPACKStatus(c.startBlockLocked(c.hbuf.b[:0]), http.StatusContinue)
	c.headerFramesLocked(w.st.id, false)
}

// finish completes the response after the handler returned (aborted: it
// panicked or called runtime.Goexit, and the stream is reset).
func (w *h2response) finish(aborted bool) {
	st := w.st
	c := st.c
	if !aborted && !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	c.mu.Lock()
	if !st.localClosed {
		if aborted {
			c.resetLocked(st.id, http2.ErrCodeInternal)
		} else if err := w.sendLocked(nil, true); err != nil && !st.localClosed {
			c.resetLocked(st.id, http2.ErrCodeInternal)
		}
	}
	w.done = true
	st.closeBodyLocked()
	st.ctx.cancel(context.Canceled)
	if w.bufp != nil {
		*w.bufp = w.buf[:0]
		outPool.Put(w.bufp)
		w.bufp, w.buf = nil, nil
	}
	if h := w.header; h != nil && len(h) <= maxSpareHeader && len(c.spareHeaders) < cap(c.spareHeaders) {
		// The next stream reuses the map, grown already (see
		// conn.spareHeader); the handler has returned.
		clear(h)
		c.spareHeaders = append(c.spareHeaders, h)
	}
	w.header = nil
	c.handlers--
	c.busy--
	for len(c.queue) > 0 && c.handlers < h2MaxStreams && !c.closed {
		next := c.queue[0]
		c.queue = c.queue[1:]
		if !next.ended {
			c.startLocked(next)
		}
	}
	c.updateIdleLocked()
	c.doneLocked()
	c.mu.Unlock()
}

// statusText gives the :status value.
func statusText(code int) string {
	if code >= 100 && code < 600 {
		if s := statusStrings[code]; s != "" {
			return s
		}
	}
	return strconv.Itoa(code)
}

var statusStrings = func() (t [600]string) {
	for i := 100; i < 600; i++ {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

// h2DateCache holds the Date value of the current second.
var h2DateCache atomic.Pointer[h2DateValue]

type h2DateValue struct {
	sec int64
	v   string
}

func h2Date(now time.Time) string {
	sec := now.Unix()
	if d := h2DateCache.Load(); d != nil && d.sec == sec {
		return d.v
	}
	v := now.UTC().Format(http.TimeFormat)
	h2DateCache.Store(&h2DateValue{sec: sec, v: v})
	return v
}

// The response heads are encoded without HPACK's dynamic table, as nginx
// does: each field a literal "without indexing" whose name, when it is in
// the static table, is its index (RFC 7541 6.2.2). x/net's hpack.Encoder
// indexes every field and searches its tables with a map lookup or two
// per field: 12% of the server's CPU under h2load on a small file. This
// costs a few more bytes per response (values are sent, not indexed, and
// not Huffman-coded) and no lookup but the one that lowers the name.

// appendHPACKInt appends an HPACK integer with an n-bit prefix, the
// prefix's other bits given in first (RFC 7541 5.1).
func appendHPACKInt(b []byte, first byte, n uint, v uint64) []byte {
	max := uint64(1)<<n - 1
	if v < max {
		return append(b, first|byte(v))
	}
	b = append(b, first|byte(max))
	v -= max
	for v >= 128 {
		b = append(b, byte(v&0x7f|0x80))
		v >>= 7
	}
	return append(b, byte(v))
}

// appendHPACKField appends name: value, a literal without indexing; idx is
// the name's index in the static table, 0 for a new name.
func appendHPACKField(b []byte, idx uint8, name, value string) []byte {
	if idx != 0 {
		b = appendHPACKInt(b, 0, 4, uint64(idx))
	} else {
		b = append(b, 0)
		b = appendHPACKInt(b, 0, 7, uint64(len(name)))
		b = append(b, name...)
	}
	b = appendHPACKInt(b, 0, 7, uint64(len(value)))
	return append(b, value...)
}

// appendHPACKStatus appends :status, indexed when the static table has it.
func appendHPACKStatus(b []byte, code int) []byte {
	switch code {
	case 200:
		return append(b, 0x88)
	case 204:
		return append(b, 0x89)
	case 206:
		return append(b, 0x8a)
	case 304:
		return append(b, 0x8b)
	case 400:
		return append(b, 0x8c)
	case 404:
		return append(b, 0x8d)
	case 500:
		return append(b, 0x8e)
	}
	return appendHPACKField(b, 8, "", statusText(code))
}

// A headerName is a response header's HTTP/2 name and its index in HPACK's
// static table (0: none).
type headerName struct {
	lower string
	idx   uint8
}

// staticNames are the names of HPACK's static table, from index 15 on
// (RFC 7541 Appendix A).
var staticNames = [...]string{
	"accept-charset", "accept-encoding", "accept-language", "accept-ranges", "accept",
	"access-control-allow-origin", "age", "allow", "authorization", "cache-control",
	"content-disposition", "content-encoding", "content-language", "content-length",
	"content-location", "content-range", "content-type", "cookie", "date", "etag", "expect",
	"expires", "from", "host", "if-match", "if-modified-since", "if-none-match", "if-range",
	"if-unmodified-since", "last-modified", "link", "location", "max-forwards",
	"proxy-authenticate", "proxy-authorization", "range", "referer", "refresh", "retry-after",
	"server", "set-cookie", "strict-transport-security", "transfer-encoding", "user-agent",
	"vary", "via", "www-authenticate",
}

// staticIndex gives the static table index of a lower-case name, 0 if none.
func staticIndex(lower string) uint8 {
	for i, n := range staticNames {
		if n == lower {
			return uint8(15 + i)
		}
	}
	return 0
}

// headerNames maps canonical header names to their HTTP/2 form, without
// allocating for the common ones.
var headerNames = func() map[string]headerName {
	m := map[string]headerName{}
	add := func(k string) {
		l := strings.ToLower(k)
		m[k] = headerName{lower: l, idx: staticIndex(l)}
	}
	for _, k := range commonHeaders {
		add(k)
	}
	for _, n := range staticNames {
		add(http.CanonicalHeaderKey(n))
	}
	for _, k := range []string{
		"Content-Security-Policy", "Referrer-Policy", "X-Cache", "X-Content-Type-Options",
		"X-Frame-Options", "X-Xss-Protection", "Permissions-Policy", "Cross-Origin-Opener-Policy",
	} {
		add(k)
	}
	return m
}()

// lookupName gives the HTTP/2 name of a header, false for one not to send.
func lookupName(k string) (headerName, bool) {
	if n, ok := headerNames[k]; ok {
		return n, true
	}
	if !isToken(k) || strings.HasPrefix(k, http.TrailerPrefix) {
		return headerName{}, false
	}
	l := strings.ToLower(k)
	return headerName{lower: l, idx: staticIndex(l)}, true
}
