package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"portico/internal/spool"
	"portico/internal/uwsgi"
)

// Errors a request can end with; writeError maps each to one HTTP answer.
var (
	ErrQueueFull    = errors.New("worker: request queue full")
	ErrQueueTimeout = errors.New("worker: no free worker within the queue timeout")
	errTimeout      = errors.New("worker: request timed out")
	errCrashed      = errors.New("worker: worker process lost during the request")
	errProtocol     = errors.New("worker: protocol error from worker")
	errApp          = errors.New("worker: application error")
	errBodyTooLarge = errors.New("worker: request body too large")
	errClientBody   = errors.New("worker: reading request body")
	errVarsTooLarge = errors.New("worker: request headers too large for the uwsgi packet")
)

// inlineBody is the largest body sent in the same write as the request head.
const inlineBody = 64 << 10

var packetPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

var copyPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// ServeHTTP runs the request in a worker. The body is read completely before
// a worker is taken; the response is read from the worker into a buffer as
// fast as the worker writes it, so neither a slow upload nor a slow reader
// holds a worker.
func (pl *Pool) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := pl.serve(w, r); err != nil {
		pl.writeError(w, r, err)
	}
}

func (pl *Pool) serve(w http.ResponseWriter, r *http.Request) error {
	rc := http.NewResponseController(w)

	// 1. The body, completely, before a worker is taken.
	var body *spool.Buffer
	var inline []byte
	var length int64
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		if pl.opt.MaxBody > 0 && r.ContentLength > pl.opt.MaxBody {
			return errBodyTooLarge
		}
		body = spool.New(spool.Options{Memory: pl.opt.BodyMemory, Dir: pl.opt.TempDir, MaxSize: pl.opt.MaxBody})
		defer body.Close()
		if _, err := body.ReadFrom(&deadlineReader{r: r.Body, rc: rc, d: pl.opt.ClientTimeout}); err != nil {
			if errors.Is(err, spool.ErrTooLarge) {
				return errBodyTooLarge
			}
			return fmt.Errorf("%w: %w", errClientBody, err)
		}
		_ = rc.SetReadDeadline(time.Time{})
		length = body.Len()
		if data, ok := body.Bytes(); ok && length <= inlineBody {
			inline = data
		}
	}

	// 2. The request packet: uwsgi vars, then a small body in the same write.
	bp := packetPool.Get().(*[]byte)
	defer packetPool.Put(bp)
	pkt, err := uwsgi.AppendRequest((*bp)[:0], r, uwsgi.EnvironOptions{ScriptName: pl.opt.ScriptName, ContentLength: length})
	if err != nil {
		return errVarsTooLarge
	}
	pkt = pkt[:compactVars(pkt)]
	pkt = append(pkt, inline...)
	*bp = pkt

	// 3. A slot, within the queue's bounds; a request whose packet is all
	// of it may be written ahead on a busy slot.
	sendBody := inline == nil && length > 0
	s, written, err := pl.acquire(r.Context(), pkt, !sendBody)
	if err != nil {
		return err
	}

	// 4. The exchange, bounded by the request timeout.
	return pl.exchange(w, r, rc, s, pkt, written, body, sendBody)
}

