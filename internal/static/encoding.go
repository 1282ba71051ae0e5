package static

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// A coding is a content coding this package serves, in order of preference
// at equal q-value: brotli compresses text best, zstd is next, gzip is
// understood by every client.
type coding int

const (
	codingBr coding = iota
	codingZstd
	codingGzip
	numCodings
)

// codingInfo names each coding: its Content-Encoding token and the suffix of
// its precompressed sibling.
var codingInfo = [numCodings]struct{ token, ext string }{
	codingBr:   {"br", ".br"},
	codingZstd: {"zstd", ".zst"},
	codingGzip: {"gzip", ".gz"},
}

// acceptEncoding is a parsed Accept-Encoding: the q-value (0 to 1; 0 means
// refused) of each coding and of identity. Identity is acceptable when the
// field does not mention it (then identity is 1 and explicit false), but it
// then loses to any acceptable coding: "gzip;q=0.5" asks for gzip. Only an
// explicit "identity;q=..." (or "*;q=0") competes on q-value.
type acceptEncoding struct {
	q        [numCodings]float64
	identity float64
	explicit bool // identity's q-value was given
}

// parseAcceptEncoding parses the Accept-Encoding field values of a request
// as RFC 9110 section 12.5.3 says: a list of codings with optional q-values;
// tokens are case-insensitive; "*" stands for every coding not listed;
// "x-gzip" is gzip. Without the field only identity is acceptable. Identity
// is acceptable unless "identity;q=0", or "*;q=0" without an identity entry,
// excludes it. An element with a malformed q-value is ignored. A coding
// listed twice gets its highest q-value.
func parseAcceptEncoding(values []string) acceptEncoding {
	var (
		ae             acceptEncoding
		seen           [numCodings]bool
		star, identity float64 = -1, -1
	)
	for _, v := range values {
		for elem := range strings.SplitSeq(v, ",") {
			token, params, _ := strings.Cut(elem, ";")
			token = strings.ToLower(strings.TrimSpace(token))
			if token == "" {
				continue
			}
			q, ok := qValue(params)
			if !ok {
				continue
			}
			switch token {
			case "*":
				star = max(star, q)
			case "identity":
				identity = max(identity, q)
			case "x-gzip":
				token = "gzip"
			}
			for c := range numCodings {
				if codingInfo[c].token == token {
					if !seen[c] || q > ae.q[c] {
						ae.q[c] = q
					}
					seen[c] = true
				}
			}
		}
	}
	for c := range numCodings {
		if !seen[c] && star >= 0 {
			ae.q[c] = star
		}
	}
	switch {
	case identity >= 0:
		ae.identity, ae.explicit = identity, true
	case star == 0:
		ae.identity, ae.explicit = 0, true
	default:
		ae.identity = 1
	}
	return ae
}

