package static

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeFiles creates files (name → content) under a new temporary
// directory and returns it.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

var discard = slog.New(slog.DiscardHandler)

func newWith(t *testing.T, opt Options) *Handler {
	t.Helper()
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	h, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// appHandler stands for the Python app behind a Fallthrough.
var appHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-From", "app")
	w.WriteHeader(299)
	w.Write([]byte("app " + r.Method + " " + r.URL.Path))
})

func TestOptions(t *testing.T) {
	root := writeFiles(t, map[string]string{
		"index.html":              "<p>home</p>",
		"main.html":               "<p>main</p>",
		"docs/default.htm":        "default",
		"docs/index.html":         "docs index",
		"list/b.txt":              "b",
		"list/a&<x>.txt":          "a",
		"list/.hidden":            "hidden",
		"list/sub/x":              "x",
		"hello.txt":               "hello",
		".env":                    secret,
		"sub/.env":                secret,
		".well-known/acme":        "token",
		".well-known/.secret":     secret,
		"app.3f9a2b1c4d5e.css":    "body{}",
		"assets/main-0a1b2c3d.js": "x",
	})
	type check struct {
		method, target string
		hdr            []string
		status         int
		body           string            // "" means not checked
		header         map[string]string // "" value means absent
	}
	tests := []struct {
		name   string
		opt    Options
		checks []check
	}{
		{"index default", Options{}, []check{
			{"GET", "/", nil, 200, "<p>home</p>", nil},
			{"GET", "/docs/", nil, 200, "docs index", nil},
		}},
		{"index list", Options{Index: []string{"default.htm", "main.html"}}, []check{
			{"GET", "/", nil, 200, "<p>main</p>", nil},
			{"GET", "/docs/", nil, 200, "default", nil},
		}},
		{"index none", Options{Index: []string{}}, []check{
			{"GET", "/", nil, 404, "", nil},
			{"GET", "/docs", nil, 404, "", nil},
		}},
		{"listing off", Options{}, []check{
			{"GET", "/list/", nil, 404, "", nil},
		}},
		{"listing on", Options{Listing: true}, []check{
			{"GET", "/list", nil, 301, "", map[string]string{"Location": "./list/"}},
			{"GET", "/list/", nil, 200, "", map[string]string{"Content-Type": "text/html; charset=utf-8"}},
			{"HEAD", "/list/", nil, 200, "", nil},
		}},
		{"fallthrough", Options{Fallthrough: appHandler}, []check{
			{"GET", "/hello.txt", nil, 200, "hello", nil},
			{"GET", "/missing", nil, 299, "app GET /missing", map[string]string{"X-From": "app"}},
			{"POST", "/hello.txt", nil, 299, "app POST /hello.txt", nil},
			{"GET", "/.env", nil, 299, "app GET /.env", nil},
			{"GET", "/list/", nil, 299, "", nil},
		}},
		{"spa", Options{SPA: true}, []check{
			{"GET", "/users/7", nil, 200, "<p>home</p>", map[string]string{"Content-Type": "text/html; charset=utf-8"}},
			{"GET", "/missing.js", nil, 200, "<p>home</p>", nil},
			{"GET", "/hello.txt", nil, 200, "hello", nil},
			{"GET", "/.env", nil, 200, "<p>home</p>", nil},
			{"POST", "/users/7", nil, 405, "", nil},
		}},
		{"spa and fallthrough", Options{SPA: true, Fallthrough: appHandler}, []check{
			{"GET", "/users/7", nil, 200, "<p>home</p>", nil},
			{"POST", "/users/7", nil, 299, "app POST /users/7", nil},
		}},
		{"headers", Options{Headers: http.Header{"X-Frame-Options": {"DENY"}, "Cache-Control": {"no-store"}}}, []check{
			{"GET", "/hello.txt", nil, 200, "hello", map[string]string{"X-Frame-Options": "DENY", "Cache-Control": "no-store"}},
			{"GET", "/missing", nil, 404, "", map[string]string{"X-Frame-Options": "DENY"}},
			{"POST", "/hello.txt", nil, 405, "", map[string]string{"X-Frame-Options": "DENY"}},
			{"GET", "/docs", nil, 301, "", map[string]string{"X-Frame-Options": "DENY"}},
		}},
		{"max-age", Options{MaxAge: 90 * time.Minute}, []check{
			{"GET", "/hello.txt", nil, 200, "hello", map[string]string{"Cache-Control": "public, max-age=5400"}},
			{"GET", "/app.3f9a2b1c4d5e.css", nil, 200, "body{}", map[string]string{"Cache-Control": immutableCacheControl}},
			{"GET", "/missing", nil, 404, "", map[string]string{"Cache-Control": ""}},
		}},
		{"no max-age", Options{}, []check{
			{"GET", "/hello.txt", nil, 200, "hello", map[string]string{"Cache-Control": ""}},
			{"GET", "/app.3f9a2b1c4d5e.css", nil, 200, "body{}", map[string]string{"Cache-Control": immutableCacheControl}},
			{"GET", "/assets/main-0a1b2c3d.js", nil, 200, "x", map[string]string{"Cache-Control": immutableCacheControl}},
		}},
		{"dotfiles off", Options{}, []check{
			{"GET", "/.env", nil, 404, "", nil},
			{"GET", "/sub/.env", nil, 404, "", nil},
			{"GET", "/.well-known/acme", nil, 200, "token", nil},
			{"GET", "/.well-known/.secret", nil, 404, "", nil},
		}},
		{"dotfiles allow-list empty", Options{DotAllow: []string{}}, []check{
			{"GET", "/.well-known/acme", nil, 404, "", nil},
		}},
		{"dotfiles on", Options{AllowDotfiles: true}, []check{
			{"GET", "/.env", nil, 200, secret, nil},
			{"GET", "/sub/.env", nil, 200, secret, nil},
			{"GET", "/sub/../.env", nil, 404, "", nil},
			{"GET", "/./.env", nil, 404, "", nil},
		}},
		{"internal", Options{Internal: true, Fallthrough: appHandler, SPA: true}, []check{
			{"GET", "/hello.txt", nil, 404, "", nil},
			{"HEAD", "/", nil, 404, "", nil},
			{"POST", "/hello.txt", nil, 404, "", nil},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opt.Root = root
			addr := server(t, newWith(t, tt.opt))
			for _, c := range tt.checks {
				resp := raw(t, addr, c.method, c.target, c.hdr...)
				if resp.status != c.status {
					t.Errorf("%s %s: status = %d, want %d (body %q)", c.method, c.target, resp.status, c.status, resp.body)
				}
				if c.body != "" && resp.body != c.body {
					t.Errorf("%s %s: body = %q, want %q", c.method, c.target, resp.body, c.body)
				}
				for k, v := range c.header {
					if got := resp.header.Get(k); got != v {
						t.Errorf("%s %s: %s = %q, want %q", c.method, c.target, k, got, v)
					}
				}
				if c.body != secret && strings.Contains(resp.body, secret) {
					t.Errorf("%s %s: body leaks the secret", c.method, c.target)
				}
			}
		})
	}
}