// acquire takes a free slot, waiting in a bounded queue for a bounded time.
//
// When no slot is free, a request whose packet is complete (canAhead: no
// body to stream after it) may instead be written ahead on a busy slot,
// behind the request running there (HTTP pipelining, one deep): the worker
// then finds it waiting when it finishes the current one and goes on
// without sleeping, which halves its CPU cost per request when every worker
// is busy. written tells the caller that pkt is in the worker already. A
// request waits its turn there, as long as the one before it runs; if that
// one's worker dies, the request is taken elsewhere when the worker had not
// read it (errCrashed if it may have started it).
func (pl *Pool) acquire(ctx context.Context, pkt []byte, canAhead bool) (_ *slot, written bool, err error) {
	w := waiterPool.Get().(*waiter)
	// Every path below leaves w out of the queue with its grant channel
	// empty: a grant is sent only to a waiter taken out of the list, and
	// is then always received.
	defer waiterPool.Put(w)
	limit := max(pl.opt.QueueSize, 0)
	for {
		g, ok, full := pl.q.take(w, canAhead, limit)
		if full {
			return nil, false, ErrQueueFull
		}
		if !ok {
			break // queued
		}
		if s, written, ok, err := pl.use(g, pkt); ok {
			return s, written, err
		}
	}

	// Watch for the client's departure only after clientWatchDelay: asking
	// for ctx.Done makes the server start a read on the connection to see
	// it close, which costs more than the short waits of a busy but
	// healthy server (a client that left during one costs at most a
	// request run for nobody).
	timeout := pl.opt.QueueTimeout
	watchAt := clientWatchDelay
	if timeout <= watchAt {
		watchAt = 0
		w.timer.Reset(timeout)
	} else {
		w.timer.Reset(watchAt)
	}
	defer w.timer.Stop()
	var gone <-chan struct{}
	for {
		var quit error
		select {
		case g := <-w.grant:
			if s, written, ok, err := pl.use(g, pkt); ok {
				return s, written, err
			}
			pl.q.requeue(w) // it keeps its turn
			continue
		case <-w.timer.C:
			if watchAt > 0 && gone == nil {
				gone = ctx.Done()
				w.timer.Reset(timeout - watchAt)
				continue
			}
			quit = ErrQueueTimeout
		case <-gone:
			quit = ctx.Err()
		}
		if pl.q.leave(w) {
			return nil, false, quit
		}
		// A grant is on its way: it wins the race.
		if s, written, ok, err := pl.use(<-w.grant, pkt); ok {
			return s, written, err
		}
		return nil, false, quit
	}
}

// use tries to take what a waiter was granted: an idle slot (which may have
// been closed meanwhile) or a place behind a busy slot's request. ok is
// false when the request must look further.
func (pl *Pool) use(g grant, pkt []byte) (_ *slot, written, ok bool, err error) {
	if !g.ahead {
		if g.taken || g.s.tryAcquire() {
			return g.s, false, true, nil
		}
		return nil, false, false, nil
	}
	return pl.tryAhead(g.s, pkt)
}

// clientWatchDelay is how long a request waits for a worker before the
// wait also ends when the client goes away.
const clientWatchDelay = 100 * time.Millisecond

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

