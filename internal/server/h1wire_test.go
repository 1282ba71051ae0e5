package server

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// wireHandler answers with what it saw, and does what the path asks.
var wireHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/echo":
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "read error: "+err.Error(), 400)
			return
		}
		fmt.Fprintf(w, "%s %d %q", r.Method, r.ContentLength, b)
	case "/ignore-body":
		io.WriteString(w, "ignored")
	case "/big":
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		chunk := strings.Repeat("x", 1000)
		for i := 0; i < n; i++ {
			io.WriteString(w, chunk)
		}
	case "/short":
		w.Header().Set("Content-Length", "10")
		io.WriteString(w, "abc")
	case "/over":
		w.Header().Set("Content-Length", "2")
		if _, err := io.WriteString(w, "abc"); err == http.ErrContentLength {
			io.WriteString(w, "ab")
		}
	case "/nocontent":
		w.WriteHeader(http.StatusNoContent)
		_, err := io.WriteString(w, "x")
		_ = err
	case "/inject":
		w.Header().Set("X-Evil", "a\r\nSet-Cookie: pwned=1")
		io.WriteString(w, "ok")
	case "/close":
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	case "/hints":
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "final")
	default:
		fmt.Fprintf(w, "%s %s host=%s path=%s raw=%s query=%s", r.Method, r.Proto, r.Host, r.URL.Path, r.URL.EscapedPath(), r.URL.RawQuery)
	}
})

// exchange writes raw on a new connection and returns everything the
// server sends until it closes the connection or a second passes quietly.
func exchange(t *testing.T, addr net.Addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go io.WriteString(c, raw)
	var out strings.Builder
	buf := make([]byte, 64<<10)
	for {
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			return out.String()
		}
	}
}

// responses parses every response in s (answers to requests of method).
func responses(t *testing.T, s string, method string) []*http.Response {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(s))
	var out []*http.Response
	for {
		if _, err := br.Peek(1); err != nil {
			return out
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("parsing response %d: %v in %q", len(out)+1, err, s)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("reading body of response %d: %v in %q", len(out)+1, err, s)
		}
		resp.Body = io.NopCloser(strings.NewReader(string(b)))
		resp.Trailer = http.Header{"X-Body": {string(b)}}
		out = append(out, resp)
	}
}

func bodyOf(r *http.Response) string { return r.Trailer.Get("X-Body") }

