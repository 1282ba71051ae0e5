// Package compress compresses the responses of app and proxy routes on the
// fly (nginx's gzip module, with brotli and zstd too): the coding is chosen
// by the client's Accept-Encoding q-values, the body is streamed through a
// pooled encoder, and a Flush from the handler still reaches the client.
//
// The decisions, in the order they are made for a response:
//
//  1. A request with an Upgrade header (WebSocket) is not wrapped at all:
//     the handler gets the server's own writer, which can hijack.
//  2. Nothing is decided before the handler writes its first byte, flushes,
//     or returns: its headers may change until then, as with net/http.
//     An informational (1xx) status goes straight through.
//  3. A response is a candidate when its status has a body (not 1xx, 204,
//     304), it is not partial (206, Content-Range), it has no
//     Content-Encoding already, its Cache-Control has no no-transform,
//     and its Content-Type is compressible (negotiate.Compressible; a
//     missing type is sniffed from the first bytes as net/http would).
//  4. A candidate whose Content-Length is below MinSize goes out as it is.
//     Every other candidate gets Vary: Accept-Encoding, since another
//     client may get it compressed, even when this one does not: it
//     accepts no coding, or the request is HEAD (never compressed).
//  5. A known length up to 64 KiB (what the proxy's small-response path
//     writes) is buffered whole, compressed in one go and sent with the
//     compressed Content-Length; if compressing does not make it smaller it
//     is sent identity. Flushes before the end are not honoured there:
//     the proxy flushes after every read, and a bounded body is better
//     sent complete with a length than chunked.
//  6. A longer or unknown length is streamed: Content-Length and
//     Accept-Ranges are dropped, a strong ETag becomes weak. An unknown
//     length is buffered up to MinSize first; a handler that ends below
//     it gets its body sent identity with a Content-Length, and one that
//     flushes before it starts the compressed stream there.
//
// A Flush flushes the encoder, then the writer underneath, so each flushed
// chunk can be decoded by the client at once. The writer implements
// Unwrap, so http.ResponseController and errpage.Serve reach the server's
// writer; an error page written there directly (without this writer
// seeing WriteHeader) is left alone.
package compress

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"portico/internal/negotiate"
)

// Default levels, chosen for dynamic content by measurement: CPU per
// response matters more here than for static files, whose compressed forms
// are cached. BenchmarkLevels, on the 50 kB Django admin change list in
// testdata (one core of an AMD EPYC, µs per response / compression ratio):
//
//	brotli  0: 116/10.5   1: 120/12.0   2: 220/13.4   3: 250/13.3   4: 420/14.7   5: 670/15.7   6: 730/15.8
//	gzip    1:  46/11.1   3: 102/11.6   4:  85/11.9   5:  95/12.3   6: 150/12.4   7: 170/12.4   9: 700/12.7
//	zstd    1:  82/12.3   3:  63/12.7   7: 115/13.0
//	zlib gzip 1 (nginx's default gzip_comp_level 1): 135/11.3
//
// Browsers get brotli (br wins at equal q), so its level sets the cost of
// most responses.
const (
	// DefaultBrotliLevel: brotli 2 is 16% smaller than nginx's gzip 1 for
	// 1.6 times its CPU; 3 is no smaller, 4 costs twice as much again
	// for 9% fewer bytes, 5 and up three times.
	DefaultBrotliLevel = 2
	// DefaultGzipLevel: gzip 1, as nginx's default. Alone, gzip 5 costs
	// less than nginx's zlib gzip 1 for 8% fewer bytes; in the server,
	// on the core the app's workers share (bench/run.sh django-gzip, the
	// 9.7 kB /rows page, interleaved runs), its larger tables go cold
	// between answers: level 5 cost about 90 µs more per answer than
	// level 1, which costs what nginx's gzip does (80-90 µs) for 6% more
	// bytes (1,572 vs 1,487). gzip is what API clients and curl ask for;
	// browsers get brotli.
	DefaultGzipLevel = 1
	// DefaultZstdLevel: zstd 3, the library's default speed, costs half
	// of nginx's gzip 1 and is smaller than gzip 9.
	DefaultZstdLevel = 3

	// DefaultMinSize is Options.MinSize's zero value: 1 KiB.
	DefaultMinSize = 1 << 10

	// wholeMax is the largest known length that is compressed in one go
	// and sent with a Content-Length; larger ones are streamed.
	wholeMax = 64 << 10
)

