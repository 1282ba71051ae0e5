package cache

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// nullWriter is a reusable ResponseWriter, so that the benchmark measures
// the cache and not a recorder.
type nullWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *nullWriter) Header() http.Header         { return w.h }
func (w *nullWriter) WriteHeader(s int)           { w.status = s }
func (w *nullWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

// BenchmarkMemoryHit: one hit from the memory store of a 50 kB page with
// the fields a Django page carries.
func BenchmarkMemoryHit(b *testing.B) {
	body := strings.Repeat("x", 50000)
	o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "max-age=600")
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Vary", "Accept-Encoding, Cookie")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		w.Write([]byte(body))
	}}
	c, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	h := c.Handler(o)
	r := httptest.NewRequest("GET", "http://example.com/page?x=1", nil)
	r.Header.Set("Accept-Encoding", "gzip, deflate, br, zstd")
	w := &nullWriter{h: make(http.Header)}
	h.ServeHTTP(w, r)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		clear(w.h)
		w.n = 0
		h.ServeHTTP(w, r)
		if w.n != len(body) {
			b.Fatalf("wrote %d bytes", w.n)
		}
	}
	if o.calls.Load() != 1 {
		b.Fatalf("the app got %d requests", o.calls.Load())
	}
}
