package server

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"portico/internal/porticotest"
)

// uwRawOf returns the uwRawConn a request's connection is, nil if it is
// another kind.
func uwRawOf(r *http.Request) *uwRawConn {
	rc, _ := r.Context().(*reqCtx)
	if rc == nil {
		return nil
	}
	c, _ := rc.c.(*uwConn).rwc.(*uwRawConn)
	return c
}

// TestUWSGIRawConn checks the cheap path of a unix socket (a packet there
// at accept is read without the poller: TestUWSGIRawConnSyscalls): a
// response larger than the socket's buffer, a packet that arrives in two
// writes and a server Close in the middle of a request go through the
// poller, with the same results as a net.UnixConn.
func TestUWSGIRawConn(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB: more than a unix socket buffers
	type seen struct {
		raw      bool
		promoted bool // when the handler started
		err      error
	}
	seenc := make(chan seen, 1)
	writing := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := &uwServer{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := uwRawOf(r)
		s := seen{raw: c != nil}
		if c != nil {
			s.promoted = c.f.Load() != nil
		}
		switch r.URL.Path {
		case "/big":
			writing <- struct{}{}
			_, s.err = w.Write(big)
			if c != nil && c.f.Load() == nil {
				s.err = errors.New("a 4 MiB write did not go through the poller")
			}
		case "/closed":
			writing <- struct{}{}
			<-release
			io.WriteString(w, "late")
			s.err = http.NewResponseController(w).Flush()
		default:
			io.WriteString(w, "ok")
		}
		seenc <- s
	})}
	addr, _ := uwTestServer(t, "unix", srv)
	get := func(path string) []uwKV {
		return uwSet(uwSet(uwStockParams(), "PATH_INFO", path), "REQUEST_URI", path)
	}

	t.Run("small", func(t *testing.T) {
		resp, body := uwParse(t, uwExchange(t, "unix", addr, uwPacket(0, get("/small")), false), "GET")
		s := <-seenc
		if resp.StatusCode != 200 || body != "ok" {
			t.Errorf("response %d %q", resp.StatusCode, body)
		}
		if !s.raw {
			t.Error("not a uwRawConn")
		}
	})

	t.Run("large response", func(t *testing.T) {
		c, err := net.Dial("unix", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(uwPacket(0, get("/big"))); err != nil {
			t.Fatal(err)
		}
		<-writing
		// Not reading yet: the server's write fills the socket's buffer
		// and waits in the poller until we read.
		porticotest.WaitFor(t, "the response's write to wait in the poller", 10*time.Second, func() bool { return uwAnyPromoted(srv.srv()) })
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || !bytes.Equal(body, big) {
			t.Errorf("body: %d bytes, %v; want %d", len(body), err, len(big))
		}
		if s := <-seenc; !s.raw || s.err != nil {
			t.Errorf("raw %v, write: %v", s.raw, s.err)
		}
	})

	t.Run("packet in two writes", func(t *testing.T) {
		c, err := net.Dial("unix", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		pkt := uwPacket(0, get("/split"))
		if _, err := c.Write(pkt[:len(pkt)/2]); err != nil {
			t.Fatal(err)
		}
		porticotest.WaitFor(t, "the packet's read to wait in the poller", 10*time.Second, func() bool { return uwAnyPromoted(srv.srv()) })
		if _, err := c.Write(pkt[len(pkt)/2:]); err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		resp, body := uwParse(t, raw, "GET")
		if resp.StatusCode != 200 || body != "ok" {
			t.Errorf("response %d %q", resp.StatusCode, body)
		}
		if s := <-seenc; !s.raw || !s.promoted {
			t.Errorf("raw %v, promoted %v: want a uwRawConn that waited in the poller", s.raw, s.promoted)
		}
	})

	t.Run("Close during the request", func(t *testing.T) {
		got := make(chan error, 1)
		go func() {
			raw, err := uwRawExchange("unix", addr, uwPacket(0, get("/closed")))
			if err == nil && len(raw) != 0 {
				err = errors.New("got " + string(raw))
			}
			got <- err
		}()
		<-writing
		srv.srv().mu.Lock()
		for c := range srv.srv().uwConns {
			c.rwc.Close() // what Close does to each connection
		}
		srv.srv().mu.Unlock()
		if err := <-got; err != nil {
			t.Errorf("client: %v, want the connection closed without a response", err)
		}
		close(release)
		if s := <-seenc; !errors.Is(s.err, net.ErrClosed) {
			t.Errorf("Flush after Close: %v, want net.ErrClosed", s.err)
		}
	})

	t.Run("still serving", func(t *testing.T) {
		resp, body := uwParse(t, uwExchange(t, "unix", addr, uwPacket(0, get("/again")), false), "GET")
		<-seenc
		if resp.StatusCode != 200 || body != "ok" {
			t.Errorf("response %d %q", resp.StatusCode, body)
		}
	})
}

// uwAnyPromoted reports whether a connection s serves waits in the poller.
func uwAnyPromoted(s *HTTP) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.uwConns {
		if rc, ok := c.rwc.(*uwRawConn); ok && rc.f.Load() != nil {
			return true
		}
	}
	return false
}

