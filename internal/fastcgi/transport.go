package fastcgi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrNoRoot reports a Transport without an absolute Root.
var ErrNoRoot = errors.New("fastcgi: Transport.Root must be an absolute directory")

// ErrHeaderCut reports a response that ended, or whose connection closed,
// before the end of its CGI header block.
var ErrHeaderCut = errors.New("fastcgi: response ended before the end of its header block")

// ErrHeaderTooLarge reports a CGI header block longer than
// Transport.MaxHeaderBytes.
var ErrHeaderTooLarge = errors.New("fastcgi: response header block too large")

// ErrRefused reports an END_REQUEST whose protocol status is not
// StatusRequestComplete: the application refused the request (overloaded,
// cannot multiplex, unknown role).
var ErrRefused = errors.New("fastcgi: request refused by the application")

// requestID is the ID of every request: one request at a time runs on a
// connection, so the ID never needs to change.
const requestID = 1

// stdinChunk is the content size of each STDIN record: a multiple of 8,
// so that no record needs padding.
const stdinChunk = 32 << 10

// stderrMax bounds the STDERR text kept for the log, per request.
const stderrMax = 4 << 10

// Transport is an http.RoundTripper that sends each request to one FastCGI
// server (php-fpm) and keeps its connections open between requests.
//
// Connections are opened with FCGI_KEEP_CONN and carry one request at a
// time. A connection goes back to the idle list only once END_REQUEST was
// read and the response body consumed; a body closed before its end closes
// its connection. A request takes the most recently used idle connection
// and dials only when there is none.
//
// The request body is written by a goroutine while RoundTrip reads the
// answer, so that a script that writes a large response before reading its
// input cannot deadlock against it; the goroutine ends when the body is
// written or the connection closed. A connection whose body was not fully
// written when END_REQUEST arrived is closed, not reused.
//
// Config fields must not change after the first RoundTrip. The zero value
// (with Address and Root set) is ready to use.
type Transport struct {
	// Network is "tcp" or "unix", as for net.Dial; "" means "tcp".
	Network string
	// Address is host:port for "tcp", the socket path for "unix".
	Address string

	// Root is the document root, an absolute directory: DOCUMENT_ROOT,
	// and where SCRIPT_FILENAME is resolved (see AppendParams). Required.
	Root string
	// SplitPath lists the suffixes that end the script name in the URL
	// path (nginx's fastcgi_split_path_info, Caddy's split_path); nil
	// means [".php"].
	SplitPath []string
	// Prefix is the URL path the scripts are mounted under (see
	// ParamsOptions.Prefix). "": the root.
	Prefix string
	// Params are extra params sent last, overriding the built ones, as
	// nginx's fastcgi_param.
	Params map[string]string

	// DialTimeout bounds a connect; zero means 5s. The request's context
	// bounds it too.
	DialTimeout time.Duration
	// MaxConns bounds the connections open at once, busy or idle; a
	// request waits for one (or its context) beyond it. Zero or negative
	// means no bound. Set it to php-fpm's pm.max_children or less: php-fpm
	// pins a worker to each kept connection (see the package doc).
	MaxConns int
	// MaxIdleConns is the number of idle connections kept for reuse, as
	// nginx's keepalive in an upstream block. Zero means 16; negative
	// means none: every request dials, without FCGI_KEEP_CONN.
	MaxIdleConns int
	// IdleTimeout closes a connection idle for longer; zero means 60s.
	// php-fpm has no idle timeout of its own, and a kept connection holds
	// one of its workers.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the CGI header block of a response, in bytes;
	// zero means 64 KiB (nginx's fastcgi_buffer_size is 4 or 8 KiB).
	MaxHeaderBytes int

	// Logger receives the application's STDERR output (PHP warnings,
	// error_log()): one warning per request with the text, truncated to
	// 4 KiB, and the SCRIPT_FILENAME. nil means slog.Default().
	Logger *slog.Logger

	mu        sync.Mutex
	idle      []*conn // oldest first
	reaper    *time.Timer
	ready     chan struct{} // a token when a connection went idle
	slots     chan struct{} // one token per open connection; nil: no bound
	startOnce sync.Once

	dials atomic.Int64 // connections dialed, for tests
}

var _ http.RoundTripper = (*Transport)(nil)

