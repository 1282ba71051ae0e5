// Package static serves files from one directory, as nginx's location with
// root or alias does, without touching Python.
//
// Security decisions are made here, in this order; each refusal is a 404
// (405 for a method), the same as for a missing file, so that a probe learns
// nothing about what exists:
//
//  1. Only GET and HEAD (405 with Allow otherwise; with Options.Fallthrough
//     other methods go to the app). A route marked Options.Internal answers
//     404 to every request from outside (nginx's "internal;").
//  2. The URL path must lie under Options.Prefix.
//  3. The request path is rejected if it holds a NUL, a backslash, an encoded
//     slash or backslash (%2F, %5C: as Apache's AllowEncodedSlashes Off; no
//     file name holds one, and routers that match the raw path and those
//     that match the decoded one would disagree on it), a "." or ".."
//     segment, or any segment starting with a dot (".git", ".env",
//     ".htpasswd": the files a deployment most often leaks by accident)
//     unless Options.AllowDotfiles, or it is a first segment listed in
//     Options.DotAllow (".well-known" by default).
//  4. Every lookup goes through an os.Root opened on the directory, so no
//     path and no symbolic link can reach outside it, whatever the checks
//     above missed.
//  5. Only regular files are served: a directory is 404 unless it holds one
//     of Options.Index, which is served for "dir/" ("dir" without the slash
//     is first redirected there, 301, as nginx does), or Options.Listing is
//     on; a device or a FIFO is 404.
//
// Lookup errors map to answers in one place (fail, through statusOf):
// permission denied is 403, everything else 404 (then Options.Fallthrough or
// Options.SPA may take over); never 500 and never the file. The file itself
// is served by http.ServeContent, which owns Range, If-* preconditions, HEAD
// and 304; this package adds the headers that depend on the file (ETag,
// Content-Type, Cache-Control, Vary, Content-Encoding) and chooses the
// bytes: the file, a precompressed sibling, an on-the-fly compressed copy
// from a bounded cache, or a small file's content from the file cache.
//
// Large files go out through sendfile(2): http.ServeContent copies the
// *os.File into the ResponseWriter, whose ReadFrom uses sendfile on a plain
// TCP connection. Wrappers of the ResponseWriter must keep ReadFrom.
package static

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"portico/internal/errpage"
	"portico/internal/negotiate"
)

