package server

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// errWriteAfterReturn is what a ResponseWriter used after its handler
// returned (which the http.ResponseWriter contract forbids) answers.
var errWriteAfterReturn = errors.New("server: response written after the handler returned")

const (
	// writeBufSize is how much of a body is buffered before it is sent: a
	// response whose handler returns within it goes out in one write with a
	// Content-Length; a longer one without a declared length is chunked.
	writeBufSize = 8 << 10
	// maxPooledBuf is the largest buffer returned to a pool.
	maxPooledBuf = 64 << 10
)

var outPool = sync.Pool{New: func() any { b := make([]byte, 0, writeBufSize); return &b }}

// response is the http.ResponseWriter of one request. The status line and
// headers are serialised when WriteHeader is called (later changes to the
// header map have no effect, as with net/http); the framing headers
// (Content-Length or chunked, Connection, Date) are added when the head is
// sent, which is as late as possible: a handler that returns with its body
// within writeBufSize gets one write with an exact Content-Length.
type response struct {
	c      *conn
	req    *http.Request
	header http.Header

	status      int
	wroteHeader bool // status and headers serialised into c.out
	headSent    bool // framing decided and the head written out
	bodyStart   int  // where the body starts in c.out before the head is sent

	bodyAllowed bool // false for 1xx, 204, 304
	discard     bool // HEAD
	chunked     bool
	// declared is the Content-Length the handler set, -1 if none; written
	// counts the body bytes accepted.
	declared int64
	written  int64

	// closeAfter is set when the connection must close after this
	// response; the head then carries "Connection: close".
	closeAfter bool
	hasDate    bool
	done       bool
}

var (
	_ http.ResponseWriter = (*response)(nil)
	_ http.Flusher        = (*response)(nil)
	_ io.StringWriter     = (*response)(nil)
	_ io.ReaderFrom       = (*response)(nil)
	_ http.Hijacker       = (*response)(nil)
)

// Hijack hands the connection to the handler, for a protocol switch (a
// WebSocket tunnel) that the handler answers itself: from then on the
// server neither reads, writes nor closes it, and Shutdown no longer waits
// for it (as with net/http). Bytes the client sent after the request are
// in the returned reader. It fails once the response head was written.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c := w.c
	if w.wroteHeader || w.done || c.hijacked {
		return nil, nil, errors.New("server: Hijack after the response started")
	}
	c.stopMonitor()
	c.hijacked = true
	c.srv.untrack(c)
	_ = c.rwc.SetDeadline(time.Time{})
	var rd io.Reader = c.rwc
	if c.r < c.w {
		rest := bytes.Clone(c.buf[c.r:c.w])
		c.r = c.w
		rd = io.MultiReader(bytes.NewReader(rest), c.rwc)
	}
	return c.rwc, bufio.NewReadWriter(bufio.NewReader(rd), bufio.NewWriter(c.rwc)), nil
}

// Header returns the response headers.
func (w *response) Header() http.Header {
	if w.header == nil {
		if w.c != nil && !w.done && w.c.spareHeader != nil {
			w.header, w.c.spareHeader = w.c.spareHeader, nil
		} else {
			w.header = make(http.Header, 4)
		}
	}
	return w.header
}

// WriteHeader records the status and serialises the status line and
// headers. A 1xx status other than 101 is sent at once (103 Early Hints),
// without ending the response; a second final status is ignored; a code
// outside 100-999 panics, as with net/http.
func (w *response) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if w.wroteHeader || w.done {
		return
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		if code != http.StatusContinue && w.req.ProtoAtLeast(1, 1) {
			w.writeInformational(code)
		}
		return
	}
	w.wroteHeader = true
	w.status = code
	w.bodyAllowed = code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
	w.discard = w.req.Method == http.MethodHead
	w.declared = -1
	if v := w.header["Content-Length"]; len(v) > 0 && code != http.StatusNotModified {
		if n, ok := parseContentLength(strings.TrimSpace(v[0])); ok {
			w.declared = n
		}
	}
	if v := w.header["Connection"]; len(v) > 0 && hasToken(v, "close") {
		w.closeAfter = true
	}
	_, w.hasDate = w.header["Date"]

	c := w.c
	c.out = appendStatusLine(c.out, w.req.ProtoMajor == 1 && w.req.ProtoMinor == 0, code)
	c.out = appendHeaders(c.out, w.header, code)
	w.bodyStart = len(c.out)
}