// Options configure a Compressor. The zero value is useful: brotli, zstd
// and gzip at the default levels for responses of 1 KiB and more.
type Options struct {
	// MinSize is the smallest body compressed, in bytes: smaller
	// responses go out as they are (a few hundred bytes gain little and
	// cost a compressor). Default (0) 1 KiB; negative compresses every
	// size. nginx: gzip_min_length (default 20).
	MinSize int64

	// BrotliLevel is brotli's quality, 1 to 11; 0 means
	// DefaultBrotliLevel (2). nginx (ngx_brotli): brotli_comp_level.
	BrotliLevel int
	// GzipLevel is gzip's level, 1 (fastest) to 9 (smallest); 0 means
	// DefaultGzipLevel (1). nginx: gzip_comp_level (default 1).
	GzipLevel int
	// ZstdLevel is a zstd level as the zstd tool numbers them, 1 to 22,
	// mapped onto the four speeds of the encoder (1-2 fastest, 3-5
	// default, 6-9 better, 10 and up best); 0 means DefaultZstdLevel
	// (3). nginx (zstd-nginx-module): zstd_comp_level.
	ZstdLevel int

	// Logger receives one record per encoder failure (the client gets a
	// broken stream). Default (nil): slog.Default().
	Logger *slog.Logger
}

// A Compressor compresses the responses of the handlers it wraps. It is
// safe for concurrent use; one per route.
type Compressor struct {
	minSize int64
	log     *slog.Logger
	pools   [negotiate.NumCodings]*sync.Pool // of encoder
	stats   [negotiate.NumCodings]codingCounters

	// encoders counts the encoders taken from the pools and not yet
	// returned: zero whenever no response is under way (tests hold it).
	encoders atomic.Int64
}

type codingCounters struct{ responses, in, out atomic.Int64 }

// CodingStats counts what one coding did.
type CodingStats struct {
	Responses int64 // responses compressed
	BytesIn   int64 // body bytes before compression
	BytesOut  int64 // body bytes after compression
}

// Stats is what a Compressor did since New, per coding, indexed by
// negotiate.Coding (negotiate.Br, negotiate.Zstd, negotiate.Gzip).
type Stats struct {
	Codings [negotiate.NumCodings]CodingStats
}

