package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"portico/internal/spool"
)

// Options configure a Handler. Zero values get the defaults noted.
type Options struct {
	// Pool holds the upstreams. Required.
	Pool *Pool
	// Timeout bounds the wait for the upstream's response head, and then
	// each wait for more of its body (nginx's proxy_read_timeout): a slow
	// upstream is answered 504, a stalled body aborts. Zero: 60s.
	// Negative: none here, the transport keeps its own (the worker pool,
	// which interrupts the app at its timeout).
	Timeout time.Duration
	// Retries is how many more upstreams a failed request may be tried on
	// (see the package doc for which failures qualify). Zero: none.
	Retries int
	// TryDuration bounds the time spent trying: no retry starts after it
	// (Caddy's try_duration). Zero: only Retries bounds them.
	TryDuration time.Duration
	// Unbuffered streams the request body to the upstream as it arrives and
	// the response to the client as it comes, flushing each read: for
	// server-sent events and long polls. A request streamed this way is not
	// retried once its body was read. False (the default): the request body
	// is read completely first (memory, then a temporary file) and the
	// response is read as fast as the upstream sends it, so that neither a
	// slow upload nor a slow reader holds an upstream connection (nginx's
	// proxy_request_buffering and proxy_buffering).
	Unbuffered bool
	// Gateway says the upstreams speak a gateway protocol (uwsgi,
	// FastCGI) rather than HTTP, as nginx's uwsgi_pass and fastcgi_pass:
	// the client's address, scheme and Host travel as variables
	// (REMOTE_ADDR, HTTPS, HTTP_HOST), so the client's Host is kept and no
	// X-Forwarded-* header is added; and the body length must be known
	// before sending, so a body of unknown length (chunked) is spooled even
	// when Unbuffered.
	Gateway bool
	// PreserveHost sends the client's Host header. False: the upstream's
	// host (nginx's default, proxy_set_header Host $proxy_host).
	PreserveHost bool
	// HeadersUp are set or removed on the outgoing request, in order.
	HeadersUp []HeaderOp
	// MaxBody is the largest request body accepted; larger gets 413.
	// Zero: 10 MiB. Negative: no limit.
	MaxBody int64
	// BodyMemory is how much of a body (either way) is kept in memory before
	// it spills to a temporary file. Zero: 1 MiB.
	BodyMemory int64
	// MaxResponseBuffer bounds how far a response is read ahead of a slow
	// client; past it the upstream waits. Zero: 1 GiB (nginx's
	// proxy_max_temp_file_size).
	MaxResponseBuffer int64
	// TempDir holds spilled bodies (unlinked at once). Empty: os.TempDir().
	TempDir string
	// (There is no client timeout here: every listener bounds each read of
	// a request body and each write of a response itself, as nginx's
	// client_body_timeout and send_timeout: server.Options.BodyTimeout and
	// SendTimeout on every listener, HTTP, HTTPS and uwsgi.)
	//
	// WebSocketTimeout closes a switched (WebSocket) connection after this
	// long without a byte either way. Zero: 1h.
	WebSocketTimeout time.Duration
	// Ahead lets a request whose body is at most AheadMaxBody bytes take a
	// place an upstream offers behind the request it runs (Pool.Offer:
	// the worker pool's write-ahead) when no capacity is free.
	Ahead        bool
	AheadMaxBody int64
	// Rewrite, when set, adjusts each outgoing request before it is sent
	// (its URL, its headers); it runs after the forwarding headers are set.
	Rewrite func(out *http.Request)
	// Intercept, when set, sees each upstream response head; returning a
	// handler takes the response over: the upstream body is discarded, the
	// lease released, and the handler answers instead (X-Accel-Redirect,
	// X-Sendfile, error pages). Nil result: the response is relayed.
	Intercept func(r *http.Request, resp *http.Response) http.HandlerFunc
	// ResponseHead, when set, sees the header of each upstream response
	// to be relayed or intercepted, before Intercept, and may change it
	// (the bans an app asks for with X-Portico-Block: the header is taken
	// out and acted on).
	ResponseHead func(r *http.Request, h http.Header)
	// Logger receives request failures. Nil: slog.Default().
	Logger *slog.Logger
}

// Handler is an http.Handler that proxies requests to a Pool's upstreams.
type Handler struct {
	opt Options
	log *slog.Logger
}

var _ http.Handler = (*Handler)(nil)

// New returns a Handler; opt.Pool is required.
func New(opt Options) (*Handler, error) {
	if opt.Pool == nil {
		return nil, errors.New("proxy: no pool")
	}
	if opt.Timeout == 0 {
		opt.Timeout = 60 * time.Second
	}
	if opt.MaxBody == 0 {
		opt.MaxBody = 10 << 20
	}
	if opt.BodyMemory <= 0 {
		opt.BodyMemory = 1 << 20
	}
	if opt.MaxResponseBuffer <= 0 {
		opt.MaxResponseBuffer = 1 << 30
	}
	if opt.WebSocketTimeout <= 0 {
		opt.WebSocketTimeout = time.Hour
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	return &Handler{opt: opt, log: opt.Logger}, nil
}

// Pool returns the handler's pool.
func (h *Handler) Pool() *Pool { return h.opt.Pool }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h.serve(w, r); err != nil {
		h.writeError(w, r, err)
	}
}

// AccelRedirect returns an Intercept that hands responses carrying
// X-Accel-Redirect (nginx's convention) or X-Sendfile to redirect, which
// serves the file they name with the upstream's status and headers.
func AccelRedirect(redirect func(w http.ResponseWriter, r *http.Request, status int, header http.Header)) func(*http.Request, *http.Response) http.HandlerFunc {
	return func(r *http.Request, resp *http.Response) http.HandlerFunc {
		if resp.Header["X-Accel-Redirect"] == nil && resp.Header["X-Sendfile"] == nil {
			return nil
		}
		status, header := resp.StatusCode, resp.Header
		return func(w http.ResponseWriter, r *http.Request) { redirect(w, r, status, header) }
	}
}

// idempotent reports whether r may be sent twice (RFC 9110 §9.2.2), or
// carries an Idempotency-Key saying so.
func idempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return r.Header.Get("Idempotency-Key") != "" || r.Header.Get("X-Idempotency-Key") != ""
}

// retryStatus: answers that say "try elsewhere" for an idempotent request
// (nginx's proxy_next_upstream http_502 http_503 http_504), and count as
// failures for passive health.
func retryStatus(code int) bool {
	return code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
}

var copyPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// smallResponse is the largest response (with a Content-Length) read whole
// before the client gets a byte: one write instead of a relay goroutine.
const smallResponse = 32 << 10

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) error {
	rc := http.NewResponseController(w)
	start := time.Now()

	// 1. The body: spooled completely, unless streamed.
	var body *spool.Buffer
	length := int64(0)
	streamBody := false
	inspect := inspectorFrom(r.Context())
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		if h.opt.MaxBody > 0 && r.ContentLength > h.opt.MaxBody {
			return errBodyTooLarge
		}
		if h.opt.Unbuffered && (r.ContentLength > 0 || !h.opt.Gateway) && inspect == nil {
			streamBody, length = true, r.ContentLength
		} else {
			body = spool.New(spool.Options{Memory: h.opt.BodyMemory, Dir: h.opt.TempDir, MaxSize: max(h.opt.MaxBody, 0)})
			defer body.Close()
			if _, err := body.ReadFrom(r.Body); err != nil {
				if errors.Is(err, spool.ErrTooLarge) {
					return errBodyTooLarge
				}
				return fmt.Errorf("%w: %w", errClientBody, err)
			}
			length = body.Len()
		}
	}
	if inspect != nil {
		var rd io.Reader = http.NoBody
		if body != nil {
			rd = replay(body)
		}
		if refuse := inspect(r, rd, length); refuse != nil {
			refuse(w, r)
			return nil
		}
	}

	// 2. The outgoing request, shared by the tries. A gateway upstream
	// (uwsgi, FastCGI, the local workers) without header rules gets the
	// client's request as it is (its transport reads it, never changes
	// it): no copy of the headers on the hot path.
	out := r
	if !h.opt.Gateway || len(h.opt.HeadersUp) > 0 || h.opt.Rewrite != nil {
		out = r.Clone(r.Context())
		forwardHeaders(out.Header, r, h.opt.HeadersUp, !h.opt.Gateway)
		out.Close = false
		if !h.opt.PreserveHost && !h.opt.Gateway {
			out.Host = ""
		}
	}
	_, upgrade := isUpgrade(r.Header)

	// 3. Tries.
	var tried []*Upstream
	var bodyRead *atomic.Bool // a streamed body was (maybe) consumed: no retry
	if streamBody {
		bodyRead = new(atomic.Bool)
	}
	var lastErr error
	canAhead := h.opt.Ahead && !streamBody && length <= h.opt.AheadMaxBody
	requeues := 0
	var requeued *Lease
	for attempt := 0; ; attempt++ {
		var lease Lease
		var err error
		if requeued != nil {
			lease, requeued = *requeued, nil
		} else {
			lease, err = h.opt.Pool.Acquire(r.Context(), r, tried, attempt > 0, canAhead)
		}
		if err != nil {
			if lastErr != nil && errors.Is(err, ErrNoUpstream) {
				return lastErr // the upstreams left were all tried
			}
			return err
		}
		u := lease.Upstream()
		u.requests.Add(1)
		if lastErr != nil {
			h.log.Info("retrying on another upstream", "method", r.Method, "uri", r.RequestURI, "upstream", u.Name, "after", lastErr)
		}

		dl := h.newDeadline(r.Context())
		req := out
		if out != r || body != nil || streamBody || dl.cancel != nil || r.ContentLength != length {
			// A copy for this try (a gateway GET goes as it came).
			req = new(http.Request)
			*req = *out
			req.ContentLength = length
			if dl.cancel != nil {
				req = req.WithContext(dl.ctx)
			}
		}
		if !h.opt.Gateway {
			target := *out.URL
			req.URL = &target
			req.URL.Scheme, req.URL.Host = u.URL.Scheme, u.URL.Host
			if req.Host == "" {
				req.Host = u.URL.Host
			}
		}
		switch {
		case body != nil:
			req.Body = io.NopCloser(replay(body))
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(replay(body)), nil }
		case streamBody:
			req.Body = &trackedBody{r: r.Body, read: bodyRead}
		case req != r:
			req.Body = http.NoBody
		}
		if h.opt.Rewrite != nil {
			h.opt.Rewrite(req)
		}
		tryStart := time.Now()
		var resp *http.Response
		if lt, ok := u.Transport.(LeaseTransport); ok {
			resp, err = lt.RoundTripLease(req, lease)
		} else {
			resp, err = u.Transport.RoundTrip(req)
		}
		if errors.Is(err, ErrRequeue) && requeues < maxRequeues {
			// Nothing was sent: ask again, first in line.
			dl.end()
			u.requests.Add(-1)
			requeues++
			attempt--
			next, err := h.opt.Pool.Requeue(r.Context(), r, lease, tried, canAhead)
			if err != nil {
				return err
			}
			requeued = &next
			continue
		}
		if err == nil && !upgrade && retryStatus(resp.StatusCode) {
			err = fmt.Errorf("%w: %d", errBadStatus, resp.StatusCode)
			if h.canRetry(r, attempt, start, false, bodyRead != nil && bodyRead.Load()) && h.opt.Pool.other(u, tried) {
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
			} else {
				// No retry left: the upstream's own error page goes out.
				h.opt.Pool.Fail(u, err)
				return h.relay(w, r, rc, lease, resp, dl)
			}
		}
		if err != nil {
			timedOut := dl.timedOut()
			dl.end()
			lease.Release()
			if timedOut {
				err = fmt.Errorf("%w after %s: %w", errTimeout, h.opt.Timeout, err)
			} else if r.Context().Err() != nil {
				return r.Context().Err()
			}
			h.opt.Pool.Fail(u, err)
			if !h.canRetry(r, attempt, start, notSent(err), bodyRead != nil && bodyRead.Load()) {
				return upstreamFailed(u, err)
			}
			u.retries.Add(1)
			tried = append(tried, u)
			lastErr = upstreamFailed(u, err)
			continue
		}
		h.opt.Pool.Succeed(u, time.Since(tryStart))
		if upgrade && resp.StatusCode == http.StatusSwitchingProtocols {
			dl.stop()
			return h.switchProtocols(w, r, rc, lease, resp, dl)
		}
		return h.relay(w, r, rc, lease, resp, dl)
	}
}

// maxRequeues bounds how often one request asks the pool again after an
// unusable lease (ErrRequeue), so that a broken transport cannot spin.
const maxRequeues = 64

// LeaseTransport is a transport that wants to know the lease its request
// runs under (whether it is a place offered behind a running request: the
// worker pool's write-ahead). The Handler calls RoundTripLease instead of
// RoundTrip for it.
type LeaseTransport interface {
	RoundTripLease(r *http.Request, l Lease) (*http.Response, error)
}

// deadline is one try's upstream timeout: a context cancelled with
// errTimeout when the timer fires, the timer restarted at each read of the
// body. Without a timeout (Options.Timeout negative: the transport keeps
// its own) it is inert and costs nothing.
type deadline struct {
	ctx    context.Context
	cancel context.CancelCauseFunc // nil: no timeout
	timer  *time.Timer
	watch  *time.Timer // starts watching the client, see newDeadline
	d      time.Duration
}

// newDeadline starts a try's timeout. The try's context keeps the
// request's values (the uwsgi Origin, the local address) but not its
// cancellation: asking the request's context for Done makes the server
// watch the client's connection (a goroutine and a read, measured at 4% of
// the CPU of a proxied request), which costs more than a short exchange is
// worth. A try still running after clientWatchDelay is tied to the client:
// a client that has left cancels it.
func (h *Handler) newDeadline(parent context.Context) deadline {
	if h.opt.Timeout < 0 {
		return deadline{ctx: parent}
	}
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(parent))
	d := deadline{ctx: ctx, cancel: cancel, d: h.opt.Timeout}
	d.timer = time.AfterFunc(h.opt.Timeout, func() { cancel(errTimeout) })
	d.watch = time.AfterFunc(clientWatchDelay, func() {
		go func() {
			select {
			case <-parent.Done():
				cancel(context.Cause(parent))
			case <-ctx.Done():
			}
		}()
	})
	return d
}

// reset restarts the timer: more data came.
func (d deadline) reset() {
	if d.timer != nil {
		d.timer.Reset(d.d)
	}
}

// stop stops the timers; the context stays open.
func (d deadline) stop() {
	if d.timer != nil {
		d.timer.Stop()
		d.watch.Stop()
	}
}

// end stops the timers and releases the context.
func (d deadline) end() {
	if d.cancel != nil {
		d.timer.Stop()
		d.watch.Stop()
		d.cancel(nil)
	}
}

// timedOut reports whether the timer fired.
func (d deadline) timedOut() bool {
	return d.cancel != nil && errors.Is(context.Cause(d.ctx), errTimeout)
}

