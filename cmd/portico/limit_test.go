//go:build linux

// End-to-end tests of the limits: limit_req on a route and on a site,
// per-address connection limits at accept, and portico run's flags.

package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// wantLimited checks a 429 with a Retry-After between lo and hi seconds.
func wantLimited(t *testing.T, resp *http.Response, body []byte, lo, hi int) {
	t.Helper()
	wantStatus(t, resp, body, http.StatusTooManyRequests)
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || ra < lo || ra > hi {
		t.Fatalf("Retry-After %q, want %d to %d seconds", resp.Header.Get("Retry-After"), lo, hi)
	}
}

func getHost(t *testing.T, c *http.Client, url, host string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return do(t, c, req)
}

// TestLimitReq: portico serve with a route limited per API key and a site
// limited per client address, across its routes; the refusals are
// counted in the metrics.
func TestLimitReq(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "portico.toml", `
[admin]
addr = "127.0.0.1:0"

[[listener]]
addr = "127.0.0.1:0"

[[site]]
hosts = ["default"]

[[site.route]]
path = "/api"
name = "api"
respond = { body = "api\n" }
limit_req = { rate = "1r/m", key = "header:X-Api-Key" }

[[site.route]]
path = "/"
respond = { body = "free\n" }

[[site]]
hosts = ["limited.test"]
limit_req = { rate = "2r/m", burst = 1 }

[[site.route]]
path = "/a"
respond = { body = "a\n" }

[[site.route]]
path = "/b"
respond = { body = "b\n" }
`)
	p := startServe(t, cfg)
	c := newClient(t)

	key := map[string]string{"X-Api-Key": "k1"}
	resp, body := getHost(t, c, p.URL("/api"), "x", key)
	wantStatus(t, resp, body, http.StatusOK)
	resp, body = getHost(t, c, p.URL("/api"), "x", key)
	wantLimited(t, resp, body, 59, 60)
	resp, body = getHost(t, c, p.URL("/api"), "x", map[string]string{"X-Api-Key": "k2"})
	wantStatus(t, resp, body, http.StatusOK)
	for range 3 {
		resp, body = getHost(t, c, p.URL("/"), "x", key) // another route, no limit
		wantStatus(t, resp, body, http.StatusOK)
	}

	// The site's budget: burst+1 = 2 requests at once, across its routes.
	resp, body = getHost(t, c, p.URL("/a"), "limited.test", nil)
	wantStatus(t, resp, body, http.StatusOK)
	resp, body = getHost(t, c, p.URL("/b"), "limited.test", nil)
	wantStatus(t, resp, body, http.StatusOK)
	resp, body = getHost(t, c, p.URL("/a"), "limited.test", nil)
	wantLimited(t, resp, body, 29, 30)
	resp, body = getHost(t, c, p.URL("/b"), "limited.test", nil)
	wantLimited(t, resp, body, 29, 30)

	s := scrapeMetrics(t, c, p.adminAddr(t))
	for _, m := range []struct {
		site, route, limit string
		want               float64
	}{
		{"default", "api", "route.limit_req", 1},
		{"limited.test", "0", "site.limit_req", 1},
		{"limited.test", "1", "site.limit_req", 1},
	} {
		if got := s.value(t, "portico_limit_rejected_total", "site", m.site, "route", m.route, "limit", m.limit); got != m.want {
			t.Errorf("portico_limit_rejected_total{%s %s %s} = %v, want %v", m.site, m.route, m.limit, got, m.want)
		}
	}
	p.waitLog(t, "request refused by a limit", 5*time.Second)
}

