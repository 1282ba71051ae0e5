package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"portico/internal/porticotest"
)

// serve starts s on a fresh loopback listener and returns its address. The
// server is shut down, and Serve's return checked, at the end of the test.
func serve(t *testing.T, s *HTTP, addr string) net.Addr {
	t.Helper()
	l, err := Listen(addr, 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
	})
	return l.Addr()
}

var hello = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	io.WriteString(w, "hello")
})

// rawRoundTrip sends req on a new connection and reads one response. The
// request is written concurrently, since the server may answer (and stop
// reading) before it has all of it.
func rawRoundTrip(t *testing.T, addr net.Addr, req string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial(addr.Network(), addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var wg sync.WaitGroup
	wg.Go(func() { io.WriteString(c, req) })
	defer wg.Wait()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

func get(t *testing.T, addr net.Addr) {
	t.Helper()
	resp, body := rawRoundTrip(t, addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != 200 || body != "hello" {
		t.Fatalf("GET / = %d %q, want 200 \"hello\"", resp.StatusCode, body)
	}
}

func TestHTTPDefaults(t *testing.T) {
	s := NewHTTP(hello, Options{})
	for _, c := range []struct {
		name      string
		got, want time.Duration
	}{
		{"ReadHeaderTimeout", s.readHeaderTimeout, 60 * time.Second},
		{"IdleTimeout", s.idleTimeout, 75 * time.Second},
		{"BodyTimeout", s.bodyTimeout, 60 * time.Second},
		{"SendTimeout", s.writeTimeout, 60 * time.Second},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if s.maxHeaderBytes != 64<<10 {
		t.Errorf("MaxHeaderBytes = %v; want 64 KiB", s.maxHeaderBytes)
	}

	s = NewHTTP(hello, Options{ReadHeaderTimeout: -1, IdleTimeout: -1, BodyTimeout: -1, SendTimeout: -1})
	if s.readHeaderTimeout > 0 || s.idleTimeout > 0 || s.bodyTimeout > 0 || s.writeTimeout > 0 {
		t.Errorf("negative timeouts mapped to %v, %v, %v, %v; want no limit", s.readHeaderTimeout, s.idleTimeout, s.bodyTimeout, s.writeTimeout)
	}
}

func TestHTTPBadRequests(t *testing.T) {
	addr := serve(t, NewHTTP(hello, Options{}), "127.0.0.1:0")
	big := func(n int) string {
		return "GET / HTTP/1.1\r\nHost: x\r\nCookie: " + strings.Repeat("a", n) + "\r\n\r\n"
	}
	tests := []struct {
		name   string
		req    string
		status int
	}{
		{"garbage", "GARBAGE\r\n\r\n", 400},
		{"header without colon", "GET / HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n", 400},
		{"bad version", "GET / HTTP/9.9\r\nHost: x\r\n\r\n", 505},
		{"missing host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"32 KiB header, past uWSGI's 4 KiB", big(32 << 10), 200},
		{"80 KiB header", big(80 << 10), 431},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, _ := rawRoundTrip(t, addr, tt.req)
			if resp.StatusCode != tt.status {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.status)
			}
			get(t, addr) // still serving
		})
	}
}

func TestHTTPMaxHeaderBytes(t *testing.T) {
	addr := serve(t, NewHTTP(hello, Options{MaxHeaderBytes: 1 << 10}), "127.0.0.1:0")
	req := "GET / HTTP/1.1\r\nHost: x\r\nCookie: " + strings.Repeat("a", 8<<10) + "\r\n\r\n"
	if resp, _ := rawRoundTrip(t, addr, req); resp.StatusCode != 431 {
		t.Errorf("status = %d, want 431", resp.StatusCode)
	}
	get(t, addr)
}

// expectClosed checks that the server closes c without answering.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("Read = %d, %v; want the server to close the connection", n, err)
	}
}