// tryAhead takes s, offered by the request running on it, if
// it still runs that request: by writing pkt behind it and waiting for its
// turn. ok is false when s cannot be taken (the offer is stale) or the
// request must look for another slot.
func (pl *Pool) tryAhead(s *slot, pkt []byte) (_ *slot, written, ok bool, err error) {
	// An idle slot is not taken here: it is in the idle list, where it
	// must be taken from (a slot is there at most once, while idle).
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

// exchange sends the request on s and relays the response. It owns s: every
// path returns it to the pool, hands it to a drain, or closes it.
func (pl *Pool) exchange(w http.ResponseWriter, r *http.Request, rc *http.ResponseController, s *slot, pkt []byte, written bool, body *spool.Buffer, sendBody bool) error {
	start := time.Now()
	deadline := start.Add(pl.opt.Timeout)
	_ = s.conn.SetDeadline(deadline)
	s.seq.Add(1)
	s.started = start
	if !written {
		if _, err := s.conn.Write(pkt); err != nil {
			return pl.lost(s, err, nil)
		}
	}
	if !sendBody {
		// The packet is all there: another may follow it.
		s.aheadOK.Store(true)
		if pl.aheadAllowed(s) {
			pl.q.offer(s)
		}
	}
	var bodyDone chan error
	if sendBody {
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
		return pl.failed(s, err, bodyDone)
	}
	if pl.opt.InternalRedirect != nil && (resp.header["X-Accel-Redirect"] != nil || resp.header["X-Sendfile"] != nil) {
		return pl.redirect(w, r, s, resp, bodyDone)
	}

	// Fast path: the whole response is already buffered (a small response
	// comes in one read): copy it, free the slot, then write to the client.
	bp := copyPool.Get().(*[]byte)
	defer copyPool.Put(bp)
	buf := (*bp)[:0]
	for s.br.Buffered() >= frameHeaderSize {
		typ, n, err := s.fr.next()
		if err != nil {
			return pl.failed(s, err, bodyDone)
		}
		switch typ {
		case frameBody:
			if n > s.br.Buffered() || len(buf)+n > cap(buf) {
				// Not all here, or large: relay it as a stream.
				goto stream
			}
			if buf, err = s.fr.appendPayload(buf); err != nil {
				return pl.failed(s, err, bodyDone)
			}
		case frameEnd:
			if bodyDone != nil {
				if err := <-bodyDone; err != nil {
					return pl.lost(s, err, nil)
				}
			}
			pl.release(s)
			pl.writeHead(w, r, resp, int64(len(buf)), true)
			_ = rc.SetWriteDeadline(time.Now().Add(pl.opt.ClientTimeout))
			if len(buf) > 0 {
				_, _ = w.Write(buf)
			}
			return nil
		case frameError:
			return pl.failed(s, errAppAfterHead, bodyDone)
		default:
			return pl.failed(s, fmt.Errorf("%w: frame %q after the head", errProtocol, typ), bodyDone)
		}
	}
stream:
	return pl.stream(w, r, rc, s, resp, buf, bodyDone)
}

// redirect discards the rest of the worker's response, frees the slot, and
// hands the response to Options.InternalRedirect.
func (pl *Pool) redirect(w http.ResponseWriter, r *http.Request, s *slot, resp *response, bodyDone chan error) error {
	for {
		typ, _, err := s.fr.next()
		if err != nil {
			return pl.failed(s, err, bodyDone)
		}
		if typ == frameError {
			return pl.failed(s, errAppAfterHead, bodyDone)
		}
		if typ != frameEnd {
			continue // next() skips the body frame's payload
		}
		if bodyDone != nil {
			if err := <-bodyDone; err != nil {
				return pl.lost(s, err, nil)
			}
		}
		pl.release(s)
		pl.opt.InternalRedirect(w, r, resp.status, resp.header)
		return nil
	}
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
		reason, err := s.fr.appendPayload(nil)
		if err != nil {
			return nil, err
		}
		if string(reason) == "timeout" {
			return nil, errTimeout
		}
		return nil, fmt.Errorf("%w: %s", errAppHandled, reason)
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

// writeHead writes the status and headers; complete says the body length
// is known (the whole response was read), so Content-Length can be set.
func (pl *Pool) writeHead(w http.ResponseWriter, r *http.Request, resp *response, length int64, complete bool) {
	h := w.Header()
	for k, v := range resp.header {
		h[k] = v
	}
	if complete && bodyAllowed(resp.status) && h.Get("Content-Length") == "" && r.Method != http.MethodHead {
		h.Set("Content-Length", strconv.FormatInt(length, 10))
	}
	w.WriteHeader(resp.status)
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// stream relays a response that did not arrive at once: a goroutine reads
// the worker into a spool (memory, then a temporary file) and frees the slot
// at the end frame; this goroutine writes the spool to the client, flushing
// as data comes, so a streamed response streams and a slow client holds no
// worker.
func (pl *Pool) stream(w http.ResponseWriter, r *http.Request, rc *http.ResponseController, s *slot, resp *response, first []byte, bodyDone chan error) error {
	buf := spool.New(spool.Options{Memory: pl.opt.BodyMemory, Dir: pl.opt.TempDir, MaxLag: pl.opt.MaxResponseBuffer})
	defer buf.Close()
	if len(first) > 0 {
		_, _ = buf.Write(first)
	}
	go pl.pump(s, buf, bodyDone)

	pl.writeHead(w, r, resp, 0, false)
	_ = rc.Flush()
	bp := copyPool.Get().(*[]byte)
	defer copyPool.Put(bp)
	for {
		n, err := buf.Read(*bp)
		if n > 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(pl.opt.ClientTimeout))
			if _, werr := w.Write((*bp)[:n]); werr != nil {
				// The client is gone; the pump drains the worker on its own.
				pl.log.Debug("client went away during the response", "uri", r.RequestURI, "err", werr)
				return nil
			}
			_ = rc.Flush()
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			pl.log.Warn("aborting a response the worker did not finish", "uri", r.RequestURI, "err", err)
			panic(http.ErrAbortHandler)
		}
	}
}

// pump reads the rest of a response from the worker into buf.
// The exchange may hand over in the middle of a body frame.
func (pl *Pool) pump(s *slot, buf *spool.Buffer, bodyDone chan error) {
	if s.scratch == nil {
		s.scratch = make([]byte, 32<<10)
	}
	typ := s.fr.typ
	for {
		if typ == frameBody {
			for s.fr.left > 0 {
				n, err := s.fr.read(s.scratch)
				if n > 0 {
					// A closed buffer (client gone) just discards.
					_, _ = buf.Write(s.scratch[:n])
				}
				if err != nil {
					pl.pumpFailed(s, buf, err, bodyDone)
					return
				}
			}
		}
		var err error
		typ, _, err = s.fr.next()
		if err != nil {
			pl.pumpFailed(s, buf, err, bodyDone)
			return
		}
		switch typ {
		case frameBody:
		case frameEnd:
			if bodyDone != nil {
				if err := <-bodyDone; err != nil {
					buf.CloseWrite(nil)
					pl.lost(s, err, nil)
					return
				}
			}
			pl.release(s)
			buf.CloseWrite(nil)
			return
		case frameError:
			buf.CloseWrite(errAppAfterHead)
			_ = pl.failed(s, errAppAfterHead, bodyDone) // frees s once the body is sent
			return
		default:
			pl.pumpFailed(s, buf, fmt.Errorf("%w: frame %q in a body", errProtocol, typ), bodyDone)
			return
		}
	}
}

func (pl *Pool) pumpFailed(s *slot, buf *spool.Buffer, err error, bodyDone chan error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		buf.CloseWrite(errTimeout)
		go pl.drainAfterTimeout(s, bodyDone)
		return
	}
	buf.CloseWrite(err)
	pl.lost(s, err, bodyDone)
}

