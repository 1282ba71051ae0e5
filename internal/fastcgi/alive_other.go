//go:build !unix

package fastcgi

import "net"

// alive cannot peek without blocking here; RoundTrip's retry covers a
// stale connection.
func alive(net.Conn) bool { return true }
