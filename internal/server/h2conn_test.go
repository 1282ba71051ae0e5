package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"portico/internal/porticotest"
)

// A rawH2 is a hand-driven HTTP/2 client connection: frames written and
// read one by one with x/net's Framer.
type rawH2 struct {
	t    *testing.T
	tc   *tls.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
}

// dialH2 connects to addr, negotiates h2, and exchanges the prefaces:
// settings are the client's SETTINGS.
func dialH2(t *testing.T, addr string, settings ...http2.Setting) *rawH2 {
	t.Helper()
	tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	tc.SetDeadline(time.Now().Add(20 * time.Second))
	c := &rawH2{t: t, tc: tc, fr: http2.NewFramer(tc, tc)}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.hbuf)
	if _, err := io.WriteString(tc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	// The server's SETTINGS, its WINDOW_UPDATE, and the ACK of ours.
	gotSettings, gotAck := false, false
	for !gotSettings || !gotAck {
		switch f := c.read().(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				gotAck = true
			} else {
				gotSettings = true
				c.fr.WriteSettingsAck()
			}
		case *http2.WindowUpdateFrame:
		default:
			t.Fatalf("unexpected %v before the SETTINGS ACK", f.Header())
		}
	}
	return c
}

func (c *rawH2) read() http2.Frame {
	c.t.Helper()
	f, err := c.fr.ReadFrame()
	if err != nil {
		c.t.Fatalf("reading a frame: %v", err)
	}
	return f
}

// block encodes a GET-like header block: pseudo-header fields first, then
// pairs of name, value.
func (c *rawH2) block(method, path string, fields ...string) []byte {
	c.hbuf.Reset()
	c.enc.WriteField(hpack.HeaderField{Name: ":method", Value: method})
	c.enc.WriteField(hpack.HeaderField{Name: ":scheme", Value: "https"})
	c.enc.WriteField(hpack.HeaderField{Name: ":authority", Value: "127.0.0.1"})
	c.enc.WriteField(hpack.HeaderField{Name: ":path", Value: path})
	for i := 0; i+1 < len(fields); i += 2 {
		c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return bytes.Clone(c.hbuf.Bytes())
}

func (c *rawH2) headers(id uint32, end bool, block []byte) {
	c.t.Helper()
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: end, EndHeaders: true}); err != nil {
		c.t.Fatal(err)
	}
}

// h2resp is a response read by rawH2.response.
type h2resp struct {
	status   string
	header   map[string]string
	body     []byte
	trailers map[string]string
	reset    http2.ErrCode // RST_STREAM instead of (the end of) a response
}

// response reads frames until stream id ends (END_STREAM or RST_STREAM),
// skipping other streams' frames and control frames; 1xx heads are
// recorded in order in infos.
func (c *rawH2) response(id uint32, infos *[]string) h2resp {
	c.t.Helper()
	r := h2resp{header: map[string]string{}, reset: 0xffffffff}
	for {
		switch f := c.read().(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID != id {
				continue
			}
			if st := f.PseudoValue("status"); st != "" && st[0] == '1' {
				if infos != nil {
					*infos = append(*infos, st)
				}
				continue
			}
			if r.status == "" {
				r.status = f.PseudoValue("status")
				for _, hf := range f.RegularFields() {
					r.header[hf.Name] = hf.Value
				}
			} else {
				r.trailers = map[string]string{}
				for _, hf := range f.RegularFields() {
					r.trailers[hf.Name] = hf.Value
				}
			}
			if f.StreamEnded() {
				return r
			}
		case *http2.DataFrame:
			if f.StreamID != id {
				continue
			}
			r.body = append(r.body, f.Data()...)
			if f.StreamEnded() {
				return r
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				r.reset = f.ErrCode
				return r
			}
		case *http2.GoAwayFrame:
			c.t.Fatalf("GOAWAY %v while waiting for stream %d", f.ErrCode, id)
		}
	}
}

