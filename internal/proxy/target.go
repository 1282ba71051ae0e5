package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Protocol families of upstream URLs: one per route.
const (
	FamilyHTTP    = "http"
	FamilyUWSGI   = "uwsgi"
	FamilyFastCGI = "fastcgi"
)

// Target is a parsed upstream URL.
type Target struct {
	// Family is FamilyHTTP, FamilyUWSGI or FamilyFastCGI.
	Family string
	// Network is "tcp" or "unix".
	Network string
	// Address is host:port, or the socket path.
	Address string
	// TLS is set for https://.
	TLS bool
	// URL is what outgoing requests' URLs get: scheme and host
	// ("http://localhost" for a unix socket).
	URL *url.URL
}

// ParseTarget parses an upstream URL: http://host:port, https://host:port,
// http+unix:///path, uwsgi://host:port, uwsgi+unix:///path,
// fastcgi://host:port or fastcgi+unix:///path. A host:port without a port
// gets 80 (http), 443 (https); uwsgi and fastcgi need one. No path, query
// or user info is allowed: a route's path goes to the upstream as is.
func ParseTarget(s string) (Target, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Target{}, fmt.Errorf("%q is not a URL: %w", s, err)
	}
	scheme, unix := strings.CutSuffix(u.Scheme, "+unix")
	t := Target{Network: "tcp"}
	switch scheme {
	case "http", "https":
		t.Family, t.TLS = FamilyHTTP, scheme == "https"
	case "uwsgi":
		t.Family = FamilyUWSGI
	case "fastcgi":
		t.Family = FamilyFastCGI
	default:
		return Target{}, fmt.Errorf("%q: scheme %q is not http, https, http+unix, uwsgi, uwsgi+unix, fastcgi or fastcgi+unix", s, u.Scheme)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return Target{}, fmt.Errorf("%q: an upstream URL has no user, query or fragment", s)
	}
	if unix {
		if t.TLS {
			return Target{}, fmt.Errorf("%q: https over a unix socket is not supported", s)
		}
		if u.Host != "" || u.Path == "" || !strings.HasPrefix(u.Path, "/") {
			return Target{}, fmt.Errorf("%q: want %s+unix:///absolute/path.sock", s, scheme)
		}
		t.Network, t.Address = "unix", u.Path
		t.URL = &url.URL{Scheme: "http", Host: "localhost"}
		return t, nil
	}
	if u.Host == "" {
		return Target{}, fmt.Errorf("%q: no host", s)
	}
	if u.Path != "" && u.Path != "/" {
		return Target{}, fmt.Errorf("%q: an upstream URL has no path (the request's path is sent as it came)", s)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		switch {
		case scheme == "http":
			host, port = u.Hostname(), "80"
		case scheme == "https":
			host, port = u.Hostname(), "443"
		default:
			return Target{}, fmt.Errorf("%q: no port", s)
		}
	}
	if host == "" {
		return Target{}, fmt.Errorf("%q: no host", s)
	}
	t.Address = net.JoinHostPort(host, port)
	httpScheme := "http"
	if t.TLS {
		httpScheme = "https"
	}
	t.URL = &url.URL{Scheme: httpScheme, Host: u.Host}
	return t, nil
}

// NewHTTPTransport returns the transport of one HTTP upstream, with its own
// keep-alive pool, dialling only t's address: the host name is resolved at
// each new connection, so a DNS change is followed as the records' TTL
// lets the resolver see it. Plain HTTP (TCP or a unix socket) gets
// H1Transport; HTTPS gets net/http's Transport (no proxy from the
// environment, no transparent decompression: Accept-Encoding and the
// encoded body pass through).
func NewHTTPTransport(t Target, connectTimeout time.Duration) http.RoundTripper {
	if connectTimeout <= 0 {
		connectTimeout = 5 * time.Second
	}
	d := &net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}
	if !t.TLS {
		return &H1Transport{Dial: func(ctx context.Context) (net.Conn, error) {
			return d.DialContext(ctx, t.Network, t.Address)
		}}
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, t.Network, t.Address)
		},
		// nginx's upstream keepalive is per worker process and typically
		// 16-64; one Portico process serves every connection, so more.
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       60 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		Proxy:                 nil,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
	host, _, _ := net.SplitHostPort(t.Address)
	tr.TLSClientConfig = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	tr.TLSHandshakeTimeout = connectTimeout
	return tr
}
