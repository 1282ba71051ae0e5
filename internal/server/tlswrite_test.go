package server

import (
	"bytes"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
)

// A writeCountConn counts the writes that reach the socket.
type writeCountConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *writeCountConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// tcpPair returns the two ends of a loopback TCP connection, closed when
// the test ends.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// Records written back to back, as net/http's HTTP/2 server writes them
// while other streams are runnable, reach the socket in fewer writes than
// records, in order; Close sends the bytes still pending before closing.
func TestDeadlineConnCombinesWrites(t *testing.T) {
	// One P, as with the server on one core: the flushing goroutine runs
	// only once this one blocks.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	raw, client := tcpPair(t)
	cc := &writeCountConn{Conn: raw}
	c := &deadlineConn{Conn: cc}
	c.combine.Store(true)
	const records = 100
	var want bytes.Buffer
	for i := range records {
		rec := bytes.Repeat([]byte{byte('a' + i%26)}, 100+i)
		want.Write(rec)
		if n, err := c.Write(rec); n != len(rec) || err != nil {
			t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(rec))
		}
	}
	if err := c.Close(); err != nil { // right away: the bytes are pending
		t.Fatal(err)
	}
	got, err := io.ReadAll(client)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("peer read %d bytes, not the %d written in order", len(got), want.Len())
	}
	if n := cc.writes.Load(); n >= records {
		t.Fatalf("%d socket writes for %d records: not combined", n, records)
	}
	t.Logf("%d records in %d socket writes", records, cc.writes.Load())
}

// Once a write to the socket fails, every later Write reports the error.
func TestDeadlineConnWriteError(t *testing.T) {
	raw, _ := tcpPair(t)
	c := &deadlineConn{Conn: raw}
	c.combine.Store(true)
	raw.Close() // the socket fails every write from now on
	if _, err := c.Write([]byte("record")); err != nil {
		t.Fatalf("first Write = %v; want nil (it is only queued)", err)
	}
	c.mu.Lock() // wait for the flushing goroutine to fail and stop
	for c.writing {
		c.drained.Wait()
	}
	c.mu.Unlock()
	if _, err := c.Write([]byte("record")); err == nil {
		t.Fatal("Write succeeded after the socket write failed")
	}
	if _, err2 := c.Write([]byte("again")); err2 == nil {
		t.Fatal("a Write after a failed one succeeded")
	}
}

// A connsListener hands each accepted deadlineConn to the test.
type connsListener struct {
	net.Listener
	conns chan *deadlineConn
}

func (l connsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if dc, ok := c.(*deadlineConn); ok {
		l.conns <- dc
	}
	return c, err
}

// ServeTLS combines the writes of HTTP/2 connections, not those of
// HTTP/1.1 ones (the plain front writes a small response in one write).
func TestTLSWriteCombiningH2Only(t *testing.T) {
	s := NewHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}), Options{Logger: slog.New(slog.DiscardHandler)})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan *deadlineConn, 4)
	tl := tls.NewListener(connsListener{deadlineListener{l}, conns}, &tls.Config{
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
		Certificates: []tls.Certificate{testCert(t)},
	})
	done := make(chan error, 1)
	go func() { done <- s.ServeTLS(tl) }()
	t.Cleanup(func() {
		s.Close()
		<-done
	})
	for _, tc := range []struct {
		proto   string
		combine bool
	}{{"h2", true}, {"http/1.1", false}} {
		resp, err := tlsClient(t, tc.proto, nil).Get("https://" + l.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "hello" {
			t.Fatalf("%s: body %q", tc.proto, body)
		}
		dc := <-conns
		if dc.combine.Load() != tc.combine || tc.combine && !dc.decided.Load() {
			t.Fatalf("%s: combine = %v (decided %v); want %v", tc.proto, dc.combine.Load(), dc.decided.Load(), tc.combine)
		}
	}
}
