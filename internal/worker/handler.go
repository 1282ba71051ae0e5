package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"portico/internal/proxy"
	"portico/internal/requestid"
	"portico/internal/uwsgi"
)

// Errors a request can end with. Each names the answer it calls for
// (proxy.StatusError): the proxy handler in front of the pool maps errors
// to answers in one place.
var (
	// errTimeout is logged by drainAfterTimeout, once it knows whether the
	// app unwound or its worker was killed; the proxy handler does not.
	errTimeout       = newStatusError("worker: request timed out", http.StatusGatewayTimeout, slog.LevelDebug)
	errTimeoutApp    = newStatusError("worker: request interrupted at its timeout", http.StatusGatewayTimeout, slog.LevelError)
	errCrashed       = newStatusError("worker: worker process lost during the request", http.StatusBadGateway, slog.LevelError)
	errProtocol      = newStatusError("worker: protocol error from worker", http.StatusBadGateway, slog.LevelError)
	errApp           = newStatusError("worker: application error", http.StatusInternalServerError, slog.LevelError)
	errVarsTooLarge  = newStatusError("worker: request headers too large for the uwsgi packet", http.StatusRequestHeaderFieldsTooLarge, slog.LevelWarn)
	errUnknownLength = newStatusError("worker: request body of unknown length (the proxy handler spools bodies)", http.StatusInternalServerError, slog.LevelError)
)

// statusError is a sentinel error with the answer it calls for.
type statusError struct {
	msg    string
	status int
	level  slog.Level
}

func newStatusError(msg string, status int, level slog.Level) *statusError {
	return &statusError{msg: msg, status: status, level: level}
}

func (e *statusError) Error() string        { return e.msg }
func (e *statusError) HTTPStatus() int      { return e.status }
func (e *statusError) LogLevel() slog.Level { return e.level }

var _ proxy.StatusError = (*statusError)(nil)

// failure is a request's failure in a worker with what its one log record
// needs besides method, URI and status: the worker's pid and, for an
// exception in the app, the Python traceback (one attribute, however many
// lines). The status and level come from the sentinel it wraps.
type failure struct {
	err       error
	pid       int
	traceback string
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

func (f *failure) LogAttrs() []slog.Attr {
	attrs := []slog.Attr{slog.Int("pid", f.pid)}
	if f.traceback != "" {
		attrs = append(attrs, slog.String("traceback", f.traceback))
	}
	return attrs
}

var _ proxy.AttrError = (*failure)(nil)

// withPID returns err as a failure of the worker with that pid.
func withPID(err error, pid int) error {
	if err == nil || errors.Is(err, proxy.ErrRequeue) {
		return err
	}
	var f *failure
	if errors.As(err, &f) {
		return err
	}
	return &failure{err: err, pid: pid}
}

// readAppError reads the payload of an X frame: a one-line reason, then
// the traceback. after says the response had started.
func (s *slot) readAppError(after bool) error {
	payload, err := s.fr.appendPayload(nil)
	if err != nil {
		return err
	}
	reason, tb, _ := strings.Cut(string(payload), "\n")
	f := &failure{pid: s.proc.pid, traceback: strings.TrimRight(tb, "\n")}
	switch {
	case reason == "timeout":
		f.err = errTimeoutApp
	case after:
		f.err = fmt.Errorf("%w: %s", errAppAfterHead, reason)
	default:
		f.err = fmt.Errorf("%w: %s", errAppHandled, reason)
	}
	return f
}

// inlineBody is the largest body sent in the same write as the request head.
const inlineBody = 64 << 10

var packetPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

var copyPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// ServeHTTP serves the request through the pool's proxy handler (see
// NewHandler), which reads the body completely before a worker is taken,
// waits for a slot in the proxy core's first-come, first-served queue, and
// relays the response through a buffer, so that neither a slow upload nor
// a slow reader holds a worker.
func (pl *Pool) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	pl.handler.ServeHTTP(w, r)
}

// slotTransport runs requests on one slot: it is the transport of the
// slot's proxy.Upstream, so that the proxy core's pool hands out the slots
// (first come, first served) and its handler spools, relays and maps
// errors, while the worker keeps what is particular to it: the packet,
// the frames, write-ahead, interrupts and supervision.
type slotTransport struct{ s *slot }

var (
	_ http.RoundTripper    = slotTransport{}
	_ proxy.LeaseTransport = slotTransport{}
)

// RoundTrip runs r on the slot as a lease of free capacity would.
func (t slotTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return t.RoundTripLease(r, proxy.Lease{})
}

