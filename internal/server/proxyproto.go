package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The PROXY protocol (HAProxy's, versions 1 and 2): a load balancer that
// works at the TCP level (HAProxy in tcp mode, AWS NLB, nginx stream)
// sends one header at the start of each connection naming the client it
// accepted. See https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt.
//
// The header is read in the connection's own goroutine (by the first Read
// or RemoteAddr of the connection, never in Accept), within a deadline, so
// a slow or silent peer holds one goroutine for a bounded time and never
// the accept loop. It is read exactly: not a byte of what follows it is
// consumed (a v1 line is found by peeking at the socket, MSG_PEEK), so the
// raw *net.TCPConn keeps working afterwards for sendfile, TCP_CORK and the
// parking of idle connections. A connection whose header is missing,
// malformed or late is closed, logged once at info level with its peer, as
// nginx's "broken header".
//
// For TLS the wrapper sits under TLSListener: the header comes before
// the handshake, and the handshake's first read reads it.

var (
	// errProxyHeader is the sentinel of every bad header.
	errProxyHeader = errors.New("server: broken PROXY protocol header")

	// proxyV2Sig starts a version 2 header.
	proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")
	proxyV1Sig = []byte("PROXY ")
)

const (
	// proxyV1Max is the longest version 1 line, CRLF included.
	proxyV1Max = 107
	// proxyV1Min is the shortest: "PROXY UNKNOWN\r\n". Reading this much
	// first never reads past a header of either version.
	proxyV1Min = 15
	// proxyV2Fixed is the fixed part of a version 2 header.
	proxyV2Fixed = 16
)

// proxyHeader is what a PROXY header said. A zero src means the header
// named no client (v1 UNKNOWN, v2 LOCAL, or an address family other than
// TCP over IPv4 or IPv6): the connection keeps its real peer.
type proxyHeader struct {
	src, dst netip.AddrPort
}

// proxyHeaderLen looks at the first bytes of a connection and returns the
// length of the PROXY header they start, 0 when that is not known yet, or
// an error when they cannot start one.
func proxyHeaderLen(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if b[0] == proxyV2Sig[0] {
		n := min(len(b), len(proxyV2Sig))
		if !bytes.Equal(b[:n], proxyV2Sig[:n]) {
			return 0, fmt.Errorf("%w: bad version 2 signature", errProxyHeader)
		}
		if len(b) < proxyV2Fixed {
			return 0, nil
		}
		if b[12]>>4 != 2 {
			return 0, fmt.Errorf("%w: version %d", errProxyHeader, b[12]>>4)
		}
		return proxyV2Fixed + int(binary.BigEndian.Uint16(b[14:16])), nil
	}
	n := min(len(b), len(proxyV1Sig))
	if !bytes.Equal(b[:n], proxyV1Sig[:n]) {
		return 0, fmt.Errorf("%w: no PROXY header", errProxyHeader)
	}
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		if i == 0 || b[i-1] != '\r' || i+1 > proxyV1Max {
			return 0, fmt.Errorf("%w: version 1 line not ended by CRLF within %d bytes", errProxyHeader, proxyV1Max)
		}
		return i + 1, nil
	}
	if len(b) >= proxyV1Max {
		return 0, fmt.Errorf("%w: version 1 line longer than %d bytes", errProxyHeader, proxyV1Max)
	}
	return 0, nil
}

// parseProxyHeader parses a complete header, b of the length
// proxyHeaderLen gave.
func parseProxyHeader(b []byte) (proxyHeader, error) {
	n, err := proxyHeaderLen(b)
	if err != nil {
		return proxyHeader{}, err
	}
	if n != len(b) {
		return proxyHeader{}, fmt.Errorf("%w: incomplete", errProxyHeader)
	}
	if b[0] == proxyV2Sig[0] {
		return parseProxyV2(b)
	}
	return parseProxyV1(b[len(proxyV1Sig) : len(b)-2])
}

