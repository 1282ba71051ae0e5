package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"portico/internal/porticotest"
	"portico/internal/uwsgi"
)

// uwTestServer runs srv on a loopback listener (network "tcp" or "unix")
// until the test ends, and returns the address to dial and the log.
func uwTestServer(t *testing.T, network string, srv *uwServer) (addr string, logs *porticotest.LogRecorder) {
	t.Helper()
	logs = porticotest.NewLogRecorder()
	srv.Logger = logs.Logger()
	ln, err := uwListen(t, network)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
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

// uwListen listens on a loopback port or, for "unix", a socket in the
// test's temporary directory (nginx's uwsgi_pass unix:).
func uwListen(t *testing.T, network string) (net.Listener, error) {
	if network == "unix" {
		return net.Listen("unix", filepath.Join(t.TempDir(), "uwsgi.sock"))
	}
	return net.Listen(network, "127.0.0.1:0")
}

// uwDial dials a uwListen address.
func uwDial(network, addr string) (net.Conn, error) { return net.Dial(network, addr) }

// uwBothNetworks runs test on a TCP listener and on a unix socket.
func uwBothNetworks(t *testing.T, test func(t *testing.T, network string)) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) { test(t, network) })
	}
}

// uwSeen is what a handler saw of its request.
type uwSeen struct {
	req     *http.Request
	body    []byte
	bodyErr error
	origin  *uwsgi.Origin
	local   net.Addr
	env     map[string]string
	envErr  error
}

// uwRecorder is a handler that reports each request on a channel and answers
// 200 "ok".
func uwRecorder(t *testing.T) (http.Handler, <-chan uwSeen) {
	ch := make(chan uwSeen, 16)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := uwSeen{req: r, origin: uwsgi.OriginFrom(r.Context())}
		s.body, s.bodyErr = io.ReadAll(r.Body)
		s.local, _ = r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		pkt, err := uwsgi.AppendRequest(nil, r, uwsgi.EnvironOptions{ContentLength: int64(len(s.body))})
		s.envErr = err
		if err == nil {
			s.env = make(map[string]string)
			for _, v := range uwDecodeVars(t, pkt[uwsgi.HeaderSize:]) {
				s.env[v.k] = v.v
			}
		}
		ch <- s
		io.WriteString(w, "ok")
	}), ch
}

// uwExchange sends raw (and then body) on a new connection, half-closing
// after if closeWrite, and returns all the server sent.
func uwExchange(t *testing.T, network, addr string, raw []byte, closeWrite bool) []byte {
	t.Helper()
	c, err := uwDial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(raw)
		if err == nil && closeWrite {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		wrote <- err
	}()
	out, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the response: %v (got %q)", err, out)
	}
	<-wrote // the server may stop reading early; a write error is fine
	return out
}

// uwParse parses a raw response to a request of method.
func uwParse(t *testing.T, raw []byte, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("parsing response %q: %v", raw, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading response body: %v", err)
	}
	return resp, string(body)
}

func uwReceive(t *testing.T, ch <-chan uwSeen) uwSeen {
	t.Helper()
	select {
	case s := <-ch:
		if s.envErr != nil && !errors.Is(s.envErr, uwsgi.ErrVarsTooLarge) {
			t.Errorf("AppendRequest: %v", s.envErr)
		}
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("the handler was not called")
		return uwSeen{}
	}
}

// uwSet returns vars with key set to value (appended if absent); an empty
// value with del removes it.
func uwSet(vars []uwKV, key, value string) []uwKV {
	out := append([]uwKV(nil), vars...)
	for i := range out {
		if out[i].k == key {
			out[i].v = value
			return out
		}
	}
	return append(out, uwKV{key, value})
}

func uwDel(vars []uwKV, key string) []uwKV {
	var out []uwKV
	for _, v := range vars {
		if v.k != key {
			out = append(out, v)
		}
	}
	return out
}

// TestUWSGIServeNginxRequest runs on a TCP and a unix socket.
func TestUWSGIServeNginxRequest(t *testing.T) { uwBothNetworks(t, testUWSGIServeNginxRequest) }