// failed handles an exchange that ended before the response started.
func (pl *Pool) failed(s *slot, err error, bodyDone chan error) error {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		go pl.drainAfterTimeout(s, bodyDone)
		return errTimeout
	case errors.Is(err, errTimeout), errors.Is(err, errApp):
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
		s.proc.log.Error("worker broke the protocol; killing it", "err", err)
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

// writeError maps a request's failure to its HTTP answer: the one place
// where errors become statuses. The client gets a short safe message, the
// log gets the cause.
func (pl *Pool) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusBadGateway
	level := slog.LevelError
	switch {
	case errors.Is(err, ErrQueueFull), errors.Is(err, ErrQueueTimeout):
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "1")
		level = slog.LevelWarn
	case errors.Is(err, errTimeout):
		status = http.StatusGatewayTimeout
	case errors.Is(err, errApp):
		status = http.StatusInternalServerError
		level = slog.LevelDebug // worker.py logged the traceback
	case errors.Is(err, errBodyTooLarge):
		status = http.StatusRequestEntityTooLarge
		w.Header().Set("Connection", "close")
		level = slog.LevelWarn
	case errors.Is(err, errVarsTooLarge):
		status = http.StatusRequestHeaderFieldsTooLarge
		level = slog.LevelWarn
	case errors.Is(err, errClientBody):
		status = http.StatusBadRequest
		w.Header().Set("Connection", "close")
		level = slog.LevelInfo
	case errors.Is(err, context.Canceled):
		status = 499 // nginx's "client closed request"; nobody reads it
		level = slog.LevelInfo
	}
	pl.log.Log(r.Context(), level, "request failed", "method", r.Method, "uri", r.RequestURI, "status", status, "err", err)
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, strconv.Itoa(status)+" "+http.StatusText(status)+"\n")
}

// deadlineReader extends the client's read deadline before each read, like
// nginx's client_body_timeout: a stalled upload is dropped, a slow steady
// one is not.
type deadlineReader struct {
	r  io.Reader
	rc *http.ResponseController
	d  time.Duration
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	_ = d.rc.SetReadDeadline(time.Now().Add(d.d))
	return d.r.Read(p)
}

// onlyReader hides a spool.Buffer's ReadFrom/WriteTo from io.Copy.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }
