package server

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testCert returns a self-signed certificate for 127.0.0.1.
func testCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsListen listens on loopback with TLS as the engine's HTTPS listeners do
// (TLS 1.2 or later, ALPN h2 then http/1.1).
func tlsListen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert := testCert(t)
	return TLSListener(l, &tls.Config{
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
		Certificates: []tls.Certificate{cert},
	})
}

// serveTLS serves s on a new TLS listener (ServeTLS: net/http, HTTP/2)
// and returns its address.
func serveTLS(t *testing.T, s *HTTP) string {
	t.Helper()
	l := tlsListen(t)
	done := make(chan error, 1)
	go func() { done <- s.ServeTLS(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("ServeTLS returned %v", err)
		}
	})
	return l.Addr().String()
}

// h2Client returns a client that speaks HTTP/2 to a test server.
func h2Client(t *testing.T) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		ForceAttemptHTTP2: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// h2Get GETs path over HTTP/2 on a new connection and returns the status.
func h2Get(t *testing.T, addr, path string) (int, error) {
	resp, err := h2Client(t).Get("https://" + addr + path)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.ProtoMajor != 2 {
		return 0, fmt.Errorf("served over %s, want HTTP/2", resp.Proto)
	}
	return resp.StatusCode, nil
}

// TestTLSStrict: HTTP/1.1 requests on a TLS listener get the plain
// front's refusals (they go through its parser).
func TestTLSStrict(t *testing.T) {
	var leaked atomic.Pointer[string] // a refused request the handler saw
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "refused") || r.Method == http.MethodConnect {
			l := r.Method + " " + r.URL.Path + " " + r.Host
			leaked.Store(&l)
		}
		io.WriteString(w, "ok")
	})
	addr := serveTLS(t, NewHTTP(h, Options{MaxHeaderFields: 10}))
	fields := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "X-F%d: v\r\n", i)
		}
		return b.String()
	}
	for _, tt := range []struct {
		name, req string
		status    int
	}{
		{"absolute-form host", "GET https://a<b>/refused HTTP/1.1\r\nHost: good\r\n\r\n", 400},
		{"CONNECT", "CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n", 405},
		{"empty Host", "GET /refused HTTP/1.1\r\nHost: \r\n\r\n", 400},
		{"lower-case method", "get /refused HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"NUL in the path", "GET /refused%00 HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"10 header fields", "GET /ok HTTP/1.1\r\nHost: x\r\n" + fields(9) + "\r\n", 200},
		{"11 header fields", "GET /refused HTTP/1.1\r\nHost: x\r\n" + fields(10) + "\r\n", 431},
		// The plain front's framing rules (net/http merges these).
		{"two Content-Length", "POST /refused HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			leaked.Store(nil)
			c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, tt.req)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status || tt.status >= 400 && !resp.Close {
				t.Errorf("got %d close=%v, want %d and the connection closed", resp.StatusCode, resp.Close, tt.status)
			}
			if l := leaked.Load(); l != nil {
				t.Errorf("a refused request reached the handler: %s", *l)
			}
		})
	}
	if code, err := h2Get(t, addr, "/ok"); code != 200 {
		t.Errorf("HTTP/2 GET: %d, %v", code, err)
	}
}

// TestTLSFrontH1: HTTP/1.1 over TLS is served by the plain front, with
// the request's TLS state; a plain HTTP request on the TLS port gets a 400
// that says so; a client that fails its handshake is logged and the
// server serves on.
func TestTLSFrontH1(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			io.WriteString(w, "no TLS state")
			return
		}
		fmt.Fprintf(w, "%s %s %v", r.Proto, r.TLS.NegotiatedProtocol, r.TLS.HandshakeComplete)
	})
	var logs strings.Builder
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil))
	s := NewHTTP(h, Options{Logger: logger})
	addr := serveTLS(t, s)

	plain, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	io.WriteString(plain, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(plain), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(body), "HTTPS") {
		t.Errorf("plain HTTP on the TLS port: %d %q", resp.StatusCode, body)
	}

	for range 2 { // twice: the second request on the kept connection
		resp, err := tlsClient(t, "http/1.1", nil).Get("https://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "HTTP/1.1 http/1.1 true" {
			t.Errorf("HTTP/1.1 over TLS: handler saw %q", body)
		}
	}
	mu.Lock()
	got := logs.String()
	mu.Unlock()
	if !strings.Contains(got, "plain HTTP request on a TLS listener") {
		t.Errorf("no log record for the plain HTTP request; log:\n%s", got)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// HTTP/2 frames, written by hand (RFC 9113 4.1) so that the test needs no
// module.
const (
	frameHeaders      = 0x1
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	frameGoAway       = 0x7
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
)

func appendFrame(b []byte, typ, flags byte, stream uint32, payload []byte) []byte {
	n := len(payload)
	b = append(b, byte(n>>16), byte(n>>8), byte(n), typ, flags)
	b = binary.BigEndian.AppendUint32(b, stream)
	return append(b, payload...)
}

// getBlock is an HPACK header block (RFC 7541) for GET https://host/path:
// static-table entries and literals without indexing, no Huffman coding.
func getBlock(host, path string) []byte {
	b := []byte{0x82, 0x87} // :method GET, :scheme https
	b = append(b, 0x04, byte(len(path)))
	b = append(b, path...)
	b = append(b, 0x01, byte(len(host))) // :authority
	return append(b, host...)
}

// h2Conn opens a TLS connection that negotiated h2 and sends the client
// preface and an empty SETTINGS frame; a goroutine reads what the server
// sends and reports, on the returned channel, a GOAWAY or the end of the
// connection.
func h2Conn(t *testing.T, addr string) (*tls.Conn, <-chan string) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN chose %q, want h2", p)
	}
	preface := append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), appendFrame(nil, frameSettings, 0, 0, nil)...)
	if _, err := c.Write(preface); err != nil {
		t.Fatal(err)
	}
	ended := make(chan string, 1)
	go func() {
		br := bufio.NewReader(c)
		var hdr [9]byte
		for {
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				ended <- "closed: " + err.Error()
				return
			}
			n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
			payload := make([]byte, n)
			if _, err := io.ReadFull(br, payload); err != nil {
				ended <- "closed: " + err.Error()
				return
			}
			if hdr[3] == frameGoAway && n >= 8 {
				ended <- fmt.Sprintf("GOAWAY error code %d", binary.BigEndian.Uint32(payload[4:8]))
				return
			}
		}
	}()
	return c, ended
}

// floodHandler holds /slow requests until their stream is reset, and
// counts the handlers running at once.
type floodHandler struct {
	running, most, started atomic.Int64
}

func (f *floodHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/slow" {
		io.WriteString(w, "ok")
		return
	}
	f.started.Add(1)
	n := f.running.Add(1)
	defer f.running.Add(-1)
	for {
		m := f.most.Load()
		if n <= m || f.most.CompareAndSwap(m, n) {
			break
		}
	}
	select {
	case <-r.Context().Done():
	case <-time.After(5 * time.Second):
	}
}

// probe GETs /ok over HTTP/2 on fresh connections until stop closes, and
// returns the number of successes and the first failure.
func probe(t *testing.T, addr string, stop <-chan struct{}) (ok int, first error) {
	for {
		select {
		case <-stop:
			return ok, first
		default:
		}
		code, err := h2Get(t, addr, "/ok")
		if err == nil && code != 200 {
			err = fmt.Errorf("status %d", code)
		}
		if err != nil && first == nil {
			first = err
		}
		if err == nil {
			ok++
		}
	}
}

// TestH2RapidReset: a client that opens streams and resets them at once
// (CVE-2023-44487) does not make the server run a handler per stream, and
// other clients are served meanwhile and afterwards.
func TestH2RapidReset(t *testing.T) {
	f := &floodHandler{}
	addr := serveTLS(t, NewHTTP(f, Options{}))
	c, ended := h2Conn(t, addr)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ok int
	var probeErr error
	wg.Go(func() { ok, probeErr = probe(t, addr, stop) })

	const streams = 20000
	block := getBlock("127.0.0.1", "/slow")
	rst := binary.BigEndian.AppendUint32(nil, 0x8) // CANCEL
	var batch []byte
	sent := 0
	c.SetWriteDeadline(time.Now().Add(20 * time.Second))
	var werr error
	for i := range streams {
		id := uint32(2*i + 1)
		batch = appendFrame(batch, frameHeaders, flagEndHeaders|flagEndStream, id, block)
		batch = appendFrame(batch, frameRSTStream, 0, id, rst)
		if len(batch) > 16<<10 || i == streams-1 {
			if _, werr = c.Write(batch); werr != nil {
				break
			}
			sent = i + 1
			batch = batch[:0]
		}
	}
	var end string
	select {
	case end = <-ended:
	case <-time.After(2 * time.Second):
		end = "still open"
	}
	close(stop)
	wg.Wait()
	t.Logf("rapid reset: %d streams sent (write error %v), %d handlers started, at most %d at once; flooding connection: %s; %d probe requests served",
		sent, werr, f.started.Load(), f.most.Load(), end, ok)
	if probeErr != nil {
		t.Errorf("another client failed during the flood: %v", probeErr)
	}
	// The flooding connection is limited, or closed: net/http runs at
	// most MaxConcurrentStreams (250) handlers per connection, and closes
	// one that queues more than four times that.
	if most := f.most.Load(); most > 300 {
		t.Errorf("%d handlers ran at once for one connection", most)
	}
	if code, err := h2Get(t, addr, "/ok"); code != 200 {
		t.Errorf("after the flood: %d, %v", code, err)
	}
}

