package uwsgi_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"portico/internal/porticotest"
	"portico/internal/server"
	"portico/internal/uwsgi"
)

// clientEcho is what clientEchoHandler reports about its request.
type clientEcho struct {
	Method, Path, RawQuery, RequestURI, Host, RemoteAddr string
	Header                                               http.Header
	ContentLength                                        int64
	BodyLen                                              int
	BodySHA256, BodyErr                                  string
	ScriptName                                           string
	HasScriptName                                        bool
	Scheme                                               string
}

// clientEchoHandler answers, by path:
//
//	/echo-body  the request body back, with X-Body-SHA256;
//	/status/N   status N with a body unless N forbids one;
//	/cookies    two Set-Cookie headers;
//	anything else: a clientEcho as JSON, status 200 (201 for POST),
//	with an X-Reply header.
func clientEchoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/echo-body":
			data, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			sum := sha256.Sum256(data)
			w.Header().Set("X-Body-SHA256", hex.EncodeToString(sum[:]))
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(data)
			return
		case strings.HasPrefix(r.URL.Path, "/status/"):
			var code int
			for _, c := range r.URL.Path[len("/status/"):] {
				code = code*10 + int(c-'0')
			}
			w.Header().Set("X-Status", r.URL.Path[len("/status/"):])
			w.WriteHeader(code)
			io.WriteString(w, "status body")
			return
		case r.URL.Path == "/cookies":
			w.Header().Add("Set-Cookie", "a=1; Path=/")
			w.Header().Add("Set-Cookie", "b=2; HttpOnly")
			io.WriteString(w, "cookies")
			return
		}
		e := clientEcho{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, RequestURI: r.RequestURI,
			Host: r.Host, RemoteAddr: r.RemoteAddr, Header: r.Header, ContentLength: r.ContentLength}
		if o := uwsgi.OriginFrom(r.Context()); o != nil {
			e.ScriptName, e.HasScriptName, e.Scheme = o.ScriptName, o.HasScriptName, o.Scheme
		}
		data, err := io.ReadAll(r.Body)
		e.BodyLen = len(data)
		sum := sha256.Sum256(data)
		e.BodySHA256 = hex.EncodeToString(sum[:])
		if err != nil {
			e.BodyErr = err.Error()
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Reply", "portico")
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusCreated)
		}
		json.NewEncoder(w).Encode(e)
	})
}

// clientDo runs req through tr and returns the response with its body read.
func clientDo(t *testing.T, tr *uwsgi.Transport, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	// A bound, so that a request the server waits on fails instead of hanging.
	ctx, cancel := context.WithTimeout(req.Context(), 10*time.Second)
	defer cancel()
	resp, err := tr.RoundTrip(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return resp, body
}

func clientEchoOf(t *testing.T, tr *uwsgi.Transport, req *http.Request) (*http.Response, clientEcho) {
	t.Helper()
	resp, body := clientDo(t, tr, req)
	var e clientEcho
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("%v: %d %s", err, resp.StatusCode, body)
	}
	return resp, e
}