func TestWireRequests(t *testing.T) {
	addr := serve(t, NewHTTP(wireHandler, Options{}), "127.0.0.1:0")
	tests := []struct {
		name   string
		req    string
		status int
		body   string // substring of the first response's body
		closed bool   // the response says Connection: close
	}{
		{"bare LF line ends", "GET /a HTTP/1.1\nHost: x\n\n", 200, "path=/a", false},
		{"empty lines before the request", "\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n", 200, "path=/a", false},
		{"absolute form sets the host", "GET http://example.org/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n", 200, "host=example.org path=/p", false},
		{"escaped path", "GET /a%20b/%2Fc?x=%41 HTTP/1.1\r\nHost: x\r\n\r\n", 200, "path=/a b//c raw=/a%20b/%2Fc query=x=%41", false},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 200, "", false},
		{"* with GET", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400, "", true},
		{"HTTP/1.2 served as 1.1", "GET /a HTTP/1.2\r\nHost: x\r\n\r\n", 200, "HTTP/1.1", false},
		{"HTTP/2.0", "GET /a HTTP/2.0\r\nHost: x\r\n\r\n", 505, "", true},
		{"HTTP/1.0 without Host", "GET /a HTTP/1.0\r\n\r\n", 200, "HTTP/1.0", true},
		{"HTTP/1.0 keep-alive", "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 200, "HTTP/1.0", false},
		{"missing Host", "GET /a HTTP/1.1\r\n\r\n", 400, "", true},
		{"two Hosts", "GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "", true},
		{"bad Host", "GET /a HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, "", true},
		{"space before colon", "GET /a HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n", 400, "", true},
		{"line folding", "GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n", 400, "", true},
		{"NUL in a value", "GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400, "", true},
		{"CR in a value", "GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400, "", true},
		{"space in the target", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400, "", true},
		{"bad escape", "GET /a%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "", true},
		{"method not a token", "G(T /a HTTP/1.1\r\nHost: x\r\n\r\n", 400, "", true},
		{"long request line", "GET /" + strings.Repeat("a", 70<<10) + " HTTP/1.1\r\nHost: x\r\n\r\n", 414, "", true},

		// Framing: smuggling defences.
		{"CL and TE", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "", true},
		{"TE gzip", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "", true},
		{"TE gzip, chunked", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "", true},
		{"two TE headers", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501, "", true},
		{"TE in HTTP/1.0", "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "", true},
		{"different CLs", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, "", true},
		{"same CL twice", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400, "", true},
		{"CL with a sign", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", 400, "", true},
		{"CL list", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc", 400, "", true},
		{"unknown Expect", "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 1\r\n\r\na", 417, "", true},

		// Bodies.
		{"CL body", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 200, `POST 5 "hello"`, false},
		{"chunked body with extension and trailer", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n", 200, `POST -1 "hello world"`, false},
		{"chunk size not hex", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400, "read error", true},
		{"no CRLF after chunk data", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400, "read error", true},
		{"huge chunk size", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", 400, "read error", true},

		// Responses.
		{"CR LF in a header value", "GET /inject HTTP/1.1\r\nHost: x\r\n\r\n", 200, "ok", false},
		{"handler's Connection: close", "GET /close HTTP/1.1\r\nHost: x\r\n\r\n", 200, "bye", true},
		{"write past Content-Length", "GET /over HTTP/1.1\r\nHost: x\r\n\r\n", 200, "ab", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := exchange(t, addr, tt.req+"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			rs := responses(t, out, "GET")
			if len(rs) == 0 {
				t.Fatalf("no response in %q", out)
			}
			r := rs[0]
			if r.StatusCode != tt.status || !strings.Contains(bodyOf(r), tt.body) {
				t.Errorf("got %d %q, want %d containing %q", r.StatusCode, bodyOf(r), tt.status, tt.body)
			}
			if r.Close != tt.closed {
				t.Errorf("Connection: close = %v, want %v", r.Close, tt.closed)
			}
			if got := r.Header.Get("Set-Cookie"); got != "" {
				t.Errorf("a header was injected: Set-Cookie %q", got)
			}
			// The request after it on the same connection is served only
			// if the connection lives on.
			if want := 1; !tt.closed {
				want = 2
				if len(rs) != want || !strings.Contains(bodyOf(rs[1]), "path=/after") {
					t.Errorf("%d responses, want %d with /after served: %q", len(rs), want, out)
				}
			} else if len(rs) != want {
				t.Errorf("%d responses after a closing one, want %d: %q", len(rs), want, out)
			}
			if rs := responses(t, exchange(t, addr, "GET /still HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), "GET"); len(rs) != 1 || !strings.Contains(bodyOf(rs[0]), "path=/still") {
				t.Error("the server stopped serving")
			}
		})
	}
}

func TestWireResponses(t *testing.T) {
	addr := serve(t, NewHTTP(wireHandler, Options{}), "127.0.0.1:0")

	t.Run("small body gets Content-Length and Date", func(t *testing.T) {
		r := responses(t, exchange(t, addr, "GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), "GET")[0]
		if r.ContentLength != int64(len(bodyOf(r))) || len(r.TransferEncoding) != 0 || r.Header.Get("Date") == "" {
			t.Errorf("Content-Length %d for %d bytes, TE %v, Date %q", r.ContentLength, len(bodyOf(r)), r.TransferEncoding, r.Header.Get("Date"))
		}
	})
	t.Run("large body without a length is chunked", func(t *testing.T) {
		r := responses(t, exchange(t, addr, "GET /big?n=100 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), "GET")[0]
		if len(r.TransferEncoding) != 1 || len(bodyOf(r)) != 100000 {
			t.Errorf("TE %v, %d bytes; want chunked, 100000", r.TransferEncoding, len(bodyOf(r)))
		}
	})
	t.Run("large body to HTTP/1.0 ends with the connection", func(t *testing.T) {
		out := exchange(t, addr, "GET /big?n=20 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		r := responses(t, out, "GET")[0]
		if !r.Close || len(bodyOf(r)) != 20000 || !strings.HasPrefix(out, "HTTP/1.0 200") {
			t.Errorf("close %v, %d bytes, status line %q", r.Close, len(bodyOf(r)), out[:15])
		}
	})
	t.Run("HEAD", func(t *testing.T) {
		out := exchange(t, addr, "HEAD /a HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		head, rest, _ := strings.Cut(out, "\r\n\r\n")
		r := responses(t, head+"\r\n\r\n", "HEAD")[0]
		if r.ContentLength <= 0 || !strings.HasPrefix(rest, "HTTP/1.1 200") || !strings.Contains(rest, "path=/after") {
			t.Errorf("HEAD then GET: %q", out)
		}
	})
	t.Run("204 has no body or length", func(t *testing.T) {
		out := exchange(t, addr, "GET /nocontent HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(out, "HTTP/1.1 204") || strings.Contains(out, "Content-Length") || strings.HasSuffix(out, "x") {
			t.Errorf("204: %q", out)
		}
	})
	t.Run("short body closes the connection", func(t *testing.T) {
		c, err := net.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /short HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		if !strings.HasSuffix(string(b), "abc") {
			t.Errorf("got %q; want the 3 bytes written, then the connection closed", b)
		}
	})
	t.Run("103 then 200", func(t *testing.T) {
		out := exchange(t, addr, "GET /hints HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(out, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n") || !strings.HasSuffix(out, "final") {
			t.Errorf("early hints: %q", out)
		}
	})
	t.Run("pipelined requests answered in order", func(t *testing.T) {
		out := exchange(t, addr, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		rs := responses(t, out, "GET")
		if len(rs) != 3 || !strings.Contains(bodyOf(rs[0]), "path=/1") || bodyOf(rs[1]) != `POST 2 "hi"` || !strings.Contains(bodyOf(rs[2]), "path=/3") {
			t.Errorf("pipelined: %q", out)
		}
	})
}

func TestWireExpectContinue(t *testing.T) {
	addr := serve(t, NewHTTP(wireHandler, Options{}), "127.0.0.1:0")
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("before the body: %q, %v; want 100 Continue", line, err)
	}
	br.ReadString('\n')
	io.WriteString(c, "hello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != `POST 5 "hello"` {
		t.Errorf("after the body: %d %q", resp.StatusCode, b)
	}

	// A handler that answers without reading: no 100, and the connection
	// closes (the client may or may not send the body).
	io.WriteString(c, "POST /ignore-body HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !resp.Close {
		t.Errorf("unread body with Expect: %d close=%v, want 200 and Connection: close", resp.StatusCode, resp.Close)
	}
}

func TestWireUnreadBody(t *testing.T) {
	addr := serve(t, NewHTTP(wireHandler, Options{}), "127.0.0.1:0")
	small := "POST /ignore-body HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + strings.Repeat("a", 1000)
	rs := responses(t, exchange(t, addr, small+"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), "GET")
	if len(rs) != 2 || rs[0].Close || !strings.Contains(bodyOf(rs[1]), "path=/after") {
		t.Errorf("a small unread body is drained and the connection kept: %d responses", len(rs))
	}
	large := "POST /ignore-body HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + strings.Repeat("a", 1000000)
	rs = responses(t, exchange(t, addr, large), "GET")
	if len(rs) != 1 || !rs[0].Close {
		t.Errorf("a large unread body closes the connection: %d responses, close=%v", len(rs), len(rs) > 0 && rs[0].Close)
	}
}

func TestWireBodyTimeout(t *testing.T) {
	got := make(chan string, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		got <- fmt.Sprint(err)
	})
	addr := serve(t, NewHTTP(h, Options{BodyTimeout: 100 * time.Millisecond}), "127.0.0.1:0")
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc") // then stalls
	select {
	case e := <-got:
		if !strings.Contains(e, "timeout") {
			t.Errorf("stalled body read: %s, want a timeout", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the body read did not time out")
	}
}

func TestWireContext(t *testing.T) {
	type result struct {
		gone  bool
		local any
	}
	got := make(chan result, 4)
	waiting := make(chan struct{}, 1) // the /wait request is in the handler
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local := r.Context().Value(http.LocalAddrContextKey)
		if r.URL.Path == "/quick" {
			select {
			case <-r.Context().Done():
				got <- result{true, local}
			case <-time.After(200 * time.Millisecond):
				got <- result{false, local}
			}
			io.WriteString(w, "ok")
			return
		}
		waiting <- struct{}{}
		select {
		case <-r.Context().Done():
			got <- result{true, local}
		case <-time.After(5 * time.Second):
			got <- result{false, local}
		}
	})
	addr := serve(t, NewHTTP(h, Options{}), "127.0.0.1:0")

	// A live client: Done stays open, and the request after it (sent while
	// the monitor reads) is served.
	out := exchange(t, addr, "GET /quick HTTP/1.1\r\nHost: x\r\n\r\nGET /quick HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if r := <-got; r.gone || fmt.Sprint(r.local) != addr.String() {
		t.Errorf("live client: gone=%v local=%v (want %v)", r.gone, r.local, addr)
	}
	<-got
	if rs := responses(t, out, "GET"); len(rs) != 2 {
		t.Errorf("%d responses, want 2: %q", len(rs), out)
	}

	// A client that goes away: Done closes.
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
	<-waiting
	c.Close()
	if r := <-got; !r.gone {
		t.Error("the context was not cancelled when the client left")
	}
}

func TestWireUnixSocket(t *testing.T) {
	addr := serve(t, NewHTTP(wireHandler, Options{}), "unix:"+t.TempDir()+"/s.sock")
	c, err := net.Dial("unix", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /u HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	b, _ := io.ReadAll(c)
	if !strings.Contains(string(b), "path=/u") {
		t.Errorf("over a unix socket: %q", b)
	}
}

// TestWireSendfileCork: a file response goes out corked (TCP_CORK, as
// nginx's tcp_nopush: the head and the file in full segments, which cut the
// client's CPU per byte by half or more on loopback) and is uncorked at
// its end. A socket left corked holds a partial segment up to 200 ms: the
// small answers between the files would take a second in all.
func TestWireSendfileCork(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	const size = 100_001 // not a multiple of any segment size
	if err := os.WriteFile(path, bytes.Repeat([]byte("z"), size), 0o644); err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/small" {
			io.WriteString(w, "ok")
			return
		}
		f, err := os.Open(path)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		w.Header().Set("Content-Length", strconv.Itoa(size))
		// As http.ServeContent does: io.CopyN reaches response.ReadFrom,
		// which sends the file with sendfile(2).
		if n, err := io.CopyN(w, f, size); n != size || err != nil {
			t.Errorf("copy: %d, %v", n, err)
		}
	})
	addr := serve(t, NewHTTP(h, Options{}), "127.0.0.1:0")
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	start := time.Now()
	for i := range 10 {
		path, want := "/f", int64(size)
		if i%2 == 1 {
			path, want = "/small", 2 // a partial segment: held if still corked
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n != want || err != nil {
			t.Fatalf("response %d: %d bytes, %v", i, n, err)
		}
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("10 responses took %v: the socket stays corked after a file", d)
	}
}

// A handler that hijacks the connection owns it: the bytes the client sent
// after its request reach the handler, the server writes nothing more, and
// Shutdown does not wait for it.
func TestWireHijack(t *testing.T) {
	hijacked := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/late" {
			io.WriteString(w, "x")
			if _, _, err := http.NewResponseController(w).Hijack(); err == nil {
				t.Error("Hijack after the response started succeeded")
			}
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		close(hijacked)
		go func() {
			defer conn.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
			brw.Flush()
			buf := make([]byte, 64)
			for {
				n, err := brw.Read(buf)
				if n > 0 {
					conn.Write(bytes.ToUpper(buf[:n]))
				}
				if err != nil {
					return
				}
			}
		}()
	})
	s := NewHTTP(h, Options{})
	addr := serve(t, s, "127.0.0.1:0")
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The first message rides in the same write as the request.
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nhello")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("response %v, %v", resp, err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "HELLO" {
		t.Fatalf("echo %q %v", buf, err)
	}
	<-hijacked
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown waited for a hijacked connection: %v", err)
	}
	io.WriteString(c, "again")
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "AGAIN" {
		t.Fatalf("after Shutdown: echo %q %v", buf, err)
	}
	if out := exchange(t, serve(t, NewHTTP(h, Options{}), "127.0.0.1:0"), "GET /late HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); !strings.HasSuffix(out, "\r\n\r\nx") {
		t.Errorf("late hijack: %q", out)
	}
}
