// Package static serves files from one directory, as nginx's location with
// root or alias does, without touching Python.
//
// Security decisions are made here, in this order; each refusal is a 404
// (405 for a method), the same as for a missing file, so that a probe learns
// nothing about what exists:
//
//  1. Only GET and HEAD (405 with Allow otherwise).
//  2. The URL path must lie under Options.Prefix.
//  3. The request path is rejected if it holds a NUL, a backslash, an encoded
//     slash or backslash (%2F, %5C: as Apache's AllowEncodedSlashes Off; no
//     file name holds one, and routers that match the raw path and those
//     that match the decoded one would disagree on it), a ".." segment, or
//     any segment starting with a dot (".git", ".env", ".htpasswd"): the
//     files a deployment most often leaks by accident.
//  4. Every lookup goes through an os.Root opened on the directory, so no
//     path and no symbolic link can reach outside it, whatever the checks
//     above missed.
//  5. Only regular files are served: a directory is 404 (no listings) unless
//     it holds an index.html, which is served for "dir/" ("dir" without the
//     slash is first redirected there, 301, as nginx does); a device or a
//     FIFO is 404.
//
// Lookup errors map to answers in one place (statusOf): permission denied is
// 403, everything else 404; never 500 and never the file. The file itself is
// served by http.ServeContent, which owns Range, If-* preconditions, HEAD and
// 304; this package only adds the headers that depend on the file.
package static

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
)

// Options configure a Handler.
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

	// Logger receives lookups that failed for a reason other than a missing
	// file (permission denied, a symbolic link out of Root), at warn level:
	// those are deployment mistakes. Nil means slog.Default().
	Logger *slog.Logger
}

// indexFile is served for a request naming a directory that holds it.
const indexFile = "index.html"

// allowedMethods is the Allow header of a 405 answer.
const allowedMethods = "GET, HEAD"

// Handler serves the files under one directory. It is safe for concurrent
// use.
type Handler struct {
	root   *os.Root
	prefix string // Options.Prefix without its trailing slash; "" for none
	log    *slog.Logger
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
	return &Handler{
		root:   root,
		prefix: strings.TrimSuffix(opt.Prefix, "/"),
		log:    logger,
	}, nil
}

// Close releases the root directory. Requests served after Close get 404.
func (h *Handler) Close() error {
	return h.root.Close()
}

// ServeHTTP serves the file the request path names (see the package
// documentation for what is refused and how).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", allowedMethods)
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name, err := h.resolve(r.URL)
	if err != nil {
		h.fail(w, r, name, err)
		return
	}
	h.serveFile(w, r, name, strings.HasSuffix(r.URL.Path, "/"))
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
	if strings.ContainsAny(rest, "\x00\\") {
		return "", errRejected
	}
	for seg := range strings.SplitSeq(rest, "/") {
		if seg != "" && seg[0] == '.' { // ".", "..", dotfiles
			return "", errRejected
		}
	}
	// Only empty segments ("a//b", a leading or trailing slash) are left to
	// clean up.
	return path.Clean(strings.Trim(rest, "/")), nil
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

// serveFile serves name, or the index file of the directory name. slash
// tells whether the URL path ended with a slash.
func (h *Handler) serveFile(w http.ResponseWriter, r *http.Request, name string, slash bool) {
	fi, err := h.root.Stat(name)
	if err != nil {
		h.fail(w, r, name, err)
		return
	}
	if fi.IsDir() {
		index := path.Join(name, indexFile)
		if fi, err = h.root.Stat(index); err != nil {
			h.fail(w, r, index, err)
			return
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
			w.WriteHeader(http.StatusMovedPermanently)
			return
		}
		name = index
	} else if slash {
		h.fail(w, r, name, syscall.ENOTDIR) // "file.txt/"
		return
	}
	if !fi.Mode().IsRegular() {
		// Checked before Open: opening a FIFO would block.
		h.fail(w, r, name, errNotRegular)
		return
	}
	f, err := h.root.Open(name)
	if err != nil {
		h.fail(w, r, name, err)
		return
	}
	defer f.Close()
	// Check again on the open file: name may have been replaced meanwhile.
	if fi, err = f.Stat(); err != nil {
		h.fail(w, r, name, err)
		return
	}
	if !fi.Mode().IsRegular() {
		h.fail(w, r, name, errNotRegular)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", contentType(name))
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("ETag", etag(fi))
	http.ServeContent(w, r, name, fi.ModTime(), f)
}

// errNotRegular marks a directory entry that is not a regular file.
var errNotRegular = errors.New("static: not a regular file")

// contentType is the media type for name's extension, or
// application/octet-stream, so that browsers never guess (with nosniff).
func contentType(name string) string {
	if ct := mime.TypeByExtension(path.Ext(name)); ct != "" {
		return ct
	}
	return "application/octet-stream"
}

// etag is a strong entity tag built like nginx's: modification time in Unix
// seconds and size, in hex, "<mtime>-<size>". A file changed twice within a
// second at the same size keeps its tag, as with nginx.
func etag(fi fs.FileInfo) string {
	b := make([]byte, 0, 32)
	b = append(b, '"')
	b = strconv.AppendInt(b, fi.ModTime().Unix(), 16)
	b = append(b, '-')
	b = strconv.AppendInt(b, fi.Size(), 16)
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
// The client gets a bare status; the log gets the cause.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, name string, err error) {
	status, notable := statusOf(err)
	if notable {
		h.log.Warn("static: lookup failed", "root", h.root.Name(), "name", name, "path", r.URL.Path, "status", status, "err", err)
	}
	http.Error(w, strconv.Itoa(status)+" "+http.StatusText(status), status)
}
