package static

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	helloBody = "hello, world\n"
	secret    = "TOP-SECRET"
)

// tree builds a served directory next to a secret one and returns the
// served directory's path.
func tree(t *testing.T) string {
	t.Helper()
	base := t.TempDir()
	root := filepath.Join(base, "root")
	files := map[string]string{
		"root/hello.txt":           helloBody,
		"root/back\\slash.txt":     secret, // a plain name on Unix, a path on Windows
		"root/style.css":           "body{}",
		"root/app.js":              "let a;",
		"root/page.html":           "<p>hi</p>",
		"root/image.png":           "\x89PNG\r\n\x1a\n",
		"root/data.portico-xyz":    "??",
		"root/noext":               "<html>not sniffed</html>",
		"root/docs/index.html":     "<h1>docs</h1>",
		"root/sub/deep.txt":        "deep",
		"root/sub/.hidden":         secret,
		"root/.env":                secret,
		"root/.git/config":         secret,
		"root/idxdir/index.html/x": "index.html is a directory here",
		"secret.txt":               secret,
		"root-evil/secret.txt":     secret,
	}
	for name, body := range files {
		p := filepath.Join(base, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"root/empty"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"root/link-out":     "../secret.txt",
		"root/link-abs":     filepath.Join(base, "secret.txt"),
		"root/link-dir-out": "..",
		"root/link-in":      "hello.txt",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(base, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

// logSink collects log output for assertions.
type logSink struct {
	mu sync.Mutex
	sb strings.Builder
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sb.Write(p)
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sb.String()
}

func newHandler(t *testing.T, root, prefix string) (*Handler, *logSink) {
	t.Helper()
	sink := &logSink{}
	h, err := New(Options{Root: root, Prefix: prefix, Logger: slog.New(slog.NewTextHandler(sink, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h, sink
}

// server serves h on a loopback socket.
func server(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

type response struct {
	status int
	header http.Header
	body   string
}

// raw sends a request with the target exactly as given (no client-side
// cleaning or escaping) and reads the response.
func raw(t *testing.T, addr, method, target string, hdr ...string) response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	req := method + " " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
	for _, h := range hdr {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: reading response: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, string(b)}
}

func TestTraps(t *testing.T) {
	h, sink := newHandler(t, tree(t), "/static/")
	addr := server(t, h)
	tests := []struct {
		name, target string
		status       int
		logged       bool // a deployment mistake worth a warning
	}{
		{"dot-dot", "/static/../secret.txt", 404, false},
		{"encoded dot-dot", "/static/%2e%2e/secret.txt", 404, false},
		{"upper-case encoded dot-dot", "/static/%2E%2E/secret.txt", 404, false},
		{"dot-dot past prefix", "/static/sub/../../secret.txt", 404, false},
		{"encoded slash", "/static/..%2fsecret.txt", 404, false},
		{"encoded slash to an existing file", "/static/sub%2Fdeep.txt", 404, false},
		{"backslash", "/static/sub\\..\\..\\secret.txt", 404, false},
		{"backslash in an existing name", "/static/back\\slash.txt", 404, false},
		{"encoded backslash", "/static/..%5c..%5csecret.txt", 404, false},
		{"NUL", "/static/hello.txt%00.png", 404, false},
		{"dotfile", "/static/.env", 404, false},
		{"dot directory", "/static/.git/config", 404, false},
		{"nested dotfile", "/static/sub/.hidden", 404, false},
		{"single dot", "/static/./hello.txt", 404, false},
		{"relative symlink out", "/static/link-out", 404, true},
		{"absolute symlink out", "/static/link-abs", 404, true},
		{"through a symlinked directory out", "/static/link-dir-out/secret.txt", 404, true},
		{"sibling with the prefix as a name prefix", "/static-evil/secret.txt", 404, false},
		{"prefix as a name prefix", "/statichello.txt", 404, false},
		{"outside the prefix", "/hello.txt", 404, false},
		{"missing", "/static/nope.txt", 404, false},
		{"file with trailing slash", "/static/hello.txt/", 404, false},
		{"file below a file", "/static/hello.txt/x", 404, false},
		{"directory without index", "/static/empty/", 404, false},
		{"index.html that is a directory", "/static/idxdir/", 404, false},
		{"root without index", "/static/", 404, false},
		{"FIFO", "/static/fifo", 404, false},
		{"symlink inside the root", "/static/link-in", 200, false},
		{"double slash", "/static//sub//deep.txt", 200, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := sink.String()
			resp := raw(t, addr, "GET", tt.target)
			if resp.status != tt.status {
				t.Errorf("status = %d, want %d (body %q)", resp.status, tt.status, resp.body)
			}
			if strings.Contains(resp.body, secret) {
				t.Errorf("body leaks the secret: %q", resp.body)
			}
			if logged := sink.String() != before; logged != tt.logged {
				t.Errorf("logged = %v, want %v: %s", logged, tt.logged, strings.TrimPrefix(sink.String(), before))
			}
		})
	}
}

func TestServe(t *testing.T) {
	root := tree(t)
	h, _ := newHandler(t, root, "/static")
	addr := server(t, h)

	t.Run("file", func(t *testing.T) {
		resp := raw(t, addr, "GET", "/static/hello.txt")
		if resp.status != 200 || resp.body != helloBody {
			t.Fatalf("got %d %q", resp.status, resp.body)
		}
		if got := resp.header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("X-Content-Type-Options = %q", got)
		}
		fi, err := os.Stat(filepath.Join(root, "hello.txt"))
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf(`"%x-%x"`, fi.ModTime().Unix(), fi.Size())
		if got := resp.header.Get("ETag"); got != want {
			t.Errorf("ETag = %q, want %q", got, want)
		}
		if got := resp.header.Get("Last-Modified"); got != fi.ModTime().UTC().Format(http.TimeFormat) {
			t.Errorf("Last-Modified = %q", got)
		}
	})
	t.Run("directory index", func(t *testing.T) {
		resp := raw(t, addr, "GET", "/static/docs/")
		if resp.status != 200 || resp.body != "<h1>docs</h1>" {
			t.Fatalf("got %d %q", resp.status, resp.body)
		}
		if got := resp.header.Get("Content-Type"); got != "text/html; charset=utf-8" {
			t.Errorf("Content-Type = %q", got)
		}
	})
	t.Run("directory index redirect", func(t *testing.T) {
		resp := raw(t, addr, "GET", "/static/docs?v=1")
		if resp.status != 301 {
			t.Fatalf("status = %d, want 301", resp.status)
		}
		if got := resp.header.Get("Location"); got != "./docs/?v=1" {
			t.Errorf("Location = %q, want ./docs/?v=1", got)
		}
	})
	t.Run("HEAD", func(t *testing.T) {
		resp := raw(t, addr, "HEAD", "/static/hello.txt")
		if resp.status != 200 || resp.body != "" {
			t.Fatalf("got %d %q, want 200 and no body", resp.status, resp.body)
		}
		if got := resp.header.Get("Content-Length"); got != fmt.Sprint(len(helloBody)) {
			t.Errorf("Content-Length = %q, want %d", got, len(helloBody))
		}
	})
	t.Run("If-None-Match", func(t *testing.T) {
		tag := raw(t, addr, "GET", "/static/hello.txt").header.Get("ETag")
		resp := raw(t, addr, "GET", "/static/hello.txt", "If-None-Match: "+tag)
		if resp.status != 304 || resp.body != "" {
			t.Errorf("got %d %q, want 304 and no body", resp.status, resp.body)
		}
		resp = raw(t, addr, "GET", "/static/hello.txt", `If-None-Match: "0-0"`)
		if resp.status != 200 {
			t.Errorf("stale tag: status = %d, want 200", resp.status)
		}
	})
	t.Run("If-Modified-Since", func(t *testing.T) {
		lm := raw(t, addr, "GET", "/static/hello.txt").header.Get("Last-Modified")
		if resp := raw(t, addr, "GET", "/static/hello.txt", "If-Modified-Since: "+lm); resp.status != 304 {
			t.Errorf("status = %d, want 304", resp.status)
		}
	})
	t.Run("Range", func(t *testing.T) {
		resp := raw(t, addr, "GET", "/static/hello.txt", "Range: bytes=7-11")
		if resp.status != 206 || resp.body != "world" {
			t.Fatalf("got %d %q, want 206 \"world\"", resp.status, resp.body)
		}
		if got, want := resp.header.Get("Content-Range"), fmt.Sprintf("bytes 7-11/%d", len(helloBody)); got != want {
			t.Errorf("Content-Range = %q, want %q", got, want)
		}
		resp = raw(t, addr, "GET", "/static/hello.txt", "Range: bytes=100-")
		if resp.status != 416 {
			t.Errorf("unsatisfiable range: status = %d, want 416", resp.status)
		}
	})
}

func TestContentType(t *testing.T) {
	h, _ := newHandler(t, tree(t), "")
	addr := server(t, h)
	js := mime.TypeByExtension(".js") // the system's table may say text/ or application/javascript
	if !strings.Contains(js, "javascript") {
		t.Fatalf("mime table lacks .js: %q", js)
	}
	tests := []struct{ target, want string }{
		{"/hello.txt", "text/plain; charset=utf-8"},
		{"/style.css", "text/css; charset=utf-8"},
		{"/page.html", "text/html; charset=utf-8"},
		{"/image.png", "image/png"},
		{"/app.js", js},
		{"/data.portico-xyz", "application/octet-stream"},
		{"/noext", "application/octet-stream"}, // never sniffed as HTML
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			resp := raw(t, addr, "GET", tt.target)
			if resp.status != 200 {
				t.Fatalf("status = %d", resp.status)
			}
			if got := resp.header.Get("Content-Type"); got != tt.want {
				t.Errorf("Content-Type = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMethodNotAllowed(t *testing.T) {
	h, _ := newHandler(t, tree(t), "")
	addr := server(t, h)
	for _, m := range []string{"POST", "PUT", "DELETE", "OPTIONS", "PATCH"} {
		t.Run(m, func(t *testing.T) {
			resp := raw(t, addr, m, "/hello.txt")
			if resp.status != 405 {
				t.Errorf("status = %d, want 405", resp.status)
			}
			if got := resp.header.Get("Allow"); got != "GET, HEAD" {
				t.Errorf("Allow = %q, want \"GET, HEAD\"", got)
			}
			if strings.Contains(resp.body, helloBody) {
				t.Error("body holds the file")
			}
		})
	}
}

func TestPrefixes(t *testing.T) {
	root := tree(t)
	tests := []struct {
		prefix, target string
		status         int
	}{
		{"", "/hello.txt", 200},
		{"/", "/hello.txt", 200},
		{"/", "/docs/", 200},
		{"/static", "/static/hello.txt", 200},
		{"/static/", "/static/hello.txt", 200},
		{"/static/", "/static", 404}, // the root, which has no index.html
		{"/a/b/", "/a/b/sub/deep.txt", 200},
		{"/a/b/", "/a/sub/deep.txt", 404},
	}
	for _, tt := range tests {
		t.Run(tt.prefix+" "+tt.target, func(t *testing.T) {
			h, _ := newHandler(t, root, tt.prefix)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest("GET", tt.target, nil))
			if w.Code != tt.status {
				t.Errorf("status = %d, want %d", w.Code, tt.status)
			}
		})
	}
}

func TestRootIndexRedirect(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "index.html"), []byte("home"), 0o644); err != nil {
		t.Fatal(err)
	}
	h, _ := newHandler(t, root, "/static/")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/static", nil))
	if w.Code != 301 || w.Header().Get("Location") != "./static/" {
		t.Errorf("GET /static = %d Location %q, want 301 ./static/", w.Code, w.Header().Get("Location"))
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/static/", nil))
	if w.Code != 200 || w.Body.String() != "home" {
		t.Errorf("GET /static/ = %d %q, want 200 home", w.Code, w.Body.String())
	}
}

func TestPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads files whatever their mode; statusOf is tested directly")
	}
	root := t.TempDir()
	p := filepath.Join(root, "locked.txt")
	if err := os.WriteFile(p, []byte(secret), 0); err != nil {
		t.Fatal(err)
	}
	h, _ := newHandler(t, root, "")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/locked.txt", nil))
	if w.Code != 403 || strings.Contains(w.Body.String(), secret) {
		t.Errorf("got %d %q, want 403 without the file", w.Code, w.Body.String())
	}
}

func TestStatusOf(t *testing.T) {
	tests := []struct {
		err     error
		status  int
		notable bool
	}{
		{&fs.PathError{Op: "openat", Path: "x", Err: syscall.EACCES}, 403, true},
		{&fs.PathError{Op: "openat", Path: "x", Err: syscall.ENOENT}, 404, false},
		{&fs.PathError{Op: "openat", Path: "x", Err: syscall.ENOTDIR}, 404, false},
		{&fs.PathError{Op: "openat", Path: "x", Err: errors.New("path escapes from parent")}, 404, true},
		{&fs.PathError{Op: "read", Path: "x", Err: syscall.EIO}, 404, true},
		{errRejected, 404, false},
		{errNotRegular, 404, false},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			status, notable := statusOf(tt.err)
			if status != tt.status || notable != tt.notable {
				t.Errorf("statusOf = %d, %v; want %d, %v", status, notable, tt.status, tt.notable)
			}
		})
	}
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opt  Options
	}{
		{"no root", Options{}},
		{"missing root", Options{Root: filepath.Join(dir, "missing")}},
		{"root is a file", Options{Root: file}},
		{"relative prefix", Options{Root: dir, Prefix: "static/"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := New(tt.opt)
			if err == nil {
				h.Close()
				t.Fatal("New succeeded, want an error")
			}
			if !strings.HasPrefix(err.Error(), "static: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestClosed(t *testing.T) {
	h, err := New(Options{Root: tree(t), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/hello.txt", nil))
	if w.Code != 404 {
		t.Errorf("after Close: status = %d, want 404", w.Code)
	}
}

func TestHasEncodedSeparator(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"/a/b", false},
		{"/a%2fb", true},
		{"/a%2Fb", true},
		{"/a%5cb", true},
		{"/a%5Cb", true},
		{"/a%20b%2", false},
		{"/a%2", false},
		{"/%", false},
		{"/a%252fb", false}, // "%25" is a literal percent sign
		{"/a%2e%2e", false},
	}
	for _, tt := range tests {
		if got := hasEncodedSeparator(tt.in); got != tt.want {
			t.Errorf("hasEncodedSeparator(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// TestMemoryFastPath: a plain GET or HEAD of a file held in memory is
// answered without http.ServeContent, with the same status, headers and
// body as ServeContent gives (forced here by a precondition that holds:
// If-None-Match with a tag that does not match).
func TestMemoryFastPath(t *testing.T) {
	root := t.TempDir()
	css := strings.Repeat("body { color: #123456; margin: 0 auto; }\n", 100) // compressible, > CompressMin
	for name, data := range map[string]string{"hello.txt": helloBody, "site.css": css, "logo.png": "\x89PNG\r\n\x1a\nxx"} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "pre.css"), []byte(css), 0o644); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(css))
	zw.Close()
	if err := os.WriteFile(filepath.Join(root, "pre.css.gz"), gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	h, _ := newHandler(t, root, "")
	addr := server(t, h)
	for _, tc := range []struct {
		method, target string
		hdr            []string
	}{
		{"GET", "/hello.txt", nil},
		{"HEAD", "/hello.txt", nil},
		{"GET", "/logo.png", []string{"Accept-Encoding: gzip"}},
		{"GET", "/site.css", []string{"Accept-Encoding: gzip, br"}}, // compressed on the fly, cached
		{"GET", "/pre.css", []string{"Accept-Encoding: gzip"}},      // precompressed sibling
		{"HEAD", "/site.css", []string{"Accept-Encoding: zstd"}},
	} {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			raw(t, addr, tc.method, tc.target, tc.hdr...) // first sight: read into memory
			fast := raw(t, addr, tc.method, tc.target, tc.hdr...)
			slow := raw(t, addr, tc.method, tc.target, append([]string{`If-None-Match: "other"`}, tc.hdr...)...)
			if fast.status != 200 || fast.status != slow.status || fast.body != slow.body {
				t.Fatalf("fast %d (%d bytes), ServeContent %d (%d bytes)", fast.status, len(fast.body), slow.status, len(slow.body))
			}
			if fast.header.Get("Last-Modified") == "" || fast.header.Get("Content-Length") == "" || fast.header.Get("Etag") == "" {
				t.Errorf("missing Last-Modified, Content-Length or ETag: %v", fast.header)
			}
			fast.header.Del("Date")
			slow.header.Del("Date")
			if slow.header.Get("Content-Length") == "" && slow.header.Get("Content-Encoding") != "" {
				// ServeContent leaves out the length of a HEAD when
				// Content-Encoding is set; the fast path says what the GET
				// sends.
				get := raw(t, addr, "GET", tc.target, tc.hdr...)
				if got := fast.header.Get("Content-Length"); got != fmt.Sprint(len(get.body)) {
					t.Errorf("Content-Length %q, the GET sends %d bytes", got, len(get.body))
				}
				fast.header.Del("Content-Length")
			}
			if fmt.Sprint(fast.header) != fmt.Sprint(slow.header) {
				t.Errorf("headers differ:\nfast         %v\nServeContent %v", fast.header, slow.header)
			}
		})
	}
}