func TestListing(t *testing.T) {
	root := writeFiles(t, map[string]string{
		"d/b.txt":          "b",
		"d/a&<i>\"x\".txt": "a",
		"d/.hidden":        "h",
		"d/sub/x":          "x",
		"d/c d.txt":        "c",
	})
	tests := []struct {
		name    string
		opt     Options
		want    []string // in this order
		notWant []string
	}{
		{"default", Options{Listing: true}, []string{
			`<a href="../">`,
			`<a href="./a&amp;%3Ci%3E%22x%22.txt">a&amp;&lt;i&gt;&#34;x&#34;.txt</a>`,
			`<a href="./b.txt">b.txt</a>`,
			`<a href="./c%20d.txt">c d.txt</a>`,
			`<a href="./sub/">sub/</a>`,
		}, []string{".hidden", "<i>"}},
		{"dotfiles shown", Options{Listing: true, AllowDotfiles: true}, []string{`./.hidden`, `./b.txt`}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opt.Root = root
			addr := server(t, newWith(t, tt.opt))
			resp := raw(t, addr, "GET", "/d/")
			if resp.status != 200 {
				t.Fatalf("status = %d", resp.status)
			}
			at := 0
			for _, w := range tt.want {
				i := strings.Index(resp.body[at:], w)
				if i < 0 {
					t.Fatalf("listing lacks %q after offset %d:\n%s", w, at, resp.body)
				}
				at += i + len(w)
			}
			for _, w := range tt.notWant {
				if strings.Contains(resp.body, w) {
					t.Errorf("listing holds %q:\n%s", w, resp.body)
				}
			}
		})
	}
}

