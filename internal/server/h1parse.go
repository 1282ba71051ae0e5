package server

import (
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
)

// requestHead is a parsed HTTP/1.x request head. Every string in it is a
// substring of one string made from the head's bytes: one allocation for
// the request line and every header.
type requestHead struct {
	method, target, proto string
	major, minor          int
	url                   url.URL
	header                http.Header
	host                  string

	// contentLength is the declared body length, -1 for a chunked body, 0
	// when there is none.
	contentLength int64
	chunked       bool
	// keepAlive is whether the client lets the connection live on after
	// the response (HTTP/1.1 without "Connection: close", HTTP/1.0 with
	// "Connection: keep-alive").
	keepAlive      bool
	expectContinue bool
}

// headError is a request the server answers itself, with status, and then
// closes the connection: reason goes to the log.
type headError struct {
	status int
	reason string
}

func (e *headError) Error() string { return e.reason }

func badRequest(reason string) *headError {
	return &headError{status: http.StatusBadRequest, reason: reason}
}

func tooManyFields() *headError {
	return &headError{status: http.StatusRequestHeaderFieldsTooLarge, reason: "too many header fields"}
}

// parseHead parses b, a request head: the request line, the header lines
// and the empty line that ends them, each line ended by CRLF or a bare LF
// (RFC 9112 2.2 allows the latter). It is strict where leniency lets a
// request be read two ways (request smuggling), and at least as strict as
// nginx everywhere, so that a front before or behind another proxy is never
// the lenient one: a method of upper-case letters, '_' and '-' only; a
// validated authority in an absolute-form target and in Host; no NUL in the
// decoded path; no CONNECT (405: there is no tunnel to offer); no
// whitespace before a header's colon, no line folding, no control
// characters; one Host, one Content-Length header, no tab around a
// Content-Length or Transfer-Encoding value, no Content-Length with
// Transfer-Encoding, and "chunked" the only transfer coding. A head of more
// than maxFields header lines is answered 431.
func parseHead(b []byte, maxFields int) (*requestHead, *headError) {
	s := string(b)
	h := &requestHead{}

	line, rest, ok := nextLine(s)
	if !ok {
		return nil, badRequest("malformed request line")
	}
	if err := h.parseRequestLine(line); err != nil {
		return nil, err
	}

	// Count the header lines so the map and the values are allocated once.
	n := strings.Count(rest, "\n") - 1
	if n < 0 {
		n = 0
	}
	if n > maxFields {
		return nil, tooManyFields()
	}
	h.header = make(http.Header, n)
	values := make([]string, n)
	var lower [64]byte
	for {
		line, rest, ok = nextLine(rest)
		if !ok {
			return nil, badRequest("malformed header line")
		}
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return nil, badRequest("obsolete line folding in header")
		}
		colon := strings.IndexByte(line, ':')
		if colon <= 0 {
			return nil, badRequest("malformed header line")
		}
		name, raw := line[:colon], line[colon+1:]
		value := trimOWS(raw)
		if !isToken(name) {
			return nil, badRequest("invalid header name " + quoteName(name))
		}
		if !validHeaderValue(value) {
			return nil, badRequest("invalid value of header " + quoteName(name))
		}
		key := canonicalKey(name, &lower)
		if (len(raw) != len(value)+1 || raw[0] != ' ') && (key == "Content-Length" || key == "Transfer-Encoding") {
			// Not the usual one space: RFC 9110 allows tabs too, nginx
			// refuses them here, and a proxy that does not strip them
			// may read another length.
			if _, tab := trimOWSTab(raw); tab {
				return nil, badRequest("tab around the value of " + key)
			}
		}
		if len(values) == 0 {
			values = make([]string, 4)
		}
		if vv, ok := h.header[key]; ok {
			h.header[key] = append(vv, value)
			continue
		}
		values[0] = value
		h.header[key] = values[:1:1]
		values = values[1:]
	}
	if err := h.parseFraming(); err != nil {
		return nil, err
	}
	return h, nil
}

// nextLine returns the first line of s without its line ending, and the
// rest of s. ok is false if s has no LF, or if the line holds a CR other
// than the one before its LF.
func nextLine(s string) (line, rest string, ok bool) {
	i := strings.IndexByte(s, '\n')
	if i < 0 {
		return "", "", false
	}
	line, rest = strings.TrimSuffix(s[:i], "\r"), s[i+1:]
	if strings.IndexByte(line, '\r') >= 0 {
		return "", "", false
	}
	return line, rest, true
}

// parseRequestLine parses "METHOD SP request-target SP HTTP/x.y".
func (h *requestHead) parseRequestLine(line string) *headError {
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || target == "" || !validTarget(target) {
		return badRequest("malformed request line")
	}
	if !isMethod(method) {
		// nginx's set: the remnant of a body the server did not expect
		// ("helloGET") is never taken for a method.
		return badRequest("invalid method " + quoteName(method))
	}
	h.method, h.target, h.proto = method, target, proto
	switch {
	case proto == "HTTP/1.1":
		h.major, h.minor = 1, 1
	case proto == "HTTP/1.0":
		h.major, h.minor = 1, 0
	case len(proto) == 8 && strings.HasPrefix(proto, "HTTP/") && isDigit(proto[5]) && proto[6] == '.' && isDigit(proto[7]):
		if proto[5] != '1' {
			return &headError{status: http.StatusHTTPVersionNotSupported, reason: "unsupported protocol version " + quoteName(proto)}
		}
		// RFC 9110 6.2: a higher minor version is served as 1.1.
		h.major, h.minor = 1, 1
	default:
		return badRequest("malformed protocol version")
	}

	switch {
	case target == "*":
		if method != http.MethodOptions {
			return badRequest("request target * is only for OPTIONS")
		}
		h.url.Path = "*"
	case method == http.MethodConnect:
		// No handler tunnels, and an app must not see an authority the
		// front never checked; nginx answers 405 too.
		return &headError{status: http.StatusMethodNotAllowed, reason: "CONNECT is not served"}
	case target[0] == '/' && strings.IndexByte(target, '%') < 0:
		// The common case, without url.Parse: nothing to unescape.
		path, query, _ := strings.Cut(target, "?")
		h.url.Path, h.url.RawQuery = path, query
		if strings.HasPrefix(path, "//") {
			// url.ParseRequestURI would not read "//x" as an authority
			// either, but let it decide what the path is.
			return h.parseTargetSlow()
		}
	default:
		return h.parseTargetSlow()
	}
	return nil
}

func (h *requestHead) parseTargetSlow() *headError {
	u, err := url.ParseRequestURI(h.target)
	if err != nil {
		return badRequest("malformed request target")
	}
	if u.Scheme != "" && u.Host == "" || u.User != nil {
		return badRequest("malformed request target")
	}
	if u.Host != "" && !validAuthority(u.Host) {
		return badRequest("invalid host in the request target " + quoteName(u.Host))
	}
	if strings.IndexByte(u.Path, 0) >= 0 {
		return badRequest("NUL in the request path")
	}
	h.url = *u
	return nil
}

// parseFraming reads the headers that decide the message's framing and the
// connection's fate: Host, Content-Length, Transfer-Encoding, Connection,
// Expect.
func (h *requestHead) parseFraming() *headError {
	hosts := h.header["Host"]
	switch {
	case len(hosts) > 1:
		return badRequest("more than one Host header")
	case len(hosts) == 0 && h.minor >= 1:
		return badRequest("missing Host header")
	case len(hosts) == 1 && !validAuthority(hosts[0]):
		return badRequest("invalid Host header " + quoteName(hosts[0]))
	}
	if len(hosts) == 1 {
		h.host = hosts[0]
	}
	delete(h.header, "Host")
	if h.url.Host != "" {
		h.host = h.url.Host // RFC 9112 3.2.2: absolute-form wins
	}

	te := h.header["Transfer-Encoding"]
	cl := h.header["Content-Length"]
	switch {
	case len(te) > 0:
		if len(cl) > 0 {
			return badRequest("both Transfer-Encoding and Content-Length")
		}
		if h.minor == 0 {
			return badRequest("Transfer-Encoding in an HTTP/1.0 request")
		}
		if len(te) > 1 || !strings.EqualFold(te[0], "chunked") {
			return &headError{status: http.StatusNotImplemented, reason: "unsupported Transfer-Encoding " + quoteName(strings.Join(te, ", "))}
		}
		h.chunked = true
		h.contentLength = -1
		delete(h.header, "Transfer-Encoding")
	case len(cl) > 0:
		if len(cl) > 1 {
			// RFC 9110 8.6 lets identical ones be merged; nginx refuses
			// any second one.
			return badRequest("more than one Content-Length header")
		}
		n, ok := parseContentLength(cl[0])
		if !ok {
			return badRequest("invalid Content-Length")
		}
		h.contentLength = n
	}

	h.keepAlive = h.minor >= 1
	for _, v := range h.header["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			switch tok = trimOWS(tok); {
			case strings.EqualFold(tok, "close"):
				h.keepAlive = false
			case strings.EqualFold(tok, "keep-alive") && h.minor == 0:
				h.keepAlive = true
			}
		}
		if !h.keepAlive && h.minor >= 1 {
			break
		}
	}

	if ex := h.header["Expect"]; len(ex) > 0 {
		if len(ex) > 1 || !strings.EqualFold(ex[0], "100-continue") {
			return &headError{status: http.StatusExpectationFailed, reason: "unsupported Expect " + quoteName(ex[0])}
		}
		// RFC 9110 10.1.1: ignored from an HTTP/1.0 client.
		h.expectContinue = h.minor >= 1 && (h.chunked || h.contentLength > 0)
	}
	return nil
}