func testUWSGIServeNginxRequest(t *testing.T, network string) {
	h, ch := uwRecorder(t)
	addr, _ := uwTestServer(t, network, &uwServer{Handler: h})
	resp, body := uwParse(t, uwExchange(t, network, addr, uwPacket(0, uwStockParams()), false), "GET")
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("response %d %q, want 200 ok", resp.StatusCode, body)
	}
	s := uwReceive(t, ch)
	r := s.req
	checks := []struct{ name, got, want string }{
		{"Method", r.Method, "GET"},
		{"URL.Path", r.URL.Path, "/hello world/caf\xc3\xa9"},
		{"URL.RawPath", r.URL.RawPath, "/hello%20world/caf%C3%A9"},
		{"URL.RawQuery", r.URL.RawQuery, "x=1&y=two"},
		{"RequestURI", r.RequestURI, "/hello%20world/caf%C3%A9?x=1&y=two"},
		{"Proto", r.Proto, "HTTP/1.1"},
		{"ProtoMajor.Minor", strconv.Itoa(r.ProtoMajor) + "." + strconv.Itoa(r.ProtoMinor), "1.1"},
		{"Host", r.Host, "example.com"},
		{"RemoteAddr", r.RemoteAddr, "203.0.113.7:51234"},
		{"User-Agent", r.Header.Get("User-Agent"), "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"},
		{"Accept-Language", r.Header.Get("Accept-Language"), "en-US,en;q=0.5"},
		{"Cookie", r.Header.Get("Cookie"), "sessionid=abc123; csrftoken=xyz"},
		{"X-Forwarded-For", r.Header.Get("X-Forwarded-For"), "198.51.100.1"},
		{"FormValue y", r.URL.Query().Get("y"), "two"},
		{"local address", s.local.String(), addr},
		{"origin ServerName", s.origin.ServerName, "example.com"},
		{"origin ServerPort", s.origin.ServerPort, "80"},
		{"origin RemoteAddr", s.origin.RemoteAddr, "203.0.113.7"},
		{"origin Scheme", s.origin.Scheme, "http"},
		{"env PATH_INFO", s.env["PATH_INFO"], "/hello world/caf\xc3\xa9"},
		{"env REMOTE_ADDR", s.env["REMOTE_ADDR"], "203.0.113.7"},
		{"env DOCUMENT_ROOT", s.env["DOCUMENT_ROOT"], "/usr/share/nginx/html"},
		{"env HTTP_COOKIE", s.env["HTTP_COOKIE"], "sessionid=abc123; csrftoken=xyz"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if _, ok := r.Header["Host"]; ok {
		t.Error("Host in Header; net/http keeps it in Request.Host only")
	}
	if _, ok := r.Header["Content-Type"]; ok {
		t.Error("empty CONTENT_TYPE made a Content-Type header")
	}
	if r.ContentLength != 0 || r.Body != http.NoBody || len(s.body) != 0 {
		t.Errorf("ContentLength %d, Body %T, %d bytes; want 0, NoBody", r.ContentLength, r.Body, len(s.body))
	}
	if r.TLS != nil {
		t.Error("TLS set for an http request")
	}
	if s.origin.HasScriptName {
		t.Error("origin HasScriptName without SCRIPT_NAME")
	}
	switch p := s.origin.Peer.(type) {
	case *net.TCPAddr:
		if network == "unix" || !p.IP.IsLoopback() {
			t.Errorf("origin Peer = %v, want the loopback client", p)
		}
	case *net.UnixAddr:
		if network != "unix" || p.Net != "unix" {
			t.Errorf("origin Peer = %#v, want the unix client", p)
		}
	default:
		t.Errorf("origin Peer = %#v", p)
	}
	if extra := uwDecodeVars(t, s.origin.Extra); !uwEqualKV(extra, []uwKV{{"DOCUMENT_ROOT", "/usr/share/nginx/html"}}) {
		t.Errorf("origin Extra = %q, want only DOCUMENT_ROOT", extra)
	}
}

func TestUWSGIServeRequests(t *testing.T) {
	body := "name=caf%C3%A9&x=1"
	tests := []struct {
		name  string
		mod1  uint8
		vars  []uwKV
		body  string
		check func(t *testing.T, s uwSeen)
	}{
		{
			name: "POST with a body",
			vars: uwSet(uwSet(uwSet(uwStockParams(), "REQUEST_METHOD", "POST"), "CONTENT_LENGTH", strconv.Itoa(len(body))),
				"CONTENT_TYPE", "application/x-www-form-urlencoded"),
			body: body,
			check: func(t *testing.T, s uwSeen) {
				if s.req.Method != "POST" || string(s.body) != body || s.bodyErr != nil || s.req.ContentLength != int64(len(body)) {
					t.Errorf("%s %d bytes %q (%v), ContentLength %d", s.req.Method, len(s.body), s.body, s.bodyErr, s.req.ContentLength)
				}
				if ct := s.req.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
					t.Errorf("Content-Type = %q", ct)
				}
				if s.env["CONTENT_LENGTH"] != strconv.Itoa(len(body)) || s.env["CONTENT_TYPE"] != "application/x-www-form-urlencoded" {
					t.Errorf("env CONTENT_LENGTH %q CONTENT_TYPE %q", s.env["CONTENT_LENGTH"], s.env["CONTENT_TYPE"])
				}
			},
		},
		{
			name: "HTTP_CONTENT_* ignored in favour of CONTENT_*",
			vars: uwSet(uwSet(uwSet(uwStockParams(), "CONTENT_TYPE", "text/plain"), "HTTP_CONTENT_TYPE", "evil/type"),
				"HTTP_CONTENT_LENGTH", "99"),
			check: func(t *testing.T, s uwSeen) {
				if got := s.req.Header.Values("Content-Type"); len(got) != 1 || got[0] != "text/plain" {
					t.Errorf("Content-Type = %q, want [text/plain]", got)
				}
				if got := s.req.Header.Get("Content-Length"); got != "" || s.req.ContentLength != 0 {
					t.Errorf("Content-Length header %q, ContentLength %d", got, s.req.ContentLength)
				}
			},
		},
		{
			name: "HTTPS",
			vars: uwSet(uwSet(uwStockParams(), "HTTPS", "on"), "REQUEST_SCHEME", "https"),
			check: func(t *testing.T, s uwSeen) {
				if s.req.TLS == nil || s.origin.Scheme != "https" {
					t.Errorf("TLS %v, origin scheme %q", s.req.TLS, s.origin.Scheme)
				}
				if s.env["wsgi.url_scheme"] != "https" || s.env["HTTPS"] != "on" {
					t.Errorf("env scheme %q HTTPS %q", s.env["wsgi.url_scheme"], s.env["HTTPS"])
				}
			},
		},
		{
			name: "modifier1 30 strips SCRIPT_NAME",
			mod1: 30,
			vars: uwSet(uwSet(uwSet(uwStockParams(), "SCRIPT_NAME", "/app"), "PATH_INFO", "/app/x/y"), "REQUEST_URI", "/app/x/y?x=1&y=two"),
			check: func(t *testing.T, s uwSeen) {
				if s.req.URL.Path != "/x/y" || s.req.RequestURI != "/app/x/y?x=1&y=two" {
					t.Errorf("Path %q RequestURI %q", s.req.URL.Path, s.req.RequestURI)
				}
				if s.env["SCRIPT_NAME"] != "/app" || s.env["PATH_INFO"] != "/x/y" {
					t.Errorf("env SCRIPT_NAME %q PATH_INFO %q", s.env["SCRIPT_NAME"], s.env["PATH_INFO"])
				}
				if s.origin.Modifier1 != 30 {
					t.Errorf("origin Modifier1 = %d", s.origin.Modifier1)
				}
			},
		},
		{
			name: "modifier1 30 strips only at a segment boundary",
			mod1: 30,
			vars: uwSet(uwSet(uwStockParams(), "SCRIPT_NAME", "/app"), "PATH_INFO", "/apple"),
			check: func(t *testing.T, s uwSeen) {
				if s.req.URL.Path != "/apple" {
					t.Errorf("Path %q", s.req.URL.Path)
				}
			},
		},
		{
			name: "modifier1 0 leaves PATH_INFO alone",
			vars: uwSet(uwSet(uwStockParams(), "SCRIPT_NAME", "/app"), "PATH_INFO", "/app/x"),
			check: func(t *testing.T, s uwSeen) {
				if s.req.URL.Path != "/app/x" || !s.origin.HasScriptName || s.origin.ScriptName != "/app" {
					t.Errorf("Path %q, origin script name %q (%v)", s.req.URL.Path, s.origin.ScriptName, s.origin.HasScriptName)
				}
			},
		},
		{
			name: "no PATH_INFO: decoded from REQUEST_URI",
			vars: uwDel(uwStockParams(), "PATH_INFO"),
			check: func(t *testing.T, s uwSeen) {
				if s.req.URL.Path != "/hello world/caf\xc3\xa9" {
					t.Errorf("Path %q", s.req.URL.Path)
				}
			},
		},
		{
			name: "no QUERY_STRING: taken from REQUEST_URI",
			vars: uwDel(uwStockParams(), "QUERY_STRING"),
			check: func(t *testing.T, s uwSeen) {
				if s.req.URL.RawQuery != "x=1&y=two" {
					t.Errorf("RawQuery %q", s.req.URL.RawQuery)
				}
			},
		},
		{
			name: "no REQUEST_URI: rebuilt",
			vars: uwDel(uwStockParams(), "REQUEST_URI"),
			check: func(t *testing.T, s uwSeen) {
				if s.req.RequestURI != "/hello%20world/caf%C3%A9?x=1&y=two" {
					t.Errorf("RequestURI %q", s.req.RequestURI)
				}
			},
		},
		{
			name: "no REMOTE_ADDR: the socket peer",
			vars: uwDel(uwDel(uwStockParams(), "REMOTE_ADDR"), "REMOTE_PORT"),
			check: func(t *testing.T, s uwSeen) {
				host, _, err := net.SplitHostPort(s.req.RemoteAddr)
				if err != nil || host != "127.0.0.1" {
					t.Errorf("RemoteAddr %q", s.req.RemoteAddr)
				}
				if s.env["REMOTE_ADDR"] != "127.0.0.1" {
					t.Errorf("env REMOTE_ADDR %q", s.env["REMOTE_ADDR"])
				}
			},
		},
		{
			name: "no HTTP_HOST: SERVER_NAME",
			vars: uwDel(uwStockParams(), "HTTP_HOST"),
			check: func(t *testing.T, s uwSeen) {
				if s.req.Host != "example.com" {
					t.Errorf("Host %q", s.req.Host)
				}
			},
		},
		{
			name: "no SERVER_PROTOCOL: HTTP/1.1; HTTP/2.0 parsed",
			vars: uwSet(uwStockParams(), "SERVER_PROTOCOL", "HTTP/2.0"),
			check: func(t *testing.T, s uwSeen) {
				if s.req.Proto != "HTTP/2.0" || s.req.ProtoMajor != 2 || s.req.ProtoMinor != 0 {
					t.Errorf("Proto %q %d.%d", s.req.Proto, s.req.ProtoMajor, s.req.ProtoMinor)
				}
			},
		},
		{
			name: "header names canonicalised, odd ones dropped",
			vars: uwSet(uwSet(uwSet(uwSet(uwStockParams(), "HTTP_X_REQUESTED_WITH", "XMLHttpRequest"), "HTTP_X_ODD", "a\r\nInjected: 1"),
				"HTTP_X_B@D", "v"), "HTTP_X_CUSTOM_ID", "42"),
			check: func(t *testing.T, s uwSeen) {
				if s.req.Header.Get("X-Requested-With") != "XMLHttpRequest" || s.req.Header.Get("X-Custom-Id") != "42" {
					t.Errorf("headers %v", s.req.Header)
				}
				for _, k := range []string{"X-Odd", "Injected", "X-B@d"} {
					if _, ok := s.req.Header[k]; ok {
						t.Errorf("header %s kept", k)
					}
				}
			},
		},
		{
			name: "uWSGI magic variables ignored",
			vars: append(uwStockParams(), uwKV{"UWSGI_SCRIPT", "evil"}, uwKV{"UWSGI_CHDIR", "/"}, uwKV{"uwsgi_setenv", "A=1"},
				uwKV{"UWSGI_SETENV", "PYTHONPATH=/tmp"}, uwKV{"wsgi.input", "x"}, uwKV{"SERVER_SOFTWARE", "nginx"}),
			check: func(t *testing.T, s uwSeen) {
				for k := range s.env {
					if strings.HasPrefix(strings.ToUpper(k), "UWSGI_") || k == "wsgi.input" {
						t.Errorf("env has %s", k)
					}
				}
				if s.env["SERVER_SOFTWARE"] != "nginx" {
					t.Errorf("env SERVER_SOFTWARE %q, want passed through", s.env["SERVER_SOFTWARE"])
				}
			},
		},
		{
			name: "nginx SERVER_NAME and SERVER_PORT reach the environ",
			vars: uwSet(uwSet(uwStockParams(), "SERVER_NAME", "front.example"), "SERVER_PORT", "8443"),
			check: func(t *testing.T, s uwSeen) {
				if s.env["SERVER_NAME"] != "front.example" || s.env["SERVER_PORT"] != "8443" || s.env["HTTP_HOST"] != "example.com" {
					t.Errorf("env SERVER_NAME %q SERVER_PORT %q HTTP_HOST %q", s.env["SERVER_NAME"], s.env["SERVER_PORT"], s.env["HTTP_HOST"])
				}
			},
		},
	}
	h, ch := uwRecorder(t)
	addr, _ := uwTestServer(t, "tcp", &uwServer{Handler: h})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := append(uwPacket(tt.mod1, tt.vars), tt.body...)
			resp, body := uwParse(t, uwExchange(t, "tcp", addr, raw, false), "GET")
			if resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("response %d %q", resp.StatusCode, body)
			}
			tt.check(t, uwReceive(t, ch))
		})
	}
}