// TestUWSGIRawConnSyscalls checks a uwRawConn on its own: what is there is
// read and written without the poller; deadlines that passed, the end of
// input and use after Close give the errors a net.Conn gives; a read that
// must wait goes through the poller.
func TestUWSGIRawConnSyscalls(t *testing.T) {
	a, b := uwSocketPair(t, "packet")
	defer b.Close()
	rc := a.(*uwRawConn)
	buf := make([]byte, 64)
	if n, err := a.Read(buf); string(buf[:n]) != "packet" || err != nil {
		t.Errorf("Read: %q, %v", buf[:n], err)
	}
	a.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := a.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read past its deadline: %v", err)
	}
	a.SetReadDeadline(time.Time{})
	a.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := a.Write(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Write past its deadline: %v", err)
	}
	a.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if n, err := a.Write([]byte("hello")); n != 5 || err != nil {
		t.Errorf("Write: %d, %v", n, err)
	}
	if rc.f.Load() != nil {
		t.Fatal("the poller was used with the input there and room to write")
	}

	type result struct {
		got []byte
		err error
	}
	read := make(chan result, 1)
	go func() {
		got, err := io.ReadAll(a)
		read <- result{got, err}
	}()
	porticotest.WaitFor(t, "the read to wait in the poller", 10*time.Second, func() bool { return rc.f.Load() != nil })
	b.Write([]byte("bye"))
	b.(interface{ CloseWrite() error }).CloseWrite()
	if r := <-read; string(r.got) != "bye" || r.err != nil {
		t.Errorf("ReadAll: %q, %v", r.got, r.err)
	}

	if err := a.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := a.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
	if err := a.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	if got, _ := io.ReadAll(b); string(got) != "hello" {
		t.Errorf("peer read %q", got)
	}
	if !strings.HasSuffix(a.LocalAddr().String(), "uwsgi.sock") {
		t.Errorf("LocalAddr %v", a.LocalAddr())
	}
}

// TestUWSGIRawConnLargeWrite checks a write larger than the socket's
// buffer: written with plain system calls until the buffer is full, the
// rest through the poller, all of it in order.
func TestUWSGIRawConnLargeWrite(t *testing.T) {
	a, b := uwSocketPair(t, "")
	defer a.Close()
	defer b.Close()
	big := make([]byte, 4<<20)
	for i := range big {
		big[i] = byte(i * 7 / 3)
	}
	type result struct {
		n   int
		err error
	}
	wrote := make(chan result, 1)
	go func() {
		n, err := a.Write(big)
		a.(interface{ CloseWrite() error }).CloseWrite()
		wrote <- result{n, err}
	}()
	porticotest.WaitFor(t, "the write to wait in the poller", 10*time.Second, func() bool { return a.(*uwRawConn).f.Load() != nil })
	got, err := io.ReadAll(b)
	if err != nil || !bytes.Equal(got, big) {
		t.Errorf("peer read %d bytes (%v), want the %d written", len(got), err, len(big))
	}
	if r := <-wrote; r.n != len(big) || r.err != nil {
		t.Errorf("Write: %d, %v", r.n, r.err)
	}
}