func (t *Transport) start() {
	t.startOnce.Do(func() {
		t.ready = make(chan struct{}, 1)
		if t.MaxConns > 0 {
			t.slots = make(chan struct{}, t.MaxConns)
		}
	})
}

func (t *Transport) network() string {
	if t.Network == "" {
		return "tcp"
	}
	return t.Network
}

func (t *Transport) maxIdle() int {
	if t.MaxIdleConns == 0 {
		return 16
	}
	return max(t.MaxIdleConns, 0)
}

func (t *Transport) idleTimeout() time.Duration {
	if t.IdleTimeout <= 0 {
		return 60 * time.Second
	}
	return t.IdleTimeout
}

func (t *Transport) logger() *slog.Logger {
	if t.Logger == nil {
		return slog.Default()
	}
	return t.Logger
}

// conn is one connection to the server.
type conn struct {
	t      *Transport
	nc     net.Conn
	br     *bufio.Reader
	buf    []byte // record content, reused
	reused bool   // served a request before this one
	idleAt time.Time
	closed atomic.Bool
	read   int64 // bytes read from the connection, for error offsets
}

// close closes the connection and frees its slot; it is idempotent and
// safe from any goroutine.
func (c *conn) close() {
	if c.closed.Swap(true) {
		return
	}
	c.nc.Close()
	if c.t.slots != nil {
		<-c.t.slots
	}
}

// Read counts the bytes read, for offsets in errors.
func (c *conn) Read(p []byte) (int, error) {
	n, err := c.nc.Read(p)
	c.read += int64(n)
	return n, err
}

// readRecord reads the next record of the answer, checking its request ID.
func (c *conn) readRecord() (Header, []byte, error) {
	off := c.read - int64(c.br.Buffered())
	h, b, err := ReadRecord(c.br, c.buf)
	c.buf = b[:0]
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return h, nil, fmt.Errorf("fastcgi: reading record at offset %d: %w", off, err)
	}
	if h.RequestID != requestID {
		return h, nil, fmt.Errorf("%w: record of type %d for request %d at offset %d, want request %d",
			ErrMalformed, h.Type, h.RequestID, off, requestID)
	}
	return h, b, nil
}

// conn returns an idle connection or a new one. fresh skips the idle ones
// (closing one when all slots are taken).
func (t *Transport) conn(ctx context.Context, fresh bool) (*conn, error) {
	for {
		if !fresh {
			if c := t.popIdle(); c != nil {
				return c, nil
			}
		}
		if t.slots == nil {
			return t.dial(ctx)
		}
		select {
		case t.slots <- struct{}{}:
			c, err := t.dial(ctx)
			if err != nil {
				<-t.slots
			}
			return c, err
		default:
		}
		if fresh {
			if c := t.popIdle(); c != nil {
				c.close() // frees a slot for the fresh connection
				continue
			}
		}
		select {
		case t.slots <- struct{}{}:
			c, err := t.dial(ctx)
			if err != nil {
				<-t.slots
			}
			return c, err
		case <-t.ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("fastcgi: waiting for a connection to %s: %w", t.Address, context.Cause(ctx))
		}
	}
}

func (t *Transport) dial(ctx context.Context) (*conn, error) {
	timeout := t.DialTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	d := net.Dialer{Timeout: timeout}
	nc, err := d.DialContext(ctx, t.network(), t.Address)
	if err != nil {
		return nil, fmt.Errorf("fastcgi: dialing %s: %w", t.Address, err)
	}
	t.dials.Add(1)
	c := &conn{t: t, nc: nc, buf: make([]byte, 0, MaxContentSize+256)}
	c.br = bufio.NewReaderSize(c, 16<<10)
	return c, nil
}

// aliveCheck is alive, replaced by tests of the retry it backs up.
var aliveCheck = alive

// popIdle takes the most recently used idle connection, closing expired
// ones, or returns nil.
func (t *Transport) popIdle() *conn {
	t.mu.Lock()
	t.pruneLocked(time.Now())
	var c *conn
	if n := len(t.idle); n > 0 {
		c = t.idle[n-1]
		t.idle[n-1] = nil
		t.idle = t.idle[:n-1]
		if n > 1 {
			t.signal() // another waiter may take the next one
		}
	}
	t.mu.Unlock()
	if c == nil {
		return nil
	}
	if !aliveCheck(c.nc) {
		c.close()
		return t.popIdle()
	}
	c.reused = true
	return c
}

