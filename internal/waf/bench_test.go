package waf

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// Requests as recorded from the e2e tests: wrk's GET of the hello app, a
// browser's GET of a Django admin page (cookies, Accept-*, Referer) and
// the admin login POST.
func helloRequest() *http.Request {
	r := httptest.NewRequest("GET", "http://127.0.0.1:8000/", nil)
	r.RemoteAddr = "127.0.0.1:40000"
	return r
}

func browserHeaders(r *http.Request) {
	r.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
	r.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
	r.Header.Set("Accept-Language", "en-US,en;q=0.5")
	r.Header.Set("Accept-Encoding", "gzip, deflate, br, zstd")
	r.Header.Set("Cookie", "csrftoken=Xq4rAH0uTm4bS2q6Qm8YQ0aV1cJ9bKzE; sessionid=5n1h2pz8m7y0q4vbxk3f6c9d2a7w1e0r")
	r.Header.Set("Referer", "http://shop.example.com/admin/")
	r.Header.Set("Upgrade-Insecure-Requests", "1")
	r.Header.Set("Sec-Fetch-Dest", "document")
	r.Header.Set("Sec-Fetch-Mode", "navigate")
	r.Header.Set("Sec-Fetch-Site", "same-origin")
}

func djangoRequest() *http.Request {
	r := httptest.NewRequest("GET", "http://shop.example.com/admin/auth/user/?q=adm&is_staff__exact=1&o=1.-2", nil)
	browserHeaders(r)
	r.RemoteAddr = "192.0.2.10:40000"
	return r
}

var loginForm = url.Values{"csrfmiddlewaretoken": {"3Vd8pN1k0f5jQwP2rT7yU9iO4aS6dF8gH1jK3lZ5xC7vB9nM2qW4eR6tY8uI0oP"},
	"username": {"admin"}, "password": {"portico-e2e-Pa55word"}, "next": {"/admin/"}}.Encode()

func BenchmarkMiddleware(b *testing.B) {
	block, _ := wafs(b)
	quiet, err := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	_ = block
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	for _, bc := range []struct {
		name string
		h    http.Handler
		req  func() *http.Request
	}{
		{"off/hello", ok, helloRequest},
		{"block/hello", quiet.Middleware(ok, false), helloRequest},
		{"off/django-admin-page", ok, djangoRequest},
		{"block/django-admin-page", quiet.Middleware(ok, false), djangoRequest},
	} {
		b.Run(bc.name, func(b *testing.B) {
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				bc.h.ServeHTTP(w, bc.req())
			}
			if w.Code != 200 {
				b.Fatalf("status %d", w.Code)
			}
		})
	}
	// The login POST through a real proxy handler: the WAF reads the body
	// from the proxy's spool (a loopback upstream answers).
	h, _ := proxiedB(b)
	for _, bc := range []struct {
		name string
		h    http.Handler
	}{{"off/django-login-post", h}, {"block/django-login-post", quiet.Middleware(h, true)}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest("POST", "http://shop.example.com/admin/login/?next=/admin/", strings.NewReader(loginForm))
				browserHeaders(r)
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				r.RemoteAddr = "192.0.2.10:40000"
				w := httptest.NewRecorder()
				bc.h.ServeHTTP(w, r)
				if w.Code != 200 {
					b.Fatalf("status %d", w.Code)
				}
			}
		})
	}
}
