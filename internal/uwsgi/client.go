package uwsgi

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
	"time"
)

// defaultDialTimeout bounds a Transport's connect when DialTimeout is zero.
// nginx's uwsgi_connect_timeout defaults to 60s; an upstream on the same
// network that has not accepted in 5s is better given up for another.
const defaultDialTimeout = 5 * time.Second

// ErrUnknownLength is returned by Transport.RoundTrip for a request with a
// body (not nil, not http.NoBody) whose ContentLength is negative: the
// packet's CONTENT_LENGTH must be known before the body is sent, so the
// caller has to buffer the body first.
var ErrUnknownLength = errors.New("uwsgi: request body of unknown length (ContentLength < 0)")

// ErrBadResponse is wrapped by the error Transport.RoundTrip returns when
// the upstream's response head is malformed or cut short (the connection
// closed before the blank line that ends the headers): the upstream
// failed, a proxy answers 502.
var ErrBadResponse = errors.New("uwsgi: bad response from upstream")

// Transport is an http.RoundTripper that sends each request to one uwsgi
// server (uWSGI's --socket) as nginx's uwsgi_pass does: a packet of
// PEP 3333 / CGI variables built by AppendRequest, then the request body;
// the answer is a raw HTTP/1.x response.
//
// Each request gets a connection of its own, closed when the response body
// is closed: uWSGI serves one request per connection and closes it after
// the response, and nginx's uwsgi_pass does not reuse them either.
//
// The request's Host (else URL.Host) gives SERVER_NAME, SERVER_PORT and
// HTTP_HOST, its RequestURI (else URL.RequestURI()) REQUEST_URI, and an
// Origin in its context (see OriginFrom) the client's address and scheme;
// the Transport dials its own Address whatever the URL says.
//
// The zero value is not usable: Address must be set. Fields must not change
// once RoundTrip runs; a Transport is safe for concurrent use.
type Transport struct {
	// Network is "tcp" (also "tcp4", "tcp6") or "unix". "" means "tcp".
	Network string

	// Address is the upstream's host:port for TCP, or the socket path for
	// "unix": what uWSGI's --socket was given.
	Address string

	// ScriptName is the URL prefix the upstream app is mounted at: sent as
	// SCRIPT_NAME and stripped from the front of PATH_INFO, as
	// EnvironOptions.ScriptName describes. "" (the zero value) mounts the
	// app at the root. nginx needs `uwsgi_param SCRIPT_NAME` plus
	// `uwsgi_modifier1 30` for the same effect.
	ScriptName string

	// DialTimeout bounds connecting to Address (the request's context
	// bounds it too). Zero or negative means 5s.
	DialTimeout time.Duration

	// Modifier1 is the packet's modifier1: 0 (the zero value) is a WSGI
	// request, what nginx sends by default and what uWSGI's python plugin
	// serves; another value selects another of uWSGI's request handlers
	// (a Perl or Ruby app, say: see uWSGI's table of modifiers), as
	// nginx's uwsgi_modifier1 does. The vars block is the same whatever
	// the value. 30 makes uWSGI strip SCRIPT_NAME from PATH_INFO once
	// more: leave it 0 with ScriptName, which already strips the prefix.
	Modifier1 uint8
}

var _ http.RoundTripper = (*Transport)(nil)

func (t *Transport) network() string {
	if t.Network != "" {
		return t.Network
	}
	return "tcp"
}

func (t *Transport) dialTimeout() time.Duration {
	if t.DialTimeout > 0 {
		return t.DialTimeout
	}
	return defaultDialTimeout
}

