package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"portico/internal/porticotest"
)

// parkedCount returns how many connections s's parker holds.
func parkedCount(s *HTTP) int {
	p := s.parker()
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// roundTrip sends a GET on c and checks the answer.
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, path string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "hello "+path {
		t.Fatalf("GET %s = %d %q", path, resp.StatusCode, b)
	}
}

var echoPath = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	io.WriteString(w, "hello "+r.URL.Path)
})

// TestParkResume checks that idle keep-alive connections give up their
// goroutines (they are parked) and are served again when a request comes.
func TestParkResume(t *testing.T) {
	s := NewHTTP(echoPath, Options{})
	s.parkAfter = 50 * time.Millisecond
	addr := serve(t, s, "127.0.0.1:0")

	const n = 20
	conns, readers := dialServed(t, addr, n)
	before := runtime.NumGoroutine()
	porticotest.WaitFor(t, "the connections to be parked", 5*time.Second, func() bool { return parkedCount(s) == n })
	if after := runtime.NumGoroutine(); after > before-n+2 {
		t.Errorf("goroutines: %d before parking, %d after; want about %d fewer", before, after, n)
	}
	for i, c := range conns {
		roundTrip(t, c, readers[i], "/second") // resumed
	}
	// Parked again, then resumed again: the cycle repeats.
	porticotest.WaitFor(t, "the connections to be parked again", 5*time.Second, func() bool { return parkedCount(s) == n })
	roundTrip(t, conns[0], readers[0], "/third")
}

// TestParkedIdleTimeout checks that a parked connection is closed when its
// idle timeout passes, and that its goroutine-less cleanup runs.
func TestParkedIdleTimeout(t *testing.T) {
	s := NewHTTP(echoPath, Options{IdleTimeout: 1200 * time.Millisecond})
	s.parkAfter = 50 * time.Millisecond
	addr := serve(t, s, "127.0.0.1:0")
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	roundTrip(t, c, br, "/x")
	porticotest.WaitFor(t, "the connection to be parked", 5*time.Second, func() bool { return parkedCount(s) == 1 })
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := br.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("Read = %d, %v; want the parked connection closed at its idle timeout", n, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed %v after parking; want about the idle timeout", d)
	}
	porticotest.WaitFor(t, "the server to forget the connection", 5*time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.conns) == 0
	})
}

// TestShutdownClosesParked checks that Shutdown closes parked connections
// and returns (nothing is left waiting for a goroutine that does not exist).
func TestShutdownClosesParked(t *testing.T) {
	s := NewHTTP(echoPath, Options{})
	s.parkAfter = 20 * time.Millisecond
	l, err := Listen("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	var conns []net.Conn
	for range 5 {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		roundTrip(t, c, bufio.NewReader(c), "/a")
		conns = append(conns, c)
	}
	porticotest.WaitFor(t, "the connections to be parked", 5*time.Second, func() bool { return parkedCount(s) == len(conns) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve = %v", err)
	}
	for _, c := range conns {
		expectClosed(t, c)
	}
	if n := parkedCount(s); n != 0 {
		t.Errorf("%d connections still parked after Shutdown", n)
	}
}

// TestParkSlowHeaders checks that a request whose first bytes wake a parked
// connection still has the header timeout.
func TestParkSlowHeaders(t *testing.T) {
	s := NewHTTP(echoPath, Options{ReadHeaderTimeout: 200 * time.Millisecond})
	s.parkAfter = 20 * time.Millisecond
	addr := serve(t, s, "127.0.0.1:0")
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	roundTrip(t, c, br, "/a")
	porticotest.WaitFor(t, "the connection to be parked", 5*time.Second, func() bool { return parkedCount(s) == 1 })
	io.WriteString(c, "GET /b HTTP/1.1\r\n") // and nothing more
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(br)
	if err != nil || strings.Contains(string(b), "200 OK") {
		t.Errorf("after a partial head: %q, %v; want the connection closed without an answer", b, err)
	}
}

// eventpolls counts the process's epoll descriptors.
func eventpolls(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && l == "anon_inode:[eventpoll]" {
			n++
		}
	}
	return n
}

// TestParkerClosesEpoll checks that the parker's epoll descriptor is
// closed when the server stops, whether or not connections were parked
// then, by Shutdown and by Close.
func TestParkerClosesEpoll(t *testing.T) {
	for _, stop := range []string{"Shutdown", "Close"} {
		for _, parkedAtStop := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/parked=%t", stop, parkedAtStop), func(t *testing.T) {
				before := eventpolls(t)
				s := NewHTTP(echoPath, Options{})
				s.parkAfter = 20 * time.Millisecond
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
				br := bufio.NewReader(c)
				roundTrip(t, c, br, "/a")
				porticotest.WaitFor(t, "the connection to be parked", 5*time.Second, func() bool { return parkedCount(s) == 1 })
				if n := eventpolls(t); n != before+1 {
					t.Fatalf("%d epoll descriptors with a parker, %d before", n, before)
				}
				if !parkedAtStop {
					c.Close()
					porticotest.WaitFor(t, "the parker to let go", 5*time.Second, func() bool {
						p := s.parker()
						p.mu.Lock()
						defer p.mu.Unlock()
						return !p.active
					})
				}
				if stop == "Shutdown" {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					if err := s.Shutdown(ctx); err != nil {
						t.Fatalf("Shutdown: %v", err)
					}
				} else {
					s.Close()
				}
				<-served
				porticotest.WaitFor(t, "the epoll descriptor to be closed", 5*time.Second, func() bool { return eventpolls(t) == before })
			})
		}
	}
}

