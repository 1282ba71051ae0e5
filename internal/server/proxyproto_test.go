package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// proxyV2 builds a version 2 header: cmd 0 LOCAL or 1 PROXY, fam 0x11
// (TCP4) or 0x21 (TCP6), and extra TLV bytes.
func proxyV2(cmd, fam byte, src, dst netip.AddrPort, tlv []byte) []byte {
	var body []byte
	if fam == 0x11 || fam == 0x21 {
		body = append(body, src.Addr().AsSlice()...)
		body = append(body, dst.Addr().AsSlice()...)
		body = binary.BigEndian.AppendUint16(body, src.Port())
		body = binary.BigEndian.AppendUint16(body, dst.Port())
	}
	body = append(body, tlv...)
	b := append([]byte{}, proxyV2Sig...)
	b = append(b, 0x20|cmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	return append(b, body...)
}

var (
	src4 = netip.MustParseAddrPort("192.0.2.10:4711")
	dst4 = netip.MustParseAddrPort("192.0.2.1:443")
	src6 = netip.MustParseAddrPort("[2001:db8::10]:4711")
	dst6 = netip.MustParseAddrPort("[2001:db8::1]:443")
)

// bytesPeek peeks at what r has not read yet, as MSG_PEEK does.
func bytesPeek(r *bytes.Reader) func([]byte) (int, error) {
	return func(b []byte) (int, error) {
		rest := make([]byte, r.Len())
		r.ReadAt(rest, r.Size()-int64(r.Len()))
		if len(rest) == 0 {
			return 0, io.ErrUnexpectedEOF
		}
		return copy(b, rest), nil
	}
}

func TestReadProxyHeader(t *testing.T) {
	tests := []struct {
		name string
		in   string
		src  string // "" : no client named
		err  bool
	}{
		{"v1 TCP4", "PROXY TCP4 192.0.2.10 192.0.2.1 4711 443\r\n", "192.0.2.10:4711", false},
		{"v1 TCP6", "PROXY TCP6 2001:db8::10 2001:db8::1 4711 443\r\n", "[2001:db8::10]:4711", false},
		{"v1 UNKNOWN", "PROXY UNKNOWN\r\n", "", false},
		{"v1 UNKNOWN with addresses", "PROXY UNKNOWN ffff:f...f:ffff 1 2\r\n", "", false},
		{"v1 longest", "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n", "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", false},
		{"v1 TCP4 with an IPv6 address", "PROXY TCP4 2001:db8::10 192.0.2.1 4711 443\r\n", "", true},
		{"v1 bad port", "PROXY TCP4 192.0.2.10 192.0.2.1 70000 443\r\n", "", true},
		{"v1 leading zero port", "PROXY TCP4 192.0.2.10 192.0.2.1 0443 443\r\n", "", true},
		{"v1 LF only", "PROXY TCP4 192.0.2.10 192.0.2.1 4711 443\n", "", true},
		{"v1 two spaces", "PROXY TCP4  192.0.2.10 192.0.2.1 4711 443\r\n", "", true},
		{"v1 too long", "PROXY UNKNOWN " + strings.Repeat("x", 100) + "\r\n", "", true},
		{"v1 UDP", "PROXY UDP4 192.0.2.10 192.0.2.1 4711 443\r\n", "", true},
		{"no header: HTTP", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "", true},
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03aaaaaaaaaaaaaaaaaaa", "", true},
		{"empty", "", "", true},
		{"short", "PROXY TCP4 1", "", true},
		{"v2 IPv4", string(proxyV2(1, 0x11, src4, dst4, nil)), "192.0.2.10:4711", false},
		{"v2 IPv6", string(proxyV2(1, 0x21, src6, dst6, nil)), "[2001:db8::10]:4711", false},
		{"v2 IPv4 with TLVs", string(proxyV2(1, 0x11, src4, dst4, []byte{0x04, 0, 3, 'a', 'b', 'c'})), "192.0.2.10:4711", false},
		{"v2 LOCAL", string(proxyV2(0, 0x11, src4, dst4, nil)), "", false},
		{"v2 UNSPEC", string(proxyV2(1, 0x00, src4, dst4, nil)), "", false},
		{"v2 bad command", string(proxyV2(2, 0x11, src4, dst4, nil)), "", true},
		{"v2 short addresses", string(proxyV2(1, 0x21, src4, dst4, nil)), "", true},
		{"v2 bad version", strings.Replace(string(proxyV2(1, 0x11, src4, dst4, nil)), "\x21\x11", "\x11\x11", 1), "", true},
		{"v2 addresses cut short", "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04\xc0\x00\x02\x0a", "", true},
		{"v2 bad signature", "\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c" + strings.Repeat("a", 12), "", true},
	}
	for _, tt := range tests {
		for _, peeking := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/peek=%t", tt.name, peeking), func(t *testing.T) {
				const after = "GET / HTTP/1.1\r\n\r\n"
				r := bytes.NewReader([]byte(tt.in + after))
				var peek func([]byte) (int, error)
				if peeking {
					peek = bytesPeek(r)
				}
				h, err := readProxyHeader(r, peek)
				if (err != nil) != tt.err {
					t.Fatalf("err = %v, want error: %t", err, tt.err)
				}
				if err != nil {
					if !errors.Is(err, errProxyHeader) {
						t.Errorf("error %v is not errProxyHeader", err)
					}
					return
				}
				got := ""
				if h.src.IsValid() {
					got = h.src.String()
				}
				if got != tt.src {
					t.Errorf("src = %q, want %q", got, tt.src)
				}
				if rest, _ := io.ReadAll(r); string(rest) != after {
					t.Errorf("left %q, want exactly what followed the header", rest)
				}
			})
		}
	}
}