// TestH2Request: the http.Request a handler gets over HTTP/2, and the
// response heads the server completes (content-length of a small body,
// sniffed content-type, date; connection-specific headers dropped).
func TestH2Request(t *testing.T) {
	type seen struct {
		method, path, query, proto, host, remote, uri, cookie, body string
		major, minor                                                int
		length                                                      int64
		tls                                                         bool
	}
	got := make(chan seen, 1)
	s := NewHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Proto, r.Host, r.RemoteAddr, r.RequestURI,
			r.Header.Get("Cookie"), string(b), r.ProtoMajor, r.ProtoMinor, r.ContentLength, r.TLS != nil}
		w.Header().Set("Connection", "close")
		w.Header().Set("X-App", "yes")
		io.WriteString(w, "<html><body>hi</body></html>")
	}), Options{})
	addr := serveTLS(t, s)
	c := dialH2(t, addr)
	c.headers(1, false, c.block("POST", "/p/a?q=1", "cookie", "a=1", "cookie", "b=2", "content-length", "5"))
	c.fr.WriteData(1, true, []byte("hello"))
	r := c.response(1, nil)
	g := <-got
	want := seen{"POST", "/p/a", "q=1", "HTTP/2.0", "127.0.0.1", c.tc.LocalAddr().String(), "/p/a?q=1", "a=1; b=2", "hello", 2, 0, 5, true}
	if g != want {
		t.Errorf("request:\n got %+v\nwant %+v", g, want)
	}
	if r.status != "200" || string(r.body) != "<html><body>hi</body></html>" {
		t.Fatalf("response %s %q", r.status, r.body)
	}
	for k, v := range map[string]string{"content-length": "28", "content-type": "text/html; charset=utf-8", "x-app": "yes"} {
		if r.header[k] != v {
			t.Errorf("%s: %q, want %q", k, r.header[k], v)
		}
	}
	if _, err := time.Parse(http.TimeFormat, r.header["date"]); err != nil {
		t.Errorf("date %q: %v", r.header["date"], err)
	}
	if _, ok := r.header["connection"]; ok {
		t.Error("a connection-specific header was sent")
	}

	// HEAD: the length the handler wrote, no body.
	c.headers(3, true, c.block("HEAD", "/head"))
	r = c.response(3, nil)
	<-got
	if r.status != "200" || len(r.body) != 0 || r.header["content-length"] != "28" {
		t.Errorf("HEAD: %s %v %q", r.status, r.header, r.body)
	}
}

// TestH2Malformed: requests that break RFC 9113's rules get a stream
// error, or the server's answer, and the connection serves on.
func TestH2Malformed(t *testing.T) {
	var ran atomic.Int64
	s := NewHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ran.Add(1)
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}), Options{MaxHeaderBytes: 1000, Logger: slog.New(slog.DiscardHandler)})
	addr := serveTLS(t, s)
	c := dialH2(t, addr)

	// DATA short of the content-length.
	c.headers(1, false, c.block("POST", "/", "content-length", "10"))
	c.fr.WriteData(1, true, []byte("12345"))
	if r := c.response(1, nil); r.reset != http2.ErrCodeProtocol {
		t.Errorf("DATA short of content-length: %+v, want RST_STREAM PROTOCOL_ERROR", r)
	}
	// A connection-specific header.
	c.headers(3, true, c.block("GET", "/", "connection", "keep-alive"))
	if r := c.response(3, nil); r.reset != http2.ErrCodeProtocol {
		t.Errorf("connection header: %+v, want RST_STREAM PROTOCOL_ERROR", r)
	}
	// A header list past MaxHeaderBytes: 431, from the server.
	before := ran.Load()
	big := strings.Repeat("a", 500)
	c.headers(5, true, c.block("GET", "/", "x-big1", big, "x-big2", big, "x-big3", big))
	if r := c.response(5, nil); r.status != "431" {
		t.Errorf("large header list: %+v, want 431", r)
	}
	if ran.Load() != before {
		t.Error("the handler ran for a header list past the bound")
	}
	c.headers(7, true, c.block("GET", "/"))
	if r := c.response(7, nil); r.status != "200" || string(r.body) != "ok" {
		t.Errorf("then: %+v", r)
	}
}