// TestUWSGIServeRejects runs on a TCP and a unix socket.
func TestUWSGIServeRejects(t *testing.T) { uwBothNetworks(t, testUWSGIServeRejects) }

func testUWSGIServeRejects(t *testing.T, network string) {
	short := uwPacket(0, uwStockParams())
	tests := []struct {
		name   string
		raw    []byte
		status int
		log    string
	}{
		{"modifier1 5", uwPacket(5, uwStockParams()), 501, "modifier1=5"},
		{"header cut short", []byte{0, 10}, 400, "malformed"},
		{"vars cut short", short[:len(short)/2], 400, "malformed"},
		{"key length past the end", append([]byte{0, 3, 0, 0}, 9, 0, 'K'), 400, "malformed"},
		{"empty key", append([]byte{0, 6, 0, 0}, 0, 0, 2, 0, 'a', 'b'), 400, "empty key"},
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), 400, "malformed"},
		{"no REQUEST_METHOD", uwPacket(0, uwDel(uwStockParams(), "REQUEST_METHOD")), 400, "REQUEST_METHOD"},
		{"bad REQUEST_METHOD", uwPacket(0, uwSet(uwStockParams(), "REQUEST_METHOD", "GE T")), 400, "REQUEST_METHOD"},
		{"negative CONTENT_LENGTH", uwPacket(0, uwSet(uwStockParams(), "CONTENT_LENGTH", "-1")), 400, "CONTENT_LENGTH"},
		{"non-numeric CONTENT_LENGTH", uwPacket(0, uwSet(uwStockParams(), "CONTENT_LENGTH", "12abc")), 400, "CONTENT_LENGTH"},
		{"conflicting CONTENT_LENGTH", uwPacket(0, append(uwSet(uwStockParams(), "CONTENT_LENGTH", "1"), uwKV{"CONTENT_LENGTH", "2"})), 400, "conflicting"},
		{"no path", uwPacket(0, uwDel(uwDel(uwStockParams(), "PATH_INFO"), "REQUEST_URI")), 400, "PATH_INFO"},
		{"bad SERVER_PROTOCOL", uwPacket(0, uwSet(uwStockParams(), "SERVER_PROTOCOL", "SPDY")), 400, "SERVER_PROTOCOL"},
	}
	h, ch := uwRecorder(t)
	addr, logs := uwTestServer(t, network, &uwServer{Handler: h})
	peer := "peer=127.0.0.1:"
	if network == "unix" {
		peer = "peer=@" // an unbound unix socket, as Go's net prints it
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := uwParse(t, uwExchange(t, network, addr, tt.raw, true), "GET")
			if resp.StatusCode != tt.status || !strings.HasPrefix(body, strconv.Itoa(tt.status)) {
				t.Errorf("response %d %q, want %d", resp.StatusCode, body, tt.status)
			}
			if l := logs.String(); !strings.Contains(l, tt.log) || !strings.Contains(l, peer) || !strings.Contains(l, "level=WARN") {
				t.Errorf("log lacks %q, the peer or the level:\n%s", tt.log, l)
			}
			// The server still serves.
			resp, body = uwParse(t, uwExchange(t, network, addr, uwPacket(0, uwStockParams()), false), "GET")
			if resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("next request: %d %q", resp.StatusCode, body)
			}
			uwReceive(t, ch)
		})
	}
	select {
	case s := <-ch:
		t.Errorf("handler called for a rejected request: %s %s", s.req.Method, s.req.RequestURI)
	default:
	}
}