// New returns a Compressor for opt. Out-of-range levels are clamped to
// the nearest valid one (the config validates them before).
func New(opt Options) *Compressor {
	c := &Compressor{minSize: opt.MinSize, log: opt.Logger}
	switch {
	case c.minSize == 0:
		c.minSize = DefaultMinSize
	case c.minSize < 0:
		c.minSize = 0
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	levels := [negotiate.NumCodings]int{
		negotiate.Br:   level(opt.BrotliLevel, DefaultBrotliLevel, 1, 11),
		negotiate.Zstd: level(opt.ZstdLevel, DefaultZstdLevel, 1, 22),
		negotiate.Gzip: level(opt.GzipLevel, DefaultGzipLevel, 1, 9),
	}
	for cd, l := range levels {
		c.pools[cd] = encoderPool(negotiate.Coding(cd), l)
	}
	return c
}

func level(l, def, lo, hi int) int {
	if l == 0 {
		return def
	}
	return min(max(l, lo), hi)
}

// Stats returns the counters so far.
func (c *Compressor) Stats() Stats {
	var s Stats
	for i := range c.stats {
		s.Codings[i] = CodingStats{
			Responses: c.stats[i].responses.Load(),
			BytesIn:   c.stats[i].in.Load(),
			BytesOut:  c.stats[i].out.Load(),
		}
	}
	return s
}

// An encoder is what brotli.Writer, gzip.Writer and zstd.Encoder share.
type encoder interface {
	io.WriteCloser
	Flush() error
	Reset(io.Writer)
}

type poolKey struct {
	coding negotiate.Coding
	level  int
}

// pools holds one pool of encoders per coding and level, shared by every
// Compressor (the routes of a config, and the generations of a reload).
var (
	poolsMu sync.Mutex
	pools   = map[poolKey]*sync.Pool{}
)

func encoderPool(cd negotiate.Coding, l int) *sync.Pool {
	poolsMu.Lock()
	defer poolsMu.Unlock()
	k := poolKey{cd, l}
	if p, ok := pools[k]; ok {
		return p
	}
	p := &sync.Pool{New: func() any { return newEncoder(cd, l) }}
	pools[k] = p
	return p
}

// newEncoder makes an encoder writing to io.Discard until Reset.
func newEncoder(cd negotiate.Coding, l int) encoder {
	switch cd {
	case negotiate.Br:
		return brotli.NewWriterLevel(io.Discard, l)
	case negotiate.Zstd:
		// One goroutine-free encoder per response; a 1 MiB window bounds
		// the memory of a pooled encoder (browsers accept up to 8 MiB).
		e, err := zstd.NewWriter(io.Discard,
			zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(l)),
			zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(1<<20),
			zstd.WithZeroFrames(true))
		if err != nil {
			panic(fmt.Sprintf("compress: zstd options: %v", err)) // constant options: a programming error
		}
		return e
	default:
		e, err := gzip.NewWriterLevel(io.Discard, l)
		if err != nil {
			panic(fmt.Sprintf("compress: gzip level %d: %v", l, err)) // clamped in New
		}
		return e
	}
}

// getEncoder takes an encoder of coding cd from its pool, writing to dst.
func (c *Compressor) getEncoder(cd negotiate.Coding, dst io.Writer) encoder {
	c.encoders.Add(1)
	e := c.pools[cd].Get().(encoder)
	e.Reset(dst)
	return e
}

// putEncoder returns e to its pool, holding no reference to a response.
func (c *Compressor) putEncoder(cd negotiate.Coding, e encoder) {
	e.Reset(io.Discard)
	c.pools[cd].Put(e)
	c.encoders.Add(-1)
}

// Handler wraps next with compression.
func (c *Compressor) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.Header["Upgrade"]; ok {
			next.ServeHTTP(w, r)
			return
		}
		rw := writerPool.Get().(*responseWriter)
		rw.reset(c, w, r)
		finished := false
		defer func() {
			if !finished {
				// The handler panicked (http.ErrAbortHandler or worse):
				// the stream must stay broken for the client, so nothing
				// more is written; the encoder goes back to its pool.
				rw.release()
			}
			writerPool.Put(rw)
		}()
		next.ServeHTTP(rw, r)
		finished = true
		rw.finish()
	})
}

var writerPool = sync.Pool{New: func() any { return new(responseWriter) }}

// mode is where a response is in its life.
type mode uint8

const (
	undecided mode = iota // nothing decided, nothing sent
	pending               // a candidate of unknown length, buffered up to minSize
	whole                 // a candidate of known length ≤ wholeMax, buffered whole
	streaming             // compressed through enc
	identity              // passed through as it is
	done                  // whole or pending sent at its end
)

// responseWriter is the http.ResponseWriter handlers of a compressed route
// write to. Pooled: reset for each request, released at its end.
type responseWriter struct {
	w      http.ResponseWriter
	c      *Compressor
	accept []string // the request's Accept-Encoding values
	head   bool

	mode   mode
	status int   // 0: WriteHeader not called
	length int64 // declared Content-Length, -1 unknown
	buf    []byte
	coding negotiate.Coding
	enc    encoder
	in     int64 // body bytes given to enc
	out    countingWriter
}

