package server

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// h2stream is one request and its response, in one allocation. req and
// url are written by the reader before the handler starts and only read
// after; w belongs to the handler's goroutine (it takes mu to send); the
// other fields are under the connection's mu.
type h2stream struct {
	c  *h2conn
	id uint32

	req  http.Request
	url  url.URL
	ctx  reqCtx
	w    h2response
	body h2body

	remoteClosed bool // END_STREAM received (or the stream reset)
	localClosed  bool // END_STREAM or RST_STREAM sent
	ended        bool // endLocked ran

	sendWindow int64
	recvWindow int64
	// recvUnacked counts consumed body bytes not granted back yet.
	recvUnacked int64

	// The request body: bytes received and not read yet.
	declared     int64 // content-length; -1: none
	received     int64
	bodyBuf      []byte
	bodyOff      int
	bodyErr      error // io.EOF at the end, or why the body ended
	bodyClosed   bool  // the handler is done with the body: data is dropped
	needContinue bool  // Expect: 100-continue, nothing sent yet

	refuse int // a status the server answers instead of the handler

	readDeadline  time.Time // explicit (ResponseController); zero: the body timeout
	writeDeadline time.Time // explicit; zero: the send timeout
}

// bodyLen is the number of body bytes received and not read yet.
func (st *h2stream) bodyLen() int { return len(st.bodyBuf) - st.bodyOff }

// endLocked ends the stream for its handler: the context is cancelled,
// body reads and response writes fail from now on.
func (st *h2stream) endLocked(err error) {
	if st.ended {
		return
	}
	st.ended = true
	st.remoteClosed, st.localClosed = true, true
	if st.bodyErr == nil || st.bodyErr == io.EOF && st.bodyLen() > 0 {
		st.bodyErr = err
	}
	st.ctx.cancel(context.Canceled)
	st.c.cond.Broadcast() // a handler waiting for window or body data
}

func (st *h2stream) appendBody(p []byte) {
	if st.bodyOff > 0 && st.bodyOff == len(st.bodyBuf) {
		st.bodyBuf, st.bodyOff = st.bodyBuf[:0], 0
	}
	st.bodyBuf = append(st.bodyBuf, p...)
}

// The reader's side of reqCtx: the reader always watches the connection.
func (st *h2stream) watchClient()        {}
func (st *h2stream) localAddr() net.Addr { return st.c.tc.LocalAddr() }

// onHeaders handles a HEADERS frame (with its CONTINUATIONs): a new
// request, or the trailers of one.
func (c *h2conn) onHeaders(f *h2block) error {
	id := f.stream
	if id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if f.priority && f.dep == id {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.streams[id]; st != nil {
		return c.onTrailers(st, f)
	}
	if id <= c.maxClientID {
		return http2.ConnectionError(http2.ErrCodeStreamClosed)
	}
	c.maxClientID = id
	if c.goingAway {
		return nil // past the GOAWAY: ignored (RFC 9113 6.8)
	}
	if len(c.streams) >= h2MaxStreams {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream}
	}
	st := &h2stream{c: c, id: id, sendWindow: c.peerInitWindow, recvWindow: h2StreamWindow, declared: -1}
	st.ctx.c = st
	status, err := st.buildRequest(f)
	if err != nil {
		return err
	}
	c.streams[id] = st
	if f.endStream {
		st.remoteClosed = true
		st.bodyErr = io.EOF
	}
	c.setIdleLocked(false)
	if status != 0 {
		// Refused before the handler: answered by the server.
		st.refuse = status
		c.startLocked(st)
		return nil
	}
	if c.handlers >= h2MaxStreams {
		if len(c.queue) >= h2MaxQueued {
			c.srv.logger.Info("bad request", "remote", c.remote, "reason", "HTTP/2 client queued too many streams")
			return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
		}
		c.queue = append(c.queue, st)
		return nil
	}
	c.startLocked(st)
	return nil
}

// startLocked runs st's handler on a pooled goroutine.
func (c *h2conn) startLocked(st *h2stream) {
	c.handlers++
	c.busy++
	st.w.init(st)
	c.srv.h2pool.start(st)
}

// onTrailers handles a HEADERS frame on an open stream: the request's
// trailers, which must end it.
func (c *h2conn) onTrailers(st *h2stream, f *h2block) error {
	if st.remoteClosed {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeStreamClosed}
	}
	if !f.endStream {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if len(f.pseudo) > 0 {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
	}
	if st.declared >= 0 && st.received != st.declared {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
	}
	if tr := st.req.Trailer; tr != nil {
		var lower [64]byte
		for _, hf := range f.regular {
			k := canonicalKey(hf.Name, &lower)
			if !httpguts.ValidTrailerHeader(k) {
				return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
			}
			tr[k] = append(tr[k], hf.Value)
		}
	}
	c.remoteEndLocked(st)
	c.cond.Broadcast()
	return nil
}

// buildRequest fills st.req from the header block. A malformed block is a
// stream error; a status is an answer the server gives instead of the
// handler (431 for a header list past MaxHeaderBytes).
func (st *h2stream) buildRequest(f *h2block) (status int, err error) {
	protoErr := http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
	var method, scheme, authority, path string
	for _, hf := range f.pseudo {
		switch hf.Name {
		case ":method":
			method = hf.Value
		case ":scheme":
			scheme = hf.Value
		case ":authority":
			authority = hf.Value
		case ":path":
			path = hf.Value
		default: // :status, :protocol
			return 0, protoErr
		}
	}
	if method == "" || method != http.MethodConnect && (scheme == "" || path == "") {
		return 0, protoErr
	}
	c := st.c
	req := &st.req
	regular := f.regular
	h := make(http.Header, len(regular))
	vals := make([]string, len(regular)) // the values' backing array, one allocation
	var lower [64]byte
	var cookies []string
	for _, hf := range regular {
		switch hf.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return 0, protoErr // RFC 9113 8.2.2
		case "te":
			if hf.Value != "trailers" {
				return 0, protoErr
			}
		case "cookie":
			cookies = append(cookies, hf.Value) // RFC 9113 8.2.3: joined below
			continue
		}
		k := canonicalKey(hf.Name, &lower)
		if v, ok := h[k]; ok {
			h[k] = append(v, hf.Value)
		} else {
			vals[0] = hf.Value
			h[k] = vals[:1:1]
			vals = vals[1:]
		}
	}
	if len(cookies) == 1 {
		h["Cookie"] = cookies
	} else if len(cookies) > 1 {
		h["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	if authority == "" {
		authority = h.Get("Host")
	}
	*req = http.Request{
		Method:     method,
		URL:        &st.url,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		ProtoMinor: 0,
		Header:     h,
		Body:       http.NoBody,
		Host:       authority,
		RemoteAddr: c.remote,
		RequestURI: path,
		TLS:        &c.tlsState,
	}
	switch {
	case method == http.MethodConnect:
		st.url.Host = authority // strictTLS answers 405
	case path == "*" && method == http.MethodOptions:
		st.url.Path = "*"
	case path[0] == '/' && strings.IndexByte(path, '%') < 0 && !strings.HasPrefix(path, "//"):
		st.url.Path, st.url.RawQuery, _ = strings.Cut(path, "?")
	default:
		u, err := url.ParseRequestURI(path)
		if err != nil || u.Scheme != "" || u.Host != "" {
			return 0, protoErr
		}
		st.url = *u
	}
	if !f.endStream {
		req.ContentLength = -1
		if v := h["Content-Length"]; len(v) > 0 {
			n, ok := parseContentLength(v[0])
			if !ok || len(v) > 1 && !allEqual(v) {
				return 0, protoErr
			}
			req.ContentLength, st.declared = n, n
		}
		req.Body = &st.body
		st.body.st = st
		if v := h["Expect"]; len(v) == 1 && strings.EqualFold(v[0], "100-continue") {
			st.needContinue = true
		}
		if v := h["Trailer"]; len(v) > 0 {
			req.Trailer = http.Header{}
			for _, l := range v {
				for k := range strings.SplitSeq(l, ",") {
					k = http.CanonicalHeaderKey(trimOWS(k))
					if k != "" && httpguts.ValidTrailerHeader(k) {
						req.Trailer[k] = nil
					}
				}
			}
		}
	} else if v := h["Content-Length"]; len(v) > 0 {
		if n, ok := parseContentLength(v[0]); !ok || n != 0 {
			return 0, protoErr // RFC 9113 8.1.1: no DATA follows
		}
	}
	st.req = *req.WithContext(&st.ctx)
	if f.truncated {
		return http.StatusRequestHeaderFieldsTooLarge, nil
	}
	return 0, nil
}

func allEqual(v []string) bool {
	for _, s := range v[1:] {
		if s != v[0] {
			return false
		}
	}
	return true
}

// run serves the stream on a pooled goroutine (see handlerPool.start).
func (st *h2stream) run() {
	c := st.c
	returned := false
	defer func() {
		p := recover()
		if p != nil && p != http.ErrAbortHandler {
			c.logPanic(p)
		}
		st.w.finish(p != nil || !returned)
	}()
	if st.refuse != 0 {
		c.srv.logger.Info("bad request", "remote", c.remote, "status", st.refuse, "reason", "HTTP/2 header list too large")
		http.Error(&st.w, http.StatusText(st.refuse), st.refuse)
		returned = true
		return
	}
	if st.req.Method == http.MethodOptions && st.req.RequestURI == "*" {
		st.w.Header().Set("Content-Length", "0")
		st.w.WriteHeader(http.StatusOK)
		returned = true
		return
	}
	c.handler.ServeHTTP(&st.w, &st.req)
	returned = true
}

// h2body is a request body: the DATA the reader received, read under the
// body timeout.
type h2body struct {
	st *h2stream
}

func (b *h2body) Read(p []byte) (int, error) {
	st := b.st
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.needContinue {
		st.needContinue = false
		if st.bodyLen() == 0 && st.bodyErr == nil && !st.localClosed {
			st.w.writeContinueLocked()
		}
	}
	var deadline time.Time
	for st.bodyLen() == 0 {
		if st.bodyErr != nil {
			return 0, st.bodyErr
		}
		if len(p) == 0 {
			return 0, nil
		}
		if deadline.IsZero() {
			deadline = st.readDeadline
			if deadline.IsZero() && c.srv.bodyTimeout > 0 {
				deadline = time.Now().Add(c.srv.bodyTimeout)
			}
		}
		if len(c.out) > 0 && !c.writing {
			c.flushLocked() // window updates, 100 Continue
			continue        // mu was released: look again
		}
		if !c.waitLocked(deadline) && st.bodyLen() == 0 && st.bodyErr == nil {
			// As net/http: the stream is reset, the read fails.
			c.resetLocked(st.id, http2.ErrCodeInternal)
			c.flushLocked()
			st.bodyErr = os.ErrDeadlineExceeded
			return 0, os.ErrDeadlineExceeded
		}
	}
	n := copy(p, st.bodyBuf[st.bodyOff:])
	st.bodyOff += n
	c.creditLocked(st, int64(n))
	return n, nil
}

// Close stops the body: data still coming is dropped.
func (b *h2body) Close() error {
	st := b.st
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	st.closeBodyLocked()
	return nil
}

func (st *h2stream) closeBodyLocked() {
	if st.bodyClosed {
		return
	}
	st.bodyClosed = true
	if n := st.bodyLen(); n > 0 {
		st.c.creditLocked(st, int64(n))
	}
	st.bodyBuf, st.bodyOff = nil, 0
	if st.bodyErr == nil {
		st.bodyErr = http.ErrBodyReadAfterClose
	}
}
