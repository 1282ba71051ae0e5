package server

import (
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The uwsgi listener's cheap path (issue 14).
//
// nginx's uwsgi_pass connects once per request and writes its packet at
// once, so by the time the listener accepts, the packet is usually in the
// socket, and a small response fits its send buffer. A connection from
// net.UnixListener.Accept costs, besides accept4, read, write and close, a
// getsockname (its LocalAddr), an epoll_ctl to register it with the
// runtime's poller and another to remove it at close, and the poller's
// descriptor, finalizer and deadline timers; from net.TCPListener.Accept,
// five setsockopt more (TCP_NODELAY, and keep-alive with its idle time,
// interval and count). A uwRawConn is accepted with accept4 on the
// listener's descriptor and reads and writes the socket with plain system
// calls while they complete at once; the first one that would block (a
// packet or body not there yet, a response larger than the send buffer,
// the watch for nginx closing the connection) hands the descriptor to the
// poller (os.NewFile) and the connection carries on, deadlines included,
// as any other would. On TCP, TCP_NODELAY is set before a second write
// (a first write, and the FIN of the close after it, go out at once
// anyway), and keep-alive, as net sets it, when the connection goes to
// the poller (a connection that never waits cannot use it). LocalAddr
// costs its getsockname when asked for.
//
// Measured on a unix socket (bench/run.sh hello, nginx -> portico on one
// core, 64 connections; three sets of 3 interleaved runs, medians, on a
// machine shared with other benchmarks): Portico's system calls per
// request 9 -> 6 (accept4, read and write of the packet and response,
// write and read on the worker's slot, close); the whole stack's CPU
// 175 -> 142, 158 -> 129 and 148 -> 139 us/req; 5,600 -> 6,427,
// 5,544 -> 5,331 (the noisiest set) and 6,440 -> 7,090 req/s. nginx ->
// uWSGI in the same runs: about 15,700 req/s at 60 us/req. What is left of
// the gap is the hop through Go itself: about 1.2 process switches of
// Portico per request, and its share of the request (router, middleware,
// proxy queue, the worker's frames), spread with no hot spot. On TCP (nginx uwsgi_pass 127.0.0.1:port,
// perf stat): 14.2 -> 7.0 system calls per request, about 7% of the
// connections waiting for their packet in the poller (nginx writes it once
// its connect completes).
//
// A listener wrapped by connection limits or the PROXY protocol keeps its
// wrapper's Accept.

// uwRawListener accepts uwRawConns on a unix or TCP socket. The listener's
// syscall.RawConn cannot wait for a connection (only Control works on it),
// so it waits on a duplicate of the descriptor, in the poller; Close closes
// both.
type uwRawListener struct {
	net.Listener
	f   *os.File
	rc  syscall.RawConn
	tcp bool
}

// uwRawListen returns l as a uwRawListener if it is a *net.UnixListener
// or a *net.TCPListener, else l.
func uwRawListen(l net.Listener) net.Listener {
	var (
		f   *os.File
		err error
		tcp bool
	)
	switch l := l.(type) {
	case *net.UnixListener:
		f, err = l.File()
	case *net.TCPListener:
		f, err = l.File()
		tcp = true
	default:
		return l
	}
	if err != nil {
		return l
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return l
	}
	return &uwRawListener{Listener: l, f: f, rc: rc, tcp: tcp}
}

func (l *uwRawListener) Accept() (net.Conn, error) { return uwAcceptRaw(l.rc, l.Addr(), l.tcp) }

func (l *uwRawListener) Close() error {
	l.f.Close() // wakes an Accept waiting on it
	return l.Listener.Close()
}

// uwAcceptRaw accepts one connection on the listener's descriptor,
// waiting in the poller while there is none.
func uwAcceptRaw(rc syscall.RawConn, laddr net.Addr, tcp bool) (net.Conn, error) {
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
		return nil, &net.OpError{Op: "accept", Net: laddr.Network(), Addr: laddr, Err: os.NewSyscallError("accept4", err)}
	}
	c := &uwRawConn{fd: nfd, tcp: tcp}
	switch sa := sa.(type) {
	case *syscall.SockaddrUnix:
		c.raddr, c.laddr = &net.UnixAddr{Name: sa.Name, Net: "unix"}, laddr
	case *syscall.SockaddrInet4:
		c.raddr = &net.TCPAddr{IP: net.IP(sa.Addr[:]).To16(), Port: sa.Port}
	case *syscall.SockaddrInet6:
		c.raddr = &net.TCPAddr{IP: append(net.IP(nil), sa.Addr[:]...), Port: sa.Port, Zone: uwZone(sa.ZoneId)}
	default:
		c.raddr, c.laddr = &net.UnixAddr{Net: "unix"}, laddr
	}
	return c, nil
}