// RoundTripLease runs one request in the slot's worker. The body must have
// a known length (r.ContentLength; the proxy handler spools bodies). The
// response's body streams from the worker; the slot is free once the body
// is read to its end (at once for a response that arrived whole) or, after
// Close, once the rest is drained.
//
// A lease of free capacity takes the slot, idle as the pool's accounting
// says it is; a lease of a place behind the slot's running request (l.Ahead)
// writes the request behind it (see tryAhead). Either may find the slot
// gone meanwhile (closed, interrupted, the place taken): the answer is then
// proxy.ErrRequeue, nothing having been sent, and the request asks the
// pool again at the head of its queue.
func (t slotTransport) RoundTripLease(r *http.Request, l proxy.Lease) (*http.Response, error) {
	s := t.s
	pl := s.pool
	length := int64(0)
	if r.Body != nil && r.Body != http.NoBody {
		defer r.Body.Close()
		if r.ContentLength < 0 {
			return nil, errUnknownLength
		}
		length = r.ContentLength
	}

	// The request packet: uwsgi vars, then a small body in the same write.
	bp := packetPool.Get().(*[]byte)
	defer packetPool.Put(bp)
	pkt, err := uwsgi.AppendRequest((*bp)[:0], r, uwsgi.EnvironOptions{ScriptName: pl.opt.ScriptName, ContentLength: length})
	if err != nil {
		return nil, errVarsTooLarge
	}
	pkt = pkt[:compactVars(pkt)]
	sendBody := length > inlineBody
	if length > 0 && !sendBody {
		n := len(pkt)
		pkt = slices.Grow(pkt, int(length))[:n+int(length)]
		if _, err := io.ReadFull(r.Body, pkt[n:]); err != nil {
			*bp = pkt[:0]
			return nil, fmt.Errorf("worker: reading the request body: %w", err)
		}
	}
	*bp = pkt

	written := false
	switch {
	case l.Ahead():
		// A place behind the request running on s (write-ahead: see
		// Pool.Offer and tryAhead).
		if sendBody {
			return nil, proxy.ErrRequeue
		}
		var ok bool
		if _, written, ok, err = pl.tryAhead(s, pkt); !ok {
			return nil, proxy.ErrRequeue
		} else if err != nil {
			return nil, err
		}
	case !s.tryAcquire():
		return nil, proxy.ErrRequeue // closed or unwinding meanwhile
	}
	var body io.Reader
	if sendBody {
		body = io.LimitReader(r.Body, length)
	}
	// The exchange, bounded by the request timeout.
	resp, err := pl.exchange(r, s, pkt, written, body)
	return resp, withPID(err, s.proc.pid)
}

// aheadMaxService disables writing ahead for an app whose requests take
// longer than this on average: a request written ahead waits for the one
// before it even if another worker frees up meanwhile, which costs little
// behind short requests and too much behind long ones, and what it saves
// (a worker's sleep and wake-up, about 20 us) only counts for short ones.
// (At 20 ms the p99 of a 4 ms Django page doubled in the benchmark.)
const aheadMaxService = 2 * time.Millisecond

// aheadAllowed reports whether a request may be written ahead behind the
// one running on s: the app's requests are short and s's worker is not
// being recycled.
func (pl *Pool) aheadAllowed(s *slot) bool {
	return !s.proc.recycling.Load() && time.Duration(pl.serviceTime.Load()) <= aheadMaxService
}

// tryAhead takes s, offered by the request running on it (proxy.Pool's
// Offer, made by exchange once that request's packet is all written), if
// it still runs that request: by writing pkt behind it and waiting for its
// turn. When every worker is busy, the worker then finds the next request
// waiting when it finishes the current one and goes on without sleeping,
// which halves its CPU per request for short requests. ok is false when s
// cannot be taken (the offer is stale) or the request must look for
// another slot (the worker died before reading it).
func (pl *Pool) tryAhead(s *slot, pkt []byte) (_ *slot, written, ok bool, err error) {
	// An idle slot is not taken here: an idle slot is free capacity, which
	// the pool hands out as such.
	if s.state.Load() != slotBusy || !s.aheadOK.Load() || s.proc.state.Load() != stateReady || !pl.aheadAllowed(s) {
		return nil, false, false, nil
	}
	a := &ahead{turn: make(chan turn, 1)}
	if !s.next.CompareAndSwap(nil, a) {
		return nil, false, false, nil
	}
	// Check again now that the slot cannot go idle: the request before us
	// may have ended (the slot then idle, or taken by a request that
	// streams its body) between the checks and the swap.
	if s.state.Load() != slotBusy || !s.aheadOK.Load() {
		if s.next.CompareAndSwap(a, nil) {
			return nil, false, false, nil
		}
		// Its end handed the slot to us meanwhile: nothing is written yet.
		if t := <-a.turn; t == turnYours {
			return s, false, true, nil
		}
		return nil, false, false, nil
	}
	_, werr := s.conn.Write(pkt)
	switch t := <-a.turn; {
	case t == turnYours && werr != nil:
		return nil, false, true, pl.lost(s, werr, nil)
	case t == turnYours:
		pl.aheads.Add(1)
		return s, true, true, nil
	case t == turnRetry:
		pl.aheadRetries.Add(1)
		return nil, false, false, nil
	default:
		return nil, false, true, fmt.Errorf("%w: the worker died after the request was sent to it", errCrashed)
	}
}

