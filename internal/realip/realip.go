// Package realip draws the trust boundary: it decides which peers may tell
// Portico who the client is, and rewrites a request from such a peer so
// that everything after it (the access log, the WSGI environ, the proxy)
// sees the real client. It is nginx's realip module (set_real_ip_from,
// real_ip_header, real_ip_recursive on) and gunicorn's
// --forwarded-allow-ips in one middleware.
//
// The security decisions, in the order the middleware makes them:
//
//  1. The immediate peer (r.RemoteAddr as the listener set it; after a
//     PROXY protocol header from a trusted peer, the address in it) is
//     matched against the trusted list. The zero Options trust nobody:
//     a forwarding header is believed only when someone said whom to
//     believe.
//  2. An untrusted peer's Forwarded, X-Forwarded-For, X-Forwarded-Proto,
//     X-Forwarded-Host, X-Forwarded-Port and X-Real-Ip headers are
//     deleted, so that a spoofed value reaches neither the app nor any
//     upstream (STYLE.md, habit 10).
//  3. A trusted peer's Forwarded (RFC 7239) is believed; without one, its
//     X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host. The client
//     is the first untrusted address walking from the right (each trusted
//     hop may have appended the address it saw); when every hop is
//     trusted, the leftmost. A value that is not an address (garbage,
//     "unknown", an obfuscated identifier) ends the walk and leaves
//     r.RemoteAddr alone: the client is unknown, and Portico does not
//     guess past it.
//  4. A request that came through Portico's uwsgi listener (it carries a
//     uwsgi.Origin) is left alone: the nginx in front already decided who
//     the client is, and under uWSGI the app saw its headers unchanged.
//
// What later code finds: r.RemoteAddr is the client as "ip:port", or a
// bare "ip" when the forwarding header gave no port (the WSGI environ then
// has REMOTE_ADDR and no REMOTE_PORT); [Peer] is the immediate peer;
// [Scheme] is "https" or "http" as the client used it; a believed proto
// reaches the WSGI environ (wsgi.url_scheme, HTTPS) through a
// uwsgi.Origin in the context; r.Host is a believed forwarded host.
package realip

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"portico/internal/uwsgi"
)

// Unix is the entry of a trusted list that trusts peers on Unix-socket
// listeners (an nginx on the same machine, say).
const Unix = "unix"

// All is the entry of a trusted list that trusts every peer, as
// gunicorn's --forwarded-allow-ips '*': only for a listener no client can
// reach except through the proxy.
const All = "*"

// Matcher is a set of trusted peers: address prefixes, and optionally
// every Unix-socket peer. The nil *Matcher trusts nobody.
type Matcher struct {
	prefixes []netip.Prefix
	unix     bool
	all      bool
}

// ParseTrusted builds a Matcher from a list of entries: a CIDR prefix
// ("10.0.0.0/8", "fd00::/8"), a bare address (a /32 or /128), Unix, or
// All. An empty list gives a Matcher that trusts nobody.
func ParseTrusted(list []string) (*Matcher, error) {
	m := &Matcher{}
	for _, s := range list {
		s = strings.TrimSpace(s)
		switch {
		case s == Unix:
			m.unix = true
		case s == All:
			m.all = true
		case strings.Contains(s, "/"):
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("realip: %q is not an address, a CIDR prefix, %q or %q", s, Unix, All)
			}
			m.prefixes = append(m.prefixes, p.Masked())
		default:
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("realip: %q is not an address, a CIDR prefix, %q or %q", s, Unix, All)
			}
			a = a.Unmap()
			m.prefixes = append(m.prefixes, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return m, nil
}

// Empty reports whether m trusts nobody.
func (m *Matcher) Empty() bool {
	return m == nil || !m.all && !m.unix && len(m.prefixes) == 0
}

// Trusted reports whether peer, in http.Request.RemoteAddr form
// ("1.2.3.4:5", "[::1]:5", a bare address), is trusted. A Unix-socket
// peer ("", "@", or a socket path) is trusted when the list says Unix.
func (m *Matcher) Trusted(peer string) bool {
	if m == nil {
		return false
	}
	if m.all {
		return true
	}
	if isUnixPeer(peer) {
		return m.unix
	}
	a, _, ok := parseHostPort(peer)
	return ok && m.trustedIP(a)
}

// TrustedAddr is Trusted for a net.Addr (a connection's peer).
func (m *Matcher) TrustedAddr(a net.Addr) bool {
	if m == nil {
		return false
	}
	if m.all {
		return true
	}
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		return ok && m.trustedIP(ip)
	case *net.UnixAddr:
		return m.unix
	case nil:
		return false
	}
	return m.Trusted(a.String())
}

func (m *Matcher) trustedIP(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range m.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// isUnixPeer reports whether a RemoteAddr is a Unix-socket peer: the
// servers give "@" (Linux's unnamed peer) or "", a named one its path.
func isUnixPeer(peer string) bool {
	return peer == "" || peer[0] == '@' || peer[0] == '/'
}

// parseHostPort parses "ip:port", "[ip]:port" or a bare "ip"; port is ""
// when there is none.
func parseHostPort(s string) (a netip.Addr, port string, ok bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), s[strings.LastIndexByte(s, ':')+1:], true
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		s = s[1 : len(s)-1]
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, "", false
	}
	return a.Unmap(), "", true
}

// Options configure the middleware. The zero value trusts nobody: every
// forwarding header is stripped.
type Options struct {
	// Trusted are the peers whose forwarding headers are believed. Nil:
	// nobody (nginx without set_real_ip_from; note that gunicorn's default
	// trusts 127.0.0.1 and ::1, Portico's does not).
	Trusted *Matcher
}

// forwardingHeaders are the request headers that claim something about
// the client; an untrusted peer's are deleted. Canonical forms.
var forwardingHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port", "X-Real-Ip"}

// info is what the middleware records in a rewritten request's context.
type info struct {
	peer   string // RemoteAddr before the rewrite
	scheme string // "https", "http", or "" (not said)
}

type infoKey struct{}

// New returns the middleware. Put it first in the chain, before the
// access log, so that every later handler sees the real client.
func New(opt Options) func(http.Handler) http.Handler {
	m := opt.Trusted
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if uwsgi.OriginFrom(r.Context()) != nil {
				next.ServeHTTP(w, r)
				return
			}
			if !m.Trusted(r.RemoteAddr) {
				strip(r.Header)
				next.ServeHTTP(w, r)
				return
			}
			if r2 := rewrite(r, m); r2 != nil {
				r = r2
			}
			next.ServeHTTP(w, r)
		})
	}
}

// strip deletes the forwarding headers (a delete of an absent key is a
// lookup, and allocates nothing).
func strip(h http.Header) {
	for _, k := range forwardingHeaders {
		delete(h, k)
	}
}

// forwarded is what a trusted peer's headers said.
type forwarded struct {
	client string // "ip:port", bare "ip", or "" (unknown)
	proto  string // "http", "https", or ""
	host   string // "" when not said or not valid
}

// rewrite returns a copy of r rewritten from its trusted peer's headers,
// or nil when they say nothing usable.
func rewrite(r *http.Request, m *Matcher) *http.Request {
	var f forwarded
	if v := r.Header["Forwarded"]; len(v) > 0 {
		f = parseForwarded(v, m)
	} else if v := r.Header["X-Forwarded-For"]; len(v) > 0 || len(r.Header["X-Forwarded-Proto"]) > 0 || len(r.Header["X-Forwarded-Host"]) > 0 {
		f = forwarded{
			client: clientFromXFF(v, m),
			proto:  validProto(lastValue(r.Header["X-Forwarded-Proto"])),
			host:   validHost(lastValue(r.Header["X-Forwarded-Host"])),
		}
	}
	if f == (forwarded{}) {
		return nil
	}
	in := &info{peer: r.RemoteAddr, scheme: f.proto}
	ctx := context.WithValue(r.Context(), infoKey{}, in)
	if f.proto != "" {
		scheme := f.proto
		if r.TLS != nil {
			scheme = "https"
		}
		in.scheme = scheme
		ctx = uwsgi.WithOrigin(ctx, &uwsgi.Origin{Scheme: scheme})
	}
	r2 := r.WithContext(ctx)
	if f.client != "" {
		r2.RemoteAddr = f.client
	}
	if f.host != "" {
		r2.Host = f.host
	}
	return r2
}