// parseContentLength parses a non-negative decimal of at most 18 significant
// digits (no sign, no spaces, no commas; leading zeros are valid and not
// counted): anything else is a malformed request.
func parseContentLength(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	for len(s) > 1 && s[0] == '0' {
		s = s[1:]
	}
	if len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, false
		}
		n = n*10 + int64(s[i]-'0')
	}
	return n, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// trimOWS trims the optional whitespace (space and tab) of RFC 9110 5.6.3.
func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// trimOWSTab is trimOWS that also reports whether it trimmed a tab.
func trimOWSTab(s string) (string, bool) {
	tab := false
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		tab = tab || s[0] == '\t'
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		tab = tab || s[len(s)-1] == '\t'
		s = s[:len(s)-1]
	}
	return s, tab
}

// methodChars marks the bytes nginx allows in a method: upper-case
// letters, '_' and '-'.
var methodChars = func() (t [256]bool) {
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	t['_'], t['-'] = true, true
	return t
}()

func isMethod(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !methodChars[s[i]] {
			return false
		}
	}
	return true
}

// tokenChars marks the bytes of an RFC 9110 token (tchar).
var tokenChars = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenChars[s[i]] {
			return false
		}
	}
	return true
}

// validTarget reports whether a request target has no space or control
// character (bytes from 0x80 up are let through, as nginx does, for the
// clients that send raw UTF-8).
func validTarget(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// validHeaderValue reports whether v holds no control character other than
// horizontal tab (RFC 9110 5.5: CR, LF and NUL are never allowed).
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// hostChars marks the bytes allowed in a Host header: those of a
// reg-name, an IP literal and a port (RFC 3986 3.2.2), as
// golang.org/x/net/http/httpguts.ValidHostHeader allows them.
var hostChars = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = tokenChars[c]
	}
	for _, c := range "[]:;=,()" {
		t[c] = true
	}
	for c := 0x80; c < 256; c++ {
		t[c] = true // IDNs sent raw
	}
	return t
}()

// validAuthority reports whether s, a Host header or the authority of an
// absolute-form target, is host[:port]: a non-empty reg-name or IPv4
// address of hostChars other than brackets and ':', or an IP literal in
// brackets ("[::1]"), then an optional port of digits. nginx refuses the
// same empty, bracket-broken and quote- or angle-bracket-holding hosts.
func validAuthority(s string) bool {
	var host, port string
	if len(s) > 0 && s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 2 {
			return false
		}
		for i := 1; i < end; i++ {
			if c := s[i]; !isHexDigit(c) && c != ':' && c != '.' {
				return false
			}
		}
		host, port = s[:end+1], s[end+1:]
	} else {
		i := strings.IndexByte(s, ':')
		if i < 0 {
			i = len(s)
		}
		host, port = s[:i], s[i:]
		if host == "" {
			return false
		}
		for j := 0; j < len(host); j++ {
			if c := host[j]; !hostChars[c] || c == '[' || c == ']' {
				return false
			}
		}
	}
	if port != "" {
		if port[0] != ':' {
			return false
		}
		for j := 1; j < len(port); j++ {
			if !isDigit(port[j]) {
				return false
			}
		}
	}
	return host != ""
}

func isHexDigit(c byte) bool {
	return isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// quoteName quotes a client-supplied string for a log line, cut to 64
// bytes.
func quoteName(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strings.ToValidUTF8(`"`+s+`"`, "?")
}

// commonHeaders maps the lower-case names of the headers browsers and
// clients send most to their canonical form, so that those are found
// without allocating.
var commonHeaders = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Authorization",
		"Cache-Control", "Connection", "Content-Length", "Content-Type", "Cookie", "Dnt",
		"Expect", "Forwarded", "Host", "If-Match", "If-Modified-Since", "If-None-Match",
		"If-Range", "If-Unmodified-Since", "Keep-Alive", "Origin", "Pragma", "Priority", "Range",
		"Referer", "Sec-Ch-Ua", "Sec-Ch-Ua-Mobile", "Sec-Ch-Ua-Platform", "Sec-Fetch-Dest",
		"Sec-Fetch-Mode", "Sec-Fetch-Site", "Sec-Fetch-User", "Te", "Trailer",
		"Transfer-Encoding", "Upgrade", "Upgrade-Insecure-Requests", "User-Agent", "Via",
		"X-Csrftoken", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
		"X-Real-Ip", "X-Request-Id", "X-Requested-With",
	} {
		m[strings.ToLower(k)] = k
	}
	return m
}()

// canonicalKey returns the canonical form of a header name (a valid
// token), without allocating for the common ones.
func canonicalKey(name string, lower *[64]byte) string {
	if len(name) <= len(lower) {
		for i := 0; i < len(name); i++ {
			c := name[i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			lower[i] = c
		}
		if k, ok := commonHeaders[string(lower[:len(name)])]; ok {
			return k
		}
	}
	return textproto.CanonicalMIMEHeaderKey(name)
}