// qValue parses the parameters of one Accept-Encoding element ("q=0.5",
// possibly among others). No q parameter means 1; a malformed one, or one
// outside 0..1 or with more than three decimals, is not ok.
func qValue(params string) (float64, bool) {
	q := 1.0
	for p := range strings.SplitSeq(params, ";") {
		k, v, _ := strings.Cut(p, "=")
		if !strings.EqualFold(strings.TrimSpace(k), "q") {
			continue
		}
		v = strings.TrimSpace(v)
		if v == "" || len(v) > 5 || (v[0] != '0' && v[0] != '1') {
			return 0, false
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 1 {
			return 0, false
		}
		q = f
	}
	return q, true
}

// order returns the codings worth trying, best first: acceptable (q > 0),
// at least as wanted as an explicit identity (a compressed coding wins a
// tie with it), by q-value, and br > zstd > gzip at equal q.
func (ae acceptEncoding) order() []coding {
	var out []coding
	for c := range numCodings {
		if ae.q[c] > 0 && (!ae.explicit || ae.q[c] >= ae.identity) {
			out = append(out, c)
		}
	}
	slices.SortStableFunc(out, func(a, b coding) int {
		switch {
		case ae.q[a] > ae.q[b]:
			return -1
		case ae.q[a] < ae.q[b]:
			return 1
		}
		return 0
	})
	return out
}

// compressible reports whether a media type (a Content-Type value, its
// parameters ignored) is worth compressing: text, scripts, JSON, XML and
// SVG, WebAssembly, uncompressed fonts, icons. Images, audio, video,
// archives and woff/woff2 fonts are compressed already.
func compressible(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	if strings.HasPrefix(mt, "text/") || strings.HasSuffix(mt, "+json") || strings.HasSuffix(mt, "+xml") {
		return true
	}
	switch mt {
	case "application/javascript", "application/x-javascript", "application/ecmascript",
		"application/json", "application/xml", "application/wasm",
		"application/x-font-ttf", "application/vnd.ms-fontobject", "font/ttf", "font/otf",
		"image/x-icon", "image/vnd.microsoft.icon", "image/bmp":
		return true
	}
	return false
}

// compressKey identifies one compressed version of one version of a file.
type compressKey struct {
	name    string
	modTime int64 // Unix nanoseconds
	size    int64
	coding  coding
}

// compressed is a cached result; data is nil when compressing did not make
// the file smaller (then identity is served).
type compressed struct {
	data []byte
}

// flight is one compression under way, which later requests for the same
// key wait for instead of compressing again.
type flight struct {
	done chan struct{}
	res  compressed
	err  error
}

// compressor compresses files on the fly and keeps the results in a
// bounded LRU, so that a hot file is compressed once per version.
type compressor struct {
	cache *lru[compressKey, compressed]
	count func() // called once per compression done (for tests)

	mu       sync.Mutex
	inflight map[compressKey]*flight

	hits, misses atomic.Int64 // for CacheStats
}

// get returns the compressed form of a file version, compressing src()
// only when the cache lacks it and no other request is compressing it.
func (c *compressor) get(k compressKey, src func() ([]byte, error)) (compressed, error) {
	if res, ok := c.cache.get(k); ok {
		c.hits.Add(1)
		return res, nil
	}
	c.misses.Add(1)
	c.mu.Lock()
	if f, ok := c.inflight[k]; ok {
		c.mu.Unlock()
		<-f.done
		return f.res, f.err
	}
	f := &flight{done: make(chan struct{})}
	c.inflight[k] = f
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.inflight, k)
		c.mu.Unlock()
		close(f.done)
	}()
	data, err := src()
	if err != nil {
		f.err = err
		return compressed{}, err
	}
	out, err := encode(k.coding, data)
	if err != nil {
		f.err = fmt.Errorf("static: compressing %s: %w", k.name, err)
		return compressed{}, f.err
	}
	c.count()
	if len(out) < len(data) {
		f.res = compressed{data: out}
	}
	c.cache.add(k, f.res, entryOverhead+int64(len(k.name)+len(f.res.data)))
	return f.res, nil
}

// Compression levels: results are cached, so they favour size over speed,
// short of the slowest settings (brotli 11 takes seconds on a few MiB).
const (
	brotliLevel = 6
	gzipLevel   = gzip.BestCompression
)

// zstdEncoder is shared: EncodeAll is safe for concurrent use and starts no
// goroutine.
var zstdEncoder = sync.OnceValues(func() (*zstd.Encoder, error) {
	return zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithEncoderConcurrency(1))
})

// encode compresses data with c.
func encode(c coding, data []byte) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(data) / 3)
	switch c {
	case codingBr:
		w := brotli.NewWriterLevel(&buf, brotliLevel)
		if _, err := w.Write(data); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
	case codingZstd:
		enc, err := zstdEncoder()
		if err != nil {
			return nil, err
		}
		return enc.EncodeAll(data, make([]byte, 0, len(data)/3)), nil
	case codingGzip:
		w, err := gzip.NewWriterLevel(&buf, gzipLevel)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(data); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}