// response is what the worker sent, parsed.
type response struct {
	status int
	header http.Header
}

// exchange sends the request on s and returns the response. It owns s:
// every path returns it to the pool, hands it to a drain, closes it, or
// gives it to the returned response's body.
func (pl *Pool) exchange(r *http.Request, s *slot, pkt []byte, written bool, body io.Reader) (*http.Response, error) {
	start := time.Now()
	deadline := start.Add(pl.opt.Timeout)
	_ = s.conn.SetDeadline(deadline)
	s.seq.Add(1)
	s.started = start
	uri := r.RequestURI
	if uri == "" {
		uri = r.URL.RequestURI()
	}
	s.cur.Store(&running{method: r.Method, uri: uri, since: start})
	if !written {
		if _, err := s.conn.Write(pkt); err != nil {
			return nil, pl.lost(s, err, nil)
		}
	}
	var bodyDone chan error
	if body == nil {
		// The packet is all there: another may follow it.
		s.aheadOK.Store(true)
		if pl.aheadAllowed(s) {
			pl.pp.Offer(s.up)
		}
	} else {
		// A large body goes in its own goroutine: the app may answer before
		// reading it all, and the response must be read meanwhile.
		bodyDone = make(chan error, 1)
		go func() {
			bp := copyPool.Get().(*[]byte)
			defer copyPool.Put(bp)
			_, err := io.CopyBuffer(s.conn, onlyReader{body}, *bp)
			bodyDone <- err
		}()
	}

	// The head frame.
	resp, err := pl.readHead(s)
	if err != nil {
		return nil, pl.failed(r, s, err, bodyDone)
	}
	out := &http.Response{
		Status:        statusLine(resp.status),
		StatusCode:    resp.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        resp.header,
		ContentLength: -1,
		Request:       r,
	}

	// Fast path: the whole response is already buffered (a small response
	// comes in one read): copy it and free the slot before returning.
	bb := bodyPool.Get().(*bufBody)
	buf := bb.buf[:0]
	for s.br.Buffered() >= frameHeaderSize {
		typ, n, err := s.fr.next()
		if err != nil {
			bb.put()
			return nil, pl.failed(r, s, err, bodyDone)
		}
		switch typ {
		case frameBody:
			if n > s.br.Buffered() || len(buf)+n > cap(buf) {
				// Not all here, or large: the body streams.
				goto stream
			}
			if buf, err = s.fr.appendPayload(buf); err != nil {
				bb.put()
				return nil, pl.failed(r, s, err, bodyDone)
			}
		case frameEnd:
			if bodyDone != nil {
				if err := <-bodyDone; err != nil {
					bb.put()
					return nil, pl.lost(s, err, nil)
				}
			}
			pl.release(s)
			bb.buf, bb.off = buf, 0
			out.ContentLength = int64(len(buf))
			out.Body = bb
			return out, nil
		case frameError:
			// The response has not left: the client gets 500.
			bb.put()
			err := s.readAppError(false)
			return nil, pl.failed(r, s, err, bodyDone)
		default:
			bb.put()
			return nil, pl.failed(r, s, fmt.Errorf("%w: frame %q after the head", errProtocol, typ), bodyDone)
		}
	}
stream:
	if v := resp.header["Content-Length"]; len(v) == 1 {
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil && n >= 0 {
			out.ContentLength = n
		}
	}
	bb.buf = buf
	out.Body = &streamBody{pl: pl, s: s, req: r, status: resp.status, first: buf, bb: bb, bodyDone: bodyDone}
	return out, nil
}

// bufBody is the body of a response that arrived whole, in a buffer that
// goes back to the pool with it on Close.
type bufBody struct {
	buf []byte
	off int
}