// countingWriter counts the compressed bytes on their way to the client.
type countingWriter struct {
	w http.ResponseWriter
	n int64
}

func (cw *countingWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.n += int64(n)
	return n, err
}

func (rw *responseWriter) reset(c *Compressor, w http.ResponseWriter, r *http.Request) {
	buf := rw.buf[:0]
	*rw = responseWriter{w: w, c: c, accept: r.Header["Accept-Encoding"], head: r.Method == http.MethodHead, length: -1, buf: buf}
	rw.out.w = w
}

// release returns the encoder and drops references to the request.
func (rw *responseWriter) release() {
	if rw.enc != nil {
		rw.c.putEncoder(rw.coding, rw.enc)
		rw.enc = nil
	}
	if cap(rw.buf) > wholeMax {
		rw.buf = nil // an oversized buffer is not kept
	}
	rw.w, rw.out.w, rw.accept = nil, nil, nil
}

// Unwrap returns the writer underneath, for http.ResponseController and
// errpage.Serve.
func (rw *responseWriter) Unwrap() http.ResponseWriter { return rw.w }

func (rw *responseWriter) Header() http.Header { return rw.w.Header() }

func (rw *responseWriter) WriteHeader(code int) {
	if rw.mode != undecided {
		if rw.mode == identity {
			rw.w.WriteHeader(code) // net/http's own checks and logs
		}
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		rw.w.WriteHeader(code) // 103 Early Hints and the like go straight out
		return
	}
	if rw.status == 0 {
		rw.status = code
	}
}

func (rw *responseWriter) Write(p []byte) (int, error) {
	if rw.mode == undecided {
		rw.decide(p)
	}
	switch rw.mode {
	case identity:
		return rw.w.Write(p)
	case streaming:
		n, err := rw.enc.Write(p)
		rw.in += int64(n)
		return n, err
	case pending:
		rw.buf = append(rw.buf, p...)
		if int64(len(rw.buf)) >= rw.c.minSize {
			if err := rw.startStream(); err != nil {
				return 0, err
			}
		}
		return len(p), nil
	case whole:
		if int64(len(rw.buf))+int64(len(p)) > rw.length {
			return 0, http.ErrContentLength
		}
		rw.buf = append(rw.buf, p...)
		if int64(len(rw.buf)) == rw.length {
			rw.sendWhole()
		}
		return len(p), nil
	default: // done: the declared length was written already
		if len(p) == 0 {
			return 0, nil
		}
		return 0, http.ErrContentLength
	}
}

// ReadFrom keeps sendfile for what is not compressed: a file served
// through the route (an app's X-Accel-Redirect) whose type is not
// compressible or that is compressed already.
func (rw *responseWriter) ReadFrom(src io.Reader) (int64, error) {
	if rw.mode == undecided {
		rw.decide(nil)
	}
	if rf, ok := rw.w.(io.ReaderFrom); ok && rw.mode == identity {
		return rf.ReadFrom(src)
	}
	return io.Copy(writeOnly{rw}, src)
}

// writeOnly hides ReadFrom from io.Copy.
type writeOnly struct{ io.Writer }

// Flush sends what was written so far, decodable by the client.
func (rw *responseWriter) Flush() { _ = rw.FlushError() }

// FlushError is Flush reporting the error (http.ResponseController uses it).
func (rw *responseWriter) FlushError() error {
	if rw.mode == undecided {
		rw.decide(nil)
	}
	switch rw.mode {
	case whole:
		return nil // sent complete at its end (see the package doc)
	case pending:
		if err := rw.startStream(); err != nil {
			return err
		}
	}
	if rw.mode == streaming {
		if err := rw.enc.Flush(); err != nil {
			return err
		}
	}
	return flush(rw.w)
}