// clientFromXFF walks X-Forwarded-For from the right and returns the first
// untrusted address, or the leftmost when all are trusted; "" when a value
// that is not an address is met first.
func clientFromXFF(values []string, m *Matcher) string {
	var leftmost string
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for v != "" {
			var item string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				item, v = v[j+1:], v[:j]
			} else {
				item, v = v, ""
			}
			item = strings.TrimSpace(item)
			if item == "" {
				continue // "a,,b" and trailing commas: nothing there
			}
			client, ok := clientAddr(item)
			if !ok {
				return ""
			}
			if !m.Trusted(client) {
				return client
			}
			leftmost = client
		}
	}
	return leftmost
}

// clientAddr turns a forwarded address ("1.2.3.4", "1.2.3.4:5",
// "2001:db8::1", "[2001:db8::1]:5") into RemoteAddr form: "ip:port" or a
// bare "ip".
func clientAddr(s string) (string, bool) {
	a, port, ok := parseHostPort(s)
	if !ok {
		return "", false
	}
	if port != "" {
		if port == "0" {
			return a.String(), true
		}
		return netip.AddrPortFrom(a, parsePort(port)).String(), true
	}
	return a.String(), true
}

func parsePort(s string) uint16 {
	var n uint16
	for i := 0; i < len(s); i++ {
		n = n*10 + uint16(s[i]-'0')
	}
	return n
}

// lastValue returns the last comma-separated element of a header: the one
// the immediate (trusted) peer set.
func lastValue(values []string) string {
	if len(values) == 0 {
		return ""
	}
	v := values[len(values)-1]
	if i := strings.LastIndexByte(v, ','); i >= 0 {
		v = v[i+1:]
	}
	return strings.TrimSpace(v)
}

func validProto(s string) string {
	switch {
	case strings.EqualFold(s, "https"):
		return "https"
	case strings.EqualFold(s, "http"):
		return "http"
	}
	return ""
}

// validHost returns s if it is a plausible Host value (a name or an
// address, an optional port), else "".
func validHost(s string) string {
	if s == "" || len(s) > 255 {
		return ""
	}
	host, port := s, ""
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return ""
		}
		if a, err := netip.ParseAddr(s[1:end]); err != nil || !a.Is6() {
			return ""
		}
		host, port = "", s[end+1:]
		if port != "" {
			if port[0] != ':' {
				return ""
			}
			port = port[1:]
			if port == "" {
				return ""
			}
		}
	} else if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i+1:]
		if port == "" {
			return ""
		}
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_') {
			return ""
		}
	}
	if len(port) > 5 {
		return ""
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return ""
		}
	}
	return s
}

// Peer returns the address of r's immediate peer: r.RemoteAddr as it was
// before the middleware rewrote it, or r.RemoteAddr when it did not (the
// peer was not trusted, said nothing, or the middleware did not run). The
// reverse proxy appends its IP to X-Forwarded-For (see ForwardedFor).
func Peer(r *http.Request) string {
	if in, ok := r.Context().Value(infoKey{}).(*info); ok {
		return in.peer
	}
	return r.RemoteAddr
}

// Scheme returns "https" when the client used HTTPS: r came over TLS, or
// a trusted peer said so; else "http". It is what a reverse proxy sends
// as X-Forwarded-Proto.
func Scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	if in, ok := r.Context().Value(infoKey{}).(*info); ok && in.scheme == "https" {
		return "https"
	}
	if o := uwsgi.OriginFrom(r.Context()); o != nil && o.Scheme == "https" {
		return "https"
	}
	return "http"
}

// ForwardedFor returns the X-Forwarded-For a reverse proxy sends
// upstream: the incoming X-Forwarded-For (present only when the peer was
// trusted: the middleware deletes an untrusted peer's), then the immediate
// peer's IP. A Unix-socket peer adds nothing.
func ForwardedFor(r *http.Request) string {
	prior := strings.Join(r.Header["X-Forwarded-For"], ", ")
	peer := Peer(r)
	ip := ""
	if !isUnixPeer(peer) {
		if a, _, ok := parseHostPort(peer); ok {
			ip = a.String()
		}
	}
	switch {
	case ip == "":
		return prior
	case prior == "":
		return ip
	}
	return prior + ", " + ip
}