var bodyPool = sync.Pool{New: func() any { return &bufBody{buf: make([]byte, 0, 32<<10)} }}

func (b *bufBody) Read(p []byte) (int, error) {
	if b.off >= len(b.buf) {
		return 0, io.EOF
	}
	n := copy(p, b.buf[b.off:])
	b.off += n
	return n, nil
}

// Close puts b back in the pool: it must not be used after.
func (b *bufBody) Close() error {
	b.put()
	return nil
}

func (b *bufBody) put() {
	if cap(b.buf) == 32<<10 {
		b.buf, b.off = b.buf[:0], 0
		bodyPool.Put(b)
	}
}

// statusLines holds "200 OK" and the like, so that a response's Status
// costs nothing.
var statusLines = func() (lines [600]string) {
	for code := 100; code < len(lines); code++ {
		if text := http.StatusText(code); text != "" {
			lines[code] = strconv.Itoa(code) + " " + text
		}
	}
	return lines
}()

func statusLine(code int) string {
	if code >= 0 && code < len(statusLines) && statusLines[code] != "" {
		return statusLines[code]
	}
	return strconv.Itoa(code)
}

// streamBody streams the rest of a response from the worker's slot. The
// exchange may hand over in the middle of a body frame. At the end frame
// the slot is released; an error ends the exchange as the error says
// (interrupt after a timeout, crash, protocol error).
type streamBody struct {
	pl       *Pool
	s        *slot
	req      *http.Request // for the log record of a timeout
	status   int           // the status sent
	first    []byte        // body bytes read before the handover
	bb       *bufBody      // holds first
	bodyDone chan error
	done     bool
	err      error // after done: what Read returns
}

func (b *streamBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, b.err
	}
	if len(b.first) > 0 {
		n := copy(p, b.first)
		b.first = b.first[n:]
		return n, nil
	}
	s := b.s
	for {
		if s.fr.typ == frameBody && s.fr.left > 0 {
			n, err := s.fr.read(p)
			if err != nil {
				return n, b.fail(err)
			}
			return n, nil
		}
		typ, _, err := s.fr.next()
		if err != nil {
			return 0, b.fail(err)
		}
		switch typ {
		case frameBody:
		case frameEnd:
			b.finish(io.EOF)
			if b.bodyDone != nil {
				if err := <-b.bodyDone; err != nil {
					b.err = b.pl.lost(s, err, nil)
					return 0, b.err
				}
			}
			b.pl.release(s)
			return 0, io.EOF
		case frameError:
			err := s.readAppError(true)
			var f *failure
			if !errors.As(err, &f) {
				return 0, b.fail(err)
			}
			b.finish(err)
			_ = b.pl.failed(b.req, s, err, b.bodyDone) // frees s once the body is sent
			return 0, err
		default:
			return 0, b.fail(fmt.Errorf("%w: frame %q in a body", errProtocol, typ))
		}
	}
}

// finish marks the body done with err and gives the buffer back.
func (b *streamBody) finish(err error) {
	b.done, b.err = true, err
	if b.bb != nil {
		b.bb.put()
		b.bb, b.first = nil, nil
	}
}

// fail ends the exchange after a read error.
func (b *streamBody) fail(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		b.finish(errTimeout)
		b.pl.pp.Pause(b.s.up)
		go b.pl.drainAfterTimeout(b.s, b.bodyDone, b.req, b.status)
		return errTimeout
	}
	b.finish(nil)
	b.err = withPID(b.pl.lost(b.s, err, b.bodyDone), b.s.proc.pid)
	return b.err
}

// Close, before the end, lets the rest of the response drain in the
// background (the client went away, or the response was taken over): the
// slot is free once the app is done, within the request's timeout. The
// slot is paused in the pool meanwhile, since the request's lease ends
// now.
func (b *streamBody) Close() error {
	if !b.done {
		b.first = nil
		pp, up := b.pl.pp, b.s.up
		pp.Pause(up)
		go func() {
			defer pp.Resume(up)
			_, err := io.Copy(io.Discard, onlyReader{b})
			// Nobody reads the response any more, so the proxy handler
			// will not log the app's exception: its record is written here.
			var f *failure
			if errors.As(err, &f) && errors.Is(err, errApp) {
				attrs := []slog.Attr{slog.String("method", b.req.Method), slog.String("uri", b.req.RequestURI), slog.Int("status", b.status)}
				if id := requestid.Of(b.req); id != "" {
					attrs = append(attrs, slog.String("request_id", id))
				}
				attrs = append(attrs, slog.Any("err", err))
				attrs = append(attrs, f.LogAttrs()...)
				b.s.proc.log.LogAttrs(context.Background(), slog.LevelError, "application error after the client went away", attrs...)
			}
		}()
	}
	return nil
}