// RoundTrip sends r to the upstream and returns its response once the
// response head has been read; the body then streams from the connection
// (to its end, or as Content-Length or chunked encoding say). Closing the
// response body closes the connection. Cancelling r's context closes the
// connection too, and a read blocked on it returns the context's error.
//
// A request body (r.Body not nil and not http.NoBody) must have a known
// length: r.ContentLength bytes of it are sent as CONTENT_LENGTH says
// (0 means an empty body, unlike http.Transport, which reads 0 with a body
// as "unknown"); a negative ContentLength fails with ErrUnknownLength. The
// body is written from a goroutine while RoundTrip reads the response, so
// an app that answers before reading all of it (an early 413, say) is
// heard; the write is then abandoned when the response is complete. That
// goroutine ends, and r.Body is closed, no later than the response body's
// Close; r.Body's Read must therefore not block indefinitely (a buffered
// body, as the proxy sends, never does). The body is closed on every
// error too, as http.RoundTripper requires.
//
// Errors, for a proxy to tell what happened:
//   - connecting failed: the error wraps the *net.OpError whose Op is
//     "dial" (test with errors.As). The request was never sent, so another
//     upstream may be tried;
//   - the response head is malformed or the connection ended before it:
//     the error wraps ErrBadResponse (and the cause), answer 502;
//   - r's context ended: the error wraps the context's error;
//   - reading r.Body failed, or it ended short of ContentLength: the error
//     says "reading request body" and wraps the cause;
//   - the request's variables exceed a packet: ErrVarsTooLarge.
//
// A 1xx informational response before the final one is skipped. A status
// line without a reason phrase ("HTTP/1.1 200", which uWSGI writes for an
// app that gives start_response a bare code) is accepted and its Status
// completed with the standard text ("200 OK").
func (t *Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	body := r.Body
	if body == http.NoBody {
		body = nil
	}
	var length int64
	if body != nil {
		if r.ContentLength < 0 {
			body.Close()
			return nil, ErrUnknownLength
		}
		length = r.ContentLength
	}
	pkt, err := AppendRequest(make([]byte, 0, 1024), r, EnvironOptions{ScriptName: t.ScriptName, ContentLength: length})
	if err != nil {
		if body != nil {
			body.Close()
		}
		return nil, err
	}
	pkt[0] = t.Modifier1

	ctx := r.Context()
	d := net.Dialer{Timeout: t.dialTimeout()}
	conn, err := d.DialContext(ctx, t.network(), t.Address)
	if err != nil {
		if body != nil {
			body.Close()
		}
		return nil, fmt.Errorf("uwsgi: dialing %s %s: %w", t.network(), t.Address, err)
	}

	ex := &upstreamConn{conn: conn, ctx: ctx, wrote: make(chan struct{})}
	ex.stopCancel = context.AfterFunc(ctx, ex.cancel)
	go ex.write(pkt, body, length)

	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, r)
	for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
		resp, err = http.ReadResponse(br, r)
	}
	if err != nil {
		ex.finish()
		if ctxErr := ctx.Err(); ctxErr != nil && ex.wasCancelled() {
			return nil, fmt.Errorf("uwsgi: reading response from %s: %w", t.Address, ctxErr)
		}
		if werr := ex.bodyErr; werr != nil {
			// The body failed first; the connection was closed because of it.
			return nil, werr
		}
		return nil, fmt.Errorf("%w: reading response head from %s: %w", ErrBadResponse, t.Address, err)
	}
	if text := http.StatusText(resp.StatusCode); text != "" && !strings.Contains(resp.Status, " ") {
		resp.Status = strconv.Itoa(resp.StatusCode) + " " + text // "HTTP/1.1 200": no reason phrase
	}
	if resp.Body == http.NoBody {
		ex.finish()
		return resp, nil
	}
	resp.Body = &responseBody{rc: resp.Body, ex: ex}
	return resp, nil
}

// upstreamConn is one request's connection and the goroutine writing to it.
type upstreamConn struct {
	conn       net.Conn
	ctx        context.Context
	stopCancel func() bool

	// wrote is closed when the write goroutine has returned; bodyErr is
	// then set if reading the request body failed (not writing it).
	wrote   chan struct{}
	bodyErr error

	mu        sync.Mutex
	cancelled bool
	finished  bool
}

// write sends the packet and length bytes of body, then closes body. A
// failure to read the body closes the connection, so the app does not take
// a short body for a whole one, and the response read fails. A failure to
// write is left to the reader: the upstream may have answered and closed
// without reading the whole body, and its response is still to be read.
func (ex *upstreamConn) write(pkt []byte, body io.ReadCloser, length int64) {
	defer close(ex.wrote)
	if body != nil {
		defer body.Close()
	}
	if _, err := ex.conn.Write(pkt); err != nil || body == nil || length == 0 {
		return
	}
	src := &errReader{r: body}
	n, err := io.Copy(ex.conn, io.LimitReader(src, length))
	switch {
	case src.err != nil:
		ex.bodyErr = fmt.Errorf("uwsgi: reading request body: %w", src.err)
	case err == nil && n < length:
		ex.bodyErr = fmt.Errorf("uwsgi: reading request body: ended after %d of %d bytes: %w", n, length, io.ErrUnexpectedEOF)
	}
	if ex.bodyErr != nil {
		ex.conn.Close()
	}
}

// cancel runs when the request's context ends: it closes the connection,
// which unblocks the reader and the writer.
func (ex *upstreamConn) cancel() {
	ex.mu.Lock()
	ex.cancelled = true
	ex.mu.Unlock()
	ex.conn.Close()
}

func (ex *upstreamConn) wasCancelled() bool {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return ex.cancelled
}

// finish closes the connection and waits for the write goroutine, once.
func (ex *upstreamConn) finish() {
	ex.mu.Lock()
	done := ex.finished
	ex.finished = true
	ex.mu.Unlock()
	if done {
		return
	}
	ex.stopCancel()
	ex.conn.Close()
	<-ex.wrote
}

// errReader records the error of the reader it wraps, to tell a failing
// request body from a failing connection after io.Copy.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// responseBody is a response body whose Close ends the exchange.
type responseBody struct {
	rc io.ReadCloser
	ex *upstreamConn
}

func (b *responseBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		if ctxErr := b.ex.ctx.Err(); ctxErr != nil && b.ex.wasCancelled() {
			return n, fmt.Errorf("uwsgi: reading response body: %w", ctxErr)
		}
		return n, fmt.Errorf("uwsgi: reading response body: %w", err)
	}
	return n, err
}

func (b *responseBody) Close() error {
	b.ex.finish()
	return nil
}
