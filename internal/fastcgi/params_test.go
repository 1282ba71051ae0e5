package fastcgi

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"portico/internal/uwsgi"
)

// decodeParams returns the pairs of a block as a map, failing on a
// repeated name (except the Params overrides the caller expects).
func decodeParams(t *testing.T, b []byte) map[string]string {
	t.Helper()
	m := map[string]string{}
	if err := ParsePairs(b, func(n, v []byte) error {
		m[string(n)] = string(v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSplitScript(t *testing.T) {
	tests := []struct {
		path     string
		suffixes []string
		script   string
		info     string
		ok       bool
	}{
		{"/a/b.php/x/y", nil, "/a/b.php", "/x/y", true},
		{"/a/b.php", nil, "/a/b.php", "", true},
		{"/a/b.php/", nil, "/a/b.php", "/", true},
		{"/a/B.PHP/x", nil, "/a/B.PHP", "/x", true},
		{"/a.phpx/b.php/c", nil, "/a.phpx/b.php", "/c", true},
		{"/a.php.txt", nil, "/a.php.txt", "", false},
		{"/x/y", nil, "/x/y", "", false},
		{"/a.phar/b.php/c", []string{".php", ".phar"}, "/a.phar", "/b.php/c", true},
		{"/a.php", []string{""}, "/a.php", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			s, i, ok := SplitScript(tt.path, tt.suffixes)
			if s != tt.script || i != tt.info || ok != tt.ok {
				t.Errorf("SplitScript(%q) = %q, %q, %v; want %q, %q, %v", tt.path, s, i, ok, tt.script, tt.info, tt.ok)
			}
		})
	}
}

func TestAppendParams(t *testing.T) {
	opt := ParamsOptions{Root: "/srv/www"}
	tests := []struct {
		name  string
		req   func() *http.Request
		opt   *ParamsOptions
		want  map[string]string
		unset []string
	}{{
		name: "path info and query",
		req: func() *http.Request {
			r := httptest.NewRequest("GET", "http://example.com:8080/app/index.php/x/y?a=1&b=2", nil)
			r.RemoteAddr = "192.0.2.1:54321"
			return r
		},
		want: map[string]string{
			"REQUEST_METHOD": "GET", "QUERY_STRING": "a=1&b=2", "REQUEST_URI": "http://example.com:8080/app/index.php/x/y?a=1&b=2",
			"SCRIPT_NAME": "/app/index.php", "PATH_INFO": "/x/y", "SCRIPT_FILENAME": "/srv/www/app/index.php",
			"PATH_TRANSLATED": "/srv/www/x/y", "DOCUMENT_URI": "/app/index.php/x/y", "DOCUMENT_ROOT": "/srv/www",
			"SERVER_NAME": "example.com", "SERVER_PORT": "8080", "REMOTE_ADDR": "192.0.2.1", "REMOTE_PORT": "54321",
			"REQUEST_SCHEME": "http", "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_SOFTWARE": "portico",
			"REDIRECT_STATUS": "200", "CONTENT_LENGTH": "0", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "example.com:8080",
		},
		unset: []string{"HTTPS", "CONTENT_TYPE", "SERVER_ADDR"},
	}, {
		name: "front controller keeps the original URI",
		req: func() *http.Request {
			r := httptest.NewRequest("GET", "/blog/post?id=3", nil)
			r.URL.Path = "/index.php"
			return r
		},
		want:  map[string]string{"REQUEST_URI": "/blog/post?id=3", "SCRIPT_NAME": "/index.php", "PATH_INFO": "", "SCRIPT_FILENAME": "/srv/www/index.php"},
		unset: []string{"PATH_TRANSLATED"},
	}, {
		name: "under a prefix",
		req: func() *http.Request {
			return httptest.NewRequest("GET", "/blog/wp/index.php/a/b?x=1", nil)
		},
		opt: &ParamsOptions{Root: "/srv/www", Prefix: "/blog/"},
		want: map[string]string{"SCRIPT_NAME": "/blog/wp/index.php", "PATH_INFO": "/a/b", "SCRIPT_FILENAME": "/srv/www/wp/index.php",
			"DOCUMENT_URI": "/blog/wp/index.php/a/b", "REQUEST_URI": "/blog/wp/index.php/a/b?x=1"},
	}, {
		name: "outside the prefix",
		req: func() *http.Request {
			return httptest.NewRequest("GET", "/blogger/x.php", nil)
		},
		opt:  &ParamsOptions{Root: "/srv/www", Prefix: "/blog"},
		want: map[string]string{"SCRIPT_NAME": "/blogger/x.php", "SCRIPT_FILENAME": "/srv/www/blogger/x.php"},
	}, {
		name: "dot dot never leaves the root",
		req: func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.URL.Path = "/../../etc/x.php/../../y"
			return r
		},
		want: map[string]string{"SCRIPT_FILENAME": "/srv/www/etc/x.php", "PATH_TRANSLATED": "/srv/www/y"},
	}, {
		name: "https, body, headers",
		req: func() *http.Request {
			r := httptest.NewRequest("POST", "https://example.com/f.php", strings.NewReader("a=1"))
			r.TLS = &tls.ConnectionState{}
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Header.Add("Cookie", "a=1")
			r.Header.Add("Cookie", "b=2")
			r.Header.Add("Accept", "text/html")
			r.Header.Add("Accept", "*/*")
			r.Header.Set("X-Custom-Thing", "v")
			for _, h := range []string{"Proxy", "Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "X_Forwarded_For"} {
				r.Header[h] = []string{"bad"}
			}
			return r
		},
		want: map[string]string{
			"HTTPS": "on", "REQUEST_SCHEME": "https", "SERVER_PORT": "443", "CONTENT_LENGTH": "3",
			"CONTENT_TYPE": "application/x-www-form-urlencoded", "HTTP_COOKIE": "a=1; b=2", "HTTP_ACCEPT": "text/html, */*",
			"HTTP_X_CUSTOM_THING": "v", "REQUEST_METHOD": "POST",
		},
		unset: []string{"HTTP_PROXY", "HTTP_CONNECTION", "HTTP_KEEP_ALIVE", "HTTP_PROXY_CONNECTION", "HTTP_TE", "HTTP_TRAILER",
			"HTTP_TRANSFER_ENCODING", "HTTP_UPGRADE", "HTTP_X_FORWARDED_FOR", "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"},
	}, {
		name: "local address for the port, unix peer",
		req: func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.Host = "example.org"
			r.RemoteAddr = "@"
			ctx := context.WithValue(r.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 8443})
			return r.WithContext(ctx)
		},
		want:  map[string]string{"SERVER_NAME": "example.org", "SERVER_PORT": "8443", "SERVER_ADDR": "10.0.0.1", "REMOTE_ADDR": ""},
		unset: []string{"REMOTE_PORT"},
	}, {
		name: "uwsgi origin wins",
		req: func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = "127.0.0.1:1"
			o := &uwsgi.Origin{RemoteAddr: "203.0.113.9", RemotePort: "4444", Scheme: "https", ServerName: "front.example", ServerPort: "443"}
			return r.WithContext(uwsgi.WithOrigin(r.Context(), o))
		},
		want: map[string]string{"REMOTE_ADDR": "203.0.113.9", "REMOTE_PORT": "4444", "HTTPS": "on", "REQUEST_SCHEME": "https",
			"SERVER_NAME": "front.example", "SERVER_PORT": "443"},
	}, {
		name: "extra params override",
		req:  func() *http.Request { return httptest.NewRequest("GET", "/a.php", nil) },
		opt:  &ParamsOptions{Root: "/srv/www", Params: map[string]string{"SCRIPT_FILENAME": "/other.php", "APP_ENV": "test"}},
		want: map[string]string{"SCRIPT_FILENAME": "/other.php", "APP_ENV": "test"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := opt
			if tt.opt != nil {
				o = *tt.opt
			}
			b, err := AppendParams(nil, tt.req(), o)
			if err != nil {
				t.Fatal(err)
			}
			got := decodeParams(t, b)
			for k, v := range tt.want {
				if g, ok := got[k]; !ok || g != v {
					t.Errorf("%s = %q (set %v), want %q", k, g, ok, v)
				}
			}
			for _, k := range tt.unset {
				if v, ok := got[k]; ok {
					t.Errorf("%s = %q, want unset", k, v)
				}
			}
		})
	}
}