// TestOnIdleDrop checks that a burst of connections going idle calls
// Options.OnIdleDrop once, about a second after the last one parked.
func TestOnIdleDrop(t *testing.T) {
	calls := make(chan time.Time, 10)
	s := NewHTTP(echoPath, Options{OnIdleDrop: func() { calls <- time.Now() }})
	s.parkAfter = 20 * time.Millisecond
	s.idleDropAfter = 5
	addr := serve(t, s, "127.0.0.1:0")
	for range 5 {
		c, err := net.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		roundTrip(t, c, bufio.NewReader(c), "/a")
	}
	porticotest.WaitFor(t, "the connections to be parked", 5*time.Second, func() bool { return parkedCount(s) == 5 })
	parked := time.Now()
	select {
	case at := <-calls:
		if d := at.Sub(parked); d < 900*time.Millisecond {
			t.Errorf("OnIdleDrop called %v after the burst parked; want a second or more", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnIdleDrop never called")
	}
	select {
	case <-calls:
		t.Error("OnIdleDrop called twice for one burst")
	case <-time.After(1500 * time.Millisecond):
	}
}

// TestParkDropsSpareHeader checks that a parked connection does not keep
// the state of a connection being served, the header map it reuses
// between requests among it (a few hundred bytes each of a large number of
// idle connections), and that a resumed one answers with its headers as
// before.
func TestParkDropsSpareHeader(t *testing.T) {
	s := NewHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Path", r.URL.Path)
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "hello "+r.URL.Path)
	}), Options{})
	s.parkAfter = 50 * time.Millisecond
	addr := serve(t, s, "127.0.0.1:0")

	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	roundTrip(t, c, br, "/first")
	porticotest.WaitFor(t, "the connection to be parked", 5*time.Second, func() bool { return parkedCount(s) == 1 })
	p := s.parker()
	p.mu.Lock()
	for _, pc := range p.conns {
		if pc.connActive != nil {
			t.Errorf("a parked connection keeps its active state (spare header map of %d entries)", len(pc.spareHeader))
		}
	}
	p.mu.Unlock()

	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET /second HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if got := resp.Header.Get("X-Path"); got != "/second" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("resumed response headers: X-Path %q, Cache-Control %q", got, resp.Header.Get("Cache-Control"))
	}
}

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// closeCountingListener wraps each connection in a TCPWrapper that counts
// its Close calls, as internal/limit's does to release a place.
type closeCountingListener struct {
	net.Listener
	closes *atomic.Int64
}

type closeCountingConn struct {
	countingConn
	closes *atomic.Int64
}

func (c closeCountingConn) Close() error { c.closes.Add(1); return c.countingConn.Close() }

func (c closeCountingConn) SyscallConn() (syscall.RawConn, error) {
	return c.countingConn.Conn.(syscall.Conn).SyscallConn()
}

func (l closeCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return closeCountingConn{countingConn{c}, l.closes}, nil
}

// TestParkDetaches checks that a parked bare TCP connection is held by a
// descriptor alone (its net.Conn closed, the socket open), is served again
// over a fresh net.Conn, many times, without leaking descriptors; and that
// a wrapped connection is parked as it is, its wrapper not closed.
func TestParkDetaches(t *testing.T) {
	s := NewHTTP(echoPath, Options{})
	s.parkAfter = 20 * time.Millisecond
	addr := serve(t, s, "127.0.0.1:0")

	const n = 10
	conns, readers := dialServed(t, addr, n)
	porticotest.WaitFor(t, "the connections to be parked", 5*time.Second, func() bool { return parkedCount(s) == n })
	fds := openFDs(t)
	for round := range 3 {
		p := s.parker()
		p.mu.Lock()
		for _, c := range p.conns {
			if !c.detached || c.rwc != nil {
				t.Errorf("round %d: a parked TCP connection keeps its net.Conn (detached %v)", round, c.detached)
			}
		}
		p.mu.Unlock()
		for i, c := range conns {
			roundTrip(t, c, readers[i], fmt.Sprintf("/again%d", round))
		}
		porticotest.WaitFor(t, "the connections to be parked again", 5*time.Second, func() bool { return parkedCount(s) == n })
		if got := openFDs(t); got > fds {
			t.Errorf("round %d: %d open descriptors, %d after the first parking", round, got, fds)
		}
	}

	// A wrapped connection: parked, never closed behind its wrapper's back.
	var closes atomic.Int64
	ws := NewHTTP(echoPath, Options{})
	ws.parkAfter = 20 * time.Millisecond
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go ws.Serve(closeCountingListener{l, &closes})
	defer ws.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	roundTrip(t, c, br, "/w")
	porticotest.WaitFor(t, "the wrapped connection to be parked", 5*time.Second, func() bool { return parkedCount(ws) == 1 })
	if closes.Load() != 0 {
		t.Errorf("parking closed the wrapper %d times", closes.Load())
	}
	wp := ws.parker()
	wp.mu.Lock()
	for _, pc := range wp.conns {
		if _, ok := pc.rwc.(closeCountingConn); !ok || pc.detached {
			t.Errorf("a parked wrapped connection lost its wrapper (rwc %T, detached %v)", pc.rwc, pc.detached)
		}
	}
	wp.mu.Unlock()
	roundTrip(t, c, br, "/w2")
}

// dialServed opens n connections to addr, each served one request (so that
// it is kept alive, waiting for its next one); they close with the test.
func dialServed(t *testing.T, addr net.Addr, n int) ([]net.Conn, []*bufio.Reader) {
	t.Helper()
	conns := make([]net.Conn, n)
	readers := make([]*bufio.Reader, n)
	for i := range conns {
		c, err := net.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns[i], readers[i] = c, bufio.NewReader(c)
		roundTrip(t, c, readers[i], "/first")
	}
	return conns, readers
}
