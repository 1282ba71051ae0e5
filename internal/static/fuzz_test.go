package static

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzPath feeds request targets to handlers with every option that widens
// what is served (dotfiles, listings, SPA), over a root holding symbolic
// links to a secret file and directory outside it. The answer must never be
// a 500 and never hold the secret.
func FuzzPath(f *testing.F) {
	for _, s := range []string{
		"/", "/hello.txt", "/link-out", "/link-dir-out/secret.txt", "/../secret.txt",
		"/%2e%2e/secret.txt", "/%2e%2e%2fsecret.txt", "/sub/..%5c..%5csecret.txt", "/hello.txt%00",
		"/.env", "/sub/", "/sub", "//secret.txt", "/./link-out", "/link-in", "/link-dir-out/",
		"/.well-known/../link-out", "/sub/%2E%2E/%2E%2E/secret.txt", "/index.html/", "/fifo",
	} {
		f.Add(s)
	}
	base := f.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{root, outside, filepath.Join(root, "sub"), filepath.Join(root, ".well-known")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			f.Fatal(err)
		}
	}
	for name, body := range map[string]string{
		filepath.Join(base, "secret.txt"):    secret,
		filepath.Join(outside, "secret.txt"): secret,
		filepath.Join(root, "hello.txt"):     helloBody,
		filepath.Join(root, "index.html"):    "home",
		filepath.Join(root, "sub", "a.txt"):  "a",
	} {
		if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	for name, target := range map[string]string{
		"link-out":         "../secret.txt",
		"link-abs":         filepath.Join(base, "secret.txt"),
		"link-dir-out":     "../outside",
		"sub/link-up":      "../../outside/secret.txt",
		".well-known/link": "../../secret.txt",
		"link-in":          "hello.txt",
	} {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			f.Fatal(err)
		}
	}
	var handlers []*Handler
	for _, opt := range []Options{
		{},
		{Prefix: "/static/"},
		{AllowDotfiles: true, Listing: true},
		{SPA: true, AllowDotfiles: true, FileCache: -1},
	} {
		opt.Root = root
		opt.Logger = discard
		h, err := New(opt)
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { h.Close() })
		handlers = append(handlers, h)
	}
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return // net/http would refuse the request line
		}
		for _, h := range handlers {
			for _, internal := range []bool{false, true} {
				w := httptest.NewRecorder()
				r := &http.Request{Method: "GET", URL: u, Header: http.Header{"Accept-Encoding": {"gzip"}}, RequestURI: target}
				if internal {
					h.ServeInternal(w, r, u.Path)
				} else {
					h.ServeHTTP(w, r)
				}
				if w.Code >= 500 {
					t.Errorf("%q: status %d", target, w.Code)
				}
				if strings.Contains(w.Body.String(), secret) {
					t.Errorf("%q: the secret leaked (status %d)", target, w.Code)
				}
			}
		}
	})
}
