package limit

import (
	"bufio"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"portico/internal/porticotest"
)

// echoServer serves l: each connection echoes lines until closed.
func echoServer(t *testing.T, l net.Listener) {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

// served dials addr and reports whether the connection is served (a line
// comes back) or refused (closed without a byte).
func served(t *testing.T, addr string) (net.Conn, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if errors.Is(err, syscall.ECONNRESET) {
		return nil, false // refused so fast that the reset came with the handshake
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return c, false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err == nil && line == "ping\n" {
		return c, true
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("want a refusal (EOF or reset), got %q, %v", line, err)
	}
	return c, false
}

// TestListenerPerAddr: the N+1th connection from an address is closed at
// once while the N others are served; closing one makes room.
func TestListenerPerAddr(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(raw, ListenerOptions{PerAddr: 2, Logger: porticotest.NewLogRecorder().Logger()})
	echoServer(t, l)
	addr := raw.Addr().String()
	c1, ok1 := served(t, addr)
	_, ok2 := served(t, addr)
	if !ok1 || !ok2 {
		t.Fatal("the first two connections were not served")
	}
	if _, ok := served(t, addr); ok {
		t.Fatal("the third connection from the address was served")
	}
	if l.Rejected() != 1 {
		t.Fatalf("refused %d, want 1", l.Rejected())
	}
	c1.Close()
	porticotest.WaitFor(t, "the closed connection to be released", 10*time.Second, func() bool { return l.Open() == 1 })
	if _, ok := served(t, addr); !ok {
		t.Fatal("a connection after one closed was refused")
	}
}

// TestListenerMax: max_connections refuses whoever comes past it.
func TestListenerMax(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(raw, ListenerOptions{Max: 1, Logger: porticotest.NewLogRecorder().Logger()})
	echoServer(t, l)
	addr := raw.Addr().String()
	c1, ok := served(t, addr)
	if !ok {
		t.Fatal("the first connection was not served")
	}
	if _, ok := served(t, addr); ok {
		t.Fatal("a connection past max_connections was served")
	}
	c1.Close()
	porticotest.WaitFor(t, "the closed connection to be released", 10*time.Second, func() bool { return l.Open() == 0 })
	if _, ok := served(t, addr); !ok {
		t.Fatal("a connection after the first closed was refused")
	}
}