// TestH2FlowControl: a handler's Write blocks while the client grants no
// window, and goes on when a WINDOW_UPDATE comes; under the send timeout,
// a window that never comes fails the Write with a timeout.
func TestH2FlowControl(t *testing.T) {
	const size = 20 << 10
	started := make(chan struct{}, 1)
	wrote := make(chan error, 1)
	s := NewHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		_, err := w.Write(bytes.Repeat([]byte("x"), size))
		wrote <- err
	}), Options{SendTimeout: 500 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	addr := serveTLS(t, s)
	c := dialH2(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})

	c.headers(1, true, c.block("GET", "/"))
	<-started
	f, ok := c.read().(*http2.MetaHeadersFrame)
	if !ok || f.StreamID != 1 {
		t.Fatalf("got %v, want the response's HEADERS", f)
	}
	// The head is out, the window is 0: the body waits.
	select {
	case err := <-wrote:
		t.Fatalf("Write returned (%v) with a window of 0", err)
	default:
	}
	c.fr.WriteWindowUpdate(1, size)
	var body int
	for body < size {
		switch f := c.read().(type) {
		case *http2.DataFrame:
			body += len(f.Data())
		case *http2.RSTStreamFrame:
			t.Fatalf("stream reset (%v) after %d bytes", f.ErrCode, body)
		}
	}
	if err := <-wrote; err != nil {
		t.Fatalf("Write: %v", err)
	}

	// No window at all: the send timeout fails the Write.
	c.headers(3, true, c.block("GET", "/"))
	<-started
	err := <-wrote
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write without a window ended with %v, want a timeout", err)
	}
	if r := c.response(3, nil); r.reset != http2.ErrCodeInternal {
		t.Fatalf("stream 3 ended with %+v, want RST_STREAM INTERNAL_ERROR", r)
	}
}

// TestH2Trailers: request trailers reach the handler (r.Trailer once the
// body is read), response trailers (declared with Trailer, or named with
// http.TrailerPrefix) reach the client.
func TestH2Trailers(t *testing.T) {
	s := NewHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Sum", "req="+r.Trailer.Get("X-Req"))
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	}), Options{})
	addr := serveTLS(t, s)
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", "https://"+addr+"/", pr)
	req.Trailer = http.Header{"X-Req": nil}
	go func() {
		io.WriteString(pw, "upload")
		req.Trailer.Set("X-Req", "abc")
		pw.Close()
	}()
	resp, err := tlsClient(t, "h2", nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(body) != "body" {
		t.Fatalf("%s %q", resp.Proto, body)
	}
	if got := resp.Trailer.Get("X-Sum"); got != "req=abc" {
		t.Errorf("trailer X-Sum = %q, want req=abc", got)
	}
	if got := resp.Trailer.Get("X-Late"); got != "late" {
		t.Errorf("trailer X-Late = %q, want late", got)
	}
}

// TestH2Continue: 100 Continue goes out when the handler reads the body
// of a request that expects it, and not when it answers without reading.
func TestH2Continue(t *testing.T) {
	s := NewHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/read" {
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
			return
		}
		w.WriteHeader(http.StatusRequestEntityTooLarge)
	}), Options{})
	addr := serveTLS(t, s)
	c := dialH2(t, addr)

	c.headers(1, false, c.block("POST", "/read", "expect", "100-continue", "content-length", "4"))
	f, ok := c.read().(*http2.MetaHeadersFrame)
	if !ok || f.StreamID != 1 || f.PseudoValue("status") != "100" {
		t.Fatalf("got %v, want HEADERS :status 100", f)
	}
	c.fr.WriteData(1, true, []byte("data"))
	if r := c.response(1, nil); r.status != "200" || string(r.body) != "data" {
		t.Fatalf("after 100: %+v", r)
	}

	var infos []string
	c.headers(3, false, c.block("POST", "/refuse", "expect", "100-continue", "content-length", "4"))
	if r := c.response(3, &infos); r.status != "413" || len(infos) != 0 {
		t.Fatalf("refused: %+v after %v, want 413 and no 100", r, infos)
	}
}

