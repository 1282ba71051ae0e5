package server

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"portico/internal/uwsgi"
)

// uwServer builds the server of a uwsgi test from the fields the tests set
// (a handler, a logger, one read timeout for the uwPacket and each body
// read), on first use.
type uwServer struct {
	Handler     http.Handler
	Logger      *slog.Logger
	ReadTimeout time.Duration

	once sync.Once
	s    *HTTP
}

func (u *uwServer) srv() *HTTP {
	u.once.Do(func() {
		u.s = NewHTTP(u.Handler, Options{Logger: u.Logger, ReadHeaderTimeout: u.ReadTimeout, BodyTimeout: u.ReadTimeout})
	})
	return u.s
}

func (u *uwServer) Serve(l net.Listener) error { return u.srv().ServeUWSGI(l) }
func (u *uwServer) Shutdown(ctx context.Context) error {
	return u.srv().Shutdown(ctx)
}
func (u *uwServer) Close() error { return u.srv().Close() }

// The codec's test helpers, as internal/uwsgi's tests have them.

type uwKV struct{ k, v string }

// uwStockParams are the variables of nginx's stock /etc/nginx/uwsgi_params,
// with values as nginx fills them for a GET of
// http://example.com/hello%20world/caf%C3%A9?x=1&y=two from 203.0.113.7.
func uwStockParams() []uwKV {
	return []uwKV{
		{"QUERY_STRING", "x=1&y=two"},
		{"REQUEST_METHOD", "GET"},
		{"CONTENT_TYPE", ""},
		{"CONTENT_LENGTH", ""},
		{"REQUEST_URI", "/hello%20world/caf%C3%A9?x=1&y=two"},
		{"PATH_INFO", "/hello world/caf\xc3\xa9"},
		{"DOCUMENT_ROOT", "/usr/share/nginx/html"},
		{"SERVER_PROTOCOL", "HTTP/1.1"},
		{"REQUEST_SCHEME", "http"},
		{"REMOTE_ADDR", "203.0.113.7"},
		{"REMOTE_PORT", "51234"},
		{"SERVER_PORT", "80"},
		{"SERVER_NAME", "example.com"},
		{"HTTP_HOST", "example.com"},
		{"HTTP_USER_AGENT", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"},
		{"HTTP_ACCEPT", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
		{"HTTP_ACCEPT_LANGUAGE", "en-US,en;q=0.5"},
		{"HTTP_ACCEPT_ENCODING", "gzip, deflate, br, zstd"},
		{"HTTP_COOKIE", "sessionid=abc123; csrftoken=xyz"},
		{"HTTP_X_FORWARDED_FOR", "198.51.100.1"},
	}
}

// uwEncodeVars encodes vars as a vars block.
func uwEncodeVars(vars []uwKV) []byte {
	var b []byte
	for _, v := range vars {
		b = uwsgi.AppendVar(b, v.k, v.v)
	}
	return b
}

// uwPacket encodes a whole uwPacket with modifier1 mod1.
func uwPacket(mod1 uint8, vars []uwKV) []byte {
	block := uwEncodeVars(vars)
	return append(uwsgi.Header{Modifier1: mod1, Size: uint16(len(block))}.Append(nil), block...)
}

// uwDecodeVars parses a vars block into a list.
func uwDecodeVars(t testing.TB, b []byte) []uwKV {
	t.Helper()
	var out []uwKV
	if err := uwsgi.ParseVars(b, func(k, v []byte) error {
		out = append(out, uwKV{string(k), string(v)})
		return nil
	}); err != nil {
		t.Fatalf("ParseVars: %v", err)
	}
	return out
}

func uwEqualKV(a, b []uwKV) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