// FuzzProxyHeader: the header reader never panics, reads no byte past the
// header whether or not it can peek, agrees with parseProxyHeader, and
// never names a client it did not parse.
func FuzzProxyHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.10 192.0.2.1 4711 443\r\nGET"))
	f.Add([]byte("PROXY TCP6 2001:db8::10 2001:db8::1 4711 443\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(proxyV2(1, 0x11, src4, dst4, []byte("xyz")))
	f.Add(proxyV2(1, 0x21, src6, dst6, nil))
	f.Add(proxyV2(0, 0x00, src4, dst4, nil))
	f.Add([]byte("\r\n\r\n\x00\r\nQUIT\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r1 := bytes.NewReader(in)
		h1, err1 := readProxyHeader(r1, nil)
		r2 := bytes.NewReader(in)
		h2, err2 := readProxyHeader(r2, bytesPeek(r2))
		if (err1 == nil) != (err2 == nil) || h1 != h2 {
			t.Fatalf("byte reads: %v, %v; peeking: %v, %v", h1, err1, h2, err2)
		}
		if err1 != nil {
			return
		}
		n := len(in) - r1.Len()
		if r2.Len() != r1.Len() {
			t.Fatalf("consumed %d bytes byte-wise, %d peeking", n, len(in)-r2.Len())
		}
		if l, err := proxyHeaderLen(in[:n]); err != nil || l != n {
			t.Fatalf("read %d bytes, the header is %d (%v)", n, l, err)
		}
		if h, err := parseProxyHeader(in[:n]); err != nil || h != h1 {
			t.Fatalf("parse of the bytes read: %v, %v; read: %v", h, err, h1)
		}
	})
}

// proxyServe starts s on a PROXY-protocol loopback listener. trusted
// says whether the loopback peer may name the client.
func proxyServe(t *testing.T, h http.Handler, trusted bool, timeout time.Duration) net.Addr {
	t.Helper()
	s := NewHTTP(h, Options{Logger: slog.New(slog.DiscardHandler)})
	l, err := Listen("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	pl := ProxyListener(l, ProxyOptions{Timeout: timeout, Trusted: func(net.Addr) bool { return trusted }, Logger: slog.New(slog.DiscardHandler)})
	done := make(chan error, 1)
	go func() { done <- s.Serve(pl) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return l.Addr()
}

// remoteHandler answers with the client's address and whether the
// connection still has its raw TCP socket (sendfile, cork, parking).
var remoteHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	c := r.Context().(*reqCtx).c.(*conn)
	fmt.Fprintf(w, "%s tcp=%t raw=%t", r.RemoteAddr, c.tcp != nil, c.raw != nil)
})

func TestWireProxyProtocol(t *testing.T) {
	tests := []struct {
		name    string
		header  []byte
		trusted bool
		want    string // "" : the peer's own address
	}{
		{"v1 TCP4", []byte("PROXY TCP4 192.0.2.10 192.0.2.1 4711 443\r\n"), true, "192.0.2.10:4711"},
		{"v1 TCP6", []byte("PROXY TCP6 2001:db8::10 2001:db8::1 4711 443\r\n"), true, "[2001:db8::10]:4711"},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), true, ""},
		{"v2 IPv4", proxyV2(1, 0x11, src4, dst4, nil), true, "192.0.2.10:4711"},
		{"v2 IPv6", proxyV2(1, 0x21, src6, dst6, []byte{0x04, 0, 1, 'x'}), true, "[2001:db8::10]:4711"},
		{"v2 LOCAL", proxyV2(0, 0x11, src4, dst4, nil), true, ""},
		{"untrusted peer", []byte("PROXY TCP4 192.0.2.10 192.0.2.1 4711 443\r\n"), false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := proxyServe(t, remoteHandler, tt.trusted, 5*time.Second)
			c, err := net.Dial("tcp", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			want := tt.want
			if want == "" {
				want = c.LocalAddr().String()
			}
			// The header and the requests in one write, as a balancer
			// often sends them: the header must be read to its end and
			// not a byte further. Then keep-alive requests on the same
			// connection.
			if _, err := c.Write(append(append([]byte{}, tt.header...), "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"...)); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			for i := range 3 {
				if i > 0 {
					if _, err := io.WriteString(c, "GET /n HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
						t.Fatal(err)
					}
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("response %d: %v", i, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if got := string(body); got != want+" tcp=true raw=true" {
					t.Errorf("response %d: %q, want %q", i, got, want+" tcp=true raw=true")
				}
			}
		})
	}
}

// A connection without a valid header is closed without an answer; one
// whose header does not come in time is closed at the deadline.
func TestWireProxyProtocolBroken(t *testing.T) {
	const timeout = 200 * time.Millisecond
	addr := proxyServe(t, remoteHandler, true, timeout)
	for _, tt := range []struct{ name, send string }{
		{"missing header", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"garbage", "PROXY TCP4 nonsense and more nonsense\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"v2 garbage", "\r\n\r\n\x00\r\nQUIT\n\x99\x99\x00\x00GET / HTTP/1.1\r\n\r\n"},
		{"slow header", "PROXY TCP4 192.0.2.10 "},
		{"nothing at all", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			c.SetDeadline(start.Add(10 * time.Second))
			io.WriteString(c, tt.send)
			got, err := io.ReadAll(c)
			if len(got) > 0 || err != nil && !isReset(err) {
				t.Errorf("got %q, %v; want the connection closed without an answer", got, err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("closed after %v", d)
			}
		})
	}
}

func isReset(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) == false && strings.Contains(err.Error(), "reset")
}

// Sendfile (and the cork around it) works on a connection that began with
// a PROXY header: the connection keeps its raw *net.TCPConn.
func TestWireProxyProtocolSendfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	const size = 200_003
	if err := os.WriteFile(path, bytes.Repeat([]byte("s"), size), 0o644); err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c := r.Context().(*reqCtx).c.(*conn); c.tcp == nil {
			t.Error("no raw TCP connection: no sendfile")
		}
		f, err := os.Open(path)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.Header().Set("X-Remote", r.RemoteAddr)
		io.CopyN(w, f, size) // response.ReadFrom: sendfile(2)
	})
	addr := proxyServe(t, h, true, 5*time.Second)
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "PROXY TCP4 192.0.2.10 192.0.2.1 4711 443\r\n")
	for i := range 2 {
		io.WriteString(c, "GET /f HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n != size || err != nil || resp.Header.Get("X-Remote") != "192.0.2.10:4711" {
			t.Fatalf("response %d: %d bytes, %v, remote %q", i, n, err, resp.Header.Get("X-Remote"))
		}
	}
}