// errAppAfterHead marks an X frame once the head was read: the response was
// started, so the client connection is aborted rather than answered 500.
var errAppAfterHead = fmt.Errorf("%w after the response started", errApp)

// readHead reads frames up to and including the head frame.
func (pl *Pool) readHead(s *slot) (*response, error) {
	typ, _, err := s.fr.next()
	if err != nil {
		return nil, err
	}
	switch typ {
	case frameHead:
	case frameError:
		return nil, s.readAppError(false)
	default:
		return nil, fmt.Errorf("%w: frame %q before the head", errProtocol, typ)
	}
	bp := packetPool.Get().(*[]byte)
	defer packetPool.Put(bp)
	head, err := s.fr.appendPayload((*bp)[:0])
	*bp = head
	if err != nil {
		return nil, err
	}
	return parseHead(head)
}

// errAppHandled: the worker reported an app error before the head and is
// ready for the next request.
var errAppHandled = fmt.Errorf("%w", errApp)

// parseHead parses "200 OK\r\nName: value\r\n...".
func parseHead(head []byte) (*response, error) {
	text := string(head)
	line, rest, _ := strings.Cut(text, "\r\n")
	if len(line) < 3 {
		return nil, fmt.Errorf("%w: status line %q", errProtocol, line)
	}
	code, err := strconv.Atoi(line[:3])
	if err != nil || code < 100 || code > 999 {
		return nil, fmt.Errorf("%w: status line %q", errProtocol, line)
	}
	// One map of the right size and one array for the values.
	n := strings.Count(rest, "\r\n")
	resp := &response{status: code, header: make(http.Header, n)}
	values := make([]string, n)
	for rest != "" {
		line, rest, _ = strings.Cut(rest, "\r\n")
		name, value, ok := strings.Cut(line, ": ")
		if !ok {
			return nil, fmt.Errorf("%w: header line %q", errProtocol, line)
		}
		key := http.CanonicalHeaderKey(name) // no copy when canonical already
		if hopByHop[key] {
			continue
		}
		if vv, ok := resp.header[key]; ok {
			resp.header[key] = append(vv, value)
			continue
		}
		if len(values) == 0 { // a last line without its CRLF
			values = make([]string, 1)
		}
		values[0] = value
		resp.header[key] = values[:1:1]
		values = values[1:]
	}
	return resp, nil
}

// hopByHop headers belong to one connection; PEP 3333 forbids apps to send
// them and the front manages its own.
var hopByHop = map[string]bool{
	"Connection":        true,
	"Keep-Alive":        true,
	"Proxy-Connection":  true,
	"Transfer-Encoding": true,
	"Upgrade":           true,
	"Te":                true,
	"Trailer":           true,
}

// failed handles an exchange that ended before the response started.
func (pl *Pool) failed(r *http.Request, s *slot, err error, bodyDone chan error) error {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		pl.pp.Pause(s.up)
		go pl.drainAfterTimeout(s, bodyDone, r, http.StatusGatewayTimeout)
		return errTimeout
	case errors.Is(err, errTimeoutApp), errors.Is(err, errApp):
		// The worker said so with an X frame and is ready again (once it
		// has read the whole body).
		if bodyDone != nil {
			if berr := <-bodyDone; berr != nil {
				pl.lost(s, berr, nil)
				return err
			}
		}
		pl.release(s)
		return err
	default:
		return pl.lost(s, err, bodyDone)
	}
}

// lost closes a slot whose connection failed: the worker died or broke the
// protocol. A protocol error also kills the worker: its state is unknown.
func (pl *Pool) lost(s *slot, err error, bodyDone chan error) error {
	// The current response did not end, so the worker never read a request
	// written ahead; a protocol error leaves that unknown.
	t := turnRetry
	if errors.Is(err, errProtocol) {
		t = turnFailed
	}
	s.broken(t)
	if errors.Is(err, errProtocol) {
		// The request's record (the proxy handler's) says why.
		s.proc.killed.Store(true)
		s.proc.kill()
	}
	if bodyDone != nil {
		<-bodyDone
	}
	if errors.Is(err, errProtocol) {
		return err
	}
	return fmt.Errorf("%w: %w", errCrashed, err)
}

// onlyReader hides a reader's WriteTo from io.Copy (and a writer's
// ReadFrom its type).
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }
