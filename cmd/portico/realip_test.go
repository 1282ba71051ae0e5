//go:build linux

// End-to-end tests of the trust boundary: forwarding headers from trusted
// and untrusted peers, and PROXY protocol listeners, as the WSGI app and
// the access log see them.

package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// environApp answers with the environ variables the trust boundary sets.
const environApp = `import json

KEYS = ["REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "HTTPS", "HTTP_HOST",
        "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_REAL_IP", "HTTP_FORWARDED"]

def application(environ, start_response):
    body = json.dumps({k: environ.get(k) for k in KEYS}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
`

type environ map[string]*string

func (e environ) get(k string) string {
	if v := e[k]; v != nil {
		return *v
	}
	return "<absent>"
}

func getEnviron(t *testing.T, url string, header map[string]string) environ {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, body := do(t, newClient(t), req)
	wantStatus(t, resp, body, http.StatusOK)
	var e environ
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return e
}

func wantEnviron(t *testing.T, e environ, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := e.get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

func TestForwardedHeaders(t *testing.T) {
	python := needPython(t)
	app := writeFile(t, t.TempDir(), "envapp.py", environApp)
	spoof := map[string]string{
		"X-Forwarded-For":   "203.0.113.66",
		"X-Forwarded-Proto": "https",
		"X-Real-IP":         "203.0.113.66",
		"Forwarded":         "for=203.0.113.66",
	}

	t.Run("untrusted client: spoofed headers are stripped", func(t *testing.T) {
		p := startPortico(t, "--python", python, "--workers", "1", app)
		e := getEnviron(t, p.URL("/"), spoof)
		wantEnviron(t, e, map[string]string{
			"REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "HTTPS": "<absent>",
			"HTTP_X_FORWARDED_FOR": "<absent>", "HTTP_X_FORWARDED_PROTO": "<absent>", "HTTP_X_REAL_IP": "<absent>", "HTTP_FORWARDED": "<absent>",
		})
	})

	t.Run("trusted proxy: the forwarded client", func(t *testing.T) {
		p := startPortico(t, "--python", python, "--workers", "1", "--forwarded-allow-ips", "127.0.0.1/32", app)
		e := getEnviron(t, p.URL("/"), map[string]string{
			"X-Forwarded-For":   "203.0.113.66, 198.51.100.7",
			"X-Forwarded-Proto": "https",
			"X-Forwarded-Host":  "shop.example.com",
		})
		wantEnviron(t, e, map[string]string{
			"REMOTE_ADDR": "198.51.100.7", "REMOTE_PORT": "<absent>", "wsgi.url_scheme": "https", "HTTPS": "on",
			"HTTP_HOST": "shop.example.com", "HTTP_X_FORWARDED_FOR": "203.0.113.66, 198.51.100.7",
		})
		p.waitLog(t, `198.51.100.7 - - [`, 5*time.Second)
	})

	t.Run("trusted proxy in the config file: Forwarded", func(t *testing.T) {
		dir := t.TempDir()
		cfg := writeFile(t, dir, "portico.toml", fmt.Sprintf(`
trusted_proxies = ["127.0.0.0/8"]
[[listener]]
addr = "127.0.0.1:0"
[app.env]
module = %q
python = %q
workers = 1
[[site]]
hosts = ["default"]
[[site.route]]
path = "/"
app = "env"
`, app, python))
		p := startServe(t, cfg)
		e := getEnviron(t, p.URL("/"), map[string]string{"Forwarded": `for="[2001:db8::17]:4711";proto=https`})
		wantEnviron(t, e, map[string]string{"REMOTE_ADDR": "2001:db8::17", "REMOTE_PORT": "4711", "wsgi.url_scheme": "https"})
	})
}

func TestProxyProtocolListener(t *testing.T) {
	python := needPython(t)
	dir := t.TempDir()
	app := writeFile(t, dir, "envapp.py", environApp)
	cfg := writeFile(t, dir, "portico.toml", fmt.Sprintf(`
trusted_proxies = ["127.0.0.1"]
[[listener]]
addr = "127.0.0.1:0"
proxy_protocol = true
[app.env]
module = %q
python = %q
workers = 1
[[site]]
hosts = ["default"]
[[site.route]]
path = "/"
app = "env"
`, filepath.Base(app), python))
	p := startServe(t, cfg)

	v2 := func(src, dst netip.AddrPort) []byte {
		b := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c")
		b = append(b, src.Addr().AsSlice()...)
		b = append(b, dst.Addr().AsSlice()...)
		b = binary.BigEndian.AppendUint16(b, src.Port())
		return binary.BigEndian.AppendUint16(b, dst.Port())
	}
	for _, tt := range []struct {
		name       string
		header     []byte
		addr, port string
	}{
		{"v1", []byte("PROXY TCP4 192.0.2.10 192.0.2.1 4711 443\r\n"), "192.0.2.10", "4711"},
		{"v2", v2(netip.MustParseAddrPort("198.51.100.20:5000"), netip.MustParseAddrPort("192.0.2.1:443")), "198.51.100.20", "5000"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", p.HTTPAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			req := "GET /" + tt.name + " HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.66\r\n\r\n"
			if _, err := c.Write(append(tt.header, req...)); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e environ
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("%v: %s", err, body)
			}
			// The header's client is not a trusted proxy: its own
			// X-Forwarded-For is stripped.
			wantEnviron(t, e, map[string]string{"REMOTE_ADDR": tt.addr, "REMOTE_PORT": tt.port, "HTTP_X_FORWARDED_FOR": "<absent>"})
			p.waitLog(t, tt.addr+` - - [`, 5*time.Second)
			if !strings.Contains(p.Log(), `"GET /`+tt.name+` HTTP/1.1"`) {
				t.Errorf("no access log line for /%s", tt.name)
			}
		})
	}

	t.Run("missing header: closed", func(t *testing.T) {
		c, err := net.Dial("tcp", p.HTTPAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if got, _ := io.ReadAll(c); len(got) != 0 {
			t.Errorf("got %q, want the connection closed", got)
		}
		p.waitLog(t, "broken PROXY protocol header", 5*time.Second)
	})
}
