package compress

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"portico/internal/errpage"
	"portico/internal/negotiate"
)

// page is a real dynamic page: a Django admin change list (see
// testdata/mkadmin.py).
func page(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/django-admin.html")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decode undoes Content-Encoding ce.
func decode(t testing.TB, ce string, r io.Reader) io.Reader {
	t.Helper()
	switch ce {
	case "", "identity":
		return r
	case "br":
		return brotli.NewReader(r)
	case "gzip":
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatalf("gzip header: %v", err)
		}
		return zr
	case "zstd":
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(zr.Close)
		return zr
	}
	t.Fatalf("unknown Content-Encoding %q", ce)
	return nil
}

// client talks to a test server without decoding for us.
var client = &http.Client{Transport: &http.Transport{DisableCompression: true}}

// serve starts a real HTTP server with c's handler around h; it checks at
// the end that every encoder went back to its pool.
func serve(t *testing.T, c *Compressor, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(c.Handler(h))
	t.Cleanup(func() {
		srv.Close()
		if n := c.encoders.Load(); n != 0 {
			t.Errorf("%d encoders not returned to their pool", n)
		}
	})
	return srv
}

func TestRules(t *testing.T) {
	text := page(t)
	noise := make([]byte, 4000)
	for i := range noise {
		noise[i] = byte(rand.IntN(256))
	}
	type want struct {
		ce       string // Content-Encoding
		vary     string // Vary, joined
		etag     string // "": not checked
		length   bool   // a Content-Length (not chunked)
		status   int    // 0: 200
		noBodyOK bool   // no body expected (HEAD, 204, 304)
	}
	tests := []struct {
		name   string
		opt    Options
		method string
		ae     []string
		upg    bool
		status int
		header map[string]string // set by the handler; "Content-Length": "auto" is the body's
		body   []byte
		want   want
	}{
		{name: "html br", ae: []string{"gzip, deflate, br, zstd"}, header: map[string]string{"Content-Type": "text/html; charset=utf-8"}, body: text,
			want: want{ce: "br", vary: "Accept-Encoding"}},
		{name: "gzip only", ae: []string{"gzip"}, header: map[string]string{"Content-Type": "text/html"}, body: text,
			want: want{ce: "gzip", vary: "Accept-Encoding"}},
		{name: "zstd by q", ae: []string{"br;q=0.5, zstd, gzip;q=0.9"}, header: map[string]string{"Content-Type": "text/html"}, body: text,
			want: want{ce: "zstd", vary: "Accept-Encoding"}},
		{name: "gzip by q", ae: []string{"br;q=0.1, gzip;q=0.2"}, header: map[string]string{"Content-Type": "application/json"}, body: text,
			want: want{ce: "gzip", vary: "Accept-Encoding"}},
		{name: "refused coding", ae: []string{"br;q=0"}, header: map[string]string{"Content-Type": "text/html"}, body: text,
			want: want{vary: "Accept-Encoding"}},
		{name: "identity preferred", ae: []string{"gzip;q=0.5, identity"}, header: map[string]string{"Content-Type": "text/html"}, body: text,
			want: want{vary: "Accept-Encoding"}},
		{name: "no Accept-Encoding", header: map[string]string{"Content-Type": "text/html"}, body: text,
			want: want{vary: "Accept-Encoding"}},
		{name: "json", ae: []string{"gzip"}, header: map[string]string{"Content-Type": "application/json"}, body: text,
			want: want{ce: "gzip", vary: "Accept-Encoding"}},
		{name: "javascript", ae: []string{"br"}, header: map[string]string{"Content-Type": "text/javascript"}, body: text,
			want: want{ce: "br", vary: "Accept-Encoding"}},
		{name: "svg", ae: []string{"zstd"}, header: map[string]string{"Content-Type": "image/svg+xml"}, body: text,
			want: want{ce: "zstd", vary: "Accept-Encoding"}},
		{name: "wasm", ae: []string{"gzip"}, header: map[string]string{"Content-Type": "application/wasm"}, body: text,
			want: want{ce: "gzip", vary: "Accept-Encoding"}},
		{name: "sniffed html", ae: []string{"gzip"}, header: map[string]string{}, body: text,
			want: want{ce: "gzip", vary: "Accept-Encoding"}},
		{name: "png", ae: []string{"gzip, br"}, header: map[string]string{"Content-Type": "image/png"}, body: text,
			want: want{}},
		{name: "octet-stream", ae: []string{"gzip, br"}, header: map[string]string{"Content-Type": "application/octet-stream"}, body: text,
			want: want{}},
		{name: "small known", ae: []string{"gzip"}, header: map[string]string{"Content-Type": "text/html", "Content-Length": "auto"}, body: text[:1023],
			want: want{length: true}},
		{name: "min size known", ae: []string{"gzip"}, header: map[string]string{"Content-Type": "text/html", "Content-Length": "auto"}, body: text[:1024],
			want: want{ce: "gzip", vary: "Accept-Encoding", length: true}},
		{name: "small unknown", ae: []string{"gzip"}, header: map[string]string{"Content-Type": "text/html"}, body: text[:1000],
			want: want{vary: "Accept-Encoding", length: true}},
		{name: "below a larger min size", opt: Options{MinSize: 8192}, ae: []string{"gzip"}, header: map[string]string{"Content-Type": "text/html"}, body: text[:5000],
			want: want{vary: "Accept-Encoding", length: true}},
		{name: "min size 1", opt: Options{MinSize: -1}, ae: []string{"gzip"}, header: map[string]string{"Content-Type": "text/html", "Content-Length": "auto"}, body: text[:200],
			want: want{ce: "gzip", vary: "Accept-Encoding", length: true}},
		{name: "whole with length", ae: []string{"br"}, header: map[string]string{"Content-Type": "text/html", "Content-Length": "auto"}, body: text,
			want: want{ce: "br", vary: "Accept-Encoding", length: true}},
		{name: "long with length streams", ae: []string{"gzip"}, header: map[string]string{"Content-Type": "text/html", "Content-Length": "auto", "Accept-Ranges": "bytes"}, body: bytes.Repeat(text, 2),
			want: want{ce: "gzip", vary: "Accept-Encoding"}},
		{name: "not smaller", ae: []string{"gzip"}, header: map[string]string{"Content-Type": "text/plain", "Content-Length": "auto"}, body: noise,
			want: want{vary: "Accept-Encoding", length: true}},
		{name: "already encoded", ae: []string{"gzip, br"}, header: map[string]string{"Content-Type": "text/html", "Content-Encoding": "identity"}, body: text,
			want: want{}},
		{name: "no-transform", ae: []string{"gzip"}, header: map[string]string{"Content-Type": "text/html", "Cache-Control": "public, No-Transform"}, body: text,
			want: want{}},
		{name: "206", ae: []string{"gzip"}, status: 206, header: map[string]string{"Content-Type": "text/html", "Content-Range": fmt.Sprintf("bytes 0-%d/99999", len(text)-1)}, body: text,
			want: want{status: 206}},
		{name: "content-range", ae: []string{"gzip"}, status: 200, header: map[string]string{"Content-Type": "text/html", "Content-Range": "bytes */99999"}, body: text,
			want: want{}},
		{name: "HEAD", method: "HEAD", status: 200, ae: []string{"gzip"}, header: map[string]string{"Content-Type": "text/html", "Content-Length": "50000"},
			want: want{vary: "Accept-Encoding", noBodyOK: true}},
		{name: "HEAD with body", method: "HEAD", ae: []string{"gzip"}, header: map[string]string{"Content-Type": "text/html", "Content-Length": "auto"}, body: text,
			want: want{vary: "Accept-Encoding", noBodyOK: true}},
		{name: "HEAD unknown length", method: "HEAD", status: 200, ae: []string{"gzip"}, header: map[string]string{"Content-Type": "text/html"},
			want: want{vary: "Accept-Encoding", noBodyOK: true}},
		{name: "204", ae: []string{"gzip"}, status: 204, header: map[string]string{"Content-Type": "text/html"},
			want: want{status: 204, noBodyOK: true}},
		{name: "304", ae: []string{"gzip"}, status: 304, header: map[string]string{"Content-Type": "text/html", "ETag": `"v1"`},
			want: want{status: 304, noBodyOK: true, etag: `"v1"`}},
		{name: "404 page", ae: []string{"gzip"}, status: 404, header: map[string]string{"Content-Type": "text/html"}, body: text,
			want: want{status: 404, ce: "gzip", vary: "Accept-Encoding"}},
		{name: "upgrade", ae: []string{"gzip"}, upg: true, header: map[string]string{"Content-Type": "text/html"}, body: text,
			want: want{}},
		{name: "vary merged", ae: []string{"gzip"}, header: map[string]string{"Content-Type": "text/html", "Vary": "Cookie"}, body: text,
			want: want{ce: "gzip", vary: "Cookie,Accept-Encoding"}},
		{name: "vary present", ae: []string{"gzip"}, header: map[string]string{"Content-Type": "text/html", "Vary": "Cookie, accept-encoding"}, body: text,
			want: want{ce: "gzip", vary: "Cookie, accept-encoding"}},
		{name: "vary star", ae: []string{"gzip"}, header: map[string]string{"Content-Type": "text/html", "Vary": "*"}, body: text,
			want: want{ce: "gzip", vary: "*"}},
		{name: "etag weak", ae: []string{"gzip"}, header: map[string]string{"Content-Type": "text/html", "ETag": `"abc"`}, body: text,
			want: want{ce: "gzip", vary: "Accept-Encoding", etag: `W/"abc"`}},
		{name: "etag weak whole", ae: []string{"zstd"}, header: map[string]string{"Content-Type": "text/html", "ETag": `"abc"`, "Content-Length": "auto"}, body: text,
			want: want{ce: "zstd", vary: "Accept-Encoding", etag: `W/"abc"`, length: true}},
		{name: "etag weak stays", ae: []string{"gzip"}, header: map[string]string{"Content-Type": "text/html", "ETag": `W/"abc"`}, body: text,
			want: want{ce: "gzip", vary: "Accept-Encoding", etag: `W/"abc"`}},
		{name: "etag identity", ae: []string{"gzip;q=0"}, header: map[string]string{"Content-Type": "text/html", "ETag": `"abc"`}, body: text,
			want: want{vary: "Accept-Encoding", etag: `"abc"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(tt.opt)
			srv := serve(t, c, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					if k == "Content-Length" && v == "auto" {
						v = strconv.Itoa(len(tt.body))
					}
					w.Header().Set(k, v)
				}
				if tt.status != 0 {
					w.WriteHeader(tt.status)
				}
				// Written in pieces, as a relay does.
				for b := tt.body; len(b) > 0; {
					n := min(len(b), 700)
					if _, err := w.Write(b[:n]); err != nil {
						t.Errorf("Write: %v", err)
						return
					}
					b = b[n:]
				}
			})
			method := cmp(tt.method, "GET")
			req, _ := http.NewRequest(method, srv.URL, nil)
			for _, v := range tt.ae {
				req.Header.Add("Accept-Encoding", v)
			}
			if tt.upg {
				req.Header.Set("Upgrade", "websocket")
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if st := cmp(tt.want.status, 200); resp.StatusCode != st {
				t.Errorf("status %d, want %d", resp.StatusCode, st)
			}
			ce := resp.Header.Get("Content-Encoding")
			if tt.header["Content-Encoding"] == "" && ce != tt.want.ce {
				t.Errorf("Content-Encoding %q, want %q", ce, tt.want.ce)
			}
			if v := strings.Join(resp.Header.Values("Vary"), ","); v != tt.want.vary {
				t.Errorf("Vary %q, want %q", v, tt.want.vary)
			}
			if tt.want.etag != "" && resp.Header.Get("ETag") != tt.want.etag {
				t.Errorf("ETag %q, want %q", resp.Header.Get("ETag"), tt.want.etag)
			}
			if ce != "" && resp.Header.Get("Accept-Ranges") != "" {
				t.Errorf("Accept-Ranges %q kept on a compressed body", resp.Header.Get("Accept-Ranges"))
			}
			raw, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if method == "HEAD" {
				want := tt.header["Content-Length"]
				if want == "auto" {
					want = strconv.Itoa(len(tt.body))
				}
				if cl := resp.Header.Get("Content-Length"); cl != want {
					t.Errorf("HEAD Content-Length %q, want the handler's %q", cl, want)
				}
				return
			}
			if tt.want.length {
				if resp.ContentLength != int64(len(raw)) || len(resp.TransferEncoding) != 0 {
					t.Errorf("framing: Content-Length %d, Transfer-Encoding %v for %d bytes; want a Content-Length", resp.ContentLength, resp.TransferEncoding, len(raw))
				}
			} else if ce != "" && resp.ContentLength != -1 {
				t.Errorf("streamed compressed body has Content-Length %d", resp.ContentLength)
			}
			got, err := io.ReadAll(decode(t, ce, bytes.NewReader(raw)))
			if err != nil {
				t.Fatalf("decoding %s: %v", ce, err)
			}
			if !bytes.Equal(got, tt.body) {
				t.Fatalf("body: %d bytes after decoding, want %d", len(got), len(tt.body))
			}
			if ce != "" && ce != tt.header["Content-Encoding"] && len(raw) >= len(tt.body) {
				t.Errorf("compressed %d bytes into %d", len(tt.body), len(raw))
			}
		})
	}
}

func cmp[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// TestFlushStreams holds that a flushed chunk reaches the client, decodable,
// while the handler is blocked before the next one.
func TestFlushStreams(t *testing.T) {
	for _, coding := range []string{"br", "zstd", "gzip"} {
		t.Run(coding, func(t *testing.T) {
			c := New(Options{})
			next := make(chan struct{})
			srv := serve(t, c, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				for i := range 3 {
					fmt.Fprintf(w, "data: event %d\n\n", i) // below MinSize: the flush starts the stream
					http.NewResponseController(w).Flush()
					select {
					case <-next:
					case <-r.Context().Done():
						return // the client gave up (the test failed)
					}
				}
			})
			// A guard, not an ordering: a chunk stuck in the encoder fails
			// the read instead of hanging the test.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
			req.Header.Set("Accept-Encoding", coding)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if ce := resp.Header.Get("Content-Encoding"); ce != coding {
				t.Fatalf("Content-Encoding %q, want %q", ce, coding)
			}
			br := bufio.NewReader(decode(t, coding, resp.Body))
			for i := range 3 {
				var lines string
				for range 2 {
					l, err := br.ReadString('\n')
					if err != nil {
						t.Fatalf("event %d: %v", i, err)
					}
					lines += l
				}
				if want := fmt.Sprintf("data: event %d\n\n", i); lines != want {
					t.Fatalf("got %q, want %q", lines, want)
				}
				next <- struct{}{} // only now may the handler write the next one
			}
			if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
				t.Fatalf("after the last event: %q, %v", rest, err)
			}
			if s := c.Stats().Codings; s[codingIndex(coding)].Responses != 1 {
				t.Errorf("stats %+v: want one %s response", s, coding)
			}
		})
	}
}

func codingIndex(token string) int {
	return map[string]int{"br": 0, "zstd": 1, "gzip": 2}[token]
}

// TestPanic holds that an aborted handler leaves the client a broken
// stream, not a complete compressed one, and its encoder in the pool.
func TestPanic(t *testing.T) {
	text := page(t)
	for _, tc := range []struct {
		name   string
		length bool
	}{{"stream", false}, {"whole", true}} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(Options{})
			srv := serve(t, c, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				if tc.length {
					w.Header().Set("Content-Length", strconv.Itoa(len(text)))
				}
				_, _ = w.Write(text[:20000])
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler)
			})
			req, _ := http.NewRequest("GET", srv.URL, nil)
			req.Header.Set("Accept-Encoding", "gzip")
			resp, err := client.Do(req)
			if err != nil {
				return // whole: nothing was sent, the connection just closed
			}
			defer resp.Body.Close()
			// What arrived before the connection broke must not decode
			// as a complete stream either (the encoder was not closed).
			raw, _ := io.ReadAll(resp.Body)
			ce := resp.Header.Get("Content-Encoding")
			if ce != "gzip" {
				t.Fatalf("Content-Encoding %q", ce)
			}
			if _, err := io.ReadAll(decode(t, ce, bytes.NewReader(raw))); err == nil {
				t.Fatalf("the client got a complete gzip stream (%d bytes) from an aborted handler", len(raw))
			}
		})
	}
}

// TestErrorPageUnderneath holds that a page written to the underlying
// writer through Unwrap (errpage.Serve) is left alone.
func TestErrorPageUnderneath(t *testing.T) {
	c := New(Options{})
	h := c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "5")
		if !errpage.Serve(w, http.StatusServiceUnavailable) {
			t.Error("the Pager underneath was not found through Unwrap")
		}
	}))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&pager{ResponseWriter: w}, r)
	}))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || string(body) != "custom 503\n" || resp.Header.Get("Retry-After") != "5" {
		t.Fatalf("got %d %q Retry-After %q, want the page underneath", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	if n := c.encoders.Load(); n != 0 {
		t.Errorf("%d encoders out", n)
	}
}

type pager struct{ http.ResponseWriter }

func (p *pager) ServeErrorPage(status int) bool {
	p.Header().Set("Content-Type", "text/plain")
	p.WriteHeader(status)
	_, _ = io.WriteString(p, "custom 503\n")
	return true
}

// TestConcurrent runs many requests at once over each path (whole,
// stream, identity) and coding; -race checks the pools.
func TestConcurrent(t *testing.T) {
	text := page(t)
	c := New(Options{})
	srv := serve(t, c, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		if r.URL.Query().Has("length") {
			w.Header().Set("Content-Length", strconv.Itoa(n))
		}
		for b := text[:n]; len(b) > 0; {
			k := min(len(b), 4096)
			_, _ = w.Write(b[:k])
			w.(http.Flusher).Flush()
			b = b[k:]
		}
	})
	codings := []string{"br", "zstd", "gzip", "identity"}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Go(func() {
			coding := codings[i%4]
			n := []int{len(text), 30000, 500}[i%3]
			url := fmt.Sprintf("%s/?n=%d", srv.URL, n)
			if i%2 == 0 {
				url += "&length"
			}
			req, _ := http.NewRequest("GET", url, nil)
			req.Header.Set("Accept-Encoding", coding)
			resp, err := client.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			raw, err := io.ReadAll(resp.Body)
			if err != nil {
				errs <- err
				return
			}
			got, err := io.ReadAll(decode(t, resp.Header.Get("Content-Encoding"), bytes.NewReader(raw)))
			if err != nil || !bytes.Equal(got, text[:n]) {
				errs <- fmt.Errorf("%s n=%d: %d bytes, %v", coding, n, len(got), err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	s := c.Stats()
	for i, cs := range s.Codings {
		if cs.Responses == 0 || cs.BytesOut >= cs.BytesIn {
			t.Errorf("coding %d: %+v", i, cs)
		}
	}
}

// TestWriteBeyondLength holds that a body longer than its declared
// Content-Length is refused, as net/http refuses it.
func TestWriteBeyondLength(t *testing.T) {
	text := page(t)
	c := New(Options{})
	werr := make(chan error, 1)
	srv := serve(t, c, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Length", "2000")
		_, err := w.Write(text[:3000])
		werr <- err
	})
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := client.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	if err := <-werr; !errors.Is(err, http.ErrContentLength) {
		t.Fatalf("Write past Content-Length: %v, want http.ErrContentLength", err)
	}
}

// TestLevelOptions holds that each level option reaches its encoder: the
// page compressed through the handler has the size the encoder at that
// level gives.
func TestLevelOptions(t *testing.T) {
	text := page(t)
	for _, tc := range []struct {
		coding string
		opt    Options
		idx    int
		level  int
	}{
		{"gzip", Options{GzipLevel: 1}, 2, 1},
		{"gzip", Options{GzipLevel: 9}, 2, 9},
		{"gzip", Options{}, 2, DefaultGzipLevel},
		{"br", Options{BrotliLevel: 6}, 0, 6},
		{"br", Options{}, 0, DefaultBrotliLevel},
		{"zstd", Options{ZstdLevel: 1}, 1, 1},
		{"zstd", Options{ZstdLevel: 7}, 1, 7},
	} {
		t.Run(fmt.Sprintf("%s-%d", tc.coding, tc.level), func(t *testing.T) {
			var want bytes.Buffer
			enc := newEncoder(negotiate.Coding(tc.idx), tc.level)
			enc.Reset(&want)
			_, _ = enc.Write(text)
			_ = enc.Close()

			c := New(tc.opt)
			srv := serve(t, c, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				w.Header().Set("Content-Length", strconv.Itoa(len(text)))
				_, _ = w.Write(text)
			})
			req, _ := http.NewRequest("GET", srv.URL, nil)
			req.Header.Set("Accept-Encoding", tc.coding)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.Header.Get("Content-Encoding") != tc.coding || !bytes.Equal(raw, want.Bytes()) {
				t.Fatalf("%s: %d bytes, want the %d of level %d", resp.Header.Get("Content-Encoding"), len(raw), want.Len(), tc.level)
			}
			if s := c.Stats().Codings[tc.idx]; s.Responses != 1 || s.BytesIn != int64(len(text)) || s.BytesOut != int64(len(raw)) {
				t.Errorf("stats %+v", s)
			}
		})
	}
}
