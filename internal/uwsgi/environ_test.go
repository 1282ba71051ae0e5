package uwsgi

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// environ runs AppendRequest after a prefix, checks the packet header and
// that no key repeats, and returns the variables.
func environ(t *testing.T, r *http.Request, opt EnvironOptions) map[string]string {
	t.Helper()
	prefix := []byte("prefix")
	pkt, err := AppendRequest(prefix, r, opt)
	if err != nil {
		t.Fatalf("AppendRequest: %v", err)
	}
	if !bytes.HasPrefix(pkt, []byte("prefix")) {
		t.Fatalf("AppendRequest overwrote dst's contents")
	}
	pkt = pkt[len("prefix"):]
	h, err := ParseHeader(pkt)
	if err != nil {
		t.Fatal(err)
	}
	if h.Modifier1 != 0 || h.Modifier2 != 0 || int(h.Size) != len(pkt)-HeaderSize {
		t.Fatalf("header %+v for %d vars bytes", h, len(pkt)-HeaderSize)
	}
	env := make(map[string]string)
	for _, v := range decodeVars(t, pkt[HeaderSize:]) {
		if _, dup := env[v.k]; dup {
			t.Errorf("%s sent twice", v.k)
		}
		env[v.k] = v.v
	}
	return env
}

func TestAppendRequest(t *testing.T) {
	type test struct {
		name   string
		req    func() *http.Request
		opt    EnvironOptions
		want   map[string]string
		absent []string
	}
	get := func(target string) func() *http.Request {
		return func() *http.Request { return httptest.NewRequest("GET", target, nil) }
	}
	with := func(target string, f func(r *http.Request)) func() *http.Request {
		return func() *http.Request {
			r := httptest.NewRequest("GET", target, nil)
			f(r)
			return r
		}
	}
	tests := []test{
		{
			name: "plain GET",
			req:  get("/hello?a=1&b=2"),
			want: map[string]string{
				"REQUEST_METHOD": "GET", "REQUEST_URI": "/hello?a=1&b=2", "QUERY_STRING": "a=1&b=2",
				"SCRIPT_NAME": "", "PATH_INFO": "/hello", "CONTENT_LENGTH": "0",
				"SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "example.com", "SERVER_PORT": "80",
				"REMOTE_ADDR": "192.0.2.1", "REMOTE_PORT": "1234",
				"wsgi.url_scheme": "http", "REQUEST_SCHEME": "http", "HTTP_HOST": "example.com",
			},
			absent: []string{"CONTENT_TYPE", "HTTPS"},
		},
		{
			name: "empty query is present",
			req:  get("/"),
			want: map[string]string{"QUERY_STRING": "", "PATH_INFO": "/", "REQUEST_URI": "/"},
		},
		{
			name: "PATH_INFO is percent-decoded, REQUEST_URI raw",
			req:  get("/a%20b/caf%C3%A9/x%2Fy"),
			want: map[string]string{"PATH_INFO": "/a b/caf\xc3\xa9/x/y", "REQUEST_URI": "/a%20b/caf%C3%A9/x%2Fy"},
		},
		{
			name: "REQUEST_URI rebuilt for a client request",
			req: with("/x?q=1", func(r *http.Request) {
				r.RequestURI = ""
				r.URL.Path = "/a b"
			}),
			want: map[string]string{"REQUEST_URI": "/a%20b?q=1", "PATH_INFO": "/a b"},
		},
		{
			name: "mount prefix stripped",
			req:  get("/app/x/y"),
			opt:  EnvironOptions{ScriptName: "/app"},
			want: map[string]string{"SCRIPT_NAME": "/app", "PATH_INFO": "/x/y", "REQUEST_URI": "/app/x/y"},
		},
		{
			name: "mount prefix equal to the path",
			req:  get("/app"),
			opt:  EnvironOptions{ScriptName: "/app"},
			want: map[string]string{"SCRIPT_NAME": "/app", "PATH_INFO": ""},
		},
		{
			name: "mount prefix only at a segment boundary",
			req:  get("/apple"),
			opt:  EnvironOptions{ScriptName: "/app"},
			want: map[string]string{"SCRIPT_NAME": "/app", "PATH_INFO": "/apple"},
		},
		{
			name: "mount prefix trailing slash ignored",
			req:  get("/app/x"),
			opt:  EnvironOptions{ScriptName: "/app/"},
			want: map[string]string{"SCRIPT_NAME": "/app", "PATH_INFO": "/x"},
		},
		{
			name: "root mount written as slash",
			req:  get("/x"),
			opt:  EnvironOptions{ScriptName: "/"},
			want: map[string]string{"SCRIPT_NAME": "", "PATH_INFO": "/x"},
		},
		{
			name: "content length and type",
			req: func() *http.Request {
				r := httptest.NewRequest("POST", "/form", strings.NewReader("a=1"))
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				r.Header.Set("Content-Length", "999")
				return r
			},
			opt:    EnvironOptions{ContentLength: 3},
			want:   map[string]string{"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "3", "CONTENT_TYPE": "application/x-www-form-urlencoded"},
			absent: []string{"HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"},
		},
		{
			name: "TLS",
			req:  with("https://secure.example/", func(r *http.Request) { r.TLS = &tls.ConnectionState{} }),
			want: map[string]string{
				"wsgi.url_scheme": "https", "REQUEST_SCHEME": "https", "HTTPS": "on",
				"SERVER_NAME": "secure.example", "SERVER_PORT": "443",
			},
		},
		{
			name: "port from Host",
			req:  with("/", func(r *http.Request) { r.Host = "example.com:8080" }),
			want: map[string]string{"SERVER_NAME": "example.com", "SERVER_PORT": "8080", "HTTP_HOST": "example.com:8080"},
		},
		{
			name: "IPv6 Host",
			req:  with("/", func(r *http.Request) { r.Host = "[2001:db8::1]:8443" }),
			want: map[string]string{"SERVER_NAME": "2001:db8::1", "SERVER_PORT": "8443", "HTTP_HOST": "[2001:db8::1]:8443"},
		},
		{
			name: "IPv6 Host without port",
			req:  with("/", func(r *http.Request) { r.Host = "[2001:db8::1]" }),
			want: map[string]string{"SERVER_NAME": "2001:db8::1", "SERVER_PORT": "80"},
		},
		{
			name: "port from the local address",
			req: with("/", func(r *http.Request) {
				*r = *r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey,
					&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8000}))
			}),
			want: map[string]string{"SERVER_NAME": "example.com", "SERVER_PORT": "8000"},
		},
		{
			name: "no Host: name from the local address",
			req: with("/", func(r *http.Request) {
				r.Host = ""
				*r = *r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey,
					&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8000}))
			}),
			want:   map[string]string{"SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000"},
			absent: []string{"HTTP_HOST"},
		},
		{
			name: "Unix socket peer",
			req:  with("/", func(r *http.Request) { r.RemoteAddr = "@" }),
			want: map[string]string{"REMOTE_ADDR": ""}, absent: []string{"REMOTE_PORT"},
		},
		{
			name: "IPv6 peer",
			req:  with("/", func(r *http.Request) { r.RemoteAddr = "[2001:db8::7]:5555" }),
			want: map[string]string{"REMOTE_ADDR": "2001:db8::7", "REMOTE_PORT": "5555"},
		},
		{
			name: "bare IP peer",
			req:  with("/", func(r *http.Request) { r.RemoteAddr = "198.51.100.9" }),
			want: map[string]string{"REMOTE_ADDR": "198.51.100.9"}, absent: []string{"REMOTE_PORT"},
		},
		{
			name: "HTTP/2",
			req:  with("/", func(r *http.Request) { r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0 }),
			want: map[string]string{"SERVER_PROTOCOL": "HTTP/2.0"},
		},
		{
			name: "headers",
			req: with("/", func(r *http.Request) {
				r.Header.Set("User-Agent", "test/1.0")
				r.Header.Add("Accept", "text/html")
				r.Header.Add("Accept", "*/*")
				r.Header.Add("Cookie", "a=1")
				r.Header.Add("Cookie", "b=2")
				r.Header.Set("X-Forwarded-For", "198.51.100.1")
				r.Header["x-lower-case"] = []string{"v"} // not canonical: still sent
				r.Header["X-Empty"] = []string{}
			}),
			want: map[string]string{
				"HTTP_USER_AGENT": "test/1.0", "HTTP_ACCEPT": "text/html, */*", "HTTP_COOKIE": "a=1; b=2",
				"HTTP_X_FORWARDED_FOR": "198.51.100.1", "HTTP_X_LOWER_CASE": "v",
			},
			absent: []string{"HTTP_X_EMPTY"},
		},
		{
			name: "never-emit headers",
			req: with("/", func(r *http.Request) {
				for _, h := range []string{
					"Proxy", "Host", "Transfer-Encoding", "Connection", "Keep-Alive", "TE", "Trailer",
					"Upgrade", "Proxy-Connection", "X_Forwarded_For", "Content-Length", "Content-Type",
				} {
					r.Header[h] = []string{"evil"}
				}
				r.Header["proxy"] = []string{"evil"} // any case
				r.Header["X-Caf\xc3\xa9"] = []string{"evil"}
				r.Header.Set("X-Kept", "ok")
			}),
			want: map[string]string{"HTTP_HOST": "example.com", "HTTP_X_KEPT": "ok", "CONTENT_TYPE": "evil", "CONTENT_LENGTH": "0"},
			absent: []string{
				"HTTP_PROXY", "HTTP_TRANSFER_ENCODING", "HTTP_CONNECTION", "HTTP_KEEP_ALIVE", "HTTP_TE",
				"HTTP_TRAILER", "HTTP_UPGRADE", "HTTP_PROXY_CONNECTION", "HTTP_X_FORWARDED_FOR",
				"HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE", "HTTP_X_CAF\xc3\xa9", "HTTP_X_CAF\xc3\x89",
			},
		},
		{
			name: "origin overrides and passes through",
			req: with("/static/x?q", func(r *http.Request) {
				r.RemoteAddr = "127.0.0.1:40000" // nginx's own address
				o := &Origin{
					ServerName: "front.example", ServerPort: "8443",
					RemoteAddr: "203.0.113.7", RemotePort: "51234", Scheme: "https",
					Extra: encodeVars([]kv{{"DOCUMENT_ROOT", "/srv/www"}, {"CUSTOM_PARAM", "x y"}}),
				}
				*r = *r.WithContext(WithOrigin(r.Context(), o))
			}),
			want: map[string]string{
				"SERVER_NAME": "front.example", "SERVER_PORT": "8443",
				"REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "51234",
				"wsgi.url_scheme": "https", "REQUEST_SCHEME": "https", "HTTPS": "on",
				"DOCUMENT_ROOT": "/srv/www", "CUSTOM_PARAM": "x y",
				"SCRIPT_NAME": "", "PATH_INFO": "/static/x", "HTTP_HOST": "example.com",
			},
		},
		{
			name: "origin left fields empty: derived as usual",
			req: with("/", func(r *http.Request) {
				*r = *r.WithContext(WithOrigin(r.Context(), &Origin{}))
			}),
			want: map[string]string{"SERVER_NAME": "example.com", "SERVER_PORT": "80", "REMOTE_ADDR": "192.0.2.1", "wsgi.url_scheme": "http"},
		},
		{
			name: "origin says http although TLS",
			req: with("/", func(r *http.Request) {
				r.TLS = &tls.ConnectionState{}
				*r = *r.WithContext(WithOrigin(r.Context(), &Origin{Scheme: "http"}))
			}),
			want: map[string]string{"wsgi.url_scheme": "http"}, absent: []string{"HTTPS"},
		},
		{
			name: "origin SCRIPT_NAME used",
			req: with("/x", func(r *http.Request) {
				*r = *r.WithContext(WithOrigin(r.Context(), &Origin{ScriptName: "/front", HasScriptName: true}))
			}),
			want: map[string]string{"SCRIPT_NAME": "/front", "PATH_INFO": "/x"},
		},
		{
			name: "origin sent an empty SCRIPT_NAME: root",
			req: with("/x", func(r *http.Request) {
				*r = *r.WithContext(WithOrigin(r.Context(), &Origin{HasScriptName: true}))
			}),
			want: map[string]string{"SCRIPT_NAME": "", "PATH_INFO": "/x"},
		},
		{
			name: "origin SCRIPT_NAME in front of the mount prefix",
			req: with("/api/x", func(r *http.Request) {
				*r = *r.WithContext(WithOrigin(r.Context(), &Origin{ScriptName: "/front/", HasScriptName: true}))
			}),
			opt:  EnvironOptions{ScriptName: "/api"},
			want: map[string]string{"SCRIPT_NAME": "/front/api", "PATH_INFO": "/x"},
		},
		{
			name: "no SCRIPT_NAME from origin: the mount prefix rules",
			req: with("/api/x", func(r *http.Request) {
				*r = *r.WithContext(WithOrigin(r.Context(), &Origin{}))
			}),
			opt:  EnvironOptions{ScriptName: "/api"},
			want: map[string]string{"SCRIPT_NAME": "/api", "PATH_INFO": "/x"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := environ(t, tt.req(), tt.opt)
			for k, want := range tt.want {
				got, ok := env[k]
				switch {
				case !ok:
					t.Errorf("%s missing, want %q", k, want)
				case got != want:
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			for _, k := range tt.absent {
				if v, ok := env[k]; ok {
					t.Errorf("%s = %q sent, want it absent", k, v)
				}
			}
		})
	}
}