func TestTransportRoundTrip(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			addr, logs := testServer(t, network, clientEchoHandler())
			tr := &uwsgi.Transport{Network: network, Address: addr}
			t.Cleanup(func() {
				if strings.Contains(logs.String(), "level=WARN") {
					t.Errorf("server warnings:\n%s", logs)
				}
			})

			t.Run("GET", func(t *testing.T) {
				req, _ := http.NewRequest("GET", "http://example.com:8080/a%20b/caf%C3%A9?x=1&y=%20", nil)
				req.Header.Set("X-Custom", "yes")
				req.Header.Add("Cookie", "a=1")
				req.Header.Add("Cookie", "b=2")
				req.Header.Add("Accept", "text/html")
				req.Header.Add("Accept", "*/*")
				req.RemoteAddr = "192.0.2.7:5555"
				resp, e := clientEchoOf(t, tr, req)
				checks := []struct{ name, got, want string }{
					{"status", resp.Status, "200 OK"},
					{"X-Reply", resp.Header.Get("X-Reply"), "portico"},
					{"Method", e.Method, "GET"},
					{"Path", e.Path, "/a b/caf\xc3\xa9"},
					{"RawQuery", e.RawQuery, "x=1&y=%20"},
					{"RequestURI", e.RequestURI, "/a%20b/caf%C3%A9?x=1&y=%20"},
					{"Host", e.Host, "example.com:8080"},
					{"RemoteAddr", e.RemoteAddr, "192.0.2.7:5555"},
					{"X-Custom", e.Header.Get("X-Custom"), "yes"},
					{"Cookie", e.Header.Get("Cookie"), "a=1; b=2"},
					{"Accept", e.Header.Get("Accept"), "text/html, */*"},
					{"SCRIPT_NAME", e.ScriptName, ""},
				}
				for _, c := range checks {
					if c.got != c.want {
						t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
					}
				}
				if e.ContentLength != 0 || e.BodyLen != 0 {
					t.Errorf("ContentLength %d, body %d bytes, want none", e.ContentLength, e.BodyLen)
				}
			})

			t.Run("Origin", func(t *testing.T) {
				o := &uwsgi.Origin{RemoteAddr: "203.0.113.9", RemotePort: "4000", Scheme: "https"}
				req, _ := http.NewRequestWithContext(uwsgi.WithOrigin(context.Background(), o), "GET", "http://example.com/o", nil)
				_, e := clientEchoOf(t, tr, req)
				if e.RemoteAddr != "203.0.113.9:4000" || e.Scheme != "https" {
					t.Errorf("RemoteAddr %q, scheme %q", e.RemoteAddr, e.Scheme)
				}
			})

			t.Run("Set-Cookie", func(t *testing.T) {
				req, _ := http.NewRequest("GET", "http://example.com/cookies", nil)
				resp, body := clientDo(t, tr, req)
				got := resp.Header.Values("Set-Cookie")
				if len(got) != 2 || got[0] != "a=1; Path=/" || got[1] != "b=2; HttpOnly" || string(body) != "cookies" {
					t.Errorf("Set-Cookie %q, body %q", got, body)
				}
			})

			t.Run("3MiB both ways", func(t *testing.T) {
				data := make([]byte, 3<<20)
				rand.Read(data)
				sum := sha256.Sum256(data)
				req, _ := http.NewRequest("PUT", "http://example.com/echo-body", bytes.NewReader(data))
				req.Header.Set("Content-Type", "application/octet-stream")
				resp, body := clientDo(t, tr, req)
				if resp.StatusCode != 200 || resp.Header.Get("X-Body-SHA256") != hex.EncodeToString(sum[:]) || !bytes.Equal(body, data) {
					t.Errorf("%d, sha %s, %d bytes back", resp.StatusCode, resp.Header.Get("X-Body-SHA256"), len(body))
				}
			})

			t.Run("POST body and content type", func(t *testing.T) {
				req, _ := http.NewRequest("POST", "http://example.com/form", strings.NewReader("a=1&b=2"))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				resp, e := clientEchoOf(t, tr, req)
				if resp.StatusCode != 201 || e.ContentLength != 7 || e.BodyLen != 7 || e.BodyErr != "" ||
					e.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
					t.Errorf("%d %+v", resp.StatusCode, e)
				}
			})

			t.Run("status codes", func(t *testing.T) {
				for _, c := range []struct {
					method string
					code   int
					body   string
				}{
					{"GET", 404, "status body"},
					{"GET", 418, "status body"},
					{"GET", 500, "status body"},
					{"GET", 503, "status body"},
					{"GET", 204, ""},
					{"GET", 304, ""},
					{"HEAD", 200, ""},
					{"DELETE", 202, "status body"},
				} {
					req, _ := http.NewRequest(c.method, "http://example.com/status/"+strconv.Itoa(c.code), nil)
					resp, body := clientDo(t, tr, req)
					if resp.StatusCode != c.code || string(body) != c.body || resp.Header.Get("X-Status") != strconv.Itoa(c.code) {
						t.Errorf("%s %d: got %d %q, X-Status %q", c.method, c.code, resp.StatusCode, body, resp.Header.Get("X-Status"))
					}
				}
			})

			t.Run("ScriptName", func(t *testing.T) {
				tr := &uwsgi.Transport{Network: network, Address: addr, ScriptName: "/shop"}
				for _, c := range []struct{ url, path string }{
					{"http://example.com/shop/cart/item?id=3", "/cart/item"},
					{"http://example.com/shop", ""},
					{"http://example.com/shop/", "/"},
				} {
					req, _ := http.NewRequest("GET", c.url, nil)
					_, e := clientEchoOf(t, tr, req)
					if !e.HasScriptName || e.ScriptName != "/shop" || e.Path != c.path {
						t.Errorf("%s: SCRIPT_NAME %q (sent %v), PATH_INFO %q, want /shop %q", c.url, e.ScriptName, e.HasScriptName, e.Path, c.path)
					}
				}
			})
		})
	}
}

func TestTransportStreaming(t *testing.T) {
	release := make(chan struct{})
	addr, _ := testServer(t, "tcp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "second\n")
	}))
	tr := &uwsgi.Transport{Address: addr}
	req, _ := http.NewRequest("GET", "http://example.com/stream", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		close(release)
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	// The first line arrives while the handler is still blocked: the body
	// streams, it is not read to its end before RoundTrip returns.
	line, err := br.ReadString('\n')
	close(release)
	if line != "first\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	if rest, err := io.ReadAll(br); string(rest) != "second\n" || err != nil {
		t.Errorf("rest %q, %v", rest, err)
	}
}