// writeInformational sends a 1xx response with the current headers.
func (w *response) writeInformational(code int) {
	if w.c.werr != nil {
		return
	}
	b := appendStatusLine(nil, false, code)
	b = appendHeaders(b, w.header, code)
	b = append(b, "\r\n"...)
	w.c.write(b)
}

func appendStatusLine(b []byte, http10 bool, code int) []byte {
	if http10 {
		b = append(b, "HTTP/1.0 "...)
	} else {
		b = append(b, "HTTP/1.1 "...)
	}
	if line, ok := statusLines[code]; ok {
		return append(b, line...)
	}
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	if text := http.StatusText(code); text != "" {
		b = append(b, text...)
	} else {
		b = append(b, "status code "...)
		b = strconv.AppendInt(b, int64(code), 10)
	}
	return append(b, "\r\n"...)
}

// statusLines holds "200 OK\r\n" and the like for the common codes.
var statusLines = func() map[int]string {
	m := map[int]string{}
	for _, code := range []int{200, 201, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408, 413, 429, 500, 502, 503, 504} {
		m[code] = strconv.Itoa(code) + " " + http.StatusText(code) + "\r\n"
	}
	return m
}()

// appendHeaders writes the handler's headers but the framing ones, which
// the server owns: Content-Length (written once, validated),
// Transfer-Encoding, Trailer and announced trailers, and Connection (its
// "close" is honoured through closeAfter). Names that are not tokens are
// dropped; CR and LF in values become spaces, so that a value cannot inject
// a header.
func appendHeaders(b []byte, h http.Header, code int) []byte {
	for name, values := range h {
		if skipResponseHeader(name, code) {
			continue
		}
		for _, v := range values {
			b = append(b, name...)
			b = append(b, ": "...)
			if strings.ContainsAny(v, "\r\n") {
				for i := 0; i < len(v); i++ {
					c := v[i]
					if c == '\r' || c == '\n' {
						c = ' '
					}
					b = append(b, c)
				}
			} else {
				b = append(b, v...)
			}
			b = append(b, "\r\n"...)
		}
	}
	return b
}

func skipResponseHeader(name string, code int) bool {
	switch name {
	case "Content-Length", "Transfer-Encoding", "Trailer", "Connection":
		return true
	case "Content-Type":
		return code == http.StatusNotModified
	}
	return !isToken(name) || strings.HasPrefix(name, http.TrailerPrefix)
}

// hasToken reports whether a comma-separated header value list holds tok.
func hasToken(values []string, tok string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(trimOWS(t), tok) {
				return true
			}
		}
	}
	return false
}

// Write buffers p, sending the head and what is buffered when the buffer
// fills. It returns http.ErrBodyNotAllowed for a 204 or 304 response and
// http.ErrContentLength (writing nothing) past a declared Content-Length;
// for a HEAD request it discards p and reports success.
func (w *response) Write(p []byte) (int, error) {
	if err := w.beforeWrite(len(p)); err != nil {
		return 0, err
	}
	if w.discard {
		w.written += int64(len(p))
		return len(p), nil
	}
	c := w.c
	if len(c.out)+len(p) <= cap(c.out) {
		c.out = append(c.out, p...)
		w.written += int64(len(p))
		return len(p), nil
	}
	if err := w.flush(p); err != nil {
		return 0, err
	}
	w.written += int64(len(p))
	return len(p), nil
}

// WriteString is Write for a string.
func (w *response) WriteString(s string) (int, error) {
	if err := w.beforeWrite(len(s)); err != nil {
		return 0, err
	}
	if w.discard {
		w.written += int64(len(s))
		return len(s), nil
	}
	c := w.c
	if len(c.out)+len(s) <= cap(c.out) {
		c.out = append(c.out, s...)
		w.written += int64(len(s))
		return len(s), nil
	}
	if err := w.flush([]byte(s)); err != nil {
		return 0, err
	}
	w.written += int64(len(s))
	return len(s), nil
}

