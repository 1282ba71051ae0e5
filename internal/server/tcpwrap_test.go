package server

import (
	"net"
	"testing"
)

// countingConn wraps a TCP connection without changing its bytes, as
// internal/limit's does, and says so (TCPWrapper).
type countingConn struct{ net.Conn }

func (c countingConn) TCPConn() *net.TCPConn { tc, _ := c.Conn.(*net.TCPConn); return tc }

// opaqueConn wraps one without saying what it is.
type opaqueConn struct{ net.Conn }

// TestTCPWrapperKeepsSendfile: a wrapper that names its socket keeps the
// front's sendfile and corking; one that does not gets the copying path.
func TestTCPWrapperKeepsSendfile(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	sc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	srv := NewHTTP(nil, Options{})
	if c := newConn(srv, sc); c.tcp == nil {
		t.Error("a bare *net.TCPConn: no socket for sendfile")
	}
	if c := newConn(srv, countingConn{sc}); c.tcp != sc.(*net.TCPConn) {
		t.Error("a TCPWrapper: its socket is not used for sendfile")
	}
	if c := newConn(srv, opaqueConn{sc}); c.tcp != nil {
		t.Error("an opaque wrapper: its socket was taken for sendfile")
	}
}