// TestUWSGIServeReadTimeout runs on a TCP and a unix socket.
func TestUWSGIServeReadTimeout(t *testing.T) { uwBothNetworks(t, testUWSGIServeReadTimeout) }

func testUWSGIServeReadTimeout(t *testing.T, network string) {
	h, ch := uwRecorder(t)
	addr, logs := uwTestServer(t, network, &uwServer{Handler: h, ReadTimeout: 100 * time.Millisecond})
	pkt := uwPacket(0, uwStockParams())
	// Half a uwPacket, then silence (the connection stays open).
	resp, _ := uwParse(t, uwExchange(t, network, addr, pkt[:len(pkt)/2], false), "GET")
	if resp.StatusCode != 400 {
		t.Errorf("status %d, want 400", resp.StatusCode)
	}
	if !strings.Contains(logs.String(), "timeout") {
		t.Errorf("log does not name the timeout:\n%s", logs)
	}
	resp, _ = uwParse(t, uwExchange(t, network, addr, pkt, false), "GET")
	if resp.StatusCode != 200 {
		t.Errorf("next request: status %d", resp.StatusCode)
	}
	uwReceive(t, ch)
}

// TestUWSGIServeProbe runs on a TCP and a unix socket.
func TestUWSGIServeProbe(t *testing.T) { uwBothNetworks(t, testUWSGIServeProbe) }