// Options configure a Handler. The zero value of every field but Root is
// useful: it gives the defaults documented on each.
type Options struct {
	// Root is the directory served. It is opened once, by New; renaming or
	// replacing the directory later does not change what is served (its
	// contents may change freely). Required.
	Root string

	// Prefix is the URL path the handler is mounted under, e.g. "/static/";
	// it is stripped before the lookup, so "/static/css/a.css" is
	// "css/a.css" in Root. A trailing slash makes no difference: "/static"
	// and "/static/" both match "/static/..." and not "/staticfoo". Empty or
	// "/" means the handler serves the whole URL space. It must start with
	// "/".
	Prefix string

	// Index lists the file names served, first found first, for a request
	// naming a directory ("dir/"). Nil means []string{"index.html"}, as
	// nginx's index directive; an empty non-nil slice means none.
	Index []string

	// Listing, when true, answers a request for a directory without an
	// index file with an HTML list of its entries (sorted, names escaped,
	// dotfiles hidden unless AllowDotfiles). Off by default, as in nginx
	// (autoindex off): a listing shows what was never meant to be linked.
	Listing bool

	// Fallthrough, when set, gets every request this handler would answer
	// with 404 or 405: a missing file, a refused path, a directory without
	// index, a POST. That is nginx's "try_files $uri @app" for a route
	// serving both files and the app. Nil means those requests get the
	// 404 or 405 here. A refused path is handed over too: the app is no
	// more exposed than without the static route.
	Fallthrough http.Handler

	// SPA (single-page application) serves the root's first Index file
	// ("/index.html"), 200, for every GET or HEAD that would be a 404 here,
	// whatever the path looks like ("/users/7" and "/missing.js" alike),
	// as the usual nginx "try_files $uri $uri/ /index.html" and Caddy
	// "try_files {path} /index.html" configurations do for a Vue or React
	// app in history mode. Other methods still get 405 (or Fallthrough).
	// When both are set, SPA wins for GET and HEAD. Off by default.
	SPA bool

	// Headers are set on every response this handler writes (files, 304,
	// redirects, listings and errors; not those of Fallthrough), replacing
	// a header of the same name this package would set (Cache-Control, for
	// one). Nil means none.
	Headers http.Header

	// MaxAge, when positive, sends "Cache-Control: public, max-age=N" (N in
	// whole seconds) with every file. Zero or negative sends no
	// Cache-Control, leaving caches to their heuristics and revalidation
	// through ETag and Last-Modified, except for names carrying a content
	// hash ("app.3f9a2b1c4d5e.css", see hashed), which always get
	// "public, max-age=31536000, immutable": their content never changes.
	MaxAge time.Duration

	// AllowDotfiles, when true, serves names starting with a dot (".env",
	// ".git/config") like any other. Off by default: those are the files a
	// deployment leaks by accident. "." and ".." are refused regardless.
	AllowDotfiles bool

	// DotAllow lists dot-names allowed as the first path segment under the
	// prefix even when AllowDotfiles is off, so that ACME challenges and
	// other RFC 8615 well-known URIs work. Nil means
	// []string{".well-known"}; an empty non-nil slice allows none. Names
	// inside such a directory that start with a dot are still refused.
	DotAllow []string

	// Internal, when true, answers 404 to every request that reaches
	// ServeHTTP, as an nginx location marked "internal;": its files are
	// served only through ServeInternal, for an app's X-Accel-Redirect or
	// X-Sendfile. Off by default.
	Internal bool

	// CompressMin is the smallest file, in bytes, compressed on the fly:
	// below it the headers outweigh the gain. Zero means 1024 (1 KiB).
	// Precompressed siblings are served whatever the size.
	CompressMin int64

	// CompressMax is the largest file, in bytes, compressed on the fly:
	// above it the first request would wait too long and the copy would
	// crowd the cache; ship a precompressed sibling instead. Zero means
	// 8 MiB.
	CompressMax int64

	// CompressCache is the byte budget of the cache of files compressed on
	// the fly (least recently used out first); a hot file is compressed
	// once per version and coding. Zero means 64 MiB; negative turns
	// on-the-fly compression off (precompressed siblings are still
	// served).
	CompressCache int64

	// FileCache is the byte budget of the memory cache of small files (like
	// nginx's open_file_cache, but holding the content): a cached file
	// costs no open, stat or read while it is fresh. Zero means 32 MiB;
	// negative turns the cache off (every request opens the file).
	FileCache int64

	// FileCacheMax is the largest file, in bytes, the file cache holds.
	// Zero means 64 KiB: larger files go out with sendfile, for which the
	// open is a small part of the cost.
	FileCacheMax int64

	// FileCacheValid is how long a cached file is used without asking the
	// file system; after it, one stat revalidates it (the content is read
	// again only if its size, mtime or kind changed). A change to a file is
	// therefore seen within this interval. Zero means 1 second (nginx's
	// open_file_cache_valid is 60 s); negative means a stat on every
	// request.
	FileCacheValid time.Duration

	// Logger receives lookups that failed for a reason other than a missing
	// file (permission denied, a symbolic link out of Root), at warn level:
	// those are deployment mistakes. Nil means slog.Default().
	Logger *slog.Logger
}

// Defaults of the Options fields whose zero value stands for one.
const (
	defaultIndex          = "index.html"
	defaultDotAllow       = ".well-known"
	defaultCompressMin    = 1 << 10
	defaultCompressMax    = 8 << 20
	defaultCompressCache  = 64 << 20
	defaultFileCache      = 32 << 20
	defaultFileCacheMax   = 64 << 10
	defaultFileCacheValid = time.Second
)

// allowedMethods is the Allow header of a 405 answer.
const allowedMethods = "GET, HEAD"