func TestTransportDialError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	for _, tr := range []*uwsgi.Transport{
		{Address: refused},
		{Network: "unix", Address: filepath.Join(t.TempDir(), "missing.sock")},
	} {
		body := &closeCounter{Reader: strings.NewReader("abc")}
		req, _ := http.NewRequest("POST", "http://example.com/", body)
		req.ContentLength = 3
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("%s %s: no error", tr.Network, tr.Address)
		}
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "dial" {
			t.Errorf("%s %s: %v (%T) is not a dial *net.OpError", tr.Network, tr.Address, err, err)
		}
		if body.closed.Load() != 1 {
			t.Errorf("request body closed %d times, want 1", body.closed.Load())
		}
	}
}

// closeCounter is a request body that counts its Close calls.
type closeCounter struct {
	io.Reader
	closed atomic.Int32
}

func (c *closeCounter) Close() error { c.closed.Add(1); return nil }

func TestTransportUnknownLength(t *testing.T) {
	tr := &uwsgi.Transport{Address: "127.0.0.1:1"} // never dialled
	body := &closeCounter{Reader: strings.NewReader("abc")}
	req, _ := http.NewRequest("POST", "http://example.com/", body)
	req.ContentLength = -1
	if _, err := tr.RoundTrip(req); !errors.Is(err, uwsgi.ErrUnknownLength) {
		t.Errorf("got %v, want uwsgi.ErrUnknownLength", err)
	}
	if body.closed.Load() != 1 {
		t.Errorf("request body closed %d times, want 1", body.closed.Load())
	}
}

func TestTransportShortBody(t *testing.T) {
	gotErr := make(chan error, 1)
	addr, _ := testServer(t, "tcp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		gotErr <- err
	}))
	tr := &uwsgi.Transport{Address: addr}
	req, _ := http.NewRequest("POST", "http://example.com/", io.NopCloser(strings.NewReader("abc")))
	req.ContentLength = 10
	resp, err := tr.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		t.Fatal("a body shorter than ContentLength was sent without error")
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "reading request body") {
		t.Errorf("error %v", err)
	}
	// The app must not take 3 bytes for the whole body.
	if err := <-gotErr; err == nil {
		t.Error("the handler read a short body without error")
	}
}

func TestTransportEarlyAnswer(t *testing.T) {
	// The app answers 413 without reading a large body: the response is
	// still heard, whatever happens to the rest of the write.
	addr, _ := testServer(t, "tcp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}))
	tr := &uwsgi.Transport{Address: addr}
	data := make([]byte, 8<<20)
	req, _ := http.NewRequest("POST", "http://example.com/", bytes.NewReader(data))
	resp, body := clientDo(t, tr, req)
	if resp.StatusCode != 413 || string(body) != "too large\n" {
		t.Errorf("got %d %q", resp.StatusCode, body)
	}
}

func TestTransportAnswerWhileSending(t *testing.T) {
	// The upstream answers at once and reads no body until the client has
	// its response: a uwsgi.Transport that wrote the whole body before reading
	// would block on full socket buffers and never see the answer.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{})
	served := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-served })
	go func() {
		defer close(served)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, _, err := uwsgi.ReadPacket(c, nil); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 9\r\n\r\ntoo large")
		select {
		case <-got:
		case <-time.After(10 * time.Second): // a bound on failure, not an ordering
		}
	}()
	tr := &uwsgi.Transport{Address: ln.Addr().String()}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://example.com/", bytes.NewReader(make([]byte, 32<<20)))
	resp, err := tr.RoundTrip(req)
	close(got)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close() // abandons the rest of the upload
	if resp.StatusCode != 413 || string(body) != "too large" || err != nil {
		t.Errorf("got %d %q %v", resp.StatusCode, body, err)
	}
}

func TestTransportCancel(t *testing.T) {
	started := make(chan struct{}, 1)
	cancelled := make(chan struct{}, 1)
	addr, _ := testServer(t, "tcp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow-body" {
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
		}
		started <- struct{}{}
		<-r.Context().Done() // the Server cancels it when the peer closes
		cancelled <- struct{}{}
	}))
	tr := &uwsgi.Transport{Address: addr}

	t.Run("before the head", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://example.com/slow-head", nil)
		errc := make(chan error, 1)
		go func() {
			resp, err := tr.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		<-started
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("RoundTrip: %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second): // a bound on failure, not an ordering
			t.Fatal("cancelling did not unblock RoundTrip")
		}
		<-cancelled
	})

	t.Run("during the body", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://example.com/slow-body", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		<-started
		buf := make([]byte, len("partial"))
		if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "partial" {
			t.Fatalf("read %q, %v", buf, err)
		}
		readErr := make(chan error, 1)
		go func() {
			_, err := resp.Body.Read(make([]byte, 10))
			readErr <- err
		}()
		cancel()
		select {
		case err := <-readErr:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Read: %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second): // a bound on failure, not an ordering
			t.Fatal("cancelling did not unblock the body read")
		}
		<-cancelled
	})
}