func testUWSGIServeProbe(t *testing.T, network string) {
	h, _ := uwRecorder(t)
	addr, logs := uwTestServer(t, network, &uwServer{Handler: h})
	if out := uwExchange(t, network, addr, nil, true); len(out) != 0 {
		t.Errorf("answer to an empty connection: %q", out)
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("warning for a connection that sent nothing:\n%s", logs)
	}
}

func TestUWSGIServeLargeVars(t *testing.T) {
	vars := uwStockParams()
	size := len(uwEncodeVars(vars)) + 4 + len("HTTP_X_BIG")
	big := strings.Repeat("b", uwsgi.MaxVarsSize-size)
	vars = append(vars, uwKV{"HTTP_X_BIG", big})
	if n := len(uwEncodeVars(vars)); n != uwsgi.MaxVarsSize {
		t.Fatalf("test bug: vars block of %d bytes", n)
	}
	h, ch := uwRecorder(t)
	addr, _ := uwTestServer(t, "tcp", &uwServer{Handler: h})
	resp, _ := uwParse(t, uwExchange(t, "tcp", addr, uwPacket(0, vars), false), "GET")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	s := uwReceive(t, ch)
	if s.req.Header.Get("X-Big") != big {
		t.Errorf("X-Big has %d bytes, want %d", len(s.req.Header.Get("X-Big")), len(big))
	}
	// The environ adds variables nginx did not send: it cannot fit.
	if !errors.Is(s.envErr, uwsgi.ErrVarsTooLarge) {
		t.Errorf("AppendRequest of a full nginx packet: %v, want uwsgi.ErrVarsTooLarge", s.envErr)
	}
}