func (w *response) beforeWrite(n int) error {
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
	case w.c.werr != nil:
		return w.c.werr
	}
	return nil
}

// ReadFrom sends src as the body. With a declared Content-Length on a plain
// TCP connection it goes out with sendfile(2) when src is a file (as
// http.ServeContent's io.CopyN gives it); otherwise through Write.
func (w *response) ReadFrom(src io.Reader) (int64, error) {
	if err := w.beforeWrite(0); err != nil {
		return 0, err
	}
	c := w.c
	lr, isLimited := src.(*io.LimitedReader)
	_, isFile := src.(*os.File)
	if isLimited {
		_, isFile = lr.R.(*os.File)
	}
	if w.discard || c.tcp == nil || !isFile || w.declared < 0 {
		bp := copyPool.Get().(*[]byte)
		defer copyPool.Put(bp)
		return io.CopyBuffer(writerOnly{w}, src, *bp)
	}
	// Bound what is sent by what was declared.
	left := w.declared - w.written
	if !isLimited || lr.N > left {
		src = &io.LimitedReader{R: src, N: left}
	}
	// Corked (nginx's tcp_nopush) from the head to the end of the file:
	// the head rides in the first full segment and the file goes out in
	// full segments. Uncorked, the head went alone and the kernel sent
	// the file in pieces that cost the receiver twice the CPU per byte (a
	// 1 MiB file at 256 connections on loopback: 2,360 -> 5,500 req/s,
	// with wrk, the receiver, the bottleneck in both). Uncorking at the end
	// pushes the last partial segment at once.
	cork(c.tcp, true)
	defer cork(c.tcp, false)
	if err := w.flush(nil); err != nil {
		return 0, err
	}
	var total int64
	for {
		c.armWrite()
		n, err := c.tcp.ReadFrom(src)
		total += n
		w.written += n
		if err == nil || n == 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			if err != nil {
				c.werr = err
			}
			return total, err
		}
		// The deadline passed but the client took some: extend it.
	}
}

// writerOnly hides the ReadFrom of a response from io.Copy.
type writerOnly struct{ io.Writer }

var copyPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// Flush sends the head and what is buffered.
func (w *response) Flush() { _ = w.FlushError() }

