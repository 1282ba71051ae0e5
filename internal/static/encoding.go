package static

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"portico/internal/negotiate"
)

// compressKey identifies one compressed version of one version of a file.
type compressKey struct {
	name    string
	modTime int64 // Unix nanoseconds
	size    int64
	coding  negotiate.Coding
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
func encode(c negotiate.Coding, data []byte) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(data) / 3)
	switch c {
	case negotiate.Br:
		w := brotli.NewWriterLevel(&buf, brotliLevel)
		if _, err := w.Write(data); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
	case negotiate.Zstd:
		enc, err := zstdEncoder()
		if err != nil {
			return nil, err
		}
		return enc.EncodeAll(data, make([]byte, 0, len(data)/3)), nil
	case negotiate.Gzip:
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