// TestUWSGIServeLargeBody runs on a TCP and a unix socket.
func TestUWSGIServeLargeBody(t *testing.T) { uwBothNetworks(t, testUWSGIServeLargeBody) }

func testUWSGIServeLargeBody(t *testing.T, network string) {
	body := make([]byte, 1<<20)
	rand.Read(body)
	addr, _ := uwTestServer(t, network, &uwServer{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(h, w), r.Body) // echo while hashing
		if err != nil || n != r.ContentLength {
			t.Errorf("read %d of %d bytes: %v", n, r.ContentLength, err)
		}
		if !bytes.Equal(h.Sum(nil), uwSha256Sum(body)) {
			t.Error("the handler read a different body")
		}
	})})
	vars := uwSet(uwSet(uwStockParams(), "REQUEST_METHOD", "PUT"), "CONTENT_LENGTH", strconv.Itoa(len(body)))
	resp, got := uwParse(t, uwExchange(t, network, addr, append(uwPacket(0, vars), body...), false), "PUT")
	if resp.StatusCode != 200 || got != string(body) {
		t.Errorf("status %d, echoed %d bytes equal=%v", resp.StatusCode, len(got), got == string(body))
	}
}

func uwSha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// TestUWSGIServeBodyCutShort runs on a TCP and a unix socket.
func TestUWSGIServeBodyCutShort(t *testing.T) { uwBothNetworks(t, testUWSGIServeBodyCutShort) }

func testUWSGIServeBodyCutShort(t *testing.T, network string) {
	errc := make(chan error, 1)
	addr, _ := uwTestServer(t, network, &uwServer{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		errc <- err
		w.WriteHeader(http.StatusBadRequest)
	})})
	vars := uwSet(uwStockParams(), "CONTENT_LENGTH", "100")
	resp, _ := uwParse(t, uwExchange(t, network, addr, append(uwPacket(0, vars), "only ten.."...), true), "GET")
	if resp.StatusCode != 400 {
		t.Errorf("status %d", resp.StatusCode)
	}
	if err := <-errc; !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("body read error = %v, want io.ErrUnexpectedEOF", err)
	}
}

// TestUWSGIServeBodyUnread runs on a TCP and a unix socket.
func TestUWSGIServeBodyUnread(t *testing.T) { uwBothNetworks(t, testUWSGIServeBodyUnread) }

func testUWSGIServeBodyUnread(t *testing.T, network string) {
	// The handler answers without reading a large body: the response must
	// still arrive whole (the server lingers instead of resetting).
	addr, _ := uwTestServer(t, network, &uwServer{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	})})
	body := make([]byte, 1<<20)
	if network == "unix" {
		// Within uwLingerMax: on a unix socket, Linux reports a close with
		// bytes left unread as a reset to the peer's next read, even after
		// the half-close's end of data; over TCP the FIN comes first.
		body = body[:uwLingerMax-1<<10]
	}
	vars := uwSet(uwSet(uwStockParams(), "REQUEST_METHOD", "POST"), "CONTENT_LENGTH", strconv.Itoa(len(body)))
	resp, got := uwParse(t, uwExchange(t, network, addr, append(uwPacket(0, vars), body...), false), "POST")
	if resp.StatusCode != 413 || got != "too large\n" {
		t.Errorf("response %d %q", resp.StatusCode, got)
	}
}

// TestUWSGIServeResponses runs on a TCP and a unix socket.
func TestUWSGIServeResponses(t *testing.T) { uwBothNetworks(t, testUWSGIServeResponses) }

