package server

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The uwsgi listener's cheap path for a unix socket (issue 14).
//
// nginx's uwsgi_pass connects once per request and writes its packet at
// once; a unix socket's connect completes at once, so by the time the
// listener accepts, the packet is usually in the socket, and the small
// response fits its send buffer. A connection from net.UnixListener.Accept
// costs, besides accept4, a getsockname (its LocalAddr), an epoll_ctl to
// register it with the runtime's poller and another to remove it at close,
// and the poller's descriptor, finalizer and deadline timers. A uwRawConn is accepted with accept4 on the listener's descriptor
// and reads and writes the socket with plain system calls while they
// complete at once; the first one that would block (a packet or body not
// there yet, a response larger than the send buffer, the watch for nginx
// closing the connection) hands the descriptor to the poller (os.NewFile)
// and the connection carries on, deadlines included, as any other would.
//
// Measured (bench/run.sh hello, nginx -> portico on one core, 3
// interleaved runs, medians): Portico's system calls per request 9 -> 6
// (accept4, read and write of the packet and response, write and read on
// the worker's slot, close); the whole stack's CPU 175 -> 142 us/req,
// 5,600 -> 6,430 req/s.
//
// TCP listeners keep net.TCPListener.Accept: Go sets TCP_NODELAY and
// keep-alive on what it accepts, system calls this path would add back; a
// listener wrapped by connection limits or the PROXY protocol keeps its
// wrapper's Accept.

// uwRawListener accepts uwRawConns on a unix socket. The listener's
// syscall.RawConn cannot wait for a connection (only Control works on it),
// so it waits on a duplicate of the descriptor, in the poller; Close closes
// both.
type uwRawListener struct {
	*net.UnixListener
	f  *os.File
	rc syscall.RawConn
}

// uwRawListen returns l as a uwRawListener if it is a *net.UnixListener,
// else l.
func uwRawListen(l net.Listener) net.Listener {
	ul, ok := l.(*net.UnixListener)
	if !ok {
		return l
	}
	f, err := ul.File()
	if err != nil {
		return l
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return l
	}
	return &uwRawListener{UnixListener: ul, f: f, rc: rc}
}

func (l *uwRawListener) Accept() (net.Conn, error) { return uwAcceptRaw(l.rc, l.Addr()) }

func (l *uwRawListener) Close() error {
	l.f.Close() // wakes an Accept waiting on it
	return l.UnixListener.Close()
}

// uwAcceptRaw accepts one connection on the listener's descriptor,
// waiting in the poller while there is none.
func uwAcceptRaw(rc syscall.RawConn, laddr net.Addr) (net.Conn, error) {
	var (
		nfd  int
		sa   syscall.Sockaddr
		aerr error
	)
	err := rc.Read(func(fd uintptr) bool {
		for {
			nfd, sa, aerr = syscall.Accept4(int(fd), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
			switch aerr {
			case syscall.EINTR, syscall.ECONNABORTED:
				// Interrupted, or the peer gave up before we accepted it
				// (net.Listener.Accept retries both too).
				continue
			case syscall.EAGAIN:
				return false // wait in the poller
			}
			return true
		}
	})
	if err == nil {
		err = aerr
	}
	if err != nil {
		if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
			return nil, net.ErrClosed
		}
		return nil, &net.OpError{Op: "accept", Net: "unix", Addr: laddr, Err: os.NewSyscallError("accept4", err)}
	}
	var raddr net.Addr = &net.UnixAddr{Net: "unix"}
	if u, ok := sa.(*syscall.SockaddrUnix); ok {
		raddr = &net.UnixAddr{Name: u.Name, Net: "unix"}
	}
	return &uwRawConn{fd: nfd, laddr: laddr, raddr: raddr}, nil
}

// uwRawConn is a net.Conn over an accepted unix socket's descriptor (see
// above). Its methods are safe for concurrent use, as net.Conn's are.
type uwRawConn struct {
	laddr, raddr net.Addr

	// f is the socket as a pollable file once an operation would have
	// blocked; from then on every method goes to it.
	f atomic.Pointer[os.File]

	// mu guards what follows, and the descriptor while it is used with
	// plain system calls (so that Close cannot free the number under a
	// read or write in progress).
	mu     sync.Mutex
	fd     int
	rd, wd time.Time // deadlines set before f exists

	// closed is set by Close (with mu held).
	closed atomic.Bool
}

var _ net.Conn = (*uwRawConn)(nil)

func (c *uwRawConn) LocalAddr() net.Addr  { return c.laddr }
func (c *uwRawConn) RemoteAddr() net.Addr { return c.raddr }

// promoteLocked hands the descriptor to the runtime's poller, with the
// deadlines set so far. c.mu is held.
func (c *uwRawConn) promoteLocked() (*os.File, error) {
	f := os.NewFile(uintptr(c.fd), "uwsgi")
	if f == nil {
		return nil, errors.New("uwsgi: invalid descriptor")
	}
	if !c.rd.IsZero() {
		if err := f.SetReadDeadline(c.rd); err != nil {
			// Not pollable after all: the deadlines could not be kept.
			f.Close()
			c.closed.Store(true)
			return nil, err
		}
	}
	if !c.wd.IsZero() {
		f.SetWriteDeadline(c.wd)
	}
	c.f.Store(f)
	return f, nil
}

