package server

import (
	"crypto/tls"
	"net"
)

// TLSListener returns a listener of TLS connections over l, with config,
// for ServeTLS. Both of its fronts enforce the body and send timeouts
// themselves, per read and per write (the HTTP/1.1 front with the
// connection's deadlines, see conn.armRead and conn.armWrite; the HTTP/2
// server per stream, and on the connection's writes, see h2conn.go), so
// this is tls.NewListener; it stays the one place listeners get TLS.
func TLSListener(l net.Listener, config *tls.Config) net.Listener {
	return tls.NewListener(l, config)
}