// Handler serves the files under one directory. It is safe for concurrent
// use.
type Handler struct {
	root        *os.Root
	prefix      string // Options.Prefix without its trailing slash; "" for none
	index       []string
	listing     bool
	next        http.Handler
	spa         bool
	headers     http.Header
	maxAge      string // the Cache-Control value for MaxAge; "" for none
	dotfiles    bool
	dotAllow    []string
	internal    bool
	compressMin int64
	compressMax int64
	compress    *compressor // nil: no on-the-fly compression
	files       *lru[string, *cachedFile]
	fileMax     int64
	fileValid   time.Duration
	log         *slog.Logger

	now          func() time.Time // time.Now; a fake in tests
	opens        atomic.Int64     // files opened (tests check the cache saves them)
	compressions atomic.Int64     // on-the-fly compressions done
	memHits      atomic.Int64     // for CacheStats
	memMisses    atomic.Int64
}

var _ http.Handler = (*Handler)(nil)

// errRejected marks a request path refused before any lookup.
var errRejected = errors.New("static: path rejected")

// New opens opt.Root and returns a Handler serving it. Root must be an
// existing directory; the caller closes the Handler when done with it.
func New(opt Options) (*Handler, error) {
	if opt.Root == "" {
		return nil, errors.New("static: no root directory given")
	}
	if opt.Prefix != "" && opt.Prefix[0] != '/' {
		return nil, fmt.Errorf("static: prefix %q does not start with /", opt.Prefix)
	}
	index := opt.Index
	if index == nil {
		index = []string{defaultIndex}
	}
	for _, n := range index {
		if n == "" || strings.ContainsAny(n, "/\\\x00") || n == "." || n == ".." {
			return nil, fmt.Errorf("static: index name %q is not a file name", n)
		}
	}
	dotAllow := opt.DotAllow
	if dotAllow == nil {
		dotAllow = []string{defaultDotAllow}
	}
	root, err := os.OpenRoot(opt.Root)
	if err != nil {
		return nil, fmt.Errorf("static: opening root: %w", err)
	}
	fi, err := root.Stat(".")
	if err != nil {
		root.Close()
		return nil, fmt.Errorf("static: checking root %s: %w", opt.Root, err)
	}
	if !fi.IsDir() {
		root.Close()
		return nil, fmt.Errorf("static: root %s is not a directory", opt.Root)
	}
	logger := opt.Logger
	if logger == nil {
		logger = slog.Default()
	}
	h := &Handler{
		root:        root,
		prefix:      strings.TrimSuffix(opt.Prefix, "/"),
		index:       index,
		listing:     opt.Listing,
		next:        opt.Fallthrough,
		spa:         opt.SPA,
		headers:     opt.Headers.Clone(),
		dotfiles:    opt.AllowDotfiles,
		dotAllow:    dotAllow,
		internal:    opt.Internal,
		compressMin: orDefault(opt.CompressMin, defaultCompressMin),
		compressMax: orDefault(opt.CompressMax, defaultCompressMax),
		fileMax:     orDefault(opt.FileCacheMax, defaultFileCacheMax),
		fileValid:   orDefault(opt.FileCacheValid, defaultFileCacheValid),
		log:         logger,
		now:         time.Now,
	}
	if secs := int64(opt.MaxAge / time.Second); secs > 0 {
		h.maxAge = "public, max-age=" + strconv.FormatInt(secs, 10)
	}
	if budget := orDefault(opt.CompressCache, defaultCompressCache); budget > 0 {
		h.compress = &compressor{
			cache:    newLRU[compressKey, compressed](budget),
			count:    func() { h.compressions.Add(1) },
			inflight: make(map[compressKey]*flight),
		}
	}
	if budget := orDefault(opt.FileCache, defaultFileCache); budget > 0 {
		h.files = newLRU[string, *cachedFile](budget)
	}
	return h, nil
}

// orDefault is v, or def when v is zero.
func orDefault[T int64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Close releases the root directory. Requests served after Close get 404.
func (h *Handler) Close() error {
	return h.root.Close()
}

// ServeHTTP serves the file the request path names (see the package
// documentation for what is refused and how).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.internal {
		h.writeStatus(w, http.StatusNotFound)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if h.next != nil {
			h.next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Allow", allowedMethods)
		h.writeStatus(w, http.StatusMethodNotAllowed)
		return
	}
	name, err := h.resolve(r.URL)
	if err == nil {
		err = h.serveName(w, r, name, strings.HasSuffix(r.URL.Path, "/"), false)
	}
	if err != nil {
		h.fail(w, r, name, err, false)
	}
}