// canRetry decides whether a failed try may be followed by another: within
// Retries and TryDuration; a request the upstream never got always, other
// failures only for an idempotent request whose body can be sent again.
func (h *Handler) canRetry(r *http.Request, attempt int, start time.Time, unsent, bodyRead bool) bool {
	if attempt >= h.opt.Retries {
		return false
	}
	if h.opt.TryDuration > 0 && time.Since(start) >= h.opt.TryDuration {
		return false
	}
	if unsent {
		return true
	}
	return idempotent(r) && !bodyRead
}

// relay sends the upstream's response to the client. It owns lease,
// cancel and timer.
func (h *Handler) relay(w http.ResponseWriter, r *http.Request, rc *http.ResponseController, lease Lease, resp *http.Response, dl deadline) error {
	released := false
	release := func() {
		if !released {
			released = true
			dl.stop()
			lease.Release()
		}
	}
	handedOff := false
	defer func() {
		if !handedOff {
			release()
			dl.end()
		}
	}()
	if h.opt.ResponseHead != nil {
		h.opt.ResponseHead(r, resp.Header)
	}
	if h.opt.Intercept != nil {
		if fn := h.opt.Intercept(r, resp); fn != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			release()
			fn(w, r)
			return nil
		}
	}
	var body io.Reader = resp.Body
	if dl.cancel != nil {
		body = &timeoutBody{r: resp.Body, dl: dl}
	}
	hd := w.Header()
	removeHopByHop(resp.Header)
	if !h.opt.PreserveHost && !h.opt.Gateway {
		rewriteLocation(resp.Header, lease.Upstream().URL)
	}
	for k, v := range resp.Header {
		hd[k] = v
	}
	noBody := r.Method == http.MethodHead || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified || resp.StatusCode < 200

	// Small and complete: read it all, free the upstream, then write.
	if !h.opt.Unbuffered && !noBody && resp.ContentLength >= 0 && resp.ContentLength <= smallResponse {
		bp := copyPool.Get().(*[]byte)
		defer copyPool.Put(bp)
		buf := (*bp)[:resp.ContentLength]
		_, err := io.ReadFull(body, buf)
		if err == nil {
			// Read on to the body's end (nothing more is there): a
			// transport frees its connection or worker at the end it sees,
			// not at Close before it.
			var one [1]byte
			if n, _ := body.Read(one[:]); n > 0 {
				err = fmt.Errorf("%w: more body than its Content-Length", errUpstream)
			}
		}
		resp.Body.Close()
		if err != nil {
			return h.bodyError(lease.Upstream(), err)
		}
		release()
		if _, ok := hd["Content-Length"]; !ok {
			hd["Content-Length"] = []string{strconv.FormatInt(resp.ContentLength, 10)}
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(buf)
		return nil
	}
	if noBody {
		_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
		resp.Body.Close()
		release()
		w.WriteHeader(resp.StatusCode)
		return nil
	}

	handedOff = true // relayStream owns the lease and the deadline now
	return h.relayStream(w, r, rc, lease, resp, dl, body)
}

