package compress

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"

	"portico/internal/negotiate"
)

// BenchmarkLevels compresses the Django admin page (testdata, 50 kB) whole
// with each coding at a range of levels, with a pooled encoder as the
// handler does: CPU per response (ns/op) and the ratio (orig/compressed).
// The defaults in compress.go are chosen from its results (the table
// there). Run it alone on a quiet machine: go test -run - -bench Levels
// -benchtime 300x -count 5 -cpu 1 ./internal/compress
func BenchmarkLevels(b *testing.B) {
	text := page(b)
	cases := []struct {
		coding negotiate.Coding
		levels []int
	}{
		{negotiate.Br, []int{0, 1, 2, 3, 4, 5, 6}},
		{negotiate.Gzip, []int{1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{negotiate.Zstd, []int{1, 3, 7}}, // fastest, default, better
	}
	for _, cs := range cases {
		for _, l := range cs.levels {
			b.Run(fmt.Sprintf("%s-%d", cs.coding.Token(), l), func(b *testing.B) {
				enc := newEncoder(cs.coding, l)
				var out bytes.Buffer
				b.SetBytes(int64(len(text)))
				b.ReportAllocs()
				for b.Loop() {
					out.Reset()
					enc.Reset(&out)
					if _, err := enc.Write(text); err != nil {
						b.Fatal(err)
					}
					if err := enc.Close(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(text))/float64(out.Len()), "ratio")
				b.ReportMetric(float64(out.Len()), "bytes")
			})
		}
	}
}

// discardWriter is a ResponseWriter that keeps nothing: the benchmarks
// measure the wrapper, not a recorder.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) Flush()                      {}

// BenchmarkOverhead is the cost of the wrapper when it compresses
// nothing: a small JSON answer (below MinSize) with and without
// Accept-Encoding, and an image (not compressible); "bare" is the handler
// alone, and "page-gzip" a compressed page for scale.
func BenchmarkOverhead(b *testing.B) {
	json := []byte(`{"id": 42, "name": "portico", "tags": ["proxy", "wsgi"], "ok": true}`)
	png := bytes.Repeat([]byte{0x89, 'P', 'N', 'G'}, 1024)
	text := page(b)
	cases := []struct {
		name, ct, ae string
		body         []byte
	}{
		{"json-no-ae", "application/json", "", json},
		{"json-ae", "application/json", "gzip, deflate, br, zstd", json},
		{"image-ae", "image/png", "gzip, deflate, br, zstd", png},
		{"page-gzip", "text/html; charset=utf-8", "gzip", text},
	}
	c := New(Options{})
	for _, tc := range cases {
		next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h["Content-Type"] = []string{tc.ct}
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(tc.body)
		})
		req, _ := http.NewRequest("GET", "http://x/", nil)
		if tc.ae != "" {
			req.Header.Set("Accept-Encoding", tc.ae)
		}
		for _, wrapped := range []bool{false, true} {
			name := tc.name + "/bare"
			h := http.Handler(next)
			if wrapped {
				name, h = tc.name+"/compress", c.Handler(next)
			}
			b.Run(name, func(b *testing.B) {
				w := &discardWriter{h: http.Header{}}
				b.ReportAllocs()
				for b.Loop() {
					clear(w.h)
					h.ServeHTTP(w, req)
				}
			})
		}
	}
}
