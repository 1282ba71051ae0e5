package uwsgi

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// EnvironOptions tunes the environ AppendRequest builds. The zero value
// describes an app mounted at the root with an empty body.
type EnvironOptions struct {
	// ScriptName is the URL prefix the app is mounted at: sent as
	// SCRIPT_NAME and stripped from the front of PATH_INFO when it is a
	// prefix of the path at a segment boundary ("/app" strips "/app" and
	// "/app/x", never "/apple"). "" (the zero value) mounts the app at the
	// root. A trailing "/" is ignored, so "/" is the root and "/app/" is
	// "/app", as PEP 3333 wants SCRIPT_NAME without one.
	ScriptName string

	// ContentLength is the length in bytes of the request body, which the
	// caller has already buffered and sends after the packet. It is always
	// sent as CONTENT_LENGTH ("0" for no body), whatever the request's own
	// headers say, so the app reads exactly the bytes that follow.
	ContentLength int64
}

// AppendRequest appends to dst one complete uwsgi packet (modifier1 0,
// modifier2 0: header and vars) describing r as a PEP 3333 / CGI environ,
// and returns the extended slice. It fails with ErrVarsTooLarge, returning
// dst unchanged, when the variables exceed MaxVarsSize bytes.
//
// Values are the request's raw bytes (the Python side decodes them as
// latin-1): PATH_INFO is the percent-decoded r.URL.Path, REQUEST_URI the
// request target as received (r.URL.RequestURI() when r.RequestURI is
// empty), QUERY_STRING and SCRIPT_NAME always present, even empty.
// CONTENT_TYPE is sent only when the request has a Content-Type.
// SERVER_NAME is r.Host's host name (IPv6 brackets stripped) and SERVER_PORT
// its port or, when it has none, the local TCP address's port
// (http.LocalAddrContextKey), else 443 or 80 by scheme. REMOTE_ADDR and
// REMOTE_PORT split r.RemoteAddr; a Unix socket peer (no port) gets an empty
// REMOTE_ADDR and no REMOTE_PORT. The scheme (wsgi.url_scheme,
// REQUEST_SCHEME, and HTTPS=on for https) follows r.TLS.
//
// Each header becomes HTTP_<NAME> (uppercased, '-' as '_'; several values
// joined with ", ", Cookie's with "; "), except these, never sent:
// Content-Type and Content-Length (CONTENT_TYPE and CONTENT_LENGTH carry
// them), Host (HTTP_HOST comes from r.Host), Proxy (httpoxy: a client must
// not set the app's HTTP_PROXY), the hop-by-hop Connection, Keep-Alive,
// Proxy-Connection, TE, Trailer, Transfer-Encoding and Upgrade, any name
// containing '_' (as nginx's underscores_in_headers off: X_Forwarded_For
// would otherwise pass for X-Forwarded-For), and any name with a non-ASCII
// byte (no valid header name has one).
//
// For a request carrying an Origin (see OriginFrom), SERVER_NAME,
// SERVER_PORT, REMOTE_ADDR, REMOTE_PORT and the scheme come from it, its
// SCRIPT_NAME, when sent, goes in front of opt.ScriptName, and its Extra
// variables are appended unchanged.
//
// AppendRequest allocates nothing beyond growing dst (unless r.RequestURI is
// empty, as in a client request): reuse dst across requests.
func AppendRequest(dst []byte, r *http.Request, opt EnvironOptions) ([]byte, error) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0) // header, patched at the end
	o := OriginFrom(r.Context())

	var path, rawQuery, urlHost string
	if r.URL != nil {
		path, rawQuery, urlHost = r.URL.Path, r.URL.RawQuery, r.URL.Host
	}

	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	dst = AppendVar(dst, "REQUEST_METHOD", method)
	if r.RequestURI != "" || r.URL == nil {
		dst = AppendVar(dst, "REQUEST_URI", r.RequestURI)
	} else {
		dst = AppendVar(dst, "REQUEST_URI", r.URL.RequestURI())
	}
	dst = AppendVar(dst, "QUERY_STRING", rawQuery)

	mount := strings.TrimRight(opt.ScriptName, "/")
	dst, mark := appendKey(dst, "SCRIPT_NAME")
	if o != nil && o.HasScriptName {
		front := o.ScriptName
		if mount != "" {
			front = strings.TrimRight(front, "/")
		}
		dst = append(dst, front...)
	}
	dst = append(dst, mount...)
	dst = endValue(dst, mark)
	dst = AppendVar(dst, "PATH_INFO", StripMount(path, mount))

	dst, mark = appendKey(dst, "CONTENT_LENGTH")
	dst = strconv.AppendInt(dst, opt.ContentLength, 10)
	dst = endValue(dst, mark)
	if ct := r.Header["Content-Type"]; len(ct) > 0 {
		dst = AppendVar(dst, "CONTENT_TYPE", ct[0])
	}

	proto := r.Proto
	if proto == "" {
		proto = "HTTP/1.1"
	}
	dst = AppendVar(dst, "SERVER_PROTOCOL", proto)

	https := r.TLS != nil
	if o != nil && o.Scheme != "" {
		https = strings.EqualFold(o.Scheme, "https")
	}
	host := r.Host
	if host == "" {
		host = urlHost
	}
	hostName, hostPort := SplitHost(host)
	// The local address only when the name or the port has no other
	// source: a uwsgi listener's connection may pay a getsockname for it.
	var local *net.TCPAddr
	nameNeeds := (o == nil || o.ServerName == "") && hostName == ""
	portNeeds := (o == nil || o.ServerPort == "") && hostPort == ""
	if nameNeeds || portNeeds {
		local, _ = r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr)
	}

	dst, mark = appendKey(dst, "SERVER_NAME")
	switch {
	case o != nil && o.ServerName != "":
		dst = append(dst, o.ServerName...)
	case hostName != "":
		dst = append(dst, hostName...)
	case local != nil:
		dst = local.AddrPort().Addr().Unmap().AppendTo(dst)
	default:
		dst = append(dst, "localhost"...)
	}
	dst = endValue(dst, mark)

	dst, mark = appendKey(dst, "SERVER_PORT")
	switch {
	case o != nil && o.ServerPort != "":
		dst = append(dst, o.ServerPort...)
	case hostPort != "":
		dst = append(dst, hostPort...)
	case local != nil:
		dst = strconv.AppendInt(dst, int64(local.Port), 10)
	case https:
		dst = append(dst, "443"...)
	default:
		dst = append(dst, "80"...)
	}
	dst = endValue(dst, mark)

	remoteAddr, remotePort := SplitRemote(r.RemoteAddr)
	if o != nil && o.RemoteAddr != "" {
		remoteAddr = o.RemoteAddr
	}
	if o != nil && o.RemotePort != "" {
		remotePort = o.RemotePort
	}
	dst = AppendVar(dst, "REMOTE_ADDR", remoteAddr)
	if remotePort != "" {
		dst = AppendVar(dst, "REMOTE_PORT", remotePort)
	}

	scheme := "http"
	if https {
		scheme = "https"
	}
	dst = AppendVar(dst, "wsgi.url_scheme", scheme)
	dst = AppendVar(dst, "REQUEST_SCHEME", scheme)
	if https {
		dst = AppendVar(dst, "HTTPS", "on")
	}

	if r.Host != "" {
		dst = AppendVar(dst, "HTTP_HOST", r.Host)
	}
	for name, values := range r.Header {
		if len(values) == 0 || skipHeader(name) {
			continue
		}
		var ok bool
		if dst, ok = appendHeaderKey(dst, name); !ok {
			continue
		}
		if len(values) == 1 {
			dst = append(dst, byte(len(values[0])), byte(len(values[0])>>8))
			dst = append(dst, values[0]...)
			continue
		}
		mark = len(dst)
		dst = append(dst, 0, 0)
		sep := ", "
		if strings.EqualFold(name, "Cookie") {
			sep = "; "
		}
		for i, v := range values {
			if i > 0 {
				dst = append(dst, sep...)
			}
			dst = append(dst, v...)
		}
		dst = endValue(dst, mark)
	}

	if o != nil {
		dst = append(dst, o.Extra...)
	}

	size := len(dst) - start - HeaderSize
	if size > MaxVarsSize {
		return dst[:start], ErrVarsTooLarge
	}
	Header{Size: uint16(size)}.Append(dst[start:start])
	return dst, nil
}

// appendKey appends key and a placeholder for the value's length, returning
// the placeholder's offset for endValue.
func appendKey(dst []byte, key string) ([]byte, int) {
	dst = append(dst, byte(len(key)), byte(len(key)>>8))
	dst = append(dst, key...)
	mark := len(dst)
	return append(dst, 0, 0), mark
}

// endValue patches the value length placeholder at mark to cover the bytes
// appended since. An overlong value is caught by the total size check.
func endValue(dst []byte, mark int) []byte {
	n := len(dst) - mark - 2
	dst[mark] = byte(n)
	dst[mark+1] = byte(n >> 8)
	return dst
}

// appendHeaderKey appends the length and bytes of "HTTP_" + name uppercased
// with '-' as '_', as nginx does. It appends nothing and reports false for a
// name containing '_' or a non-ASCII byte (see AppendRequest).
func appendHeaderKey(dst []byte, name string) ([]byte, bool) {
	start := len(dst)
	n := len("HTTP_") + len(name)
	dst = append(dst, make([]byte, 2+n)...) // no allocation when dst has room
	key := dst[start:]
	key[0], key[1] = byte(n), byte(n>>8)
	copy(key[2:], "HTTP_")
	key = key[2+len("HTTP_"):]
	key = key[:len(name)]
	var flags byte
	for i := 0; i < len(name); i++ {
		c := envKeyByte[name[i]]
		flags |= c
		key[i] = c
	}
	if flags&0x80 != 0 {
		// '_' (mapped to 0x80) or a non-ASCII byte: refuse the name.
		return dst[:start], false
	}
	return dst, true
}

// envKeyByte maps a header name byte to its environ key byte.
var envKeyByte = func() (t [256]byte) {
	for i := range t {
		t[i] = byte(i)
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = byte(c - 'a' + 'A')
	}
	t['-'] = '_'
	t['_'] = 0x80 // like bytes >= 0x80, marks a name to refuse
	return t
}()

// skipHeader reports whether a request header must not reach the environ.
// The reasons are in AppendRequest's doc comment; names with '_' are caught
// by appendHeaderKey, which scans the name anyway.
func skipHeader(name string) bool {
	if name == "" {
		return true
	}
	var bad string
	switch len(name) {
	case 2:
		bad = "TE"
	case 4:
		bad = "Host"
	case 5:
		bad = "Proxy"
	case 7:
		return strings.EqualFold(name, "Upgrade") || strings.EqualFold(name, "Trailer")
	case 10:
		return strings.EqualFold(name, "Connection") || strings.EqualFold(name, "Keep-Alive")
	case 12:
		bad = "Content-Type"
	case 14:
		bad = "Content-Length"
	case 16:
		bad = "Proxy-Connection"
	case 17:
		bad = "Transfer-Encoding"
	default:
		return false
	}
	return strings.EqualFold(name, bad)
}

// StripMount removes mount from the front of path when it is a prefix at a
// segment boundary (modifier1 30: SCRIPT_NAME stripped from PATH_INFO).
func StripMount(path, mount string) string {
	if mount != "" && strings.HasPrefix(path, mount) && (len(path) == len(mount) || path[len(mount)] == '/') {
		return path[len(mount):]
	}
	return path
}

// SplitHost splits a Host header value into name and port without
// allocating (SERVER_NAME and SERVER_PORT of a CGI-style environ). IPv6
// brackets are stripped from the name; a port that is not all digits is
// dropped.
func SplitHost(host string) (name, port string) {
	if strings.HasPrefix(host, "[") {
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return host, ""
		}
		name, rest := host[1:end], host[end+1:]
		if len(rest) > 1 && rest[0] == ':' && allDigits(rest[1:]) {
			port = rest[1:]
		}
		return name, port
	}
	i := strings.IndexByte(host, ':')
	if i < 0 || strings.IndexByte(host[i+1:], ':') >= 0 {
		return host, "" // no port, or a bare IPv6 address
	}
	if allDigits(host[i+1:]) {
		port = host[i+1:]
	}
	return host[:i], port
}

// SplitRemote splits an http.Request.RemoteAddr into address and port
// without allocating (REMOTE_ADDR and REMOTE_PORT). A bare IP address has
// no port; anything else that is not host:port (a Unix socket peer such as
// "@" or "") has neither.
func SplitRemote(addr string) (host, port string) {
	if addr == "" {
		return "", ""
	}
	if addr[0] == '[' {
		end := strings.IndexByte(addr, ']')
		if end > 0 && end+2 < len(addr) && addr[end+1] == ':' && allDigits(addr[end+2:]) {
			return addr[1:end], addr[end+2:]
		}
	} else if i := strings.IndexByte(addr, ':'); i > 0 && strings.IndexByte(addr[i+1:], ':') < 0 && allDigits(addr[i+1:]) {
		return addr[:i], addr[i+1:]
	}
	// Only something that looks like an IP address is worth parsing: a
	// failed parse allocates its error.
	if c := addr[0]; isHex(c) || c == ':' {
		if ip, err := netip.ParseAddr(addr); err == nil && ip.IsValid() {
			return addr, ""
		}
	}
	return "", ""
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