func TestAppendRequestTooLarge(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("X-Big", strings.Repeat("x", MaxVarsSize))
	dst := []byte("keep")
	out, err := AppendRequest(dst, r, EnvironOptions{})
	if !errors.Is(err, ErrVarsTooLarge) {
		t.Fatalf("error = %v, want ErrVarsTooLarge", err)
	}
	if string(out) != "keep" {
		t.Errorf("dst = %q after failure, want it unchanged", out)
	}

	// Right at the limit is fine.
	r.Header.Del("X-Big")
	base, err := AppendRequest(nil, r, EnvironOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fill := MaxVarsSize - (len(base) - HeaderSize) - 4 - len("HTTP_X_FILL")
	r.Header.Set("X-Fill", strings.Repeat("y", fill))
	pkt, err := AppendRequest(nil, r, EnvironOptions{})
	if err != nil {
		t.Fatalf("vars of exactly %d bytes: %v", MaxVarsSize, err)
	}
	if h, _ := ParseHeader(pkt); h.Size != MaxVarsSize {
		t.Errorf("size = %d, want %d", h.Size, MaxVarsSize)
	}
}

// browserRequest is a realistic request as a browser sends it, as the
// net/http server would have built it.
func browserRequest() *http.Request {
	r := httptest.NewRequest("GET", "/blog/2024/03/some-article-title/?utm_source=newsletter&page=2", nil)
	r.Host = "www.example.com"
	r.RemoteAddr = "203.0.113.54:61234"
	h := r.Header
	h.Set("User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36")
	h.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8")
	h.Set("Accept-Encoding", "gzip, deflate, br, zstd")
	h.Set("Accept-Language", "en-GB,en-US;q=0.9,en;q=0.8")
	h.Set("Cache-Control", "max-age=0")
	h.Set("Connection", "keep-alive")
	h.Set("Cookie", "csrftoken=QhXn2yJb0mKc8qD5oZpWvT3sLrE7uA1i; sessionid=x4n1m0k9j8h7g6f5d4s3a2p1o0i9u8y7; _ga=GA1.1.123456789.1700000000")
	h.Set("Referer", "https://www.example.com/blog/")
	h.Set("Sec-Ch-Ua", `"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"`)
	h.Set("Sec-Ch-Ua-Mobile", "?0")
	h.Set("Sec-Ch-Ua-Platform", `"Windows"`)
	h.Set("Sec-Fetch-Dest", "document")
	h.Set("Sec-Fetch-Mode", "navigate")
	h.Set("Sec-Fetch-Site", "same-origin")
	h.Set("Sec-Fetch-User", "?1")
	h.Set("Upgrade-Insecure-Requests", "1")
	h.Set("X-Forwarded-For", "198.51.100.23")
	r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey,
		&net.TCPAddr{IP: net.IPv4(10, 0, 0, 5), Port: 8000}))
	return r
}

func TestAppendRequestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	r := browserRequest()
	opt := EnvironOptions{ScriptName: "/blog", ContentLength: 0}
	dst := make([]byte, 0, 8192)
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		if dst, err = AppendRequest(dst[:0], r, opt); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("AppendRequest allocates %v times per call with a reused dst, want 0", allocs)
	}
}

func BenchmarkAppendRequest(b *testing.B) {
	r := browserRequest()
	opt := EnvironOptions{ScriptName: "/blog"}
	dst := make([]byte, 0, 8192)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = AppendRequest(dst[:0], r, opt); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(dst)))
}

func BenchmarkParseVars(b *testing.B) {
	pkt, err := AppendRequest(nil, browserRequest(), EnvironOptions{})
	if err != nil {
		b.Fatal(err)
	}
	vars := pkt[HeaderSize:]
	b.SetBytes(int64(len(vars)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if err := ParseVars(vars, func(k, v []byte) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
