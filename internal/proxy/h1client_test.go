package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func h1For(addr string) *H1Transport {
	return &H1Transport{Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}}
}

func roundTrip(t *testing.T, tr http.RoundTripper, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// Sequential requests share one connection, whatever the body's framing,
// and a response read exactly to its Content-Length (as the proxy's small
// path reads) still gives the connection back.
func TestH1TransportReuses(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/chunked":
			w.Write([]byte("chunk-"))
			w.(http.Flusher).Flush()
			w.Write(b)
		default:
			w.Header().Set("Content-Length", fmt.Sprint(len(b)+3))
			w.Write(append([]byte("cl-"), b...))
		}
	}))
	cl := &countingListener{Listener: srv.Listener}
	srv.Listener = cl
	srv.Start()
	defer srv.Close()
	tr := h1For(srv.Listener.Addr().String())
	defer tr.CloseIdleConnections()
	for i := range 5 {
		body := fmt.Sprintf("body%d", i)
		req := httptest.NewRequest("POST", "http://up/cl", strings.NewReader(body))
		req.RequestURI = ""
		if _, got := roundTrip(t, tr, req); got != "cl-"+body {
			t.Fatalf("got %q", got)
		}
		// Unknown length: sent chunked.
		req = httptest.NewRequest("POST", "http://up/chunked", io.MultiReader(strings.NewReader(body)))
		req.ContentLength = -1
		if _, got := roundTrip(t, tr, req); got != "chunk-"+body {
			t.Fatalf("got %q", got)
		}
		// Exactly Content-Length bytes, then Close.
		req = httptest.NewRequest("GET", "http://up/cl", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, resp.ContentLength)
		if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "cl-" {
			t.Fatalf("ReadFull: %q %v", buf, err)
		}
		resp.Body.Close()
	}
	if n := cl.n.Load(); n != 1 {
		t.Errorf("%d connections for 15 requests, want 1", n)
	}
}

// rawServer answers with handle on each accepted connection.
func rawServer(t *testing.T, handle func(n int, c net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for n := 0; ; n++ {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go handle(n, c)
		}
	}()
	return l.Addr().String()
}

func readRequest(br *bufio.Reader) (*http.Request, error) {
	req, err := http.ReadRequest(br)
	if err == nil {
		_, err = io.Copy(io.Discard, req.Body)
	}
	return req, err
}

// A kept-alive connection the server closed while idle is noticed before
// reuse (the peek), and one it closes on receiving the next request is
// retried once on a new connection for an idempotent request only.
func TestH1TransportStaleConnections(t *testing.T) {
	closedIdle := make(chan struct{}, 4)
	addr := rawServer(t, func(n int, c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		if n == 0 {
			closedIdle <- struct{}{} // first connection: closed while idle
			return
		}
		// Later connections: read the next request, then close unanswered.
		readRequest(br)
	})
	tr := h1For(addr)
	defer tr.CloseIdleConnections()
	get := func() (*http.Response, error) {
		return tr.RoundTrip(httptest.NewRequest("GET", "http://up/", nil))
	}
	resp, err := get()
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	<-closedIdle
	// The idle connection is closed by now; wait until the close reached
	// this side, as the peek sees it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		tr.mu.Lock()
		alive := len(tr.idle) == 1 && tr.idle[0].alive()
		tr.mu.Unlock()
		if !alive || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	// A POST (never sent twice) goes on a new connection: the peek saw the
	// close.
	post := httptest.NewRequest("POST", "http://up/", strings.NewReader("x"))
	resp, err = tr.RoundTrip(post)
	if err != nil {
		t.Fatalf("POST after an idle close: %v", err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	// Connection 1 is kept; the server closes it on the next request: a
	// GET is sent again on connection 2, a POST is not.
	resp, err = get()
	if err != nil {
		t.Fatalf("GET on a connection closed under it: %v", err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	req := httptest.NewRequest("POST", "http://up/", strings.NewReader("pay"))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("pay")), nil }
	if _, err := tr.RoundTrip(req); err == nil {
		t.Error("a POST was sent again after the server closed on it")
	}
}