// TLS: the header comes before the handshake; the wrapper sits under
// TLSListener and net/http sees the client the header named.
func TestWireProxyProtocolTLS(t *testing.T) {
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	cert := ts.TLS.Certificates[0]
	ts.Close()

	s := NewHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.RemoteAddr, r.Proto)
	}), Options{Logger: slog.New(slog.DiscardHandler)})
	l, err := Listen("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	pl := ProxyListener(l, ProxyOptions{Trusted: func(net.Addr) bool { return true }, Logger: slog.New(slog.DiscardHandler)})
	tl := TLSListener(pl, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
	done := make(chan error, 1)
	go func() { done <- s.ServeTLS(tl) }()
	defer func() {
		s.Close()
		<-done
	}()

	for _, tt := range []struct {
		name, proto string
		header      []byte
	}{
		{"v1 HTTP/1.1", "http/1.1", []byte("PROXY TCP6 2001:db8::10 2001:db8::1 4711 443\r\n")},
		{"v2 HTTP/2", "h2", proxyV2(1, 0x11, src4, dst4, nil)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr := &http.Transport{
				TLSClientConfig:   &tls.Config{InsecureSkipVerify: true, NextProtos: []string{tt.proto}},
				ForceAttemptHTTP2: tt.proto == "h2",
				DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
					c, err := (&net.Dialer{}).DialContext(ctx, "tcp", l.Addr().String())
					if err == nil {
						_, err = c.Write(tt.header)
					}
					return c, err
				},
			}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://portico.test/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := "[2001:db8::10]:4711 HTTP/1.1"
			if tt.proto == "h2" {
				want = "192.0.2.10:4711 HTTP/2.0"
			}
			if string(body) != want {
				t.Errorf("got %q, want %q", body, want)
			}
		})
	}
}
