package server

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// errUWWriteAfterReturn is returned by a ResponseWriter used after its
// handler returned (which the http.ResponseWriter contract forbids).
var errUWWriteAfterReturn = errors.New("uwsgi: response written after the handler returned")

// uwResponse is the http.ResponseWriter ServeUWSGI hands to handlers. It
// writes a raw HTTP/1.1 response, as uWSGI does: status line, headers, blank
// line, body, with no chunked encoding (closing the connection ends the
// body). Writes are buffered and sent when the buffer fills, on Flush, and
// when the handler returns.
type uwResponse struct {
	c      *uwConn
	req    *http.Request
	header http.Header

	wroteHeader bool
	status      int
	// bodyAllowed is false for 1xx, 204 and 304; discard is true for HEAD.
	bodyAllowed bool
	discard     bool
	// contentLength is the Content-Length the handler declared and that
	// Write enforces, -1 if none; written counts body bytes accepted.
	contentLength int64
	written       int64
	// done is set when the handler has returned.
	done bool
}

var (
	_ http.ResponseWriter = (*uwResponse)(nil)
	_ http.Flusher        = (*uwResponse)(nil)
	_ io.StringWriter     = (*uwResponse)(nil)
)

// Header returns the response headers. Changes after WriteHeader (or the
// first Write or Flush) have no effect.
func (w *uwResponse) Header() http.Header { return w.header }

// WriteHeader sends the status line and headers (into the write buffer).
// Informational statuses other than 101 are dropped: nginx's uwsgi module
// takes the first status line it reads for the final one. A second call is
// ignored; a code outside 100-999 panics, as with net/http.
func (w *uwResponse) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if w.wroteHeader || w.done || code < 200 && code != http.StatusSwitchingProtocols {
		return
	}
	w.writeHeader(code, false)
}

// writeHeader serialises the status line and headers; final means the
// handler has returned without writing anything, so the body is empty.
func (w *uwResponse) writeHeader(code int, final bool) {
	w.wroteHeader = true
	w.status = code
	w.bodyAllowed = code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
	w.discard = w.req.Method == http.MethodHead

	// One Content-Length, which we vouch for: the first value, if valid.
	declared := int64(-1)
	if v := w.header["Content-Length"]; len(v) > 0 && uwAllDigits(v[0]) {
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil {
			declared = n
		}
	}
	if w.bodyAllowed && !w.discard {
		w.contentLength = declared
	}

	bw := w.c.bw
	var num [20]byte
	bw.WriteString("HTTP/1.1 ")
	bw.Write(strconv.AppendInt(num[:0], int64(code), 10))
	bw.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		bw.WriteString(text)
	} else {
		bw.WriteString("status code ")
		bw.Write(strconv.AppendInt(num[:0], int64(code), 10))
	}
	bw.WriteString("\r\n")
	for name, values := range w.header {
		if uwSkipResponseHeader(name) {
			continue
		}
		for _, v := range values {
			bw.WriteString(name)
			bw.WriteString(": ")
			uwWriteHeaderValue(bw, v)
			bw.WriteString("\r\n")
		}
	}
	switch {
	case declared >= 0 && code >= 200 && code != http.StatusNoContent:
		// RFC 9110 8.6: never in a 1xx or 204 response; in a HEAD or 304
		// uwResponse it tells the size of the uwBody a GET would get.
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(num[:0], declared, 10))
		bw.WriteString("\r\n")
	case final && w.bodyAllowed && !w.discard:
		bw.WriteString("Content-Length: 0\r\n")
	}
	bw.WriteString("\r\n")
}

// uwSkipResponseHeader reports whether a handler's header must not be sent:
// a name that is not a token, Content-Length (sent once, validated, by
// writeHeader), and the framing headers Transfer-Encoding and Trailer (and
// trailers announced with http.TrailerPrefix): the body is not chunked.
func uwSkipResponseHeader(name string) bool {
	return !isToken(name) ||
		strings.EqualFold(name, "Content-Length") ||
		strings.EqualFold(name, "Transfer-Encoding") ||
		strings.EqualFold(name, "Trailer") ||
		strings.HasPrefix(name, http.TrailerPrefix)
}

// uwWriteHeaderValue writes v with CR and LF replaced by spaces, as net/http
// does, so that a value cannot inject a header.
func uwWriteHeaderValue(bw *bufio.Writer, v string) {
	if !strings.ContainsAny(v, "\r\n") {
		bw.WriteString(v)
		return
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		bw.WriteByte(c)
	}
}

