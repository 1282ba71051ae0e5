package realip

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"portico/internal/uwsgi"
)

func mustTrust(t *testing.T, list ...string) *Matcher {
	t.Helper()
	m, err := ParseTrusted(list)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestParseTrusted(t *testing.T) {
	for _, bad := range []string{"10.0.0.0/33", "nonsense", "1.2.3", "fe80::1%eth0", "10.0.0.0/8/8", ""} {
		if _, err := ParseTrusted([]string{bad}); err == nil {
			t.Errorf("ParseTrusted(%q): no error", bad)
		}
	}
	m := mustTrust(t, "10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1", "unix")
	for peer, want := range map[string]bool{
		"10.1.2.3:80":            true,
		"10.1.2.3":               true,
		"11.0.0.1:80":            false,
		"192.0.2.7:1":            true,
		"192.0.2.8:1":            false,
		"[2001:db8::5]:443":      true,
		"[2001:db9::5]:443":      false,
		"[::1]:5":                true,
		"[::ffff:10.0.0.1]:5":    true, // IPv4-mapped: matched as IPv4
		"[fe80::1%eth0]:5":       false,
		"@":                      true,
		"":                       true,
		"/run/portico.sock":      true,
		"garbage":                false,
		"1.2.3.4:5:6":            false,
		"[2001:db8::5%lo]:443":   true, // the zone does not matter
		"10.1.2.3:notaport":      false,
		"[2001:db8::5]:notaport": false,
	} {
		if got := m.Trusted(peer); got != want {
			t.Errorf("Trusted(%q) = %v, want %v", peer, got, want)
		}
	}
	var none *Matcher
	if none.Trusted("127.0.0.1:1") || none.Trusted("@") || !none.Empty() {
		t.Error("the nil Matcher trusts someone")
	}
	if noUnix := mustTrust(t, "127.0.0.1"); noUnix.Trusted("@") {
		t.Error("a unix peer is trusted without \"unix\"")
	}
	if all := mustTrust(t, "*"); !all.Trusted("203.0.113.9:1") || !all.Trusted("@") {
		t.Error("* does not trust everyone")
	}
	if !m.TrustedAddr(&net.TCPAddr{IP: net.ParseIP("10.9.9.9"), Port: 1}) || m.TrustedAddr(&net.TCPAddr{IP: net.ParseIP("11.9.9.9")}) {
		t.Error("TrustedAddr on TCP addresses")
	}
	if !m.TrustedAddr(&net.UnixAddr{Name: "@", Net: "unix"}) || mustTrust(t).TrustedAddr(&net.UnixAddr{Name: "@", Net: "unix"}) {
		t.Error("TrustedAddr on a unix peer")
	}
}

// seen is what the handler after the middleware saw.
type seen struct {
	Remote, Host, Peer, Scheme, OriginScheme, ForwardedFor string
	Header                                                 http.Header
}

func run(t *testing.T, opt Options, peer string, tlsOn bool, header map[string][]string) seen {
	t.Helper()
	var s seen
	h := New(opt)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s = seen{Remote: r.RemoteAddr, Host: r.Host, Peer: Peer(r), Scheme: Scheme(r), ForwardedFor: ForwardedFor(r), Header: r.Header}
		if o := uwsgi.OriginFrom(r.Context()); o != nil {
			s.OriginScheme = o.Scheme
		}
	}))
	r := httptest.NewRequest("GET", "/", nil)
	r.Host = "portico.test"
	r.RemoteAddr = peer
	if tlsOn {
		r.TLS = &tls.ConnectionState{}
	}
	for k, v := range header {
		r.Header[http.CanonicalHeaderKey(k)] = v
	}
	h.ServeHTTP(httptest.NewRecorder(), r)
	return s
}