func TestAppendParamsErrors(t *testing.T) {
	r := httptest.NewRequest("POST", "/a.php", strings.NewReader("x"))
	r.ContentLength = -1
	if b, err := AppendParams([]byte("keep"), r, ParamsOptions{Root: "/"}); !errors.Is(err, ErrUnknownLength) || string(b) != "keep" {
		t.Errorf("unknown length: %q, %v", b, err)
	}
	r = httptest.NewRequest("GET", "/a.php", nil)
	r.Header.Set("X-Big", strings.Repeat("x", MaxContentSize))
	if _, err := AppendParams(nil, r, ParamsOptions{Root: "/"}); !errors.Is(err, ErrParamTooLarge) {
		t.Errorf("huge header: %v, want ErrParamTooLarge", err)
	}
}

// TestParamsRecords checks that a params block larger than one record is
// cut at pair boundaries, as php-fpm needs.
func TestParamsRecords(t *testing.T) {
	r := httptest.NewRequest("GET", "/a.php", nil)
	for i := range 10 {
		r.Header.Set("X-H"+string(rune('a'+i)), strings.Repeat("v", 20000))
	}
	pairs, err := AppendParams(nil, r, ParamsOptions{Root: "/"})
	if err != nil {
		t.Fatal(err)
	}
	recs := appendParamsRecords(nil, 1, pairs)
	rd := strings.NewReader(string(recs))
	var all []byte
	n := 0
	for {
		h, content, err := ReadRecord(rd, nil)
		if err != nil {
			t.Fatal(err)
		}
		if h.Type != TypeParams {
			t.Fatalf("record type %d", h.Type)
		}
		if len(content) == 0 {
			break
		}
		n++
		if err := ParsePairs(content, func(_, _ []byte) error { return nil }); err != nil {
			t.Fatalf("record %d does not hold whole pairs: %v", n, err)
		}
		all = append(all, content...)
	}
	if n < 4 || string(all) != string(pairs) {
		t.Fatalf("%d records, %d of %d bytes", n, len(all), len(pairs))
	}
}

func TestAppendParamsAllocs(t *testing.T) {
	r := httptest.NewRequest("GET", "/index.php/x?q=1", nil)
	r.Header.Set("Accept", "text/html")
	buf := make([]byte, 0, 4096)
	allocs := testing.AllocsPerRun(100, func() {
		AppendParams(buf[:0], r, ParamsOptions{Root: "/srv"})
	})
	if allocs > 0 {
		t.Errorf("%v allocations per call, want 0", allocs)
	}
}