func TestHTTPTimeouts(t *testing.T) {
	addr := serve(t, NewHTTP(hello, Options{
		ReadHeaderTimeout: 50 * time.Millisecond,
		IdleTimeout:       50 * time.Millisecond,
	}), "127.0.0.1:0")

	t.Run("slow headers", func(t *testing.T) {
		c, err := net.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n") // never ends
		expectClosed(t, c)
	})
	t.Run("idle keep-alive", func(t *testing.T) {
		c, err := net.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Close {
			t.Fatalf("first response: %d close=%v, want a kept-alive 200", resp.StatusCode, resp.Close)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := br.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
			t.Errorf("Read = %d, %v; want the idle connection closed", n, err)
		}
	})
}

func TestHTTPErrorLog(t *testing.T) {
	rec := porticotest.NewLogRecorder()
	panicky := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") })
	addr := serve(t, NewHTTP(panicky, Options{Logger: rec.Logger()}), "127.0.0.1:0")

	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	// net/http logs the panic before it closes the connection.
	expectClosed(t, c)

	records := rec.Records()
	if len(records) != 1 {
		t.Fatalf("got %d log records, want 1:\n%s", len(records), rec)
	}
	r := records[0]
	if r.Level != slog.LevelWarn || !strings.Contains(r.Message, "http: panic serving") || !strings.Contains(r.Message, "boom") {
		t.Errorf("log record = %v %q, want a warning about the panic", r.Level, r.Message)
	}
}

func TestHTTPShutdownGraceful(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "done")
	})
	s := NewHTTP(h, Options{})
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := Listen("unix:"+path, 0)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()

	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := client.Get("http://portico/")
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{string(b), err}
	}()
	<-entered

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after Shutdown: %v, want it removed", err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v before the in-flight request finished", err)
	default:
	}
	close(release)
	if r := <-got; r.err != nil || r.body != "done" {
		t.Errorf("in-flight request = %q, %v; want \"done\"", r.body, r.err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

func TestHTTPCloseAfterGrace(t *testing.T) {
	entered := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
	})
	s := NewHTTP(h, Options{})
	l, err := Listen("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-entered

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the grace period is already over
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown = %v, want context.Canceled", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	expectClosed(t, c)
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
	}
}

// registerDefaultMux puts a route on the global http.DefaultServeMux, once
// per test binary (a second registration panics under -count=2).
var registerDefaultMux = sync.OnceFunc(func() {
	http.HandleFunc("/portico-test-default-mux", func(w http.ResponseWriter, r *http.Request) {})
})

func TestHTTPNilHandler(t *testing.T) {
	registerDefaultMux()
	addr := serve(t, NewHTTP(nil, Options{}), "127.0.0.1:0")
	resp, _ := rawRoundTrip(t, addr, "GET /portico-test-default-mux HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != 404 {
		t.Errorf("status = %d, want 404 (not http.DefaultServeMux)", resp.StatusCode)
	}
}

// failingListener fails every Accept with EMFILE (out of descriptors)
// until closed, telling calls each one.
type failingListener struct {
	net.Listener
	calls  chan int
	n      int
	closed chan struct{}
	once   sync.Once
}

func (l *failingListener) Accept() (net.Conn, error) {
	select {
	case <-l.closed:
		return nil, net.ErrClosed
	default:
	}
	l.n++
	l.calls <- l.n
	return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
}

func (l *failingListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// TestHTTPShutdownDuringAcceptBackoff: Serve backs off after accept
// errors (up to a second between tries), and Shutdown ends the wait at
// once instead of waiting it out.
func TestHTTPShutdownDuringAcceptBackoff(t *testing.T) {
	inner, err := Listen("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	l := &failingListener{Listener: inner, calls: make(chan int, 100), closed: make(chan struct{})}
	s := NewHTTP(hello, Options{Logger: slog.New(slog.DiscardHandler)})
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	// 5, 10, 20 ... 640 ms, then 1 s: after the 8th failure Serve waits
	// 640 ms, after the 9th a second.
	for n := range l.calls {
		if n == 9 {
			break
		}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case err := <-served:
		if !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve = %v, want http.ErrServerClosed", err)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Errorf("Serve returned %v after Shutdown; want at once, not after its backoff", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Shutdown")
	}
}
