package static

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

// decode undoes a Content-Encoding.
func decode(t *testing.T, enc, body string) string {
	t.Helper()
	var r io.Reader
	switch enc {
	case "":
		return body
	case "br":
		r = brotli.NewReader(strings.NewReader(body))
	case "gzip":
		zr, err := gzip.NewReader(strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	case "zstd":
		zr, err := zstd.NewReader(strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	default:
		t.Fatalf("unknown encoding %q", enc)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decoding %s: %v", enc, err)
	}
	return string(b)
}

func TestCompression(t *testing.T) {
	big := strings.Repeat("body { color: red; } /* padding */\n", 100) // 3.5 KiB
	root := writeFiles(t, map[string]string{
		"big.css":      big,
		"small.css":    "a{}",
		"pre.js":       big,
		"pre.js.br":    "BROTLI-SIBLING",
		"pre.js.gz":    "GZIP-SIBLING",
		"image.png":    big, // compressible bytes, but not a compressible type
		"image.png.gz": "GZIP-OF-PNG",
		"random.txt":   randomText(4096),
	})
	h := newWith(t, Options{Root: root})
	addr := server(t, h)
	tests := []struct {
		target, ae string // ae "-": no Accept-Encoding header
		status     int
		enc        string
		body       string // decoded; "" means not checked
		vary       bool
	}{
		{"/big.css", "-", 200, "", big, true},
		{"/big.css", "gzip, deflate, br, zstd", 200, "br", big, true},
		{"/big.css", "gzip, zstd", 200, "zstd", big, true},
		{"/big.css", "gzip", 200, "gzip", big, true},
		{"/big.css", "gzip;q=0.5, zstd;q=0.6", 200, "zstd", big, true},
		{"/big.css", "br;q=0, gzip", 200, "gzip", big, true},
		{"/big.css", "identity", 200, "", big, true},
		{"/big.css", "*;q=0", 200, "", big, true},  // nothing acceptable: identity anyway
		{"/small.css", "br", 200, "", "a{}", true}, // below CompressMin
		{"/pre.js", "br, gzip", 200, "br", "", true},
		{"/pre.js", "gzip", 200, "gzip", "", true},
		{"/pre.js", "zstd", 200, "zstd", big, true}, // no sibling: on the fly
		{"/image.png", "gzip", 200, "", big, false},
		{"/random.txt", "br", 200, "", "", true}, // incompressible: identity
	}
	for _, tt := range tests {
		t.Run(tt.target+" "+tt.ae, func(t *testing.T) {
			var hdr []string
			if tt.ae != "-" {
				hdr = append(hdr, "Accept-Encoding: "+tt.ae)
			}
			resp := raw(t, addr, "GET", tt.target, hdr...)
			if resp.status != tt.status {
				t.Fatalf("status = %d", resp.status)
			}
			if got := resp.header.Get("Content-Encoding"); got != tt.enc {
				t.Fatalf("Content-Encoding = %q, want %q", got, tt.enc)
			}
			if got := resp.header.Get("Vary") == "Accept-Encoding"; got != tt.vary {
				t.Errorf("Vary = %q, want Accept-Encoding: %v", resp.header.Get("Vary"), tt.vary)
			}
			if tt.body != "" {
				if got := decode(t, tt.enc, resp.body); got != tt.body {
					t.Errorf("decoded body = %.40q..., want %.40q...", got, tt.body)
				}
			}
			if tt.target == "/pre.js" && tt.enc != "zstd" {
				want := map[string]string{"br": "BROTLI-SIBLING", "gzip": "GZIP-SIBLING"}[tt.enc]
				if resp.body != want {
					t.Errorf("body = %q, want the sibling %q", resp.body, want)
				}
			}
		})
	}

	t.Run("ETags differ by coding", func(t *testing.T) {
		tags := map[string]string{}
		for _, ae := range []string{"identity", "br", "zstd", "gzip"} {
			resp := raw(t, addr, "GET", "/big.css", "Accept-Encoding: "+ae)
			tag := resp.header.Get("ETag")
			if !strings.HasPrefix(tag, `"`) {
				t.Errorf("%s: ETag %q is not strong", ae, tag)
			}
			for other, o := range tags {
				if o == tag {
					t.Errorf("%s and %s share the ETag %s", ae, other, tag)
				}
			}
			tags[ae] = tag
			if ae != "identity" && !strings.HasSuffix(tag, "-"+ae+`"`) {
				t.Errorf("%s: ETag %q lacks the -%s suffix", ae, tag, ae)
			}
			// The variant's tag revalidates the variant.
			resp = raw(t, addr, "GET", "/big.css", "Accept-Encoding: "+ae, "If-None-Match: "+tag)
			if resp.status != 304 {
				t.Errorf("%s: If-None-Match: status = %d, want 304", ae, resp.status)
			}
		}
	})

	t.Run("Range on the compressed bytes", func(t *testing.T) {
		full := raw(t, addr, "GET", "/big.css", "Accept-Encoding: gzip")
		part := raw(t, addr, "GET", "/big.css", "Accept-Encoding: gzip", "Range: bytes=10-19")
		if part.status != 206 {
			t.Fatalf("status = %d, want 206", part.status)
		}
		if part.body != full.body[10:20] {
			t.Errorf("range body = %q, want %q", part.body, full.body[10:20])
		}
		if got, want := part.header.Get("Content-Range"), fmt.Sprintf("bytes 10-19/%d", len(full.body)); got != want {
			t.Errorf("Content-Range = %q, want %q", got, want)
		}
		if part.header.Get("Content-Encoding") != "gzip" {
			t.Errorf("Content-Encoding = %q", part.header.Get("Content-Encoding"))
		}
		// A sibling too.
		part = raw(t, addr, "GET", "/pre.js", "Accept-Encoding: br", "Range: bytes=0-5")
		if part.status != 206 || part.body != "BROTLI" {
			t.Errorf("sibling range: %d %q", part.status, part.body)
		}
	})
}

// randomText is n bytes that do not compress.
func randomText(n int) string {
	b := make([]byte, n)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return string(b)
}

func TestCompressedOnce(t *testing.T) {
	big := strings.Repeat("console.log('portico');\n", 100)
	root := writeFiles(t, map[string]string{"app.js": big, "big.js": big + big})
	for _, fileCache := range []int64{0, -1} { // the cache holds small files or none
		t.Run(fmt.Sprint("file cache ", fileCache), func(t *testing.T) {
			h := newWith(t, Options{Root: root, FileCache: fileCache})
			clock := &fakeClock{t: time.Now()}
			h.now = clock.now
			addr := server(t, h)
			for i := range 3 {
				resp := raw(t, addr, "GET", "/app.js", "Accept-Encoding: br")
				if resp.header.Get("Content-Encoding") != "br" || decode(t, "br", resp.body) != big {
					t.Fatalf("request %d: not the brotli of the file", i)
				}
			}
			if n := h.compressions.Load(); n != 1 {
				t.Errorf("compressions after 3 requests = %d, want 1", n)
			}
			raw(t, addr, "GET", "/app.js", "Accept-Encoding: gzip")
			if n := h.compressions.Load(); n != 2 {
				t.Errorf("compressions after another coding = %d, want 2", n)
			}
			// Concurrent first requests compress once too.
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() { raw(t, addr, "GET", "/big.js", "Accept-Encoding: zstd") })
			}
			wg.Wait()
			if n := h.compressions.Load(); n != 3 {
				t.Errorf("compressions after 8 concurrent requests = %d, want 3", n)
			}
			// A new version of the file is compressed again.
			p := filepath.Join(root, "app.js")
			if err := os.WriteFile(p, []byte(big+"//v2\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			clock.advance(time.Hour) // past revalidation
			resp := raw(t, addr, "GET", "/app.js", "Accept-Encoding: br")
			if got := decode(t, "br", resp.body); got != big+"//v2\n" {
				t.Errorf("after a change: %.30q", got)
			}
			if n := h.compressions.Load(); n != 4 {
				t.Errorf("compressions after a change = %d, want 4", n)
			}
			if err := os.WriteFile(p, []byte(big), 0o644); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCompressionOff(t *testing.T) {
	big := strings.Repeat("x", 4096)
	root := writeFiles(t, map[string]string{"a.txt": big, "b.txt": big, "b.txt.gz": "SIB"})
	h := newWith(t, Options{Root: root, CompressCache: -1})
	addr := server(t, h)
	if resp := raw(t, addr, "GET", "/a.txt", "Accept-Encoding: gzip"); resp.header.Get("Content-Encoding") != "" || resp.body != big {
		t.Errorf("compressed with CompressCache -1: %q", resp.header.Get("Content-Encoding"))
	}
	if resp := raw(t, addr, "GET", "/b.txt", "Accept-Encoding: gzip"); resp.header.Get("Content-Encoding") != "gzip" || resp.body != "SIB" {
		t.Errorf("sibling not served with CompressCache -1")
	}
	if !bytes.Equal([]byte(big), []byte(raw(t, addr, "GET", "/b.txt").body)) {
		t.Error("identity body differs")
	}
}