// ServeInternal serves the file name, a slash-separated path relative to
// the root ("/protected/report.pdf" or "protected/report.pdf"; decoded, not
// a URL: no query, no %-escapes), for an app response carrying
// X-Accel-Redirect or X-Sendfile. It works whether or not the route is
// Internal, and applies the same refusals (no "..", no dotfiles unless
// allowed, nothing outside the root), headers and HTTP semantics (Range,
// conditional requests, HEAD, compression) as ServeHTTP, except that:
//
//   - a method other than HEAD is served as GET (as nginx does for an
//     internal redirect), so the app's POST can answer with a file;
//   - a Content-Type or Cache-Control already set in w.Header() (by the
//     caller, copied from the app's response) is kept;
//   - a directory, or anything missing, is a plain 404: no index, no
//     listing, no redirect, no Fallthrough and no SPA.
func (h *Handler) ServeInternal(w http.ResponseWriter, r *http.Request, name string) {
	if r.Method != http.MethodHead && r.Method != http.MethodGet {
		r = r.WithContext(r.Context()) // a shallow copy
		r.Method = http.MethodGet
	}
	rel, err := h.clean(name)
	if err == nil {
		err = h.serveName(w, r, rel, false, true)
	}
	if err != nil {
		h.fail(w, r, rel, err, true)
	}
}

// resolve turns a request URL into a name relative to the root ("." for the
// root itself), or errRejected.
func (h *Handler) resolve(u *url.URL) (string, error) {
	if hasEncodedSeparator(u.EscapedPath()) {
		return "", errRejected
	}
	p := u.Path
	rest := p
	if h.prefix != "" {
		var ok bool
		rest, ok = strings.CutPrefix(p, h.prefix)
		if !ok || (rest != "" && rest[0] != '/') {
			return "", errRejected
		}
	} else if !strings.HasPrefix(p, "/") {
		return "", errRejected
	}
	return h.clean(rest)
}

// clean checks a decoded slash-separated path below the root and returns it
// as a root-relative name ("." for the root), or errRejected.
func (h *Handler) clean(rest string) (string, error) {
	if strings.ContainsAny(rest, "\x00\\") {
		return "", errRejected
	}
	first := true
	for seg := range strings.SplitSeq(rest, "/") {
		if seg == "" {
			continue
		}
		if seg[0] == '.' && !h.dotAllowed(seg, first) {
			return "", errRejected
		}
		first = false
	}
	// Only empty segments ("a//b", a leading or trailing slash) are left to
	// clean up.
	return path.Clean(strings.Trim(rest, "/")), nil
}

// dotAllowed reports whether a path segment starting with a dot may be
// served: never "." or ".."; any other with AllowDotfiles; a first segment
// listed in DotAllow.
func (h *Handler) dotAllowed(seg string, first bool) bool {
	if seg == "." || seg == ".." {
		return false
	}
	if h.dotfiles {
		return true
	}
	if first {
		for _, a := range h.dotAllow {
			if seg == a {
				return true
			}
		}
	}
	return false
}

// hasEncodedSeparator reports whether an escaped URL path holds %2F or %5C.
func hasEncodedSeparator(escaped string) bool {
	for i := 0; ; i++ {
		j := strings.IndexByte(escaped[i:], '%')
		if j < 0 || i+j+2 >= len(escaped) {
			return false
		}
		i += j
		hi, lo := escaped[i+1], escaped[i+2]|0x20 // lower-case the hex letter
		if (hi == '2' && lo == 'f') || (hi == '5' && lo == 'c') {
			return true
		}
	}
}

// serveName serves name: a file, or for a directory its index file, a
// redirect to "dir/" or a listing. slash tells whether the URL path ended
// with a slash; internal marks ServeInternal (files only). An error is
// returned before anything is written.
func (h *Handler) serveName(w http.ResponseWriter, r *http.Request, name string, slash, internal bool) error {
	st, err := h.stat(name, false)
	if err != nil {
		return err
	}
	if st.mode.IsDir() {
		if internal {
			return errNotRegular
		}
		index, ist, err := h.findIndex(name)
		if err != nil && (!h.listing || !errors.Is(err, fs.ErrNotExist)) {
			return err
		}
		if !slash {
			// As nginx and http.FileServer do, so that the index's relative
			// links resolve inside the directory. The Location is relative
			// (it survives prefix rewriting by routers in front) and starts
			// with "./" (a last segment like "a:b" is not a scheme).
			target := "./" + url.PathEscape(path.Base(r.URL.Path)) + "/"
			if r.URL.RawQuery != "" {
				target += "?" + r.URL.RawQuery
			}
			w.Header().Set("Location", target)
			h.writeStatus(w, http.StatusMovedPermanently)
			return nil
		}
		if err != nil {
			return h.list(w, r, name)
		}
		name, st = index, ist
	} else if slash {
		return syscall.ENOTDIR // "file.txt/"
	}
	if !st.mode.IsRegular() {
		// Checked before Open: opening a FIFO would block.
		return errNotRegular
	}
	return h.serveFile(w, r, name, st, internal)
}

// findIndex returns the first of Options.Index that is a regular file in
// the directory dir, or an error wrapping fs.ErrNotExist if none is.
func (h *Handler) findIndex(dir string) (string, fileState, error) {
	for _, n := range h.index {
		name := path.Join(dir, n)
		st, err := h.stat(name, false)
		switch {
		case err == nil && st.mode.IsRegular():
			return name, st, nil
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			return "", fileState{}, err
		}
	}
	return "", fileState{}, fmt.Errorf("static: no index file in %s: %w", dir, fs.ErrNotExist)
}

// serveFile serves the regular file name, whose lookup gave st, or one of
// its compressed forms.
func (h *Handler) serveFile(w http.ResponseWriter, r *http.Request, name string, st fileState, internal bool) error {
	ctype := contentType(name)
	hdr := w.Header()
	var v variant
	if negotiate.Compressible(ctype) {
		hdr.Add("Vary", "Accept-Encoding")
		var err error
		if v, err = h.negotiate(r, name, st); err != nil {
			return err
		}
		if v.closer != nil {
			defer v.closer.Close()
		}
	}
	if v.content == nil {
		if st.data != nil {
			v = variant{content: bytes.NewReader(st.data), data: st.data, fixed: st.fixed, modTime: st.modTime, tag: st.fixed.etag[0]}
		} else {
			f, err := h.open(name)
			if err != nil {
				return err
			}
			defer f.Close()
			// Check again on the open file: name may have been replaced
			// since the stat.
			fi, err := f.Stat()
			if err != nil {
				return fmt.Errorf("static: checking %s: %w", name, err)
			}
			if !fi.Mode().IsRegular() {
				return errNotRegular
			}
			v = variant{content: f, modTime: fi.ModTime(), tag: etag(fi.ModTime(), fi.Size(), "")}
		}
	}
	if !internal || hdr.Get("Content-Type") == "" {
		hdr.Set("Content-Type", ctype)
	}
	hdr.Set("X-Content-Type-Options", "nosniff")
	if v.fixed != nil {
		hdr["Etag"] = v.fixed.etag
	} else {
		hdr.Set("ETag", v.tag)
	}
	if v.encoding != "" {
		hdr.Set("Content-Encoding", v.encoding)
	}
	if cc := h.cacheControl(name); cc != "" && (!internal || hdr.Get("Cache-Control") == "") {
		hdr.Set("Cache-Control", cc)
	}
	h.addHeaders(hdr)
	if v.data != nil && unconditional(r) {
		// The common case of a file in memory, answered without
		// http.ServeContent's parsing and formatting (a third of the CPU
		// of a 1 KiB file): the same headers, values formatted once.
		var lastModified, length []string
		if f := v.fixed; f != nil {
			lastModified, length = f.lastModified, f.length
		} else {
			lastModified, length = lastModifiedValue(v.modTime), []string{strconv.Itoa(len(v.data))}
		}
		if lastModified != nil {
			hdr["Last-Modified"] = lastModified
		}
		hdr["Accept-Ranges"] = acceptRanges
		hdr["Content-Length"] = length
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(v.data)
		}
		return nil
	}
	if _, inMemory := v.content.(*bytes.Reader); inMemory {
		// Hide the writer's ReadFrom: net/http's flushes the headers in a
		// write of their own before copying, two syscalls where one does
		// for bytes already in memory (sendfile has nothing to gain there).
		w = writerOnly{w}
	}
	http.ServeContent(w, r, name, v.modTime, v.content)
	return nil
}

// writerOnly hides every method of a ResponseWriter but its own (and
// Unwrap, for http.ResponseController).
type writerOnly struct{ http.ResponseWriter }

func (w writerOnly) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// unconditional reports whether r is a plain GET or HEAD: no precondition
// and no range, nothing http.ServeContent would have to decide.
func unconditional(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	h := r.Header
	return h["Range"] == nil && h["If-None-Match"] == nil && h["If-Modified-Since"] == nil &&
		h["If-Match"] == nil && h["If-Unmodified-Since"] == nil && h["If-Range"] == nil
}

var acceptRanges = []string{"bytes"}

// fixedHeaders are the header values of one version of a file held in
// memory. Each slice has its capacity equal to its length, so that an
// append by a later handler copies instead of writing into a value that
// other responses share.
type fixedHeaders struct {
	etag         []string
	lastModified []string // nil for a zero or Unix-epoch mtime (as http.ServeContent)
	length       []string
}

func newFixedHeaders(modTime time.Time, size int64) *fixedHeaders {
	return &fixedHeaders{
		etag:         []string{etag(modTime, size, "")},
		lastModified: lastModifiedValue(modTime),
		length:       []string{strconv.FormatInt(size, 10)},
	}
}

// lastModifiedValue is the Last-Modified header of modTime, nil for a zero
// or Unix-epoch time (as http.ServeContent).
func lastModifiedValue(modTime time.Time) []string {
	if modTime.IsZero() || modTime.Equal(time.Unix(0, 0)) {
		return nil
	}
	return []string{modTime.UTC().Format(http.TimeFormat)}
}

// variant is the bytes chosen for a response: the file, or one of its
// compressed forms.
type variant struct {
	// data is the content when it is in memory (then also content).
	data     []byte
	fixed    *fixedHeaders // data's header values, when formatted already
	content  io.ReadSeeker
	closer   io.Closer // an open sibling file, closed after the response
	modTime  time.Time
	tag      string // the ETag
	encoding string // the Content-Encoding; "" for identity
}

// negotiate chooses a compressed form of name for the request's
// Accept-Encoding: for each acceptable coding, best first, a precompressed
// sibling (name + ".br", ".zst", ".gz": used as it is, whatever its age),
// else a copy compressed on the fly if name's size is within
// [CompressMin, CompressMax]. A variant without content means identity.
// The ETag of a compressed form is the one of the bytes it comes from (the
// sibling, or the file) with "-br", "-zstd" or "-gzip" inside the quotes,
// so that it differs from the file's and between codings.
func (h *Handler) negotiate(r *http.Request, name string, st fileState) (variant, error) {
	ae, ok := r.Header["Accept-Encoding"]
	if !ok {
		return variant{}, nil
	}
	for _, c := range negotiate.ParseAcceptEncoding(ae).Order() {
		token := c.Token()
		sib := name + c.Ext()
		sst, err := h.stat(sib, true)
		if err == nil && sst.mode.IsRegular() {
			if sst.data != nil {
				return variant{data: sst.data, content: bytes.NewReader(sst.data), modTime: sst.modTime, tag: etag(sst.modTime, sst.size, token), encoding: token}, nil
			}
			f, err := h.open(sib)
			if err == nil {
				fi, err := f.Stat()
				if err == nil && fi.Mode().IsRegular() {
					return variant{content: f, closer: f, modTime: fi.ModTime(), tag: etag(fi.ModTime(), fi.Size(), token), encoding: token}, nil
				}
				f.Close()
			}
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			h.log.Warn("static: lookup failed", "root", h.root.Name(), "name", sib, "err", err)
		}
		if h.compress == nil || st.size < h.compressMin || st.size > h.compressMax {
			continue
		}
		key := compressKey{name: name, modTime: st.modTime.UnixNano(), size: st.size, coding: c}
		res, err := h.compress.get(key, func() ([]byte, error) {
			if st.data != nil {
				return st.data, nil
			}
			data, fi, err := h.readFile(name, h.compressMax)
			if err != nil {
				return nil, err
			}
			if !st.same(fi) {
				return nil, errChanged
			}
			return data, nil
		})
		if err != nil {
			return variant{}, err
		}
		if res.data == nil {
			break // incompressible: no other coding will do much better
		}
		return variant{data: res.data, content: bytes.NewReader(res.data), modTime: st.modTime, tag: etag(st.modTime, st.size, token), encoding: token}, nil
	}
	return variant{}, nil
}

// cacheControl is the Cache-Control for name: a year and immutable for a
// hashed name, else the MaxAge one (possibly none).
func (h *Handler) cacheControl(name string) string {
	if hashed(name) {
		return immutableCacheControl
	}
	return h.maxAge
}

// addHeaders sets Options.Headers on hdr.
func (h *Handler) addHeaders(hdr http.Header) {
	for k, v := range h.headers {
		hdr[k] = v
	}
}

// writeStatus writes a bare status answer with Options.Headers.
func (h *Handler) writeStatus(w http.ResponseWriter, status int) {
	h.addHeaders(w.Header())
	if status == http.StatusMovedPermanently {
		w.WriteHeader(status)
		return
	}
	if status >= 400 && errpage.Serve(w, status) {
		return
	}
	http.Error(w, strconv.Itoa(status)+" "+http.StatusText(status), status)
}

// errNotRegular marks a directory entry that is not a regular file.
var errNotRegular = errors.New("static: not a regular file")

// etag is a strong entity tag built like nginx's: modification time in Unix
// seconds and size, in hex, "<mtime>-<size>", and "-<coding>" for a
// compressed form. A file changed twice within a second at the same size
// keeps its tag, as with nginx.
func etag(modTime time.Time, size int64, coding string) string {
	b := make([]byte, 0, 40)
	b = append(b, '"')
	b = strconv.AppendInt(b, modTime.Unix(), 16)
	b = append(b, '-')
	b = strconv.AppendInt(b, size, 16)
	if coding != "" {
		b = append(b, '-')
		b = append(b, coding...)
	}
	b = append(b, '"')
	return string(b)
}

// statusOf maps a lookup error to the status the client gets, and tells
// whether the error is worth a log line. Permission denied is 403; anything
// else, a path escaping the root included, is 404.
func statusOf(err error) (status int, notable bool) {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return http.StatusForbidden, true
	case errors.Is(err, errRejected), errors.Is(err, errNotRegular),
		errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR),
		errors.Is(err, syscall.ENAMETOOLONG):
		return http.StatusNotFound, false
	}
	return http.StatusNotFound, true
}

// fail answers a failed lookup of name: the one place errors become HTTP.
// The client gets a bare status (or, for a 404 outside ServeInternal, the
// Fallthrough handler or the SPA index); the log gets the cause.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, name string, err error, internal bool) {
	status, notable := statusOf(err)
	if notable {
		h.log.Warn("static: lookup failed", "root", h.root.Name(), "name", name, "path", r.URL.Path, "status", status, "err", err)
	}
	if status == http.StatusNotFound && !internal {
		if h.spa && len(h.index) > 0 {
			err := h.serveName(w, r, h.index[0], false, false)
			if err == nil {
				return
			}
			if _, notable := statusOf(err); notable {
				h.log.Warn("static: serving the SPA index failed", "root", h.root.Name(), "name", h.index[0], "err", err)
			}
		}
		if h.next != nil {
			h.next.ServeHTTP(w, r)
			return
		}
	}
	h.writeStatus(w, status)
}