// TestUWSGIRawConnTCP checks what a uwRawConn does on TCP as net.TCPConn
// does: its addresses; TCP_NODELAY (set before a second write, so that a
// streamed response is not held back by Nagle's algorithm); keep-alive
// once it waits in the poller; SetLinger(0), which makes Close reset the
// connection.
func TestUWSGIRawConnTCP(t *testing.T) {
	a, b := uwSocketPairOn(t, "tcp", "packet")
	defer b.Close()
	rc := a.(*uwRawConn)
	if ra, ok := a.RemoteAddr().(*net.TCPAddr); !ok || ra.String() != b.LocalAddr().String() {
		t.Errorf("RemoteAddr %v, want %v", a.RemoteAddr(), b.LocalAddr())
	}
	if la, ok := a.LocalAddr().(*net.TCPAddr); !ok || la.String() != b.RemoteAddr().String() {
		t.Errorf("LocalAddr %v, want %v", a.LocalAddr(), b.RemoteAddr())
	}
	opt := func(level, name int) int {
		t.Helper()
		var v int
		if err := rc.control(func(fd int) error {
			var err error
			v, err = syscall.GetsockoptInt(fd, level, name)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return v
	}
	buf := make([]byte, 64)
	if n, err := a.Read(buf); string(buf[:n]) != "packet" || err != nil {
		t.Errorf("Read: %q, %v", buf[:n], err)
	}
	a.Write([]byte("one"))
	if opt(syscall.IPPROTO_TCP, syscall.TCP_NODELAY) != 0 {
		t.Error("TCP_NODELAY set for a first write")
	}
	a.Write([]byte("two"))
	if opt(syscall.IPPROTO_TCP, syscall.TCP_NODELAY) == 0 {
		t.Error("TCP_NODELAY not set for a second write")
	}
	if opt(syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) != 0 {
		t.Error("keep-alive set before the connection waited")
	}
	a.SetReadDeadline(time.Now().Add(time.Millisecond))
	if _, err := a.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read with nothing to read, past its deadline: %v", err)
	}
	if rc.f.Load() == nil || opt(syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) == 0 ||
		opt(syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE) != uwKeepAliveIdle {
		t.Error("keep-alive not set when the connection went to the poller")
	}
	if err := a.(interface{ SetLinger(int) error }).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	a.Close()
	got, err := io.ReadAll(b)
	if string(got) != "onetwo" || !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("peer read %q, %v; want onetwo, then a reset", got, err)
	}
}

// uwSocketPair returns a uwRawConn accepted on a unix socket and the
// net.Conn connected to it, which wrote first before the accept.
func uwSocketPair(t *testing.T, first string) (net.Conn, net.Conn) {
	t.Helper()
	return uwSocketPairOn(t, "unix", first)
}

// uwSocketPairOn is uwSocketPair on network "unix" or "tcp".
func uwSocketPairOn(t *testing.T, network, first string) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := uwListen(t, network)
	if err != nil {
		t.Fatal(err)
	}
	rl := uwRawListen(ln)
	defer rl.Close()
	if _, ok := rl.(*uwRawListener); !ok {
		t.Fatalf("uwRawListen gave a %T", rl)
	}
	b, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(b, first); err != nil {
		t.Fatal(err)
	}
	a, err := rl.Accept()
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	return a, b
}