// TestH2IdleTimeout: a connection without streams for IdleTimeout gets a
// GOAWAY and is closed; the stats count it idle meanwhile. The timeout
// ends the wait in the TLS read, or (parkDelay shorter than the timeout)
// waitIdle's wait on the socket.
func TestH2IdleTimeout(t *testing.T) {
	for _, park := range []time.Duration{0, 50 * time.Millisecond} {
		t.Run("park="+park.String(), func(t *testing.T) { testH2IdleTimeout(t, park) })
	}
}

func testH2IdleTimeout(t *testing.T, park time.Duration) {
	s := NewHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}), Options{IdleTimeout: 300 * time.Millisecond})
	s.parkAfter = park
	addr := serveTLS(t, s)
	c := dialH2(t, addr)
	c.headers(1, true, c.block("GET", "/"))
	if r := c.response(1, nil); r.status != "200" {
		t.Fatalf("%+v", r)
	}
	porticotest.WaitFor(t, "the connection counted idle", 5*time.Second, func() bool {
		st := s.Stats()
		return st.Open == 1 && st.Idle == 1
	})
	t0 := time.Now()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatalf("connection ended (%v) without a GOAWAY", err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			if g.ErrCode != http2.ErrCodeNo || g.LastStreamID != 1 {
				t.Fatalf("GOAWAY %v last stream %d, want NO_ERROR, 1", g.ErrCode, g.LastStreamID)
			}
			break
		}
	}
	if _, err := c.fr.ReadFrame(); err == nil {
		t.Fatal("a frame after the GOAWAY; want the connection closed")
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("closed after %v, want about the idle timeout", d)
	}
	porticotest.WaitFor(t, "the connection gone from the stats", 5*time.Second, func() bool {
		return s.Stats().Open == 0
	})
}

// TestH2Shutdown: Shutdown sends GOAWAY to an HTTP/2 connection with a
// stream in flight; the stream finishes, then the connection closes and
// Shutdown returns.
func TestH2Shutdown(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	s := NewHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "finished")
	}), Options{})
	l := tlsListen(t)
	done := make(chan error, 1)
	go func() { done <- s.ServeTLS(l) }()
	c := dialH2(t, l.Addr().String())
	c.headers(1, true, c.block("GET", "/"))
	<-started
	if st := s.Stats(); st.Open != 1 || st.Idle != 0 {
		t.Errorf("stats with a stream in flight: %+v", st)
	}
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	g, ok := c.read().(*http2.GoAwayFrame)
	if !ok || g.ErrCode != http2.ErrCodeNo || g.LastStreamID != 1 {
		t.Fatalf("got %v, want GOAWAY NO_ERROR last stream 1", g)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a stream in flight", err)
	default:
	}
	close(release)
	if r := c.response(1, nil); r.status != "200" || string(r.body) != "finished" {
		t.Fatalf("the stream in flight: %+v", r)
	}
	if _, err := c.fr.ReadFrame(); err == nil {
		t.Fatal("the connection stayed open after its last stream")
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("ServeTLS: %v", err)
	}
}

// A writeCountConn counts the writes that reach the socket.
type writeCountConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *writeCountConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestH2WriteCombining: the responses to requests that arrived together
// go out in one write to the socket (on one P, as with the server on one
// core). serveH2Conn is called directly on a connection from tlsListen.
func TestH2WriteCombining(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	s := NewHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "response "+r.URL.Path)
	}), Options{})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var counted *writeCountConn
	accepted := make(chan *tls.Conn, 1)
	go func() {
		c, err := raw.Accept()
		if err != nil {
			return
		}
		counted = &writeCountConn{Conn: c}
		tc := tls.Server(counted, &tls.Config{NextProtos: []string{"h2"}, Certificates: []tls.Certificate{testCert(t)}})
		if tc.Handshake() == nil {
			accepted <- tc
		}
	}()
	served := make(chan struct{})
	go func() {
		tc := <-accepted
		s.serveH2Conn(tc)
		close(served)
	}()
	c := dialH2(t, raw.Addr().String())
	before := counted.writes.Load()
	const n = 10
	var batch bytes.Buffer
	fr := http2.NewFramer(&batch, nil)
	for i := range n {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: c.block("GET", "/"+strconv.Itoa(i)), EndStream: true, EndHeaders: true})
	}
	if _, err := c.tc.Write(batch.Bytes()); err != nil {
		t.Fatal(err)
	}
	bodies := map[uint32]string{}
	for ended := 0; ended < n; {
		switch f := c.read().(type) {
		case *http2.DataFrame:
			bodies[f.StreamID] += string(f.Data())
			if f.StreamEnded() {
				ended++
			}
		case *http2.RSTStreamFrame:
			t.Fatalf("stream %d reset: %v", f.StreamID, f.ErrCode)
		}
	}
	for i := range n {
		if got := bodies[uint32(2*i+1)]; got != "response /"+strconv.Itoa(i) {
			t.Fatalf("stream %d: %q", 2*i+1, got)
		}
	}
	writes := counted.writes.Load() - before
	t.Logf("%d responses in %d socket writes", n, writes)
	if writes > 2 {
		t.Errorf("%d responses in %d socket writes: not combined", n, writes)
	}
	c.tc.Close()
	<-served
}