// FlushError is Flush returning the write error, for
// http.ResponseController.
func (w *response) FlushError() error {
	if w.done {
		return errWriteAfterReturn
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.flush(nil)
}

// SetReadDeadline sets the deadline of the connection's reads, for
// http.ResponseController; the server stops setting its own per-read
// deadline for the rest of the request.
func (w *response) SetReadDeadline(t time.Time) error {
	if w.done {
		return errWriteAfterReturn
	}
	return w.c.setExplicitReadDeadline(t)
}

// SetWriteDeadline sets the deadline of the connection's writes, for
// http.ResponseController; the server stops setting its own per-write
// deadline for the rest of the request.
func (w *response) SetWriteDeadline(t time.Time) error {
	if w.done {
		return errWriteAfterReturn
	}
	w.c.explicitWrite = true
	return w.c.rwc.SetWriteDeadline(t)
}

// flush sends the head if it has not been sent, what is buffered, and p.
func (w *response) flush(p []byte) error {
	c := w.c
	if c.werr != nil {
		return c.werr
	}
	if !w.headSent {
		w.sendHead(false)
	}
	body := c.out[w.bodyStart:]
	if w.chunked && len(body)+len(p) > 0 {
		var size [20]byte
		hdr := append(strconv.AppendInt(size[:0], int64(len(body)+len(p)), 16), "\r\n"...)
		err := c.writev(c.out[:w.bodyStart], hdr, body, p, crlf)
		c.out, w.bodyStart = c.out[:0], 0
		return err
	}
	err := c.writev(c.out, p)
	c.out, w.bodyStart = c.out[:0], 0
	return err
}

var crlf = []byte("\r\n")

// sendHead decides the framing and completes the head in c.out: the
// framing headers are inserted between the handler's headers and the body
// bytes already buffered. final means the handler has returned, so a body
// that is all in the buffer gets its exact Content-Length.
func (w *response) sendHead(final bool) {
	w.headSent = true
	c := w.c
	var fb [160]byte
	f := fb[:0]
	body := int64(len(c.out) - w.bodyStart)
	if w.discard {
		body = w.written
	}
	c.decideBody(w)
	if c.shuttingDown() || !c.keepAlive {
		w.closeAfter = true
	}
	switch {
	case w.declared >= 0 && w.status != http.StatusNoContent && w.status != http.StatusNotModified:
		f = append(f, "Content-Length: "...)
		f = strconv.AppendInt(f, w.declared, 10)
		f = append(f, "\r\n"...)
	case !w.bodyAllowed:
	case final && (!w.discard || body > 0):
		f = append(f, "Content-Length: "...)
		f = strconv.AppendInt(f, body, 10)
		f = append(f, "\r\n"...)
	case w.discard:
		// A HEAD response whose length is unknown: no framing header.
	case w.req.ProtoAtLeast(1, 1):
		w.chunked = true
		f = append(f, "Transfer-Encoding: chunked\r\n"...)
	default:
		// HTTP/1.0 without a length: the end of the connection ends it.
		w.closeAfter = true
	}
	if w.closeAfter {
		f = append(f, "Connection: close\r\n"...)
	} else if w.req.ProtoMinor == 0 {
		f = append(f, "Connection: keep-alive\r\n"...)
	}
	if !w.hasDate {
		f = appendDate(f, c.now)
	}
	f = append(f, "\r\n"...)

	// Insert f at bodyStart.
	n := len(c.out)
	c.out = append(c.out, f...)
	copy(c.out[w.bodyStart+len(f):], c.out[w.bodyStart:n])
	copy(c.out[w.bodyStart:], f)
	w.bodyStart += len(f)
}

// finish completes the response after the handler returned and reports
// whether the connection may serve another request.
func (w *response) finish() (keep bool) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	c := w.c
	if !w.headSent {
		w.sendHead(true)
	}
	if w.chunked {
		body := c.out[w.bodyStart:]
		if len(body) > 0 {
			var size [20]byte
			hdr := append(strconv.AppendInt(size[:0], int64(len(body)), 16), "\r\n"...)
			_ = c.writev(c.out[:w.bodyStart], hdr, body, crlfLastChunk)
		} else {
			_ = c.writev(c.out[:w.bodyStart], crlfLastChunk[2:])
		}
	} else if len(c.out) > 0 {
		_ = c.writev(c.out)
	}
	c.out, w.bodyStart = c.out[:0], 0
	w.done = true
	if w.bodyAllowed && !w.discard && w.declared >= 0 && w.written < w.declared {
		// The handler sent less than it declared: the client cannot tell
		// where this response ends, so the connection cannot go on.
		return false
	}
	return c.werr == nil && !w.closeAfter
}

// crlfLastChunk ends a chunk's data and the chunked body.
var crlfLastChunk = []byte("\r\n0\r\n\r\n")

// dateCache holds the Date header line of the current second.
var dateCache atomic.Pointer[dateLine]

type dateLine struct {
	sec  int64
	line []byte
}

// appendDate appends "Date: ...\r\n" for now, formatting it once a second.
func appendDate(b []byte, now time.Time) []byte {
	sec := now.Unix()
	if d := dateCache.Load(); d != nil && d.sec == sec {
		return append(b, d.line...)
	}
	line := make([]byte, 0, 40)
	line = append(line, "Date: "...)
	line = now.UTC().AppendFormat(line, http.TimeFormat)
	line = append(line, "\r\n"...)
	dateCache.Store(&dateLine{sec: sec, line: line})
	return append(b, line...)
}

// cork sets TCP_CORK on c; errors are ignored (the response is sent
// either way, only in other segments).
func cork(c *net.TCPConn, on bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	v := 0
	if on {
		v = 1
	}
	_ = rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, v) })
}
