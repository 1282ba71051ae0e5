package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"portico/internal/porticotest"
)

// waitStats waits until s.Stats() is want.
func waitStats(t *testing.T, s *HTTP, want Stats) {
	t.Helper()
	var got Stats
	porticotest.WaitFor(t, "stats", 10*time.Second, func() bool {
		got = s.Stats()
		return got == want
	})
}

// oneRequest sends a keep-alive GET on c and reads its response.
func oneRequest(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// TestStatsPlain: accepted connections, open and idle ones, and those
// refused for a broken PROXY header, on a plain listener.
func TestStatsPlain(t *testing.T) {
	s := NewHTTP(hello, Options{Logger: slog.New(slog.DiscardHandler)})
	l, err := Listen("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	pl := ProxyListener(l, ProxyOptions{Logger: slog.New(slog.DiscardHandler)})
	done := make(chan error, 1)
	go func() { done <- s.Serve(pl) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "PROXY TCP4 192.0.2.1 192.0.2.2 1234 80\r\n")
	oneRequest(t, c)
	waitStats(t, s, Stats{Open: 1, Idle: 1, Accepted: 1})

	bad, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	io.WriteString(bad, "GET / HTTP/1.1\r\n\r\n") // no PROXY header
	waitStats(t, s, Stats{Open: 1, Idle: 1, Accepted: 2, Refused: 1})
	c.Close()
	waitStats(t, s, Stats{Open: 0, Idle: 0, Accepted: 2, Refused: 1})
}

// TestStatsTLS: the same through net/http's ConnState hook; a client that
// fails the handshake is refused.
func TestStatsTLS(t *testing.T) {
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	cert := ts.TLS.Certificates[0]
	ts.Close()
	s := NewHTTP(hello, Options{Logger: slog.New(slog.DiscardHandler)})
	l, err := Listen("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	tl := TLSListener(l, &tls.Config{Certificates: []tls.Certificate{cert}})
	done := make(chan error, 1)
	go func() { done <- s.ServeTLS(tl) }()
	defer func() {
		s.Close()
		<-done
	}()
	c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	oneRequest(t, c)
	waitStats(t, s, Stats{Open: 1, Idle: 1, Accepted: 1})

	bad, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(bad, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") // not a TLS hello
	io.Copy(io.Discard, bad)                                 // until the server closes it
	bad.Close()
	waitStats(t, s, Stats{Open: 1, Idle: 1, Accepted: 2, Refused: 1})
	c.Close()
	waitStats(t, s, Stats{Open: 0, Idle: 0, Accepted: 2, Refused: 1})
}
