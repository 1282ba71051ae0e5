//go:build unix

package fastcgi

import (
	"errors"
	"net"
	"syscall"
)

// alive reports whether an idle connection still looks open: a
// non-blocking peek (one recvfrom) finds neither the server's close (FIN
// or RST) nor unexpected bytes. It catches the common stale case (php-fpm
// restarted or a worker recycled, pm.max_requests) before the request is
// written, so that even a POST, which RoundTrip does not resend after the
// first byte was read, is not lost. A close that races with the check is
// left to the retry in RoundTrip.
func alive(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = n < 0 && (errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK))
		return true // never wait for readiness
	})
	return err == nil && ok
}