// Write sends the status line and headers first if need be (200 OK), then
// buffers p. It returns http.ErrBodyNotAllowed for a 1xx, 204 or 304
// response, and http.ErrContentLength (writing nothing) past a declared
// Content-Length. For a HEAD request it discards p and reports success.
func (w *uwResponse) Write(p []byte) (int, error) {
	if err := w.beforeWrite(len(p)); err != nil {
		return 0, err
	}
	if w.discard {
		return len(p), nil
	}
	n, err := w.c.bw.Write(p)
	w.written += int64(n)
	return n, err
}

// WriteString is Write for a string, without a copy.
func (w *uwResponse) WriteString(s string) (int, error) {
	if err := w.beforeWrite(len(s)); err != nil {
		return 0, err
	}
	if w.discard {
		return len(s), nil
	}
	n, err := w.c.bw.WriteString(s)
	w.written += int64(n)
	return n, err
}

func (w *uwResponse) beforeWrite(n int) error {
	if w.done {
		return errUWWriteAfterReturn
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	switch {
	case !w.bodyAllowed:
		return http.ErrBodyNotAllowed
	case w.contentLength >= 0 && w.written+int64(n) > w.contentLength:
		return http.ErrContentLength
	}
	return nil
}

// Flush sends what is buffered, status line and headers first (200 OK) if
// the handler has not sent them.
func (w *uwResponse) Flush() {
	w.FlushError()
}

// FlushError is Flush returning the write error, for
// http.ResponseController.
func (w *uwResponse) FlushError() error {
	if w.done {
		return errUWWriteAfterReturn
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.c.bw.Flush()
}

// SetWriteDeadline sets the deadline of the connection's writes, for
// http.ResponseController. It holds until the next write: the server
// extends the deadline by SendTimeout before each write (send_timeout).
func (w *uwResponse) SetWriteDeadline(t time.Time) error {
	if w.done {
		return errUWWriteAfterReturn
	}
	return w.c.rwc.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline of the connection's reads, for
// http.ResponseController. It holds until the next read of the body: the
// server sets BodyTimeout before each.
func (w *uwResponse) SetReadDeadline(t time.Time) error {
	if w.done {
		return errUWWriteAfterReturn
	}
	return w.c.rwc.SetReadDeadline(t)
}

// finish completes the response once the handler has returned: a handler
// that wrote nothing gets 200 OK with an empty body.
func (w *uwResponse) finish() error {
	if !w.wroteHeader {
		w.writeHeader(http.StatusOK, true)
	}
	return w.c.bw.Flush()
}

// uwDeadlineWriter writes to the connection, extending its write deadline
// before each write; n counts bytes written, so that the server knows
// whether any of the response has left.
type uwDeadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
	n       int64
}

func (d *uwDeadlineWriter) Write(p []byte) (int, error) {
	if err := d.conn.SetWriteDeadline(deadlineIn(d.timeout)); err != nil {
		return 0, err
	}
	n, err := d.conn.Write(p)
	d.n += int64(n)
	return n, err
}

// uwBody is a request body: exactly ContentLength bytes of the connection.
// Its methods are safe to call from goroutines other than the handler's
// (http.Transport may still read or close a request body after RoundTrip
// returns).
type uwBody struct {
	c      *uwConn
	closed atomic.Bool

	mu        sync.Mutex
	remaining int64
	err       error // sticky read error
}

// Read reads from the connection, giving each read BodyTimeout. The end of
// the connection before ContentLength bytes is io.ErrUnexpectedEOF.
func (b *uwBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.c
	switch {
	case b.err != nil:
		return 0, b.err
	case b.remaining == 0:
		return 0, io.EOF
	case c.finishing.Load():
		return 0, errUWHandlerDone
	case len(p) == 0:
		return 0, nil
	}
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	c.rwc.SetReadDeadline(deadlineIn(c.srv.bodyTimeout))
	if c.finishing.Load() {
		// stopReading may have set its deadline just before ours.
		return 0, errUWHandlerDone
	}
	n, err := c.br.Read(p)
	b.remaining -= int64(n)
	if b.remaining == 0 {
		if c.bgWanted.Load() {
			c.startBackgroundRead()
		}
		return n, io.EOF
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		b.err = fmt.Errorf("uwsgi: reading request body: %w", err)
		return n, b.err
	}
	return n, nil
}

// Close makes further reads fail; the server deals with unread bytes.
func (b *uwBody) Close() error {
	b.closed.Store(true)
	return nil
}
