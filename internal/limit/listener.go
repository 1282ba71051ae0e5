package limit

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ListenerOptions configure the connection limits of a Listener. The zero
// value limits nothing.
type ListenerOptions struct {
	// PerAddr bounds the open connections of one client address (nginx's
	// limit_conn with a $binary_remote_addr zone, in the http or stream
	// context). 0: no bound.
	PerAddr int
	// Max bounds the open connections of the listener (nginx's
	// worker_connections, per listener). 0: no bound.
	Max int
	// Logger receives the refusals: the first of an address in a minute at
	// info, the others at debug. Nil: slog.Default().
	Logger *slog.Logger
}

// Listener refuses connections past its limits at accept time: the
// connection is closed at once (reset, without a byte) and counted, and
// Accept goes on to the next one, so that the kernel's backlog keeps
// draining instead of growing with clients nobody will serve.
//
// The address is the connection's peer as accepted: wrap the raw
// listener, under a PROXY protocol or TLS listener. (With the PROXY
// protocol, that peer is the load balancer; the client is known only
// once the header is read, in the connection's goroutine: the config
// refuses per-address limits there.)
//
// Its connections are wrapped to be counted until closed; they pass on
// syscall.Conn (the idle-connection parker), CloseWrite and SetLinger.
type Listener struct {
	net.Listener
	log     *slog.Logger
	perAddr atomic.Int64
	max     atomic.Int64
	refused atomic.Int64
	open    atomic.Int64
	rl      rejectLog

	mu     sync.Mutex
	byAddr map[string]int
}

// NewListener wraps l with the limits of opt.
func NewListener(l net.Listener, opt ListenerOptions) *Listener {
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	ll := &Listener{Listener: l, log: opt.Logger, byAddr: map[string]int{}}
	ll.SetLimits(opt.PerAddr, opt.Max)
	return ll
}

// SetLimits replaces the limits (a reload); connections already open stay
// open, and count.
func (l *Listener) SetLimits(perAddr, max int) {
	l.perAddr.Store(int64(perAddr))
	l.max.Store(int64(max))
}

// Accept returns the next connection within the limits.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr, isIP := peerAddr(c.RemoteAddr())
		if why := l.take(addr, isIP); why != "" {
			l.refused.Add(1)
			if tc, ok := c.(interface{ SetLinger(int) error }); ok {
				_ = tc.SetLinger(0) // a reset: nothing to drain
			}
			c.Close()
			level := slog.LevelDebug
			if l.rl.sample(addr, time.Now()) {
				level = slog.LevelInfo
			}
			l.log.Log(context.Background(), level, "connection refused by a limit", "listener", l.Addr().String(), "client", addr, "limit", why,
				"limit_conn", l.perAddr.Load(), "max_connections", l.max.Load())
			continue
		}
		return &limitConn{Conn: c, l: l, addr: addr}, nil
	}
}

// take counts a new connection from addr, or says which limit refuses it.
// Unix-socket peers have no address: only Max applies to them.
func (l *Listener) take(addr string, isIP bool) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m := l.max.Load(); m > 0 && l.open.Load() >= m {
		return "max_connections"
	}
	if p := l.perAddr.Load(); isIP && p > 0 && int64(l.byAddr[addr]) >= p {
		return "limit_conn"
	}
	l.open.Add(1)
	l.byAddr[addr]++
	return ""
}

func (l *Listener) release(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open.Add(-1)
	if l.byAddr[addr]--; l.byAddr[addr] <= 0 {
		delete(l.byAddr, addr)
	}
}

// Rejected counts the connections refused by the limits.
func (l *Listener) Rejected() int64 { return l.refused.Load() }

// Open is the number of connections accepted and not yet closed.
func (l *Listener) Open() int64 { return l.open.Load() }

// peerAddr is a's IP address, or a's string and false for a peer
// without one (Unix sockets).
func peerAddr(a net.Addr) (string, bool) {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap().String(), true
	}
	if a == nil {
		return "", false
	}
	return a.String(), false
}

// limitConn is a counted connection: Close releases its place once.
type limitConn struct {
	net.Conn
	l    *Listener
	addr string
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.addr) })
	return err
}

// TCPConn is the socket of a TCP connection (server.TCPWrapper): the
// wrapper only counts, so the HTTP/1.1 front may send files to the socket
// itself with sendfile(2). Nil for other connections.
func (c *limitConn) TCPConn() *net.TCPConn {
	tc, _ := c.Conn.(*net.TCPConn)
	return tc
}

// SyscallConn passes on the socket (syscall.Conn), for the server's
// parking of idle connections and the PROXY protocol's peek.
func (c *limitConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, syscall.EINVAL
}

func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *limitConn) SetLinger(sec int) error {
	if sl, ok := c.Conn.(interface{ SetLinger(int) error }); ok {
		return sl.SetLinger(sec)
	}
	return nil
}

// ReadFrom passes on the socket's sendfile/splice.
func (c *limitConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}