func testUWSGIServeResponses(t *testing.T, network string) {
	tests := []struct {
		name    string
		method  string
		handler http.HandlerFunc
		// want is the exact raw response when set; else status and body.
		want       string
		status     int
		body       string
		header     map[string]string
		noHeader   []string
		errContain string
	}{
		{
			name:    "nothing written: 200 with an empty body",
			handler: func(w http.ResponseWriter, r *http.Request) {},
			want:    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		},
		{
			name: "implicit 200, no length: the close ends the body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				io.WriteString(w, "hello")
			},
			want: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello",
		},
		{
			name: "explicit status and length",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "5")
				w.WriteHeader(http.StatusCreated)
				w.Write([]byte("hello"))
			},
			want: "HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello",
		},
		{
			name: "unknown status code",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(599)
			},
			want: "HTTP/1.1 599 status code 599\r\n\r\n",
		},
		{
			name:   "HEAD: headers only",
			method: "HEAD",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "5")
				if n, err := io.WriteString(w, "hello"); n != 5 || err != nil {
					t.Errorf("Write for HEAD = %d, %v; want success", n, err)
				}
			},
			want: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
		},
		{
			name: "204: no body, no length",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "3")
				w.WriteHeader(http.StatusNoContent)
				if _, err := io.WriteString(w, "abc"); !errors.Is(err, http.ErrBodyNotAllowed) {
					t.Errorf("Write after 204 = %v, want ErrBodyNotAllowed", err)
				}
			},
			want: "HTTP/1.1 204 No Content\r\n\r\n",
		},
		{
			name: "304: no body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Etag", `"x"`)
				w.WriteHeader(http.StatusNotModified)
				w.Write([]byte("abc"))
			},
			want: "HTTP/1.1 304 Not Modified\r\nEtag: \"x\"\r\n\r\n",
		},
		{
			name: "informational status dropped",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Link", "</style.css>; rel=preload")
				w.WriteHeader(http.StatusEarlyHints)
				w.Header().Set("Link", "</app.js>; rel=preload")
				w.WriteHeader(http.StatusOK)
			},
			want: "HTTP/1.1 200 OK\r\nLink: </app.js>; rel=preload\r\n\r\n",
		},
		{
			name: "header changes after WriteHeader ignored, second status ignored",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusAccepted)
				w.Header().Set("X-Late", "1")
				w.WriteHeader(http.StatusInternalServerError)
				io.WriteString(w, "body")
			},
			want: "HTTP/1.1 202 Accepted\r\n\r\nbody",
		},
		{
			name: "writing past Content-Length",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "3")
				if _, err := io.WriteString(w, "abcd"); !errors.Is(err, http.ErrContentLength) {
					t.Errorf("Write past length = %v, want ErrContentLength", err)
				}
				io.WriteString(w, "abc")
			},
			want: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
		},
		{
			name: "framing headers dropped, CR LF neutralised",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Transfer-Encoding", "chunked")
				w.Header().Set("Trailer", "X-Sum")
				w.Header().Set(http.TrailerPrefix+"X-Sum", "1")
				w.Header().Set("X-Split", "a\r\nInjected: yes")
				w.Header()["Bad Name"] = []string{"v"}
				io.WriteString(w, "x")
			},
			want: "HTTP/1.1 200 OK\r\nX-Split: a  Injected: yes\r\n\r\nx",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, _ := uwTestServer(t, network, &uwServer{Handler: tt.handler})
			method := tt.method
			if method == "" {
				method = "GET"
			}
			raw := uwExchange(t, network, addr, uwPacket(0, uwSet(uwStockParams(), "REQUEST_METHOD", method)), false)
			if string(raw) != tt.want {
				t.Errorf("response\n got %q\nwant %q", raw, tt.want)
			}
		})
	}
}

// TestUWSGIServeStreamingFlush runs on a TCP and a unix socket.
func TestUWSGIServeStreamingFlush(t *testing.T) { uwBothNetworks(t, testUWSGIServeStreamingFlush) }

func testUWSGIServeStreamingFlush(t *testing.T, network string) {
	release := make(chan struct{})
	addr, _ := uwTestServer(t, network, &uwServer{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("Flush: %v", err)
		}
		select {
		case <-release:
		case <-r.Context().Done():
			t.Error("request cancelled while streaming")
			return
		}
		io.WriteString(w, "second\n")
	})})
	c, err := uwDial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(uwPacket(0, uwStockParams())); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first line %q, %v (not flushed?)", line, err)
	}
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second\n" {
		t.Errorf("rest %q, %v", rest, err)
	}
}

func TestUWSGIServePanic(t *testing.T) {
	addr, logs := uwTestServer(t, "tcp", &uwServer{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/before":
			w.Header().Set("X-Partial", "1")
			io.WriteString(w, "partial") // buffered, never sent
			panic("boom before")
		case "/after":
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			panic("boom after")
		case "/abort":
			panic(http.ErrAbortHandler)
		}
	})})
	get := func(path string) []byte {
		return uwExchange2(t, addr, uwPacket(0, uwSet(uwSet(uwStockParams(), "PATH_INFO", path), "REQUEST_URI", path)))
	}

	raw := get("/before")
	resp, body := uwParse(t, raw, "GET")
	if resp.StatusCode != 500 || strings.Contains(body, "partial") || resp.Header.Get("X-Partial") != "" {
		t.Errorf("panic before any output: %q", raw)
	}
	if l := logs.String(); !strings.Contains(l, "boom before") || !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "uwsgi_test.go") {
		t.Errorf("log lacks the panic, level or stack:\n%s", l)
	}

	raw = get("/after")
	if !strings.HasPrefix(string(raw), "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(string(raw), "partial") {
		t.Errorf("panic after output: got %q, want the partial response then the end", raw)
	}

	if raw = get("/abort"); len(raw) != 0 {
		t.Errorf("ErrAbortHandler: got %q, want nothing", raw)
	}
	if strings.Contains(logs.String(), "abort handler") {
		t.Errorf("ErrAbortHandler logged:\n%s", logs)
	}

	// Still serving.
	if resp, _ := uwParse(t, get("/other"), "GET"); resp.StatusCode != 200 {
		t.Errorf("after panics: status %d", resp.StatusCode)
	}
}