// parseProxyV1 parses the line after "PROXY " without its CRLF:
// "TCP4 SRC DST SPORT DPORT", "TCP6 ..." or "UNKNOWN[ anything]".
func parseProxyV1(line []byte) (proxyHeader, error) {
	if rest, ok := bytes.CutPrefix(line, []byte("UNKNOWN")); ok && (len(rest) == 0 || rest[0] == ' ') {
		return proxyHeader{}, nil
	}
	f := bytes.Split(line, []byte(" "))
	if len(f) != 5 {
		return proxyHeader{}, fmt.Errorf("%w: want PROXY TCP4|TCP6 SRC DST SPORT DPORT", errProxyHeader)
	}
	var want6 bool
	switch string(f[0]) {
	case "TCP4":
	case "TCP6":
		want6 = true
	default:
		return proxyHeader{}, fmt.Errorf("%w: unknown protocol %q", errProxyHeader, f[0])
	}
	var addrs [2]netip.Addr
	var ports [2]uint16
	for i := range 2 {
		a, err := netip.ParseAddr(string(f[1+i]))
		if err != nil || a.Is6() != want6 || a.Zone() != "" {
			return proxyHeader{}, fmt.Errorf("%w: bad %s address %q", errProxyHeader, f[0], f[1+i])
		}
		p := f[3+i]
		if len(p) == 0 || len(p) > 5 || len(p) > 1 && p[0] == '0' {
			return proxyHeader{}, fmt.Errorf("%w: bad port %q", errProxyHeader, p)
		}
		n, err := strconv.ParseUint(string(p), 10, 16)
		if err != nil {
			return proxyHeader{}, fmt.Errorf("%w: bad port %q", errProxyHeader, p)
		}
		addrs[i], ports[i] = a, uint16(n)
	}
	return proxyHeader{src: netip.AddrPortFrom(addrs[0], ports[0]), dst: netip.AddrPortFrom(addrs[1], ports[1])}, nil
}

// parseProxyV2 parses a complete version 2 header. TLVs are skipped.
func parseProxyV2(b []byte) (proxyHeader, error) {
	cmd, fam, body := b[12]&0xf, b[13], b[proxyV2Fixed:]
	switch cmd {
	case 0: // LOCAL: a health check from the balancer itself
		return proxyHeader{}, nil
	case 1: // PROXY
	default:
		return proxyHeader{}, fmt.Errorf("%w: unknown command %d", errProxyHeader, cmd)
	}
	var size int
	switch fam {
	case 0x11: // TCP over IPv4
		size = 12
	case 0x21: // TCP over IPv6
		size = 36
	default:
		// UNSPEC, UDP, Unix sockets: no TCP client to name.
		return proxyHeader{}, nil
	}
	if len(body) < size {
		return proxyHeader{}, fmt.Errorf("%w: %d address bytes, want %d", errProxyHeader, len(body), size)
	}
	alen := size/2 - 2
	src, _ := netip.AddrFromSlice(body[:alen])
	dst, _ := netip.AddrFromSlice(body[alen : 2*alen])
	sp := binary.BigEndian.Uint16(body[2*alen:])
	dp := binary.BigEndian.Uint16(body[2*alen+2:])
	return proxyHeader{src: netip.AddrPortFrom(src, sp), dst: netip.AddrPortFrom(dst, dp)}, nil
}

// readProxyHeader reads exactly one PROXY header from r. peek, when not
// nil, copies bytes waiting on the connection into its argument without
// consuming them, blocking until there is at least one; without it a
// version 1 line is read a byte at a time.
func readProxyHeader(r io.Reader, peek func([]byte) (int, error)) (proxyHeader, error) {
	var arr [proxyV1Max + 1]byte
	buf := arr[:0]
	for {
		n, err := proxyHeaderLen(buf)
		if err != nil {
			return proxyHeader{}, err
		}
		if n > 0 {
			if n > len(buf) {
				full := make([]byte, n)
				copy(full, buf)
				if _, err := io.ReadFull(r, full[len(buf):]); err != nil {
					return proxyHeader{}, fmt.Errorf("%w: %w", errProxyHeader, err)
				}
				buf = full
			}
			return parseProxyHeader(buf)
		}
		// How much may be read without passing the header's end.
		var want int
		switch {
		case len(buf) < proxyV1Min:
			want = proxyV1Min - len(buf)
		case buf[0] == proxyV2Sig[0]:
			want = proxyV2Fixed - len(buf)
		case peek == nil:
			want = 1
		default:
			// A version 1 line: up to its LF, which a peek finds.
			m, err := peek(arr[len(buf):proxyV1Max])
			if err != nil {
				return proxyHeader{}, fmt.Errorf("%w: %w", errProxyHeader, err)
			}
			want = m
			if i := bytes.IndexByte(arr[len(buf):len(buf)+m], '\n'); i >= 0 {
				want = i + 1
			}
		}
		m, err := io.ReadFull(r, arr[len(buf):len(buf)+want])
		buf = arr[:len(buf)+m]
		if err != nil {
			if errors.Is(err, io.EOF) && len(buf) == 0 {
				return proxyHeader{}, fmt.Errorf("%w: connection closed before it", errProxyHeader)
			}
			return proxyHeader{}, fmt.Errorf("%w: %w", errProxyHeader, err)
		}
	}
}