// flush flushes w or the first writer it wraps that can.
func flush(w http.ResponseWriter) error {
	for {
		switch f := w.(type) {
		case interface{ FlushError() error }:
			return f.FlushError()
		case http.Flusher:
			f.Flush()
			return nil
		case interface{ Unwrap() http.ResponseWriter }:
			w = f.Unwrap()
		default:
			return http.ErrNotSupported
		}
	}
}

// decide chooses the mode at the first Write (p: its bytes), Flush (p nil)
// or the handler's end.
func (rw *responseWriter) decide(p []byte) {
	if rw.status == 0 {
		rw.status = http.StatusOK
	}
	h := rw.w.Header()
	if _, ok := h["Content-Type"]; !ok && len(p) > 0 && bodyAllowed(rw.status) {
		// What net/http would send; sniffed here, where the bytes are
		// still plain.
		h["Content-Type"] = []string{http.DetectContentType(p)}
	}
	if !rw.candidate(h) {
		rw.passThrough()
		return
	}
	if cl := h["Content-Length"]; len(cl) > 0 && cl[0] != "" {
		n, err := strconv.ParseInt(cl[0], 10, 64)
		if err != nil || n < 0 {
			rw.passThrough() // net/http will refuse it; not ours to judge
			return
		}
		if n < rw.c.minSize {
			rw.passThrough()
			return
		}
		rw.length = n
	}
	addVary(h)
	if rw.head || len(rw.accept) == 0 {
		rw.passThrough()
		return
	}
	// The coding is chosen when there is something to compress: a small
	// body of unknown length never costs the parsing.
	switch {
	case rw.length >= 0 && rw.length <= wholeMax:
		rw.mode = whole
		if int64(cap(rw.buf)) < rw.length {
			rw.buf = make([]byte, 0, rw.length)
		}
	case rw.length > wholeMax:
		_ = rw.startStream() // a write error shows at the next Write
	default:
		rw.mode = pending
	}
}

// candidate reports whether the response may be compressed for some client.
func (rw *responseWriter) candidate(h http.Header) bool {
	if !bodyAllowed(rw.status) || rw.status == http.StatusPartialContent {
		return false
	}
	if _, ok := h["Content-Encoding"]; ok {
		return false
	}
	if _, ok := h["Content-Range"]; ok {
		return false
	}
	for _, v := range h["Cache-Control"] {
		if hasToken(v, "no-transform") {
			return false
		}
	}
	ct := h["Content-Type"]
	return len(ct) > 0 && negotiate.Compressible(ct[0])
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// choose picks the client's preferred coding, or reports that it accepts none.
func (rw *responseWriter) choose() bool {
	order := negotiate.ParseAcceptEncoding(rw.accept).Order()
	if len(order) == 0 {
		return false
	}
	rw.coding = order[0]
	return true
}

func (rw *responseWriter) passThrough() {
	rw.mode = identity
	rw.w.WriteHeader(rw.status)
}

// compressedHeader turns the header into that of the compressed body.
func (rw *responseWriter) compressedHeader() http.Header {
	h := rw.w.Header()
	delete(h, "Content-Length")
	delete(h, "Accept-Ranges")
	h["Content-Encoding"] = []string{rw.coding.Token()}
	if et := h["Etag"]; len(et) == 1 && strings.HasPrefix(et[0], `"`) {
		h["Etag"] = []string{"W/" + et[0]}
	}
	return h
}

// startStream sends the header of a compressed stream and then what was
// buffered through the encoder.
func (rw *responseWriter) startStream() error {
	if !rw.choose() {
		rw.passThrough()
		if len(rw.buf) == 0 {
			return nil
		}
		_, err := rw.w.Write(rw.buf)
		rw.buf = rw.buf[:0]
		return err
	}
	rw.compressedHeader()
	rw.w.WriteHeader(rw.status)
	rw.mode = streaming
	rw.enc = rw.c.getEncoder(rw.coding, &rw.out)
	if len(rw.buf) == 0 {
		return nil
	}
	n, err := rw.enc.Write(rw.buf)
	rw.in += int64(n)
	rw.buf = rw.buf[:0]
	return err
}

var outPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// sendWhole compresses the buffered body in one go and sends it with its
// length, or sends it identity when compressing does not make it smaller.
func (rw *responseWriter) sendWhole() {
	rw.mode = done
	if !rw.choose() {
		rw.w.WriteHeader(rw.status)
		_, _ = rw.w.Write(rw.buf)
		return
	}
	out := outPool.Get().(*bytes.Buffer)
	defer func() {
		if out.Cap() <= wholeMax {
			out.Reset()
			outPool.Put(out)
		}
	}()
	out.Reset()
	enc := rw.c.getEncoder(rw.coding, out)
	_, err := enc.Write(rw.buf)
	if err == nil {
		err = enc.Close()
	}
	rw.c.putEncoder(rw.coding, enc)
	if err != nil {
		rw.c.log.Error("compressing a response", "coding", rw.coding.Token(), "err", err)
	}
	if err != nil || out.Len() >= len(rw.buf) {
		rw.w.WriteHeader(rw.status)
		_, _ = rw.w.Write(rw.buf)
		return
	}
	h := rw.compressedHeader()
	h["Content-Length"] = []string{strconv.Itoa(out.Len())}
	rw.w.WriteHeader(rw.status)
	_, _ = rw.w.Write(out.Bytes())
	rw.count(int64(len(rw.buf)), int64(out.Len()))
}

func (rw *responseWriter) count(in, out int64) {
	s := &rw.c.stats[rw.coding]
	s.responses.Add(1)
	s.in.Add(in)
	s.out.Add(out)
}

// finish ends the response after the handler returned.
func (rw *responseWriter) finish() {
	defer rw.release()
	switch rw.mode {
	case undecided:
		if rw.status == 0 {
			// Nothing written: net/http's implicit 200, or an error page
			// written underneath through Unwrap. Either way, not ours.
			return
		}
		rw.decide(nil)
		if rw.mode == pending || rw.mode == whole {
			// An empty body: nothing to compress.
			rw.mode = identity
			rw.w.WriteHeader(rw.status)
		}
	case pending:
		// Ended below minSize: identity, with its length.
		rw.mode = done
		h := rw.w.Header()
		h["Content-Length"] = []string{strconv.Itoa(len(rw.buf))}
		rw.w.WriteHeader(rw.status)
		_, _ = rw.w.Write(rw.buf)
	case whole:
		// Shorter than its Content-Length: sent as it is, so that the
		// server sees the short body and closes the connection.
		rw.mode = done
		rw.w.WriteHeader(rw.status)
		_, _ = rw.w.Write(rw.buf)
	case streaming:
		if err := rw.enc.Close(); err != nil {
			// Mostly a client gone: the write error it got says so.
			rw.c.log.Debug("ending a compressed response", "coding", rw.coding.Token(), "err", err)
		}
		rw.count(rw.in, rw.out.n)
	}
}

// addVary adds Accept-Encoding to the Vary header unless it is there
// already or Vary is "*".
func addVary(h http.Header) {
	for _, v := range h["Vary"] {
		if hasToken(v, "accept-encoding") || strings.TrimSpace(v) == "*" {
			return
		}
	}
	v := h["Vary"]
	h["Vary"] = append(v[:len(v):len(v)], "Accept-Encoding") // a copy: the values may be shared (a stored answer's)
}

// hasToken reports whether the comma-separated list v holds token (lower
// case), case-insensitively; parameters after "=" are ignored.
func hasToken(v, token string) bool {
	for elem := range strings.SplitSeq(v, ",") {
		elem, _, _ = strings.Cut(elem, "=")
		if strings.EqualFold(strings.TrimSpace(elem), token) {
			return true
		}
	}
	return false
}