// uwExchange2 is exchange that tolerates a connection reset: it returns what
// arrived before it.
func uwExchange2(t *testing.T, addr string, raw []byte) []byte {
	t.Helper()
	out, err := uwRawExchange("tcp", addr, raw)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// uwRawExchange sends raw on a new connection and returns what arrives
// until the server closes or resets it. Safe off the test goroutine.
func uwRawExchange(network, addr string, raw []byte) ([]byte, error) {
	c, err := uwDial(network, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(raw); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if _, err := io.Copy(&out, c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		return out.Bytes(), fmt.Errorf("reading: %w", err)
	}
	return out.Bytes(), nil
}

// TestUWSGIServeClientGone runs on a TCP and a unix socket.
func TestUWSGIServeClientGone(t *testing.T) { uwBothNetworks(t, testUWSGIServeClientGone) }

func testUWSGIServeClientGone(t *testing.T, network string) {
	started := make(chan struct{})
	cancelled := make(chan error, 1)
	addr, _ := uwTestServer(t, network, &uwServer{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			cancelled <- r.Context().Err()
		case <-time.After(10 * time.Second):
			cancelled <- errors.New("not cancelled")
		}
	})})
	c, err := uwDial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(uwPacket(0, uwStockParams())); err != nil {
		t.Fatal(err)
	}
	<-started
	c.Close() // nginx closes the upstream connection when its client goes
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Errorf("handler's context: %v, want cancelled", err)
	}
}

func TestUWSGIServeUnixSocket(t *testing.T) {
	h, ch := uwRecorder(t)
	addr, _ := uwTestServer(t, "unix", &uwServer{Handler: h})
	vars := uwSet(uwDel(uwDel(uwStockParams(), "REMOTE_ADDR"), "REMOTE_PORT"), "CONTENT_LENGTH", "4")
	resp, body := uwParse(t, uwExchange(t, "unix", addr, append(uwPacket(0, vars), "data"...), false), "GET")
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("response %d %q", resp.StatusCode, body)
	}
	s := uwReceive(t, ch)
	if string(s.body) != "data" {
		t.Errorf("body %q", s.body)
	}
	if v, ok := s.env["REMOTE_ADDR"]; !ok || v != "" {
		t.Errorf("env REMOTE_ADDR = %q (%v), want present and empty", v, ok)
	}
	if v, ok := s.env["REMOTE_PORT"]; ok {
		t.Errorf("env REMOTE_PORT = %q, want absent", v)
	}
}

// TestUWSGIShutdown runs on a TCP and a unix socket.
func TestUWSGIShutdown(t *testing.T) { uwBothNetworks(t, testUWSGIShutdown) }

func testUWSGIShutdown(t *testing.T, network string) {
	started := make(chan struct{})
	release := make(chan struct{})
	srv := &uwServer{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "finished")
	})}
	ln, err := uwListen(t, network)
	if err != nil {
		t.Fatal(err)
	}
	srv.Logger = slog.New(slog.DiscardHandler)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	type result struct {
		raw []byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		raw, err := uwRawExchange(network, ln.Addr().String(), uwPacket(0, uwStockParams()))
		got <- result{raw, err}
	}()
	<-started

	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve = %v, want http.ErrServerClosed", err)
	}
	if c, err := uwDial(network, ln.Addr().String()); err == nil {
		c.Close()
		t.Error("still accepting after Shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-shut; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	res := <-got
	if res.err != nil {
		t.Fatal(res.err)
	}
	if _, body := uwParse(t, res.raw, "GET"); body != "finished" {
		t.Errorf("in-flight request got %q", body)
	}
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve after Shutdown = %v", err)
	}
}

// TestUWSGIShutdownTimeout runs on a TCP and a unix socket.
func TestUWSGIShutdownTimeout(t *testing.T) { uwBothNetworks(t, testUWSGIShutdownTimeout) }

func testUWSGIShutdownTimeout(t *testing.T, network string) {
	started := make(chan struct{})
	srv := &uwServer{Logger: slog.New(slog.DiscardHandler), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done() // ends when Close drops the connection
	})}
	ln, err := uwListen(t, network)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	done := make(chan error, 1)
	go func() {
		_, err := uwRawExchange(network, ln.Addr().String(), uwPacket(0, uwStockParams()))
		done <- err
	}()
	<-started

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("client: %v", err)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown after Close = %v", err)
	}
	<-served
}