// rawGet sends a GET on c and reports whether a response came back
// (false: the connection was closed or reset without one).
func rawGet(t *testing.T, c net.Conn, br *bufio.Reader) bool {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return false
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("want a response or a refusal, got %v", err)
		}
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// TestLimitConnListener: with limit_conn = 2 on the listener, a third
// connection from the address is closed at once while the first two are
// served, and a connection after one closed is served.
func TestLimitConnListener(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "portico.toml", `
trusted_proxies = ["127.0.0.1"]

[[listener]]
addr = "127.0.0.1:0"
limit_conn = 2

[[listener]]
addr = "127.0.0.1:0"
proxy_protocol = true
max_connections = 1

[[site]]
hosts = ["default"]

[[site.route]]
path = "/"
respond = { body = "ok\n" }
`)
	p := startServe(t, cfg)
	var proxyAddr string
	for _, line := range p.log.snapshot() {
		if kv := logfmt(line); kv["msg"] == "listening" && kv["proxy_protocol"] == "true" {
			proxyAddr = kv["addr"]
		}
	}
	dialTo := func(addr string) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if errors.Is(err, syscall.ECONNRESET) {
			return nil, nil
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	dial := func() (net.Conn, *bufio.Reader) { return dialTo(p.HTTPAddr) }
	c1, br1 := dial()
	c2, br2 := dial()
	if !rawGet(t, c1, br1) || !rawGet(t, c2, br2) {
		t.Fatal("the first two connections were not served")
	}
	if c3, br3 := dial(); c3 != nil && rawGet(t, c3, br3) {
		t.Fatal("a third connection from the address was served")
	}
	// The two others are still served, on their kept-alive connections.
	if !rawGet(t, c1, br1) || !rawGet(t, c2, br2) {
		t.Fatal("the open connections stopped being served")
	}
	p.waitLog(t, "connection refused by a limit", 5*time.Second)
	c1.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The server notices the close on its next read: until then the
		// place is held and a new connection is refused.
		if c, br := dial(); c != nil && rawGet(t, c, br) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no connection served after one of the two closed")
		}
	}

	// max_connections on a PROXY protocol listener: the limit sits under
	// the PROXY wrapper, whose header still reaches it intact.
	pc, pbr := dialTo(proxyAddr)
	fmt.Fprint(pc, "PROXY TCP4 203.0.113.9 127.0.0.1 4000 80\r\n")
	if !rawGet(t, pc, pbr) {
		t.Fatal("the PROXY protocol connection was not served")
	}
	if c, br := dialTo(proxyAddr); c != nil {
		fmt.Fprint(c, "PROXY TCP4 203.0.113.10 127.0.0.1 4000 80\r\n")
		if rawGet(t, c, br) {
			t.Fatal("a second connection was served past max_connections = 1")
		}
	}
	p.waitLog(t, "203.0.113.9 - - [", 5*time.Second)
}

// TestLimitRunFlags: portico run --limit-req/--limit-burst limit the app
// route and the routes run makes, one budget per client; --limit-conn
// limits connections per address.
func TestLimitRunFlags(t *testing.T) {
	python := needPython(t)
	dir := t.TempDir()
	app := writeFile(t, dir, "hello.py", "def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'hello']\n")
	writeFile(t, dir, "static/s.txt", "static\n")
	p := startPortico(t, "--python", python, "--workers", "1", "--limit-req", "2r/m", "--limit-burst", "2", "--limit-conn", "1",
		"--static", "/static="+dir+"/static", app)
	tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for _, path := range []string{"/", "/static/s.txt", "/"} {
		resp, body := get(t, c, p.URL(path))
		wantStatus(t, resp, body, http.StatusOK)
	}
	resp, body := get(t, c, p.URL("/static/s.txt"))
	wantLimited(t, resp, body, 29, 30)
	resp, body = get(t, c, p.URL("/"))
	wantLimited(t, resp, body, 29, 30)

	// The client's one kept-alive connection holds the address's only
	// place: another is closed at accept.
	other, err := net.Dial("tcp", p.HTTPAddr)
	if err == nil {
		defer other.Close()
		if rawGet(t, other, bufio.NewReader(other)) {
			t.Fatal("a second connection from the address was served with --limit-conn 1")
		}
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
}

// TestLimitConnReload: a reload changes a listener's limit_conn in place;
// adding limits to a listener that had none is refused until a restart.
func TestLimitConnReload(t *testing.T) {
	dir := t.TempDir()
	conf := func(limitConn int, second string) string {
		return fmt.Sprintf(`
[[listener]]
addr = "127.0.0.1:0"
limit_conn = %d

[[listener]]
addr = "unix:%s/second.sock"
%s

[[site]]
hosts = ["default"]

[[site.route]]
path = "/"
respond = { body = "ok\n" }
`, limitConn, dir, second)
	}
	cfg := writeFile(t, dir, "portico.toml", conf(1, ""))
	p := startServe(t, cfg)
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", p.HTTPAddr)
		if errors.Is(err, syscall.ECONNRESET) {
			return nil, nil
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	c1, br1 := dial()
	if !rawGet(t, c1, br1) {
		t.Fatal("the first connection was not served")
	}
	if c, br := dial(); c != nil && rawGet(t, c, br) {
		t.Fatal("a second connection was served with limit_conn = 1")
	}

	writeFile(t, dir, "portico.toml", conf(2, ""))
	p.Signal(syscall.SIGHUP)
	p.waitLog(t, "msg=reloaded", 30*time.Second)
	c2, br2 := dial()
	if c2 == nil || !rawGet(t, c2, br2) {
		t.Fatal("a second connection was refused after the reload to limit_conn = 2")
	}
	if c, br := dial(); c != nil && rawGet(t, c, br) {
		t.Fatal("a third connection was served with limit_conn = 2")
	}

	writeFile(t, dir, "portico.toml", conf(2, "max_connections = 5"))
	p.Signal(syscall.SIGHUP)
	p.waitLog(t, "limit_conn or max_connections added to the open listener unix:", 30*time.Second)
	if !rawGet(t, c1, br1) || !rawGet(t, c2, br2) {
		t.Fatal("the open connections stopped being served after the refused reload")
	}
}