// TestH2ContinuationFlood: a HEADERS frame followed by CONTINUATION frames
// without end (CVE-2023-45288) is cut off once the header block passes the
// header size limit; other clients are served meanwhile and afterwards.
func TestH2ContinuationFlood(t *testing.T) {
	f := &floodHandler{}
	addr := serveTLS(t, NewHTTP(f, Options{}))
	c, ended := h2Conn(t, addr)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ok int
	var probeErr error
	wg.Go(func() { ok, probeErr = probe(t, addr, stop) })

	// One header field per frame: "x-flood: aaa...".
	field := append([]byte{0x00, 7}, "x-flood"...)
	field = append(field, 100)
	field = append(field, strings.Repeat("a", 100)...)
	frame := appendFrame(nil, frameContinuation, 0, 1, field)
	var batch []byte
	for range 100 {
		batch = append(batch, frame...)
	}
	const limit = 256 << 20 // sent without an answer: the server is not bounding the block
	sent := 0
	c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, werr := c.Write(appendFrame(nil, frameHeaders, 0, 1, getBlock("127.0.0.1", "/slow")))
	var end string
loop:
	for werr == nil && sent < limit {
		select {
		case end = <-ended:
			break loop
		default:
		}
		_, werr = c.Write(batch)
		sent += len(batch)
	}
	if end == "" {
		select {
		case end = <-ended:
		case <-time.After(5 * time.Second):
			end = "still open"
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("CONTINUATION flood: %d KiB sent (write error %v); flooding connection: %s; %d probe requests served", sent>>10, werr, end, ok)
	if end == "still open" {
		t.Errorf("the flooding connection was not closed after %d MiB of CONTINUATION frames", sent>>20)
	}
	if f.started.Load() != 0 {
		t.Errorf("a handler ran for the endless header block")
	}
	if probeErr != nil {
		t.Errorf("another client failed during the flood: %v", probeErr)
	}
	if code, err := h2Get(t, addr, "/ok"); code != 200 {
		t.Errorf("after the flood: %d, %v", code, err)
	}
}

// TestH2Strict: HTTP/2 requests get the plain front's refusals (strictTLS)
// without reaching the handler, and the connection serves on.
func TestH2Strict(t *testing.T) {
	var leaked atomic.Pointer[string]
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "refused") {
			l := r.Method + " " + r.URL.Path
			leaked.Store(&l)
		}
		io.WriteString(w, "ok")
	})
	addr := serveTLS(t, NewHTTP(h, Options{MaxHeaderFields: 10, Logger: slog.New(slog.DiscardHandler)}))
	client := h2Client(t)
	for _, tt := range []struct {
		name, method, path string
		fields             int
		status             int
	}{
		{"NUL in the path", "GET", "/refused%00", 0, 400},
		{"lower-case method", "get", "/refused", 0, 400},
		// With Host (counted as on the plain front), User-Agent and
		// Accept-Encoding: 10 and 11 fields.
		{"10 header fields", "GET", "/ok", 7, 200},
		{"11 header fields", "GET", "/refused", 8, 431},
	} {
		t.Run(tt.name, func(t *testing.T) {
			leaked.Store(nil)
			req, err := http.NewRequest(tt.method, "https://"+addr+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("User-Agent", "test")
			req.Header.Set("Accept-Encoding", "identity")
			for i := range tt.fields {
				req.Header.Set(fmt.Sprintf("X-F%d", i), "v")
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != 2 || resp.StatusCode != tt.status {
				t.Errorf("%s: %d, want %d over HTTP/2", resp.Proto, resp.StatusCode, tt.status)
			}
			if l := leaked.Load(); l != nil {
				t.Errorf("a refused request reached the handler: %s", *l)
			}
		})
	}
}