func TestMiddleware(t *testing.T) {
	trusted := Options{Trusted: mustTrust(t, "10.0.0.0/8", "2001:db8:1::/48", "unix")}
	type H = map[string][]string
	tests := []struct {
		name   string
		opt    Options
		peer   string
		tls    bool
		header H
		// want
		remote, host, scheme, originScheme, fwdFor string
		kept                                       []string // headers that must still be there
		gone                                       []string // headers that must be gone
	}{
		{
			name: "zero options strip everything", peer: "10.0.0.1:1000",
			header: H{"X-Forwarded-For": {"1.2.3.4"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"evil"},
				"X-Forwarded-Port": {"1"}, "X-Real-Ip": {"1.2.3.4"}, "Forwarded": {"for=1.2.3.4"}},
			remote: "10.0.0.1:1000", host: "portico.test", scheme: "http", fwdFor: "10.0.0.1",
			gone: []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port", "X-Real-Ip", "Forwarded"},
		},
		{
			name: "untrusted peer is stripped", opt: trusted, peer: "203.0.113.5:1000",
			header: H{"X-Forwarded-For": {"1.2.3.4"}, "X-Forwarded-Proto": {"https"}, "X-Real-Ip": {"1.2.3.4"}},
			remote: "203.0.113.5:1000", host: "portico.test", scheme: "http", fwdFor: "203.0.113.5",
			gone: []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Real-Ip"},
		},
		{
			name: "trusted peer, one hop", opt: trusted, peer: "10.0.0.1:1000",
			header: H{"X-Forwarded-For": {"198.51.100.7"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"shop.example.com"}},
			remote: "198.51.100.7", host: "shop.example.com", scheme: "https", originScheme: "https",
			fwdFor: "198.51.100.7, 10.0.0.1", kept: []string{"X-Forwarded-For", "X-Forwarded-Proto"},
		},
		{
			name: "chain: skip trusted hops from the right", opt: trusted, peer: "10.0.0.1:1000",
			header: H{"X-Forwarded-For": {"6.6.6.6, 198.51.100.7, 10.2.2.2", "10.3.3.3"}},
			remote: "198.51.100.7", host: "portico.test", scheme: "http",
			fwdFor: "6.6.6.6, 198.51.100.7, 10.2.2.2, 10.3.3.3, 10.0.0.1",
		},
		{
			name: "all hops trusted: the leftmost", opt: trusted, peer: "10.0.0.1:1000",
			header: H{"X-Forwarded-For": {"10.9.9.9,10.2.2.2"}},
			remote: "10.9.9.9", host: "portico.test", scheme: "http", fwdFor: "10.9.9.9,10.2.2.2, 10.0.0.1",
		},
		{
			name: "IPv6 in X-Forwarded-For", opt: trusted, peer: "[2001:db8:1::2]:443",
			header: H{"X-Forwarded-For": {"2001:db8:2::9, [2001:db8:1::7]:5555"}},
			remote: "2001:db8:2::9", host: "portico.test", scheme: "http", fwdFor: "2001:db8:2::9, [2001:db8:1::7]:5555, 2001:db8:1::2",
		},
		{
			name: "IPv4 with a port", opt: trusted, peer: "10.0.0.1:1000",
			header: H{"X-Forwarded-For": {"198.51.100.7:4711"}},
			remote: "198.51.100.7:4711", host: "portico.test", scheme: "http", fwdFor: "198.51.100.7:4711, 10.0.0.1",
		},
		{
			name: "garbage on the right: the client is unknown", opt: trusted, peer: "10.0.0.1:1000",
			header: H{"X-Forwarded-For": {"198.51.100.7, not-an-ip"}},
			remote: "10.0.0.1:1000", host: "portico.test", scheme: "http", fwdFor: "198.51.100.7, not-an-ip, 10.0.0.1",
		},
		{
			name: "garbage left of the client is never read", opt: trusted, peer: "10.0.0.1:1000",
			header: H{"X-Forwarded-For": {"<script>, 198.51.100.7"}},
			remote: "198.51.100.7", host: "portico.test", scheme: "http", fwdFor: "<script>, 198.51.100.7, 10.0.0.1",
		},
		{
			name: "bad proto and host are ignored", opt: trusted, peer: "10.0.0.1:1000",
			header: H{"X-Forwarded-For": {"198.51.100.7"}, "X-Forwarded-Proto": {"gopher"}, "X-Forwarded-Host": {"a b/c"}},
			remote: "198.51.100.7", host: "portico.test", scheme: "http", fwdFor: "198.51.100.7, 10.0.0.1",
		},
		{
			name: "proto list: the last value (the trusted peer's)", opt: trusted, peer: "10.0.0.1:1000",
			header: H{"X-Forwarded-Proto": {"http, https"}},
			remote: "10.0.0.1:1000", host: "portico.test", scheme: "https", originScheme: "https", fwdFor: "10.0.0.1",
		},
		{
			name: "proto http over TLS stays https", opt: trusted, peer: "10.0.0.1:1000", tls: true,
			header: H{"X-Forwarded-Proto": {"http"}},
			remote: "10.0.0.1:1000", host: "portico.test", scheme: "https", originScheme: "https", fwdFor: "10.0.0.1",
		},
		{
			name: "Forwarded wins over X-Forwarded-For", opt: trusted, peer: "10.0.0.1:1000",
			header: H{"Forwarded": {`for=192.0.2.60;proto=https;host=a.example`}, "X-Forwarded-For": {"6.6.6.6"}},
			remote: "192.0.2.60", host: "a.example", scheme: "https", originScheme: "https", fwdFor: "6.6.6.6, 10.0.0.1",
		},
		{
			name: "Forwarded: several elements, quoted IPv6 with port", opt: trusted, peer: "10.0.0.1:1000",
			header: H{"Forwarded": {`for="[2001:db8:cafe::17]:4711";proto=https;host="b.example:8443", for=10.5.5.5;proto=http`}},
			remote: "[2001:db8:cafe::17]:4711", host: "b.example:8443", scheme: "https", originScheme: "https", fwdFor: "10.0.0.1",
		},
		{
			name: "Forwarded: elements over several lines, case-insensitive names", opt: trusted, peer: "10.0.0.1:1000",
			header: H{"Forwarded": {`For=198.51.100.1`, `for="10.4.4.4:80" ; by=10.0.0.1`}},
			remote: "198.51.100.1", host: "portico.test", scheme: "http", fwdFor: "10.0.0.1",
		},
		{
			name: "Forwarded: obfuscated identifier is not an address", opt: trusted, peer: "10.0.0.1:1000",
			header: H{"Forwarded": {`for=198.51.100.1, for=_hidden;proto=https`}},
			remote: "10.0.0.1:1000", host: "portico.test", scheme: "https", originScheme: "https", fwdFor: "10.0.0.1",
		},
		{
			name: "Forwarded: unknown is not an address", opt: trusted, peer: "10.0.0.1:1000",
			header: H{"Forwarded": {`for=unknown`}},
			remote: "10.0.0.1:1000", host: "portico.test", scheme: "http", fwdFor: "10.0.0.1",
		},
		{
			name: "Forwarded: obfuscated port is dropped", opt: trusted, peer: "10.0.0.1:1000",
			header: H{"Forwarded": {`for="198.51.100.1:_p1"`}},
			remote: "198.51.100.1", host: "portico.test", scheme: "http", fwdFor: "10.0.0.1",
		},
		{
			name: "Forwarded: malformed is believed in nothing", opt: trusted, peer: "10.0.0.1:1000",
			header: H{"Forwarded": {`for="198.51.100.1;proto=https`}},
			remote: "10.0.0.1:1000", host: "portico.test", scheme: "http", fwdFor: "10.0.0.1",
		},
		{
			name: "Forwarded: unbracketed IPv6 is refused", opt: trusted, peer: "10.0.0.1:1000",
			header: H{"Forwarded": {`for="2001:db8::1"`}},
			remote: "10.0.0.1:1000", host: "portico.test", scheme: "http", fwdFor: "10.0.0.1",
		},
		{
			name: "unix peer trusted with \"unix\"", opt: trusted, peer: "@",
			header: H{"X-Forwarded-For": {"198.51.100.7"}, "X-Forwarded-Proto": {"https"}},
			remote: "198.51.100.7", host: "portico.test", scheme: "https", originScheme: "https", fwdFor: "198.51.100.7",
		},
		{
			name: "unix peer not trusted without \"unix\"", opt: Options{Trusted: mustTrust(t, "10.0.0.0/8")}, peer: "@",
			header: H{"X-Forwarded-For": {"198.51.100.7"}},
			remote: "@", host: "portico.test", scheme: "http", fwdFor: "", gone: []string{"X-Forwarded-For"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := run(t, tt.opt, tt.peer, tt.tls, tt.header)
			got := []string{s.Remote, s.Host, s.Scheme, s.OriginScheme, s.ForwardedFor, s.Peer}
			want := []string{tt.remote, tt.host, tt.scheme, tt.originScheme, tt.fwdFor, tt.peer}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("[remote host scheme origin.scheme forwardedFor peer]\n got %q\nwant %q", got, want)
			}
			for _, k := range tt.kept {
				if s.Header.Get(k) == "" {
					t.Errorf("%s was deleted", k)
				}
			}
			for _, k := range tt.gone {
				if _, ok := s.Header[k]; ok {
					t.Errorf("%s reached the handler: %q", k, s.Header[k])
				}
			}
		})
	}
}

// A request from Portico's uwsgi listener carries an Origin: nginx decided
// who the client is, and the middleware leaves it alone.
func TestMiddlewareLeavesUWSGIRequests(t *testing.T) {
	var got *http.Request
	h := New(Options{})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r }))
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "198.51.100.7:5"
	r.Header.Set("X-Forwarded-For", "1.2.3.4")
	r = r.WithContext(uwsgi.WithOrigin(context.Background(), &uwsgi.Origin{Scheme: "https", RemoteAddr: "198.51.100.7"}))
	h.ServeHTTP(httptest.NewRecorder(), r)
	if got != r || got.Header.Get("X-Forwarded-For") != "1.2.3.4" || Scheme(got) != "https" {
		t.Errorf("uwsgi request changed: remote %q XFF %q scheme %q", got.RemoteAddr, got.Header.Get("X-Forwarded-For"), Scheme(got))
	}
}

// The middleware costs nothing for the common request: no forwarding
// header, nobody trusted.
func TestMiddlewareAllocs(t *testing.T) {
	h := New(Options{Trusted: mustTrust(t, "10.0.0.0/8")})(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "203.0.113.1:5"
	w := httptest.NewRecorder()
	if n := testing.AllocsPerRun(100, func() { h.ServeHTTP(w, r) }); n != 0 {
		t.Errorf("%v allocations per request, want 0", n)
	}
}

func FuzzForwarded(f *testing.F) {
	for _, s := range []string{`for=192.0.2.60;proto=http;by=203.0.113.43`, `for="[2001:db8:cafe::17]:4711"`, `for=unknown, for=_x`, `;;,,`, `for="\"`} {
		f.Add(s)
	}
	m := &Matcher{unix: true}
	f.Fuzz(func(t *testing.T, v string) {
		fw := parseForwarded([]string{v}, m)
		if fw.client != "" && !m.Trusted(fw.client) {
			if _, _, ok := parseHostPort(fw.client); !ok {
				t.Fatalf("client %q is not an address", fw.client)
			}
		}
		if fw.proto != "" && fw.proto != "http" && fw.proto != "https" {
			t.Fatalf("proto %q", fw.proto)
		}
	})
}