// peekFunc returns a peek for readProxyHeader on c, or nil if c has no
// socket to peek at.
func peekFunc(c net.Conn) func([]byte) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return func(b []byte) (int, error) {
		var n int
		var rerr error
		// RawConn.Read waits for readability within the read deadline.
		err := raw.Read(func(fd uintptr) bool {
			for {
				n, _, rerr = syscall.Recvfrom(int(fd), b, syscall.MSG_PEEK)
				if rerr != syscall.EINTR {
					break
				}
			}
			return rerr != syscall.EAGAIN
		})
		switch {
		case err != nil:
			return 0, err
		case rerr != nil:
			return 0, rerr
		case n == 0:
			return 0, io.ErrUnexpectedEOF
		}
		return n, nil
	}
}

// ProxyOptions configure a PROXY-protocol listener (ProxyListener).
type ProxyOptions struct {
	// Timeout bounds the wait for the whole header, from the first read.
	// Zero means DefaultReadHeaderTimeout (60s: nginx reads the header
	// within client_header_timeout); negative means no limit.
	Timeout time.Duration
	// Trusted reports whether a connection's immediate peer may name the
	// client. The header's source address replaces the peer's only when it
	// does (nginx's set_real_ip_from with real_ip_header proxy_protocol);
	// an untrusted peer's header is read and dropped. Nil trusts nobody.
	Trusted func(peer net.Addr) bool
	// Logger receives the broken-header lines (info). Nil: slog.Default().
	Logger *slog.Logger
}

// ProxyListener wraps l, whose every connection starts with a PROXY
// protocol header (version 1 or 2), as nginx's `listen ... proxy_protocol`.
// Its connections read the header on their first Read or RemoteAddr, in the
// goroutine that serves them, then behave as the accepted connection with
// RemoteAddr the client the header named (see ProxyOptions.Trusted). A
// connection without a valid header fails its reads and is closed.
//
// Wrap the raw listener (under TLSListener for TLS). HTTP.Serve takes
// the wrapped connections apart again to keep the raw *net.TCPConn.
func ProxyListener(l net.Listener, opt ProxyOptions) net.Listener {
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	opt.Timeout = timeout(opt.Timeout, DefaultReadHeaderTimeout)
	return &proxyListener{Listener: l, opt: opt}
}

type proxyListener struct {
	net.Listener
	opt     ProxyOptions
	refused atomic.Int64
}

func (l *proxyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &proxyConn{Conn: c, opt: &l.opt, refused: &l.refused}, nil
}

// Refused counts the connections closed for a missing or broken PROXY
// header (for the metrics of listeners whose server does not count them:
// the uwsgi listener; HTTP.Stats counts them already).
func (l *proxyListener) Refused() int64 { return l.refused.Load() }

// proxyConn is a connection whose PROXY header is read on first use.
type proxyConn struct {
	net.Conn
	opt     *ProxyOptions
	once    sync.Once
	err     error
	remote  net.Addr
	refused *atomic.Int64
}

// handshake reads the header once; afterwards it returns the outcome.
func (c *proxyConn) handshake() error {
	c.once.Do(func() {
		peer := c.Conn.RemoteAddr()
		c.remote = peer
		if c.opt.Timeout > 0 {
			_ = c.Conn.SetReadDeadline(time.Now().Add(c.opt.Timeout))
		}
		h, err := readProxyHeader(c.Conn, peekFunc(c.Conn))
		if err != nil {
			c.err = err
			if c.refused != nil {
				c.refused.Add(1)
			}
			c.opt.Logger.Info("closing a connection: broken PROXY protocol header", "remote", addrString(peer), "err", err)
			c.Conn.Close()
			return
		}
		_ = c.Conn.SetReadDeadline(time.Time{})
		if h.src.IsValid() && c.opt.Trusted != nil && c.opt.Trusted(peer) {
			c.remote = net.TCPAddrFromAddrPort(h.src)
		}
	})
	return c.err
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

func (c *proxyConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *proxyConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// RemoteAddr is the client the header named (see ProxyOptions.Trusted),
// else the peer.
func (c *proxyConn) RemoteAddr() net.Addr {
	_ = c.handshake()
	return c.remote
}

// CloseWrite and SetLinger reach the accepted connection, for servers
// that look for them (the uwsgi server's lingering close and abort).
func (c *proxyConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *proxyConn) SetLinger(sec int) error {
	if sl, ok := c.Conn.(interface{ SetLinger(int) error }); ok {
		return sl.SetLinger(sec)
	}
	return nil
}
