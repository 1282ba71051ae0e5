//go:build linux

package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

// rawClient is a client that sends Accept-Encoding as the test says and
// leaves the body as it came.
func rawClient(t *testing.T) *http.Client {
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func getEncoded(t *testing.T, c *http.Client, u, acceptEncoding string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", acceptEncoding)
	}
	return do(t, c, req)
}

func decodeBody(t *testing.T, coding string, b []byte) []byte {
	t.Helper()
	var r io.Reader
	switch coding {
	case "":
		return b
	case "br":
		r = brotli.NewReader(bytes.NewReader(b))
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	default:
		t.Fatalf("unknown coding %q", coding)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decoding %s: %v", coding, err)
	}
	return out
}

// TestCompressApp: an app's answers compressed by the client's
// Accept-Encoding (each coding decodes to the identity body, Vary and a weak
// ETag added), a streamed answer whose flushed first chunk decodes before
// the app sends the second, and --compress=false.
func TestCompressApp(t *testing.T) {
	python := needPython(t)
	app := repoPath(t, "cmd/portico/testdata/shape_app.py")
	p := startPortico(t, "--python", python, "--workers", "1", "--access-log", "off", app)
	c := rawClient(t)

	resp, plain := getEncoded(t, c, p.URL("/page"), "")
	wantStatus(t, resp, plain, 200)
	if resp.Header.Get("Content-Encoding") != "" || resp.Header.Get("Vary") != "Accept-Encoding" || resp.ContentLength != int64(len(plain)) {
		t.Errorf("identity: Content-Encoding %q, Vary %q, Content-Length %d (body %d)", resp.Header.Get("Content-Encoding"), resp.Header.Get("Vary"), resp.ContentLength, len(plain))
	}
	for _, tc := range []struct{ accept, coding string }{
		{"gzip, deflate, br, zstd", "br"},
		{"gzip", "gzip"},
		{"zstd, gzip;q=0.5", "zstd"},
		{"identity", ""},
		{"br;q=0, gzip;q=0", ""},
	} {
		resp, body := getEncoded(t, c, p.URL("/page?etag=%22v1%22"), tc.accept)
		wantStatus(t, resp, body, 200)
		if got := resp.Header.Get("Content-Encoding"); got != tc.coding {
			t.Errorf("%q: Content-Encoding %q, want %q", tc.accept, got, tc.coding)
			continue
		}
		if got := decodeBody(t, tc.coding, body); !bytes.Equal(got, plain) {
			t.Errorf("%q: decoded %d bytes, want the %d of identity", tc.accept, len(got), len(plain))
		}
		wantTag := `"v1"`
		if tc.coding != "" {
			wantTag = `W/"v1"`
			if len(body) >= len(plain)/3 {
				t.Errorf("%q: %d bytes from %d: barely compressed", tc.accept, len(body), len(plain))
			}
		}
		if resp.Header.Get("Etag") != wantTag || resp.Header.Get("Vary") != "Accept-Encoding" {
			t.Errorf("%q: ETag %q (want %s), Vary %q", tc.accept, resp.Header.Get("Etag"), wantTag, resp.Header.Get("Vary"))
		}
	}

	// Small answers go out as they are.
	resp, body := getEncoded(t, c, p.URL("/small"), "gzip")
	if resp.Header.Get("Content-Encoding") != "" || !strings.Contains(string(body), "/small") {
		t.Errorf("a small answer: Content-Encoding %q, body %q", resp.Header.Get("Content-Encoding"), body)
	}

	t.Run("stream", func(t *testing.T) {
		for _, coding := range []string{"gzip", "br", "zstd"} {
			until := filepath.Join(t.TempDir(), "release")
			req, _ := http.NewRequest(http.MethodGet, p.URL("/stream?until="+url.QueryEscape(until)), nil)
			req.Header.Set("Accept-Encoding", coding)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Header.Get("Content-Encoding") != coding {
				resp.Body.Close()
				t.Fatalf("stream: Content-Encoding %q, want %s", resp.Header.Get("Content-Encoding"), coding)
			}
			var zr io.Reader
			switch coding {
			case "gzip":
				zr, err = gzip.NewReader(resp.Body)
			case "br":
				zr = brotli.NewReader(resp.Body)
			case "zstd":
				var d *zstd.Decoder
				d, err = zstd.NewReader(resp.Body)
				if err == nil {
					defer d.Close()
				}
				zr = d
			}
			if err != nil {
				t.Fatal(err)
			}
			// The app holds the second chunk until the release file
			// exists: the first must decode before that.
			first := make([]byte, len("first chunk ")*200)
			if _, err := io.ReadFull(zr, first); err != nil || string(first) != strings.Repeat("first chunk ", 200) {
				t.Fatalf("%s: first chunk before the second was sent: %v %q", coding, err, truncate(first, 100))
			}
			if err := os.WriteFile(until, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			rest, err := io.ReadAll(zr)
			resp.Body.Close()
			if err != nil || string(rest) != strings.Repeat("second chunk ", 200) {
				t.Errorf("%s: the rest: %v %q", coding, err, truncate(rest, 100))
			}
		}
	})

	off := startPortico(t, "--python", python, "--workers", "1", "--access-log", "off", "--compress=false", app)
	resp, body = getEncoded(t, c, off.URL("/page"), "gzip, br")
	wantStatus(t, resp, body, 200)
	if resp.Header.Get("Content-Encoding") != "" || !bytes.Equal(body, plain) {
		t.Errorf("--compress=false: Content-Encoding %q", resp.Header.Get("Content-Encoding"))
	}
}
