package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"

	"portico/internal/errpage"
	"portico/internal/requestid"
)

// Errors a proxied request can end with, besides Acquire's; writeError maps
// each to one answer.
var (
	errTimeout      = errors.New("proxy: upstream timed out")
	errUpstream     = errors.New("proxy: upstream failed")
	errBodyTooLarge = errors.New("proxy: request body too large")
	errClientBody   = errors.New("proxy: reading request body")
	errBadStatus    = errors.New("proxy: upstream answered with an error status")
)

// upstreamError is the failure of one try on one upstream: the log record
// names the upstream apart from the cause.
type upstreamError struct {
	upstream string
	err      error
}

func upstreamFailed(u *Upstream, err error) error {
	return &upstreamError{upstream: u.Name, err: err}
}

func (e *upstreamError) Error() string {
	return errUpstream.Error() + ": " + e.upstream + ": " + e.err.Error()
}

func (e *upstreamError) Unwrap() []error { return []error{errUpstream, e.err} }

// AttrError is an error that carries attributes for its log record (the
// worker pool's: the worker's pid and the app's traceback). The handler
// adds them to the one record it writes for the failure.
type AttrError interface {
	error
	LogAttrs() []slog.Attr
}

// notSent reports whether err says the request never reached the upstream:
// the connection could not be made (refused, unreachable, connect timeout),
// so no byte of it was written. Transports wrap a *net.OpError with Op
// "dial" for that (see the package doc).
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// StatusError is an error that calls for a given answer, returned by a
// transport that knows better than a gateway would: the worker pool
// answers 500 for an exception in the app, 503 for a full queue, 504 for
// a request it interrupted. statusOf asks it first.
type StatusError interface {
	error
	// HTTPStatus is the status the client gets.
	HTTPStatus() int
	// LogLevel is the level the failure is logged at.
	LogLevel() slog.Level
}

// statusOf maps a failure to its answer: the one place where errors become
// statuses, with the log level the failure deserves.
func statusOf(err error) (int, slog.Level) {
	var se StatusError
	if errors.As(err, &se) {
		return se.HTTPStatus(), se.LogLevel()
	}
	switch {
	case errors.Is(err, ErrQueueFull), errors.Is(err, ErrQueueTimeout):
		return http.StatusServiceUnavailable, slog.LevelWarn
	case errors.Is(err, ErrNoUpstream):
		return http.StatusBadGateway, slog.LevelError
	case errors.Is(err, errTimeout):
		return http.StatusGatewayTimeout, slog.LevelError
	case errors.Is(err, errBodyTooLarge):
		return http.StatusRequestEntityTooLarge, slog.LevelWarn
	case errors.Is(err, errClientBody):
		return http.StatusBadRequest, slog.LevelInfo
	case errors.Is(err, context.Canceled):
		return 499, slog.LevelInfo // nginx's "client closed request"; nobody reads it
	}
	return http.StatusBadGateway, slog.LevelError
}

// writeError answers a request that failed before its response started.
// The client gets a short safe message, the log gets the cause.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, level := statusOf(err)
	h.logFailure(r, level, "request failed", status, err)
	hd := w.Header()
	id := hd[requestid.Header]
	clear(hd)
	if id != nil {
		hd[requestid.Header] = id
	}
	switch status {
	case http.StatusServiceUnavailable:
		hd.Set("Retry-After", "1")
	case http.StatusRequestEntityTooLarge, http.StatusBadRequest:
		hd.Set("Connection", "close")
	}
	if status != 499 && errpage.Serve(w, status) {
		return
	}
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, strconv.Itoa(status)+" "+http.StatusText(status)+"\n")
}

// logFailure writes the one record of a failed request: method, URI,
// status, the request's ID, the upstream when one was tried, the cause,
// and what the error itself carries (AttrError).
func (h *Handler) logFailure(r *http.Request, level slog.Level, msg string, status int, err error) {
	ctx := r.Context()
	if !h.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs, slog.String("method", r.Method), slog.String("uri", r.RequestURI), slog.Int("status", status))
	if id := requestid.Of(r); id != "" {
		attrs = append(attrs, slog.String("request_id", id))
	}
	var ue *upstreamError
	if errors.As(err, &ue) {
		attrs = append(attrs, slog.String("upstream", ue.upstream))
	}
	attrs = append(attrs, slog.Any("err", err))
	var ae AttrError
	if errors.As(err, &ae) {
		attrs = append(attrs, ae.LogAttrs()...)
	}
	h.log.LogAttrs(ctx, level, msg, attrs...)
}