func (t *Transport) signal() {
	select {
	case t.ready <- struct{}{}:
	default:
	}
}

// putIdle keeps c for the next request, or closes it when the idle list
// is full.
func (t *Transport) putIdle(c *conn) {
	now := time.Now()
	t.mu.Lock()
	t.pruneLocked(now)
	if len(t.idle) >= t.maxIdle() {
		t.mu.Unlock()
		c.close()
		return
	}
	c.idleAt = now
	t.idle = append(t.idle, c)
	if t.reaper == nil {
		t.reaper = time.AfterFunc(t.idleTimeout(), t.reap)
	}
	t.mu.Unlock()
	t.signal()
}

// reap closes the expired idle connections, from the reaper timer, and
// rearms it while idle ones remain.
func (t *Transport) reap() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pruneLocked(time.Now())
	t.reaper = nil
	if len(t.idle) > 0 {
		wait := time.Until(t.idle[0].idleAt.Add(t.idleTimeout()))
		t.reaper = time.AfterFunc(max(wait, time.Millisecond), t.reap)
	}
}

// pruneLocked closes the idle connections older than IdleTimeout.
func (t *Transport) pruneLocked(now time.Time) {
	n := 0
	for n < len(t.idle) && now.Sub(t.idle[n].idleAt) >= t.idleTimeout() {
		t.idle[n].close()
		t.idle[n] = nil
		n++
	}
	if n > 0 {
		t.idle = append(t.idle[:0], t.idle[n:]...)
	}
}

// CloseIdleConnections closes the idle connections; busy ones are closed
// when their request ends without being kept.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	if t.reaper != nil {
		t.reaper.Stop()
		t.reaper = nil
	}
	t.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
}

// bufPool holds the buffers a request's params and head are built in.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// RoundTrip sends r to the server and returns its answer, whose Body
// streams the rest of STDOUT. See the package doc for the errors and
// retries.
func (t *Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.start()
	body := r.Body
	if body == http.NoBody {
		body = nil
	}
	if body != nil && r.ContentLength == 0 {
		body.Close()
		body = nil
	}
	fail := func(err error) (*http.Response, error) {
		if body != nil {
			body.Close()
		}
		return nil, err
	}
	if !filepath.IsAbs(t.Root) {
		return fail(ErrNoRoot)
	}
	pp, hp := bufPool.Get().(*[]byte), bufPool.Get().(*[]byte)
	defer bufPool.Put(pp)
	defer bufPool.Put(hp)
	pairs, err := AppendParams((*pp)[:0], r, ParamsOptions{Root: t.Root, SplitPath: t.SplitPath, Prefix: t.Prefix, Params: t.Params})
	*pp = pairs
	if err != nil {
		return fail(err)
	}
	flags := FlagKeepConn
	if t.maxIdle() == 0 {
		flags = 0
	}
	head := AppendBeginRequest((*hp)[:0], requestID, RoleResponder, flags)
	head = appendParamsRecords(head, requestID, pairs)
	if body == nil {
		head = AppendRecord(head, TypeStdin, requestID, "")
	}
	*hp = head
	script := scriptFilename(pairs)

	ctx := r.Context()
	for attempt := 0; ; attempt++ {
		c, err := t.conn(ctx, attempt > 0)
		if err != nil {
			return fail(err)
		}
		resp, retry, err := t.exchange(ctx, c, r, head, body, script)
		if err == nil {
			return resp, nil
		}
		if retry && attempt == 0 {
			continue
		}
		return fail(err)
	}
}

// scriptFilename finds SCRIPT_FILENAME in a pairs block, for the log.
func scriptFilename(pairs []byte) string {
	var s string
	ParsePairs(pairs, func(name, value []byte) error {
		if string(name) == "SCRIPT_FILENAME" {
			s = string(value)
		}
		return nil
	})
	return s
}

// exchange runs one request on c. retry reports that the request may be
// sent again on a fresh connection: c was reused and the server cannot
// have seen it (see the package doc).
func (t *Transport) exchange(ctx context.Context, c *conn, r *http.Request, head []byte, body io.ReadCloser, script string) (*http.Response, bool, error) {
	stop := context.AfterFunc(ctx, c.close)
	abort := func(err error) error {
		stop()
		c.close()
		if ctx.Err() != nil {
			return fmt.Errorf("fastcgi: request to %s: %w (%w)", t.Address, context.Cause(ctx), err)
		}
		return err
	}
	if _, err := c.nc.Write(head); err != nil {
		return nil, c.reused && ctx.Err() == nil, abort(fmt.Errorf("fastcgi: writing request to %s: %w", t.Address, err))
	}
	var wrote chan error
	if body != nil {
		wrote = make(chan error, 1)
		go func() { wrote <- c.writeStdin(body, r.ContentLength) }()
	}

	b := &bodyReader{c: c, t: t, ctx: ctx, stop: stop, wrote: wrote, script: script}
	hdr, err := b.readHeaderBlock(t.maxHeaderBytes())
	if err != nil {
		if wrote != nil {
			select {
			case werr := <-wrote:
				if werr != nil {
					err = werr // the cause: the server saw a broken request
				}
				wrote <- werr // for finish
			default:
			}
		}
		retry := c.reused && c.read == 0 && body == nil && idempotent(r.Method) && ctx.Err() == nil &&
			(errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET))
		b.finish(false)
		return nil, retry, abort(err)
	}
	resp, err := b.response(r, hdr)
	if err != nil {
		b.finish(false)
		return nil, false, abort(err)
	}
	return resp, false, nil
}

func (t *Transport) maxHeaderBytes() int {
	if t.MaxHeaderBytes <= 0 {
		return 64 << 10
	}
	return t.MaxHeaderBytes
}

func idempotent(method string) bool {
	switch method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// writeStdin streams exactly n bytes of body as STDIN records, then the
// empty one, and closes body.
func (c *conn) writeStdin(body io.ReadCloser, n int64) error {
	defer body.Close()
	bp := stdinPool.Get().(*[]byte)
	defer stdinPool.Put(bp)
	buf := *bp
	for n > 0 {
		chunk := buf[HeaderSize : HeaderSize+int(min(n, stdinChunk))]
		k, err := io.ReadFull(body, chunk)
		if err != nil {
			c.close()
			return fmt.Errorf("fastcgi: reading request body: %w", err)
		}
		n -= int64(k)
		Header{Version: Version1, Type: TypeStdin, RequestID: requestID, ContentLength: uint16(k),
			PaddingLength: uint8(padding(k))}.Append(buf[:0])
		rec := buf[:HeaderSize+k+padding(k)]
		if n == 0 {
			rec = AppendRecord(rec, TypeStdin, requestID, "")
		}
		if _, err := c.nc.Write(rec); err != nil {
			c.close()
			return fmt.Errorf("fastcgi: writing request body: %w", err)
		}
	}
	return nil
}

var stdinPool = sync.Pool{New: func() any {
	b := make([]byte, HeaderSize+stdinChunk+2*HeaderSize)
	return &b
}}

// bodyReader reads the answer: the header block, then the STDOUT content
// as the response body.
type bodyReader struct {
	t      *Transport
	c      *conn
	ctx    context.Context
	stop   func() bool // stops the context watch
	wrote  chan error  // the stdin writer's result; nil without a body
	script string

	rest []byte // STDOUT content read but not yet returned
	err  error  // sticky: io.EOF at the end
	done atomic.Bool

	mu      sync.Mutex // guards stderr and its truncation
	stderr  []byte
	dropped int
}

// next reads records until STDOUT content arrives, logging STDERR on the
// way; it returns io.EOF after a complete END_REQUEST.
func (b *bodyReader) next() ([]byte, error) {
	for {
		h, content, err := b.c.readRecord()
		if err != nil {
			return nil, err
		}
		switch h.Type {
		case TypeStdout:
			if len(content) > 0 {
				return content, nil
			}
		case TypeStderr:
			b.mu.Lock()
			keep := min(len(content), stderrMax-len(b.stderr))
			b.stderr = append(b.stderr, content[:keep]...)
			b.dropped += len(content) - keep
			b.mu.Unlock()
		case TypeEndRequest:
			e, err := ParseEndRequest(content)
			if err != nil {
				return nil, err
			}
			if e.ProtocolStatus != StatusRequestComplete {
				return nil, fmt.Errorf("%w: protocol status %d", ErrRefused, e.ProtocolStatus)
			}
			return nil, io.EOF
		default:
			return nil, fmt.Errorf("%w: unexpected record type %d", ErrMalformed, h.Type)
		}
	}
}

// readHeaderBlock reads STDOUT up to the blank line that ends the CGI
// header block, returns the block, and keeps what follows in b.rest.
func (b *bodyReader) readHeaderBlock(limit int) ([]byte, error) {
	var hdr []byte
	for {
		content, err := b.next()
		if err != nil {
			if err == io.EOF {
				err = fmt.Errorf("%w after %d bytes", ErrHeaderCut, len(hdr))
			}
			return nil, err
		}
		from := max(len(hdr)-3, 0)
		hdr = append(hdr, content...)
		if end := headerEnd(hdr, from); end >= 0 {
			b.rest = hdr[end:]
			return hdr[:end], nil
		}
		if len(hdr) > limit {
			return nil, fmt.Errorf("%w: more than %d bytes", ErrHeaderTooLarge, limit)
		}
	}
}

// headerEnd returns the offset after the blank line ("\n\n" or
// "\n\r\n") that ends a header block, searching from from, or -1.
func headerEnd(b []byte, from int) int {
	for i := from; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		if i+1 < len(b) && b[i+1] == '\n' {
			return i + 2
		}
		if i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n' {
			return i + 3
		}
	}
	return -1
}

// response builds the *http.Response from the header block.
func (b *bodyReader) response(r *http.Request, block []byte) (*http.Response, error) {
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(block)))
	mh, err := tp.ReadMIMEHeader()
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("fastcgi: parsing response header: %w", err)
	}
	h := http.Header(mh)
	code, reason := http.StatusOK, ""
	if s := h.Get("Status"); s != "" {
		num, text, _ := strings.Cut(strings.TrimSpace(s), " ")
		n, err := strconv.Atoi(num)
		if err != nil || n < 100 || n > 999 {
			return nil, fmt.Errorf("fastcgi: bad Status header %q", s)
		}
		code, reason = n, text
		h.Del("Status")
	} else if h.Get("Location") != "" {
		code = http.StatusFound
	}
	if reason == "" {
		reason = http.StatusText(code)
	}
	length := int64(-1)
	if cl := h.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			length = n
		}
	}
	return &http.Response{
		Status:        strconv.Itoa(code) + " " + reason,
		StatusCode:    code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          b,
		ContentLength: length,
		Request:       r,
	}, nil
}

// Read returns the STDOUT content; io.EOF once END_REQUEST was read.
func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.done.Load() {
		b.err = errors.New("fastcgi: read on closed response body")
		return 0, b.err
	}
	for len(b.rest) == 0 {
		content, err := b.next()
		if err != nil {
			b.finish(err == io.EOF)
			if err != io.EOF {
				if b.ctx.Err() != nil {
					err = fmt.Errorf("%w (%w)", context.Cause(b.ctx), err)
				}
				err = fmt.Errorf("fastcgi: reading response body: %w", err)
			}
			b.err = err
			return 0, err
		}
		b.rest = content
	}
	n := copy(p, b.rest)
	b.rest = b.rest[n:]
	return n, nil
}

// Close ends the body; before its end, it closes the connection.
func (b *bodyReader) Close() error {
	b.finish(false)
	return nil
}

// finish ends the exchange once: on a complete answer whose request body
// was fully written the connection goes back to the idle list, else it is
// closed. It logs the STDERR text.
func (b *bodyReader) finish(complete bool) {
	if b.done.Swap(true) {
		return
	}
	keep := complete && b.stop()
	if keep && b.wrote != nil {
		select {
		case err := <-b.wrote:
			keep = err == nil
		default:
			keep = false // the server ended before reading all stdin
		}
	}
	if keep && b.t.maxIdle() > 0 && b.c.br.Buffered() == 0 {
		b.c.reused = false
		b.c.read = 0
		b.t.putIdle(b.c)
	} else {
		b.stop()
		b.c.close()
	}
	b.mu.Lock()
	text, dropped := string(b.stderr), b.dropped
	b.stderr = nil
	b.mu.Unlock()
	if text != "" {
		attrs := []any{"script", b.script, "stderr", strings.TrimRight(text, "\n")}
		if dropped > 0 {
			attrs = append(attrs, "truncated_bytes", dropped)
		}
		b.t.logger().Warn("fastcgi: application wrote to stderr", attrs...)
	}
}