// rawUpstream serves one connection per entry of answers: it reads the
// packet and its body (CONTENT_LENGTH bytes), writes the answer verbatim
// and closes. It returns the address.
func rawUpstream(t *testing.T, answers ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for _, answer := range answers {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			if _, vars, err := uwsgi.ReadPacket(br, nil); err == nil {
				var n int64
				uwsgi.ParseVars(vars, func(k, v []byte) error {
					if string(k) == "CONTENT_LENGTH" {
						for _, d := range v {
							n = n*10 + int64(d-'0')
						}
					}
					return nil
				})
				io.CopyN(io.Discard, br, n)
				io.WriteString(c, answer)
			}
			c.Close()
		}
	}()
	return ln.Addr().String()
}

func TestTransportRawResponses(t *testing.T) {
	cases := []struct {
		name, answer string
		status       string
		body         string
		badResponse  bool
	}{
		{"no reason phrase", "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", "200 OK", "ok", false},
		{"no reason, unknown code", "HTTP/1.1 299\r\n\r\nok", "299", "ok", false},
		{"HTTP/1.0 body to EOF", "HTTP/1.0 201 Created\r\nX-A: 1\r\n\r\nuntil the end", "201 Created", "until the end", false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "200 OK", "abc", false},
		{"100 Continue skipped", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 1\r\n\r\nx", "202 Accepted", "x", false},
		{"closed before the head", "", "", "", true},
		{"head cut short", "HTTP/1.1 200 OK\r\nX-Partial: 1", "", "", true},
		{"not HTTP", "garbage\r\n\r\n", "", "", true},
	}
	answers := make([]string, len(cases))
	for i, c := range cases {
		answers[i] = c.answer
	}
	tr := &uwsgi.Transport{Address: rawUpstream(t, answers...)}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", "http://example.com/", strings.NewReader("body"))
			resp, err := tr.RoundTrip(req)
			if c.badResponse {
				if err == nil {
					resp.Body.Close()
				}
				if !errors.Is(err, uwsgi.ErrBadResponse) {
					t.Errorf("got %v, want uwsgi.ErrBadResponse", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.Status != c.status || string(body) != c.body || err != nil {
				t.Errorf("got %q %q %v, want %q %q", resp.Status, body, err, c.status, c.body)
			}
		})
	}
}

func TestTransportModifier1(t *testing.T) {
	mods := make(chan uint8, 1)
	addr, _ := testServer(t, "tcp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mods <- uwsgi.OriginFrom(r.Context()).Modifier1
	}))
	req, _ := http.NewRequest("GET", "http://example.com/", nil)
	if resp, _ := clientDo(t, &uwsgi.Transport{Address: addr}, req); resp.StatusCode != 200 || <-mods != 0 {
		t.Errorf("modifier1 0: %d", resp.StatusCode)
	}
	if resp, _ := clientDo(t, &uwsgi.Transport{Address: addr, Modifier1: 30}, req); resp.StatusCode != 200 || <-mods != 30 {
		t.Errorf("modifier1 30: %d", resp.StatusCode)
	}
	// The Server serves WSGI only: another modifier1 reaches it and is refused.
	if resp, _ := clientDo(t, &uwsgi.Transport{Address: addr, Modifier1: 5}, req); resp.StatusCode != http.StatusNotImplemented {
		t.Errorf("modifier1 5: %d, want 501", resp.StatusCode)
	}
}

// testServer serves h with Portico's uwsgi listener (internal/server) on
// a loopback listener (network "tcp" or "unix") until the test ends, and
// returns its address and its log.
func testServer(t *testing.T, network string, h http.Handler) (addr string, logs *porticotest.LogRecorder) {
	t.Helper()
	logs = porticotest.NewLogRecorder()
	srv := server.NewHTTP(h, server.Options{Logger: logs.Logger()})
	laddr := "127.0.0.1:0"
	if network == "unix" {
		laddr = filepath.Join(t.TempDir(), "uwsgi.sock")
	}
	ln, err := net.Listen(network, laddr)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeUWSGI(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
			srv.Close()
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
	})
	return ln.Addr().String(), logs
}
