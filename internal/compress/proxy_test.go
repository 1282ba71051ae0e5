package compress

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"portico/internal/proxy"
)

// proxied serves c's handler around a real proxy.Handler whose upstream is
// backend: the write patterns compression meets in Portico (the small
// response in one Write with its length; a larger one read by read, a
// Flush after each).
func proxied(t *testing.T, c *Compressor, backend http.HandlerFunc) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(backend)
	t.Cleanup(up.Close)
	tg, err := proxy.ParseTarget(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	tr := proxy.NewHTTPTransport(tg, time.Second)
	t.Cleanup(tr.(interface{ CloseIdleConnections() }).CloseIdleConnections)
	ups := []*proxy.Upstream{{Name: up.URL, URL: tg.URL, Transport: tr}}
	sel, err := proxy.NewSelector(proxy.PolicyRoundRobin, "", ups)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	h, err := proxy.New(proxy.Options{Pool: proxy.NewPool(ups, sel, proxy.PoolOptions{Logger: quiet}), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, c, h.ServeHTTP)
}

func TestThroughProxy(t *testing.T) {
	text := page(t)
	long := bytes.Repeat(text, 3)
	c := New(Options{})
	srv := proxied(t, c, func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Content-Length", strconv.Itoa(n))
		_, _ = w.Write(long[:n])
	})
	tests := []struct {
		n      int
		length bool // sent with a Content-Length
	}{
		{5000, true},       // the proxy's small path: one Write
		{len(text), true},  // the Django page: relayed read by read, still ≤ 64 KiB
		{len(long), false}, // longer: streamed
		{800, true},        // below MinSize: identity
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.n), func(t *testing.T) {
			req, _ := http.NewRequest("GET", fmt.Sprintf("%s/?n=%d", srv.URL, tt.n), nil)
			req.Header.Set("Accept-Encoding", "gzip, deflate, br, zstd")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			ce := resp.Header.Get("Content-Encoding")
			if want := map[bool]string{true: "br", false: ""}[tt.n >= 1024]; ce != want {
				t.Fatalf("Content-Encoding %q, want %q", ce, want)
			}
			if tt.length != (resp.ContentLength == int64(len(raw))) {
				t.Errorf("Content-Length %d for %d bytes (Transfer-Encoding %v), want a length: %v", resp.ContentLength, len(raw), resp.TransferEncoding, tt.length)
			}
			got, err := io.ReadAll(decode(t, ce, bytes.NewReader(raw)))
			if err != nil || !bytes.Equal(got, long[:tt.n]) {
				t.Fatalf("decoded %d bytes, %v; want %d", len(got), err, tt.n)
			}
			if ce != "" && (resp.Header.Get("ETag") != `W/"v1"` || resp.Header.Get("Vary") != "Accept-Encoding") {
				t.Errorf("ETag %q Vary %q", resp.Header.Get("ETag"), resp.Header.Get("Vary"))
			}
		})
	}
}

// TestStreamThroughProxy holds that an upstream's flushed event reaches
// the client compressed and decodable while the upstream waits, through
// the proxy's default (buffered) relay.
func TestStreamThroughProxy(t *testing.T) {
	next := make(chan struct{})
	c := New(Options{})
	srv := proxied(t, c, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		for i := range 3 {
			fmt.Fprintf(w, "{\"event\": %d}\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // a guard against a hang, not an ordering
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	req.Header.Set("Accept-Encoding", "zstd")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ce := resp.Header.Get("Content-Encoding"); ce != "zstd" {
		t.Fatalf("Content-Encoding %q", ce)
	}
	br := bufio.NewReader(decode(t, "zstd", resp.Body))
	for i := range 3 {
		l, err := br.ReadString('\n')
		if want := fmt.Sprintf("{\"event\": %d}\n", i); err != nil || l != want {
			t.Fatalf("event %d: %q, %v", i, l, err)
		}
		next <- struct{}{}
	}
}