// expired reports whether deadline d is set and has passed.
func expired(d time.Time) bool { return !d.IsZero() && !time.Now().Before(d) }

func (c *uwRawConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "unix", Source: c.laddr, Addr: c.raddr, Err: err}
}

// fileErr gives an error of the pollable file the shape a net.Conn's has
// (a *net.OpError; net.ErrClosed after Close), io.EOF left as it is.
func (c *uwRawConn) fileErr(op string, err error) error {
	var pe *os.PathError
	switch {
	case err == nil || err == io.EOF:
		return err
	case c.closed.Load() || errors.Is(err, os.ErrClosed):
		return c.opError(op, net.ErrClosed)
	case errors.As(err, &pe):
		return c.opError(op, pe.Err)
	}
	return c.opError(op, err)
}

func (c *uwRawConn) fileRead(f *os.File, p []byte) (int, error) {
	n, err := f.Read(p)
	return n, c.fileErr("read", err)
}

func (c *uwRawConn) fileWrite(f *os.File, p []byte) (int, error) {
	n, err := f.Write(p)
	return n, c.fileErr("write", err)
}

func (c *uwRawConn) Read(p []byte) (int, error) {
	if f := c.f.Load(); f != nil {
		return c.fileRead(f, p)
	}
	c.mu.Lock()
	if f := c.f.Load(); f != nil {
		c.mu.Unlock()
		return c.fileRead(f, p)
	}
	switch {
	case c.closed.Load():
		c.mu.Unlock()
		return 0, c.opError("read", net.ErrClosed)
	case expired(c.rd):
		c.mu.Unlock()
		return 0, c.opError("read", os.ErrDeadlineExceeded)
	case len(p) == 0:
		c.mu.Unlock()
		return 0, nil
	}
	var (
		n   int
		err error
	)
	for {
		n, err = syscall.Read(c.fd, p)
		if err != syscall.EINTR {
			break
		}
	}
	if err == syscall.EAGAIN {
		f, perr := c.promoteLocked()
		c.mu.Unlock()
		if perr != nil {
			return 0, c.opError("read", perr)
		}
		return c.fileRead(f, p)
	}
	c.mu.Unlock()
	switch {
	case err != nil:
		return 0, c.opError("read", os.NewSyscallError("read", err))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *uwRawConn) Write(p []byte) (int, error) {
	if f := c.f.Load(); f != nil {
		return c.fileWrite(f, p)
	}
	c.mu.Lock()
	if f := c.f.Load(); f != nil {
		c.mu.Unlock()
		return c.fileWrite(f, p)
	}
	switch {
	case c.closed.Load():
		c.mu.Unlock()
		return 0, c.opError("write", net.ErrClosed)
	case expired(c.wd):
		c.mu.Unlock()
		return 0, c.opError("write", os.ErrDeadlineExceeded)
	}
	written := 0
	for written < len(p) {
		n, err := syscall.Write(c.fd, p[written:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			f, perr := c.promoteLocked()
			c.mu.Unlock()
			if perr != nil {
				return written, c.opError("write", perr)
			}
			m, err := c.fileWrite(f, p[written:])
			return written + m, err
		case err != nil:
			c.mu.Unlock()
			return written, c.opError("write", os.NewSyscallError("write", err))
		}
		written += n
	}
	c.mu.Unlock()
	return written, nil
}

func (c *uwRawConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return c.opError("close", net.ErrClosed)
	}
	c.closed.Store(true)
	if f := c.f.Load(); f != nil {
		return c.fileErr("close", f.Close()) // wakes a read or write blocked in the poller
	}
	return syscall.Close(c.fd)
}

// CloseWrite shuts down the writing side (lingerClose), as
// net.UnixConn.CloseWrite does.
func (c *uwRawConn) CloseWrite() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return c.opError("close", net.ErrClosed)
	}
	if f := c.f.Load(); f != nil {
		rc, err := f.SyscallConn()
		if err != nil {
			return c.fileErr("close", err)
		}
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = syscall.Shutdown(int(fd), syscall.SHUT_WR) }); err != nil {
			return c.fileErr("close", err)
		}
		if serr != nil {
			return c.opError("close", os.NewSyscallError("shutdown", serr))
		}
		return nil
	}
	if err := syscall.Shutdown(c.fd, syscall.SHUT_WR); err != nil {
		return c.opError("close", os.NewSyscallError("shutdown", err))
	}
	return nil
}

func (c *uwRawConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *uwRawConn) SetReadDeadline(t time.Time) error {
	if f := c.f.Load(); f != nil {
		return c.fileErr("set", f.SetReadDeadline(t))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.f.Load(); f != nil {
		return c.fileErr("set", f.SetReadDeadline(t))
	}
	if c.closed.Load() {
		return c.opError("set", net.ErrClosed)
	}
	c.rd = t
	return nil
}

func (c *uwRawConn) SetWriteDeadline(t time.Time) error {
	if f := c.f.Load(); f != nil {
		return c.fileErr("set", f.SetWriteDeadline(t))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.f.Load(); f != nil {
		return c.fileErr("set", f.SetWriteDeadline(t))
	}
	if c.closed.Load() {
		return c.opError("set", net.ErrClosed)
	}
	c.wd = t
	return nil
}