// uwZone names an IPv6 zone as net does (the interface's name, else its
// index).
func uwZone(id uint32) string {
	if id == 0 {
		return ""
	}
	if ifi, err := net.InterfaceByIndex(int(id)); err == nil {
		return ifi.Name
	}
	return strconv.FormatUint(uint64(id), 10)
}

// uwTCPAddr converts a socket address of getsockname.
func uwTCPAddr(sa syscall.Sockaddr) net.Addr {
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(sa.Addr[:]).To16(), Port: sa.Port}
	case *syscall.SockaddrInet6:
		return &net.TCPAddr{IP: append(net.IP(nil), sa.Addr[:]...), Port: sa.Port, Zone: uwZone(sa.ZoneId)}
	}
	return nil
}

// uwRawConn is a net.Conn over an accepted unix socket's descriptor (see
// above). Its methods are safe for concurrent use, as net.Conn's are.
type uwRawConn struct {
	raddr net.Addr
	tcp   bool

	// f is the socket as a pollable file once an operation would have
	// blocked; from then on every method goes to it.
	f atomic.Pointer[os.File]

	// mu guards what follows, and the descriptor while it is used with
	// plain system calls (so that Close cannot free the number under a
	// read or write in progress).
	mu     sync.Mutex
	fd     int
	rd, wd time.Time // deadlines set before f exists
	// laddr is the local address: the listener's on a unix socket, asked
	// for on first use on TCP.
	laddr net.Addr
	// wrote is set by the first write; on TCP, noDelay once TCP_NODELAY is
	// set (before a second write, or when f is made).
	wrote, noDelay bool

	// closed is set by Close (with mu held).
	closed atomic.Bool
}

var _ net.Conn = (*uwRawConn)(nil)

func (c *uwRawConn) RemoteAddr() net.Addr { return c.raddr }

func (c *uwRawConn) LocalAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.laddr != nil || !c.tcp {
		return c.laddr
	}
	var sa syscall.Sockaddr
	err := c.control(func(fd int) error {
		var err error
		sa, err = syscall.Getsockname(fd)
		return err
	})
	if err == nil {
		c.laddr = uwTCPAddr(sa)
	}
	if c.laddr == nil {
		return &net.TCPAddr{}
	}
	return c.laddr
}

// control runs fn with the descriptor, c.mu held, whether or not f exists.
func (c *uwRawConn) control(fn func(fd int) error) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	f := c.f.Load()
	if f == nil {
		return fn(c.fd)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// setNoDelayLocked sets TCP_NODELAY once, on TCP. c.mu is held.
func (c *uwRawConn) setNoDelayLocked() {
	if !c.tcp || c.noDelay {
		return
	}
	c.noDelay = true
	c.control(func(fd int) error { return syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1) })
}

// Keep-alive as net sets it on the connections it accepts
// (net.ListenConfig's defaults: 15 s idle, 15 s interval, 9 probes).
const (
	uwKeepAliveIdle     = 15
	uwKeepAliveInterval = 15
	uwKeepAliveCount    = 9
)

// SetLinger sets SO_LINGER as net.TCPConn.SetLinger does; on a unix
// socket, which net.UnixConn gives no SetLinger, it does nothing.
func (c *uwRawConn) SetLinger(sec int) error {
	if !c.tcp {
		return errors.New("uwsgi: SetLinger on a unix socket")
	}
	l := syscall.Linger{}
	if sec >= 0 {
		l.Onoff, l.Linger = 1, int32(sec)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.control(func(fd int) error { return syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &l) }); err != nil {
		return c.opError("set", err)
	}
	return nil
}

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
	if c.tcp {
		if !c.noDelay {
			c.noDelay = true
			syscall.SetsockoptInt(c.fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
		}
		syscall.SetsockoptInt(c.fd, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1)
		syscall.SetsockoptInt(c.fd, syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, uwKeepAliveIdle)
		syscall.SetsockoptInt(c.fd, syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, uwKeepAliveInterval)
		syscall.SetsockoptInt(c.fd, syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, uwKeepAliveCount)
	}
	c.f.Store(f)
	return f, nil
}

// expired reports whether deadline d is set and has passed.
func expired(d time.Time) bool { return !d.IsZero() && !time.Now().Before(d) }

func (c *uwRawConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: c.raddr.Network(), Addr: c.raddr, Err: err}
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
	if c.wrote {
		c.setNoDelayLocked()
	}
	c.wrote = true
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