func TestServeInternal(t *testing.T) {
	root := writeFiles(t, map[string]string{
		"protected/report.pdf": "%PDF-0123456789",
		"protected/.secret":    secret,
		"protected/dir/x":      "x",
		"notes.txt":            strings.Repeat("compressible text ", 200),
	})
	h := newWith(t, Options{Root: root, Internal: true, Prefix: "/internal/"})
	// The app side: what the lead's X-Accel-Redirect support does.
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/keep-type" {
			w.Header().Set("Content-Type", "application/x-report")
			w.Header().Set("Cache-Control", "private")
		}
		h.ServeInternal(w, r, r.URL.Query().Get("f"))
	})
	addr := server(t, app)
	tests := []struct {
		method, target string
		hdr            []string
		status         int
		body           string
		header         map[string]string
	}{
		{"GET", "/?f=/protected/report.pdf", nil, 200, "%PDF-0123456789", map[string]string{"Content-Type": "application/pdf"}},
		{"GET", "/?f=protected/report.pdf", nil, 200, "%PDF-0123456789", nil},
		{"POST", "/?f=/protected/report.pdf", nil, 200, "%PDF-0123456789", nil},
		{"HEAD", "/?f=/protected/report.pdf", nil, 200, "", map[string]string{"Content-Length": "15"}},
		{"GET", "/?f=/protected/report.pdf", []string{"Range: bytes=0-3"}, 206, "%PDF", map[string]string{"Content-Range": "bytes 0-3/15"}},
		{"GET", "/keep-type?f=/protected/report.pdf", nil, 200, "%PDF-0123456789", map[string]string{"Content-Type": "application/x-report", "Cache-Control": "private"}},
		{"GET", "/?f=/notes.txt", []string{"Accept-Encoding: gzip"}, 200, "", map[string]string{"Content-Encoding": "gzip"}},
		{"GET", "/?f=/protected/.secret", nil, 404, "", nil},
		{"GET", "/?f=/protected/../../etc/passwd", nil, 404, "", nil},
		{"GET", "/?f=/protected/dir", nil, 404, "", nil},
		{"GET", "/?f=/protected/dir/", nil, 404, "", nil},
		{"GET", "/?f=/missing", nil, 404, "", nil},
		{"GET", "/?f=", nil, 404, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			resp := raw(t, addr, tt.method, tt.target, tt.hdr...)
			if resp.status != tt.status {
				t.Fatalf("status = %d, want %d", resp.status, tt.status)
			}
			if tt.body != "" && resp.body != tt.body {
				t.Errorf("body = %q, want %q", resp.body, tt.body)
			}
			for k, v := range tt.header {
				if got := resp.header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if strings.Contains(resp.body, secret) {
				t.Error("body leaks the secret")
			}
		})
	}
	t.Run("conditional", func(t *testing.T) {
		tag := raw(t, addr, "GET", "/?f=/protected/report.pdf").header.Get("ETag")
		if resp := raw(t, addr, "GET", "/?f=/protected/report.pdf", "If-None-Match: "+tag); resp.status != 304 {
			t.Errorf("status = %d, want 304", resp.status)
		}
	})
	t.Run("not by URL", func(t *testing.T) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/internal/protected/report.pdf", nil))
		if w.Code != 404 {
			t.Errorf("status = %d, want 404", w.Code)
		}
	})
}

func TestHashed(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"app.3f9a2b1c4d5e.css", true},
		{"css/admin/base.5af66c1b1797.css", true},
		{"main.3f9a2b1c.js", true},
		{"main-3f9a2b1c.js", true},
		{"vendor.0123456789abcdef0123456789abcdef.js", true},
		{"app.css", false},
		{"app.3f9a2b1.css", false},          // 7 digits: too short
		{"app.3F9A2B1C4D5E.css", false},     // upper case
		{"app.deadbeefcafe.css", false},     // no digit: a word
		{"3f9a2b1c4d5e.css", false},         // no stem
		{".3f9a2b1c4d5e.css", false},        // no stem
		{"app.3f9a2b1c4d5e", false},         // the hash is the extension
		{"app.3f9a2b1c4d5g.css", false},     // not hex
		{"dir.3f9a2b1c4d5e/app.css", false}, // the directory does not count
		{"jquery-3.7.1.min.js", false},
		{"app_3f9a2b1c4d5e.css", false},
	}
	for _, tt := range tests {
		if got := hashed(tt.name); got != tt.want {
			t.Errorf("hashed(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestContentTypeCharset(t *testing.T) {
	root := writeFiles(t, map[string]string{"a.json": "{}", "a.js": "1", "a.csv": "a,b", "a.svg": "<svg/>"})
	addr := server(t, newWith(t, Options{Root: root}))
	tests := []struct{ target, want string }{
		{"/a.json", "application/json; charset=utf-8"},
		{"/a.js", "charset=utf-8"},
		{"/a.csv", "text/csv; charset=utf-8"},
		{"/a.svg", "image/svg+xml"},
	}
	for _, tt := range tests {
		if got := raw(t, addr, "GET", tt.target).header.Get("Content-Type"); !strings.Contains(got, tt.want) {
			t.Errorf("%s: Content-Type = %q, want %q", tt.target, got, tt.want)
		}
	}
}

func TestNewOptions(t *testing.T) {
	root := t.TempDir()
	for _, idx := range [][]string{{""}, {"a/b"}, {".."}} {
		if h, err := New(Options{Root: root, Index: idx}); err == nil {
			h.Close()
			t.Errorf("Index %q accepted", idx)
		}
	}
}
