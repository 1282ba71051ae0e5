package app

import (
	"net"
	"testing"
)

// TestBoundTo: which inherited socket serves which configured address.
func TestBoundTo(t *testing.T) {
	tcp := func(ip string, port int) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: port} }
	unix := func(name string) net.Addr { return &net.UnixAddr{Name: name, Net: "unix"} }
	for _, tc := range []struct {
		sock net.Addr
		addr string
		want bool
	}{
		{tcp("127.0.0.1", 8000), "127.0.0.1:8000", true},
		{tcp("127.0.0.1", 8000), "127.0.0.1:8001", false},
		{tcp("127.0.0.1", 8000), "127.0.0.2:8000", false},
		{tcp("::", 80), ":80", true}, // ListenStream=80
		{tcp("0.0.0.0", 80), ":80", true},
		{tcp("::", 80), "0.0.0.0:80", true},
		{tcp("0.0.0.0", 80), "[::]:80", true},
		{tcp("::", 80), ":http", true},
		{tcp("127.0.0.1", 80), ":80", false},
		{tcp("::", 80), "127.0.0.1:80", false},
		{tcp("::1", 8000), "[::1]:8000", true},
		{tcp("127.0.0.1", 8000), "localhost:8000", true},
		{tcp("127.0.0.1", 0), "127.0.0.1:0", false}, // port 0: by name only
		{unix("/run/portico.sock"), "unix:/run/portico.sock", true},
		{unix("/run/portico.sock"), "unix:/run/other.sock", false},
		{unix("@portico"), "unix:@portico", true},
		{unix("/run/portico.sock"), "127.0.0.1:80", false},
		{tcp("127.0.0.1", 80), "unix:/run/portico.sock", false},
	} {
		if got := boundTo(tc.sock, tc.addr); got != tc.want {
			t.Errorf("boundTo(%v, %q) = %t, want %t", tc.sock, tc.addr, got, tc.want)
		}
	}
}