// relayStream relays a response that is not read whole first. Buffered
// (the default), a goroutine reads the upstream into a spool as fast as it
// sends and releases the lease at its end, while this one feeds the
// client; unbuffered, each read goes to the client at once. It owns lease
// and dl.
func (h *Handler) relayStream(w http.ResponseWriter, r *http.Request, rc *http.ResponseController, lease Lease, resp *http.Response, dl deadline, body io.Reader) error {
	var src io.Reader = body
	if !h.opt.Unbuffered {
		buf := spool.New(spool.Options{Memory: h.opt.BodyMemory, Dir: h.opt.TempDir, MaxLag: h.opt.MaxResponseBuffer})
		pumped := make(chan struct{})
		go func() {
			defer close(pumped)
			bp := copyPool.Get().(*[]byte)
			defer copyPool.Put(bp)
			_, err := io.CopyBuffer(buf, onlyReader{body}, *bp)
			resp.Body.Close()
			dl.end()
			lease.Release()
			if errors.Is(err, spool.ErrClosed) {
				return // the client left: nobody reads
			}
			if err != nil {
				err = h.bodyError(lease.Upstream(), err)
			}
			buf.CloseWrite(err)
		}()
		defer func() {
			buf.Close() // unblocks the pump if the client left
			<-pumped
		}()
		src = buf
	} else {
		defer func() {
			resp.Body.Close()
			dl.end()
			lease.Release()
		}()
	}
	w.WriteHeader(resp.StatusCode)
	_ = rc.Flush()
	bp := copyPool.Get().(*[]byte)
	defer copyPool.Put(bp)
	for {
		n, err := src.Read(*bp)
		if n > 0 {
			if _, werr := w.Write((*bp)[:n]); werr != nil {
				h.log.Debug("client went away during the response", "uri", r.RequestURI, "err", werr)
				return nil
			}
			_ = rc.Flush()
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if !errors.Is(err, errTimeout) && !errors.Is(err, errUpstream) {
				err = h.bodyError(lease.Upstream(), err)
			}
			level := slog.LevelWarn
			var se StatusError
			if errors.As(err, &se) {
				level = se.LogLevel()
			}
			h.logFailure(r, level, "aborting a response the upstream did not finish", resp.StatusCode, err)
			panic(http.ErrAbortHandler)
		}
	}
}

// rewriteLocation makes a redirect to the upstream's own address point
// back through the proxy, as nginx's "proxy_redirect default" does: the
// upstream saw its own address as the Host, so an absolute Location or
// Refresh URL it builds names it; "http://10.0.0.5:8080/x" becomes "/x",
// which the client resolves against the address it used.
func rewriteLocation(h http.Header, up *url.URL) {
	prefix := up.Scheme + "://" + up.Host
	for _, k := range [...]string{"Location", "Refresh", "Content-Location"} {
		vv := h[k]
		for i, v := range vv {
			j := strings.Index(strings.ToLower(v), strings.ToLower(prefix))
			if j < 0 || (k != "Refresh" && j != 0) {
				continue
			}
			rest := v[j+len(prefix):]
			if rest != "" && rest[0] != '/' && rest[0] != '?' {
				continue // another host that starts the same ("...:80801")
			}
			if rest == "" || rest[0] == '?' {
				rest = "/" + rest
			}
			vv[i] = v[:j] + rest
		}
	}
}

// bodyError classifies a failure while reading a response body, and counts
// it against the upstream.
func (h *Handler) bodyError(u *Upstream, err error) error {
	if errors.Is(err, errTimeout) {
		err = fmt.Errorf("%w reading the body: %w", errTimeout, err)
	} else {
		err = upstreamFailed(u, fmt.Errorf("reading the body: %w", err))
	}
	h.opt.Pool.Fail(u, err)
	return err
}

// timeoutBody restarts the upstream timer at each read of the body, so
// that Timeout bounds each wait for data, not the whole transfer; a read
// that fails because the timer fired reports errTimeout.
type timeoutBody struct {
	r  io.Reader
	dl deadline
}

func (t *timeoutBody) Read(p []byte) (int, error) {
	t.dl.reset()
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF && t.dl.timedOut() {
		err = fmt.Errorf("%w: %w", errTimeout, err)
	}
	return n, err
}

// replay returns a reader of a spooled body from its start; each call
// gives a new one, for a retry.
func replay(b *spool.Buffer) io.Reader {
	if data, ok := b.Bytes(); ok {
		return bytes.NewReader(data)
	}
	if f := b.File(); f != nil {
		return io.NewSectionReader(f, 0, b.Len())
	}
	return http.NoBody
}

// trackedBody notes that a streamed request body was read from.
type trackedBody struct {
	r    io.Reader
	read *atomic.Bool
}

func (t *trackedBody) Read(p []byte) (int, error) {
	t.read.Store(true)
	return t.r.Read(p)
}

func (t *trackedBody) Close() error { return nil }

// onlyReader hides a reader's WriteTo from io.Copy.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }
