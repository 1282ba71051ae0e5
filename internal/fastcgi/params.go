package fastcgi

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path"
	"strconv"
	"strings"

	"portico/internal/uwsgi"
)

// ErrUnknownLength reports a request whose body has no known length
// (ContentLength < 0 with a body). CONTENT_LENGTH must be exact, and a
// FastCGI request cannot be chunked: the caller buffers the body first (the
// proxy always spools bodies, so this never happens there).
var ErrUnknownLength = errors.New("fastcgi: request body of unknown length")

// ErrParamTooLarge reports one name-value pair larger than a record can
// carry. php-fpm decodes each PARAMS record on its own, so a pair cannot
// span two records.
var ErrParamTooLarge = errors.New("fastcgi: parameter larger than one record")

// ParamsOptions tunes the params AppendParams builds.
type ParamsOptions struct {
	// Root is the document root, an absolute directory: DOCUMENT_ROOT, and
	// the directory SCRIPT_FILENAME and PATH_TRANSLATED are under.
	Root string

	// SplitPath lists the suffixes that end the script part of the URL
	// path (see SplitScript); nil means [".php"].
	SplitPath []string

	// Prefix is the URL path the scripts are mounted under ("/blog"): it
	// is stripped from the path before the file is looked for under Root
	// (nginx's alias), and kept in SCRIPT_NAME so that the app builds its
	// URLs with it. "" or "/": the root.
	Prefix string

	// Params are extra params, sent last so that they override the built
	// ones (php-fpm keeps the last value of a repeated name), as nginx's
	// fastcgi_param.
	Params map[string]string
}

// defaultSplitPath is SplitPath's default.
var defaultSplitPath = []string{".php"}

// SplitScript splits a URL path into the script part and PATH_INFO at the
// first occurrence of one of suffixes (ASCII case-insensitive) that is
// followed by "/" or the end of the path: "/a/b.php/x/y" gives "/a/b.php"
// and "/x/y". When no suffix matches, script is p and pathInfo "", and ok is
// false. nil suffixes mean [".php"]; an empty suffix never matches.
func SplitScript(p string, suffixes []string) (script, pathInfo string, ok bool) {
	if suffixes == nil {
		suffixes = defaultSplitPath
	}
	best := -1
	for _, s := range suffixes {
		if s == "" {
			continue
		}
		for from := 0; from+len(s) <= len(p); {
			i := indexFold(p[from:], s)
			if i < 0 {
				break
			}
			end := from + i + len(s)
			if end == len(p) || p[end] == '/' {
				if best < 0 || end < best {
					best = end
				}
				break
			}
			from += i + 1
		}
	}
	if best < 0 {
		return p, "", false
	}
	return p[:best], p[best:], true
}

// indexFold is strings.Index, ASCII case-insensitive, without allocating.
func indexFold(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return i
		}
	}
	return -1
}

// appendFilePair appends the pair name = root joined with the URL path p,
// cleaned as an absolute path first so that ".." can never climb out of
// root. It allocates only for a path that is not clean already.
func appendFilePair(dst []byte, name, root, p string) []byte {
	if p == "" || p[0] != '/' || path.Clean(p) != p {
		p = path.Clean("/" + p)
	}
	root = strings.TrimRight(root, "/")
	if p == "/" {
		p = ""
		if root == "" {
			p = "/"
		}
	}
	dst = appendLength(dst, len(name))
	dst = appendLength(dst, len(root)+len(p))
	dst = append(dst, name...)
	dst = append(dst, root...)
	return append(dst, p...)
}

// AppendParams appends to dst the name-value pairs (the content of a
// PARAMS stream, not yet cut into records) describing r for a FastCGI
// responder, and returns the extended slice. These are the variables of
// nginx's fastcgi_params plus SCRIPT_FILENAME:
//
//   - REQUEST_METHOD; REQUEST_URI, the request target as received
//     (r.RequestURI, else r.URL.RequestURI()), so that a caller that rewrote
//     r.URL.Path to a front controller keeps the original URI; QUERY_STRING,
//     always sent, even empty; DOCUMENT_URI, r.URL.Path.
//   - SCRIPT_NAME and PATH_INFO, r.URL.Path split by SplitScript (under a
//     Prefix, the rest of the path is split and SCRIPT_NAME keeps the
//     prefix); SCRIPT_FILENAME, Root + the script's path under the prefix; PATH_TRANSLATED, Root +
//     PATH_INFO, only when PATH_INFO is not empty; DOCUMENT_ROOT, Root. The
//     file names are cleaned so that ".." never leaves Root.
//   - CONTENT_LENGTH, r.ContentLength ("0" without a body); a body of
//     unknown length fails with ErrUnknownLength. CONTENT_TYPE only when the
//     request has a Content-Type.
//   - SERVER_PROTOCOL, GATEWAY_INTERFACE "CGI/1.1", SERVER_SOFTWARE
//     "portico", REDIRECT_STATUS "200" (php-cgi's cgi.force_redirect
//     wants it).
//   - REQUEST_SCHEME, and HTTPS "on" for https only, from r.TLS;
//     REMOTE_ADDR and REMOTE_PORT, r.RemoteAddr split (a Unix socket peer
//     gets an empty REMOTE_ADDR and no REMOTE_PORT); SERVER_NAME and
//     SERVER_PORT from r.Host, the port falling back to the local TCP
//     address (http.LocalAddrContextKey), then 443 or 80 by scheme;
//     SERVER_ADDR, the local address, when known.
//   - each header as HTTP_<NAME>, as uwsgi.AppendRequest does and for the
//     same reasons: never Proxy (httpoxy), the hop-by-hop headers, Host
//     (HTTP_HOST comes from r.Host), Content-Type and Content-Length, or a
//     name with '_' or a non-ASCII byte; several values joined by ", ",
//     Cookie's by "; ".
//   - last, opt.Params, which override any of the above.
//
// For a request carrying a uwsgi.Origin (one that came from nginx over the
// uwsgi listener), its non-empty RemoteAddr, RemotePort, Scheme,
// ServerName and ServerPort win, as in uwsgi.AppendRequest; its Extra
// variables (nginx's own DOCUMENT_ROOT and the like) are not sent.
//
// On error dst is returned unchanged.
func AppendParams(dst []byte, r *http.Request, opt ParamsOptions) ([]byte, error) {
	start := len(dst)
	body := r.Body != nil && r.Body != http.NoBody
	if body && r.ContentLength < 0 {
		return dst, ErrUnknownLength
	}
	o := uwsgi.OriginFrom(r.Context())

	var urlPath, rawQuery, urlHost string
	if r.URL != nil {
		urlPath, rawQuery, urlHost = r.URL.Path, r.URL.RawQuery, r.URL.Host
	}
	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	dst = AppendPair(dst, "QUERY_STRING", rawQuery)
	dst = AppendPair(dst, "REQUEST_METHOD", method)
	if ct := r.Header["Content-Type"]; len(ct) > 0 {
		dst = AppendPair(dst, "CONTENT_TYPE", ct[0])
	}
	var num [20]byte
	length := int64(0)
	if body {
		length = r.ContentLength
	}
	dst = AppendPair(dst, "CONTENT_LENGTH", strconv.AppendInt(num[:0], length, 10))

	prefix := strings.TrimRight(opt.Prefix, "/")
	rel := urlPath
	if prefix != "" {
		if rest, ok := strings.CutPrefix(urlPath, prefix); ok && (rest == "" || rest[0] == '/') {
			rel = rest
		} else {
			prefix = "" // not under the prefix: the path is taken whole
		}
	}
	script, pathInfo, _ := SplitScript(rel, opt.SplitPath)
	dst = appendLength(dst, len("SCRIPT_NAME"))
	dst = appendLength(dst, len(prefix)+len(script))
	dst = append(dst, "SCRIPT_NAME"...)
	dst = append(dst, prefix...)
	dst = append(dst, script...)
	dst = appendFilePair(dst, "SCRIPT_FILENAME", opt.Root, script)
	dst = AppendPair(dst, "PATH_INFO", pathInfo)
	if pathInfo != "" {
		dst = appendFilePair(dst, "PATH_TRANSLATED", opt.Root, pathInfo)
	}
	if r.RequestURI != "" || r.URL == nil {
		dst = AppendPair(dst, "REQUEST_URI", r.RequestURI)
	} else {
		dst = AppendPair(dst, "REQUEST_URI", r.URL.RequestURI())
	}
	dst = AppendPair(dst, "DOCUMENT_URI", urlPath)
	dst = AppendPair(dst, "DOCUMENT_ROOT", opt.Root)
	proto := r.Proto
	if proto == "" {
		proto = "HTTP/1.1"
	}
	dst = AppendPair(dst, "SERVER_PROTOCOL", proto)

	https := r.TLS != nil
	if o != nil && o.Scheme != "" {
		https = strings.EqualFold(o.Scheme, "https")
	}
	scheme := "http"
	if https {
		scheme = "https"
	}
	dst = AppendPair(dst, "REQUEST_SCHEME", scheme)
	if https {
		dst = AppendPair(dst, "HTTPS", "on")
	}
	dst = AppendPair(dst, "GATEWAY_INTERFACE", "CGI/1.1")
	dst = AppendPair(dst, "SERVER_SOFTWARE", "portico")

	remoteAddr, remotePort := uwsgi.SplitRemote(r.RemoteAddr)
	if o != nil && o.RemoteAddr != "" {
		remoteAddr = o.RemoteAddr
	}
	if o != nil && o.RemotePort != "" {
		remotePort = o.RemotePort
	}
	dst = AppendPair(dst, "REMOTE_ADDR", remoteAddr)
	if remotePort != "" {
		dst = AppendPair(dst, "REMOTE_PORT", remotePort)
	}

	host := r.Host
	if host == "" {
		host = urlHost
	}
	hostName, hostPort := uwsgi.SplitHost(host)
	local, _ := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr)
	var localIP netip.Addr
	if local != nil {
		localIP = local.AddrPort().Addr().Unmap()
		var ab [64]byte
		dst = AppendPair(dst, "SERVER_ADDR", localIP.AppendTo(ab[:0]))
	}
	switch {
	case o != nil && o.ServerPort != "":
		dst = AppendPair(dst, "SERVER_PORT", o.ServerPort)
	case hostPort != "":
		dst = AppendPair(dst, "SERVER_PORT", hostPort)
	case local != nil:
		dst = AppendPair(dst, "SERVER_PORT", strconv.AppendInt(num[:0], int64(local.Port), 10))
	case https:
		dst = AppendPair(dst, "SERVER_PORT", "443")
	default:
		dst = AppendPair(dst, "SERVER_PORT", "80")
	}
	switch {
	case o != nil && o.ServerName != "":
		dst = AppendPair(dst, "SERVER_NAME", o.ServerName)
	case hostName != "":
		dst = AppendPair(dst, "SERVER_NAME", hostName)
	case local != nil:
		var ab [64]byte
		dst = AppendPair(dst, "SERVER_NAME", localIP.AppendTo(ab[:0]))
	default:
		dst = AppendPair(dst, "SERVER_NAME", "localhost")
	}
	dst = AppendPair(dst, "REDIRECT_STATUS", "200")

	if r.Host != "" {
		dst = AppendPair(dst, "HTTP_HOST", r.Host)
	}
	for name, values := range r.Header {
		if len(values) == 0 || skipHeader(name) || !headerNameOK(name) {
			continue
		}
		dst = appendHeader(dst, name, values)
	}
	for name, value := range opt.Params {
		dst = AppendPair(dst, name, value)
	}
	if err := checkPairSizes(dst[start:]); err != nil {
		return dst[:start], err
	}
	return dst, nil
}

// checkPairSizes fails with ErrParamTooLarge when one pair of the block
// does not fit one record.
func checkPairSizes(b []byte) error {
	return ParsePairs(b, func(name, value []byte) error {
		size := lengthSize(len(name)) + lengthSize(len(value)) + len(name) + len(value)
		if size > MaxContentSize {
			return fmt.Errorf("%w: %.32s is %d bytes", ErrParamTooLarge, name, size)
		}
		return nil
	})
}

// appendParamsRecords appends the pairs block as PARAMS records for
// request id, each holding whole pairs and at most MaxContentSize bytes,
// then the empty PARAMS record that ends the stream. pairs comes from
// AppendParams, which checked every pair's size.
func appendParamsRecords(dst []byte, id uint16, pairs []byte) []byte {
	for len(pairs) > 0 {
		n := 0 // bytes of whole pairs that fit one record
		for n < len(pairs) {
			size := pairSize(pairs[n:])
			if n+size > MaxContentSize {
				break
			}
			n += size
		}
		if n == 0 { // cannot happen after checkPairSizes; never loop forever
			n = min(len(pairs), MaxContentSize)
		}
		dst = AppendRecord(dst, TypeParams, id, pairs[:n])
		pairs = pairs[n:]
	}
	return AppendRecord(dst, TypeParams, id, "")
}

// pairSize returns the encoded size of the well-formed pair at the start
// of b.
func pairSize(b []byte) int {
	n, off, _ := parseLength(b, 0, "name")
	m, off, _ := parseLength(b, off, "value")
	return off + n + m
}

// appendHeader appends the pair HTTP_<NAME> for a header with its values
// joined, without allocating.
func appendHeader(dst []byte, name string, values []string) []byte {
	sep := ", "
	if strings.EqualFold(name, "Cookie") {
		sep = "; "
	}
	vlen := len(sep) * (len(values) - 1)
	for _, v := range values {
		vlen += len(v)
	}
	dst = appendLength(dst, len("HTTP_")+len(name))
	dst = appendLength(dst, vlen)
	dst = append(dst, "HTTP_"...)
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case c == '-':
			c = '_'
		}
		dst = append(dst, c)
	}
	for i, v := range values {
		if i > 0 {
			dst = append(dst, sep...)
		}
		dst = append(dst, v...)
	}
	return dst
}

// headerNameOK reports whether a header name may become an HTTP_ param:
// not empty, no '_' (as nginx's underscores_in_headers off: X_Forwarded_For
// would otherwise pass for X-Forwarded-For) and no non-ASCII byte.
func headerNameOK(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c == '_' || c >= 0x80 || c <= ' ' {
			return false
		}
	}
	return true
}

// skipHeader reports whether a request header must not become a param;
// the reasons are in AppendParams's doc comment.
func skipHeader(name string) bool {
	switch len(name) {
	case 2:
		return strings.EqualFold(name, "TE")
	case 4:
		return strings.EqualFold(name, "Host")
	case 5:
		return strings.EqualFold(name, "Proxy")
	case 7:
		return strings.EqualFold(name, "Upgrade") || strings.EqualFold(name, "Trailer")
	case 10:
		return strings.EqualFold(name, "Connection") || strings.EqualFold(name, "Keep-Alive")
	case 12:
		return strings.EqualFold(name, "Content-Type")
	case 14:
		return strings.EqualFold(name, "Content-Length")
	case 16:
		return strings.EqualFold(name, "Proxy-Connection")
	case 17:
		return strings.EqualFold(name, "Transfer-Encoding")
	}
	return false
}
