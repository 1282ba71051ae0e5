package server

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestWireStrict: every request nginx refuses is refused here too, with
// the status nginx gives and the connection closed, before the handler
// sees it; and the forms nginx accepts that Portico refused are served.
// The request after each refused one rides on the same connection and
// must not be served; a new connection is served afterwards.
func TestWireStrict(t *testing.T) {
	var leaked atomic.Pointer[string] // a refused request the handler saw
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "refused") {
			l := fmt.Sprintf("%s %s host=%q", r.Method, r.URL.Path, r.Host)
			leaked.Store(&l)
		}
		wireHandler.ServeHTTP(w, r)
	})
	addr := serve(t, NewHTTP(h, Options{}), "127.0.0.1:0")
	fields := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "X-F%d: v\r\n", i)
		}
		return b.String()
	}
	tests := []struct {
		name   string
		req    string
		status int
		body   string // substring of the first response's body
	}{
		// The host of an absolute-form target is validated as Host is.
		{"angle brackets in an absolute-form host", "GET http://a<b>/refused HTTP/1.1\r\nHost: good\r\n\r\n", 400, ""},
		{"quote in an absolute-form host", "GET http://a\"b/refused HTTP/1.1\r\nHost: good\r\n\r\n", 400, ""},
		{"bracket alone as the host", "GET http://]/refused HTTP/1.1\r\nHost: good\r\n\r\n", 400, ""},
		{"bracket alone, other scheme", "GET x://]/refused HTTP/1.1\r\nHost: good\r\n\r\n", 400, ""},
		{"port not a number", "GET http://a:b/refused HTTP/1.1\r\nHost: good\r\n\r\n", 400, ""},
		{"absolute form with an IP literal", "GET http://[::1]:8080/p HTTP/1.1\r\nHost: good\r\n\r\n", 200, "host=[::1]:8080 path=/p"},

		// CONNECT: no tunnel, whatever the target.
		{"CONNECT with a bad authority", "CONNECT a<b>\"c'd:443 HTTP/1.1\r\nHost: x\r\n\r\n", 405, ""},
		{"CONNECT origin form", "CONNECT /refused HTTP/1.1\r\nHost: x\r\n\r\n", 405, ""},
		{"CONNECT", "CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n", 405, ""},

		// Host.
		{"empty Host", "GET /refused HTTP/1.1\r\nHost: \r\n\r\n", 400, ""},
		{"empty Host in HTTP/1.0", "GET /refused HTTP/1.0\r\nHost: \r\n\r\n", 400, ""},
		{"Host with a port only", "GET /refused HTTP/1.1\r\nHost: :x\r\n\r\n", 400, ""},
		{"Host with a bad port", "GET /refused HTTP/1.1\r\nHost: a:x\r\n\r\n", 400, ""},
		{"Host with userinfo", "GET /refused HTTP/1.1\r\nHost: u@a\r\n\r\n", 400, ""},
		{"Host with a broken literal", "GET /refused HTTP/1.1\r\nHost: [::1\r\n\r\n", 400, ""},
		{"Host IP literal", "GET /p HTTP/1.1\r\nHost: [::1]:8000\r\n\r\n", 200, "host=[::1]:8000"},
		{"Host with an underscore and a port", "GET /p HTTP/1.1\r\nHost: my_host.example:8000\r\n\r\n", 200, "host=my_host.example:8000"},

		// NUL in the decoded path.
		{"%00 in the path", "GET /refused%00x HTTP/1.1\r\nHost: x\r\n\r\n", 400, ""},
		{"%00 in an absolute-form path", "GET http://h/refused%00 HTTP/1.1\r\nHost: x\r\n\r\n", 400, ""},
		{"escaped %00 is not a NUL", "GET /a%2500 HTTP/1.1\r\nHost: x\r\n\r\n", 200, "path=/a%00"},

		// Methods: upper-case letters, '_' and '-'.
		{"lower-case method", "get /refused HTTP/1.1\r\nHost: x\r\n\r\n", 400, ""},
		{"digit in the method", "G3T /refused HTTP/1.1\r\nHost: x\r\n\r\n", 400, ""},
		{"lower-case method with a dash", "-blargh /refused HTTP/1.1\r\nHost: x\r\n\r\n", 400, ""},
		{"method with a dot", "GET.X /refused HTTP/1.1\r\nHost: x\r\n\r\n", 400, ""},
		{"method with '-' and '_'", "M-SEARCH_X /p HTTP/1.1\r\nHost: x\r\n\r\n", 200, "M-SEARCH_X"},

		// Framing.
		{"same Content-Length twice", "POST /refused HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400, ""},
		{"tab before Content-Length", "POST /refused HTTP/1.1\r\nHost: x\r\nContent-Length:\t3\r\n\r\nabc", 400, ""},
		{"tab after Content-Length", "POST /refused HTTP/1.1\r\nHost: x\r\nContent-Length: 3\t\r\n\r\nabc", 400, ""},
		{"tab before Transfer-Encoding", "POST /refused HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n", 400, ""},
		{"tab after Transfer-Encoding", "POST /refused HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n", 400, ""},
		{"spaces around Content-Length", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length:   3  \r\n\r\nabc", 200, `POST 3 "abc"`},
		{"tab around another header", "POST /echo HTTP/1.1\r\nHost: x\r\nX-A:\tb\t\r\nContent-Length: 3\r\n\r\nabc", 200, `POST 3 "abc"`},

		// Leading zeros: only significant digits count.
		{"Content-Length with leading zeros", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 00000000000000000005\r\n\r\nhello", 200, `POST 5 "hello"`},
		{"Content-Length of 19 significant digits", "POST /refused HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000000000\r\n\r\n", 400, ""},
		{"zero Content-Length with leading zeros", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0000000000000000000000\r\n\r\n", 200, `POST 0 ""`},
		{"chunk size with leading zeros", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n000000000000000000000005\r\nhello\r\n00000000000000000000\r\n\r\n", 200, `POST -1 "hello"`},

		// Header field count.
		{"100 header fields", "GET /p HTTP/1.1\r\nHost: x\r\n" + fields(99) + "\r\n", 200, "path=/p"},
		{"101 header fields", "GET /refused HTTP/1.1\r\nHost: x\r\n" + fields(100) + "\r\n", 431, ""},
		{"2,000 header fields", "GET /refused HTTP/1.1\r\nHost: x\r\n" + fields(2000) + "\r\n", 431, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaked.Store(nil)
			out := exchange(t, addr, tt.req+"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			rs := responses(t, out, "GET")
			if len(rs) == 0 {
				t.Fatalf("no response in %q", out)
			}
			r := rs[0]
			if r.StatusCode != tt.status || !strings.Contains(bodyOf(r), tt.body) {
				t.Errorf("got %d %q, want %d containing %q", r.StatusCode, bodyOf(r), tt.status, tt.body)
			}
			if refused := tt.status >= 400; refused {
				if !r.Close || len(rs) != 1 {
					t.Errorf("refused, but the connection lives on: close=%v, %d responses", r.Close, len(rs))
				}
			} else if len(rs) != 2 || !strings.Contains(bodyOf(rs[1]), "path=/after") {
				t.Errorf("%d responses, want 2 with /after served: %q", len(rs), out)
			}
			if l := leaked.Load(); l != nil {
				t.Errorf("a refused request reached the handler: %s", *l)
			}
			if rs := responses(t, exchange(t, addr, "GET /still HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), "GET"); len(rs) != 1 || !strings.Contains(bodyOf(rs[0]), "path=/still") {
				t.Error("the server stopped serving")
			}
		})
	}

	// What a bodyless POST leaves, when its client sent a body anyway, is
	// the start of the next request line: never a method.
	t.Run("remnant of a bodyless POST", func(t *testing.T) {
		leaked.Store(nil)
		out := exchange(t, addr, "POST /echo HTTP/1.1\r\nHost: x\r\n\r\nhelloGET /refused HTTP/1.1\r\nHost: x\r\n\r\n")
		rs := responses(t, out, "GET")
		if len(rs) != 2 || bodyOf(rs[0]) != `POST 0 ""` || rs[1].StatusCode != 400 || !rs[1].Close {
			t.Errorf("want the POST served, then 400 and close: %q", out)
		}
		if l := leaked.Load(); l != nil {
			t.Errorf("a refused request reached the handler: %s", *l)
		}
	})
}

// TestWireStrictEarly: a malformed head is refused at its first bad line,
// while the client holds the rest: the answer comes although the head never
// ends (the header timeout here is a minute).
func TestWireStrictEarly(t *testing.T) {
	addr := serve(t, NewHTTP(wireHandler, Options{MaxHeaderFields: 5}), "127.0.0.1:0")
	tests := []struct {
		name   string
		req    string // a head that does not end
		status int
	}{
		{"unsupported version", "GET / HTTP/5.6\r\n", 505},
		{"CR CR LF after the request line", "GET / HTTP/1.1\r\r\n", 400},
		{"CR CR LF after a header", "GET / HTTP/1.1\r\nHost: x\r\r\n", 400},
		{"PROXY protocol v1 header without the protocol", "PROXY TCP4 192.0.2.1 192.0.2.2 1234 80\r\n", 400},
		{"lower-case method", "get / HTTP/1.1\r\n", 400},
		{"CONNECT", "CONNECT example.org:443 HTTP/1.1\r\n", 405},
		{"bad header name", "GET / HTTP/1.1\r\nHost: x\r\nX Y: z\r\n", 400},
		{"line folding", "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n", 400},
		{"too many fields", "GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n", 431},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// Byte by byte at the end: the server sees the head in pieces.
			if _, err := io.WriteString(c, tt.req[:len(tt.req)-3]); err != nil {
				t.Fatal(err)
			}
			for i := len(tt.req) - 3; i < len(tt.req); i++ {
				if _, err := io.WriteString(c, tt.req[i:i+1]); err != nil {
					t.Fatal(err)
				}
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			b, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("reading: %v (after %q): the head was not judged at its bad line", err, b)
			}
			rs := responses(t, string(b), "GET")
			if len(rs) != 1 || rs[0].StatusCode != tt.status || !rs[0].Close {
				t.Errorf("got %q, want %d and the connection closed", b, tt.status)
			}
		})
	}
	if rs := responses(t, exchange(t, addr, "GET /still HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), "GET"); len(rs) != 1 || !strings.Contains(bodyOf(rs[0]), "path=/still") {
		t.Error("the server stopped serving")
	}
}

// TestWireFirstByteTimeout: a connection that never sends a byte is closed
// at the header timeout, not the idle timeout, whether it waits in its
// goroutine or parked; a connection that has been served waits the idle
// timeout between requests.
func TestWireFirstByteTimeout(t *testing.T) {
	const header, idle = 1500 * time.Millisecond, 30 * time.Second
	for _, parkAfter := range []time.Duration{0, 100 * time.Millisecond} {
		t.Run(fmt.Sprintf("park after %v", parkAfter), func(t *testing.T) {
			s := NewHTTP(wireHandler, Options{ReadHeaderTimeout: header, IdleTimeout: idle})
			s.parkAfter = parkAfter
			if parkAfter == 0 {
				s.parkAfter = 2 * header // never parked
			}
			addr := serve(t, s, "127.0.0.1:0")
			c, err := net.Dial("tcp", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			c.SetReadDeadline(start.Add(idle / 2))
			n, err := c.Read(make([]byte, 1))
			d := time.Since(start)
			if n != 0 || !errors.Is(err, io.EOF) && !isReset(err) {
				t.Fatalf("read %d bytes, %v; want the connection closed", n, err)
			}
			// The parker checks once a second.
			if d < header-100*time.Millisecond || d > header+3*time.Second {
				t.Errorf("closed after %v, want about %v (the header timeout)", d, header)
			}
			if rs := responses(t, exchange(t, addr, "GET /still HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), "GET"); len(rs) != 1 {
				t.Error("the server stopped serving")
			}
		})
	}

	t.Run("served connection waits the idle timeout", func(t *testing.T) {
		const header, idle = 300 * time.Millisecond, 2 * time.Second
		s := NewHTTP(wireHandler, Options{ReadHeaderTimeout: header, IdleTimeout: idle})
		addr := serve(t, s, "127.0.0.1:0")
		c, err := net.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		if err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
			t.Fatalf("response %q, %v", buf[:n], err)
		}
		start := time.Now()
		n, err = c.Read(buf)
		if d := time.Since(start); n != 0 || d < idle-1100*time.Millisecond || d < 3*header {
			t.Errorf("a served connection closed after %v (%d bytes, %v), want about %v (the idle timeout)", d, n, err, idle)
		}
	})
}
