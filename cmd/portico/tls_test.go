//go:build linux

// End-to-end tests of TLS at hand: portico run --tls-cert/--tls-key, and
// a listener's redirect_https.

package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// httpsClient trusts ca only; it speaks HTTP/2 when the server offers it
// and follows redirects when follow is set.
func httpsClient(t *testing.T, ca *x509.Certificate, follow bool) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	if !follow {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return c
}

// TestRunTLS: portico run --tls-cert --tls-key serves HTTPS on every --bind
// listener, HTTP/2 and HTTP/1.1 by ALPN, and the app sees https.
func TestRunTLS(t *testing.T) {
	python := needPython(t)
	dir := t.TempDir()
	cert := writeCert(t, dir, 1)
	p := startCommand(t, "run", "--bind", "127.0.0.1:0", "--bind", "127.0.0.1:0", "--python", python, "--workers", "1",
		"--tls-cert", filepath.Join(dir, "cert.pem"), "--tls-key", filepath.Join(dir, "key.pem"),
		repoPath(t, "internal/worker/testdata/pep3333.py")+":app")
	var addrs []string
	for _, line := range p.log.snapshot() {
		if kv := logfmt(line); kv["msg"] == "listening" {
			if kv["proto"] != "https" {
				t.Errorf("a --bind listener with --tls-cert: %s, want proto=https", line)
			}
			addrs = append(addrs, kv["addr"])
		}
	}
	if len(addrs) != 2 {
		t.Fatalf("listening on %q, want two https listeners", addrs)
	}
	for _, addr := range addrs {
		resp, body := get(t, httpsClient(t, cert, false), "https://"+addr+"/env")
		wantStatus(t, resp, body, http.StatusOK)
		if resp.Proto != "HTTP/2.0" {
			t.Errorf("%s: protocol %s, want HTTP/2.0", addr, resp.Proto)
		}
		var env map[string]any
		if err := json.Unmarshal(body, &env); err != nil || env["wsgi.url_scheme"] != "https" {
			t.Errorf("%s: environ over TLS: %v wsgi.url_scheme=%v", addr, err, env["wsgi.url_scheme"])
		}
	}
	// HTTP/1.1 when the client offers only that.
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	t.Cleanup(h1.CloseIdleConnections)
	resp, body := get(t, h1, "https://"+addrs[0]+"/env")
	wantStatus(t, resp, body, http.StatusOK)
	if resp.Proto != "HTTP/1.1" {
		t.Errorf("protocol %s, want HTTP/1.1", resp.Proto)
	}
	// Plain HTTP on the TLS port is not served.
	if resp, err := newClient(t).Get("http://" + addrs[0] + "/env"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP on the TLS listener got 200")
		}
	}
}

// TestRedirectHTTPS: a listener with redirect_https answers 308 to the
// HTTPS listener's port with the host name and the request URI, for a GET
// and a POST, without a route; a client following it reaches the app over
// HTTPS and keeps the POST and its body.
func TestRedirectHTTPS(t *testing.T) {
	python := needPython(t)
	dir := t.TempDir()
	cert := writeCert(t, dir, 1)
	text := `
access_log = "off"
[[listener]]
addr = "127.0.0.1:0"
redirect_https = true
[[listener]]
addr = "127.0.0.1:0"
tls = { cert = "cert.pem", key = "key.pem" }
[app.shop]
module = "` + repoPath(t, "internal/worker/testdata/pep3333.py") + `:app"
python = "` + python + `"
workers = 1
[[site]]
hosts = ["default"]
[[site.route]]
path = "/shop"
app = "shop"
`
	cfg := writeFile(t, dir, "portico.toml", text)
	p := startServe(t, cfg)
	_, httpsPort, err := net.SplitHostPort(p.HTTPSAddr)
	if err != nil {
		t.Fatalf("https listener %q: %v", p.HTTPSAddr, err)
	}
	c := newClient(t)

	req, _ := http.NewRequest(http.MethodGet, p.URL("/no/route/here?a=1&b=%2F"), nil)
	req.Host = "example.com:8080"
	resp, body := do(t, c, req)
	wantStatus(t, resp, body, http.StatusPermanentRedirect)
	if got, want := resp.Header.Get("Location"), "https://example.com:"+httpsPort+"/no/route/here?a=1&b=%2F"; got != want {
		t.Errorf("GET Location %q, want %q", got, want)
	}
	if len(body) > 200 {
		t.Errorf("redirect body of %d bytes, want a short one", len(body))
	}

	req, _ = http.NewRequest(http.MethodPost, p.URL("/shop/echo?x=y"), strings.NewReader("a=b"))
	req.Host = "localhost"
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, _ = do(t, c, req)
	wantStatus(t, resp, nil, http.StatusPermanentRedirect)
	if got, want := resp.Header.Get("Location"), "https://localhost:"+httpsPort+"/shop/echo?x=y"; got != want {
		t.Errorf("POST Location %q, want %q", got, want)
	}

	// Followed by a client: the POST arrives over HTTPS with its body.
	req, _ = http.NewRequest(http.MethodPost, p.URL("/shop/env?x=y"), strings.NewReader("a=b"))
	req.Host = "localhost:" + strings.TrimPrefix(p.HTTPAddr, "127.0.0.1:")
	resp, body = do(t, httpsClient(t, cert, true), req)
	wantStatus(t, resp, body, http.StatusOK)
	var env map[string]any
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("followed redirect: %v: %s", err, body)
	}
	if env["REQUEST_METHOD"] != "POST" || env["wsgi.url_scheme"] != "https" || env["QUERY_STRING"] != "x=y" || env["CONTENT_LENGTH"] != "3" {
		t.Errorf("after the redirect the app saw %v %v %v CONTENT_LENGTH=%v; want POST https x=y 3",
			env["REQUEST_METHOD"], env["wsgi.url_scheme"], env["QUERY_STRING"], env["CONTENT_LENGTH"])
	}
	if resp.Proto != "HTTP/2.0" {
		t.Errorf("followed redirect over %s, want HTTP/2.0", resp.Proto)
	}

	// A reload turns the redirect off on the same socket.
	writeFile(t, dir, "portico.toml", strings.Replace(text, "redirect_https = true", "redirect_https = false", 1))
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "msg=reloaded", readyTimeout)
	resp, body = get(t, c, p.URL("/shop/env"))
	wantStatus(t, resp, body, http.StatusOK)
}