// TestH2ResponseController: http.ResponseController works on the HTTP/2
// ResponseWriter: a read deadline in the past fails the body's read, Flush
// sends the head before the handler returns.
func TestH2ResponseController(t *testing.T) {
	readErr := make(chan error, 1)
	flushed := make(chan struct{})
	s := NewHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if r.URL.Path == "/deadline" {
			if err := rc.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
				readErr <- err
				return
			}
			_, err := r.Body.Read(make([]byte, 10))
			readErr <- err
			return
		}
		if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			t.Errorf("SetWriteDeadline: %v", err)
		}
		if err := rc.EnableFullDuplex(); err != nil {
			t.Errorf("EnableFullDuplex: %v", err)
		}
		w.WriteHeader(http.StatusAccepted)
		if err := rc.Flush(); err != nil {
			t.Errorf("Flush: %v", err)
		}
		<-flushed
		io.WriteString(w, "after")
	}), Options{Logger: slog.New(slog.DiscardHandler)})
	addr := serveTLS(t, s)
	c := dialH2(t, addr)

	c.headers(1, false, c.block("POST", "/deadline"))
	if err := <-readErr; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a read past its deadline: %v", err)
	}
	c.headers(3, true, c.block("GET", "/flush"))
	for {
		if f, ok := c.read().(*http2.MetaHeadersFrame); ok && f.StreamID == 3 {
			if f.PseudoValue("status") != "202" || f.StreamEnded() {
				t.Fatalf("flushed head: %v", f)
			}
			break
		}
	}
	close(flushed)
	var body []byte
	for {
		if f, ok := c.read().(*http2.DataFrame); ok && f.StreamID == 3 {
			body = append(body, f.Data()...)
			if f.StreamEnded() {
				break
			}
		}
	}
	if string(body) != "after" {
		t.Fatalf("body %q", body)
	}
}

// TestH2PrefaceTimeout: a connection that negotiated h2 and sends no
// preface is closed at the header timeout.
func TestH2PrefaceTimeout(t *testing.T) {
	s := NewHTTP(http.NotFoundHandler(), Options{ReadHeaderTimeout: 300 * time.Millisecond})
	addr := serveTLS(t, s)
	tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.SetReadDeadline(time.Now().Add(10 * time.Second))
	t0 := time.Now()
	_, err = io.Copy(io.Discard, tc) // the server's SETTINGS, then the end
	if err != nil {
		t.Fatalf("the connection was not closed: %v", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("closed after %v, want about the header timeout", d)
	}
}

// TestH2ContextCancel: a request's context ends when the client resets
// its stream, and when the connection ends.
func TestH2ContextCancel(t *testing.T) {
	started := make(chan struct{}, 2)
	ended := make(chan error, 2)
	s := NewHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done()
		ended <- r.Context().Err()
	}), Options{})
	addr := serveTLS(t, s)
	c := dialH2(t, addr)

	c.headers(1, true, c.block("GET", "/"))
	<-started
	c.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("after RST_STREAM: %v, want context.Canceled", err)
	}

	c.headers(3, true, c.block("GET", "/"))
	<-started
	c.tc.Close()
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("after the connection closed: %v, want context.Canceled", err)
	}
}
