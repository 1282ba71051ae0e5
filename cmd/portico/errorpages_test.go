//go:build linux

package main

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestErrorPages: a site's error_pages replace Portico's own answers —
// a static 404, 413, 429, 502, 503, 504 — with the page, keeping the
// status (and Retry-After); intercept_errors replaces the app's own
// answers too, and only there; a status with no page keeps the plain
// answer; a page that cannot be served leaves the plain answer and one
// log record.
func TestErrorPages(t *testing.T) {
	python := needPython(t)
	dir := t.TempDir()
	writeFile(t, dir, "errors/404.html", "<h1>custom 404 page</h1>\n")
	writeFile(t, dir, "errors/413.html", "<h1>custom 413 page</h1>\n")
	writeFile(t, dir, "errors/429.html", "<h1>custom 429 page</h1>\n")
	writeFile(t, dir, "errors/5xx.html", "<h1>custom 5xx page</h1>\n")
	writeFile(t, dir, "files/here.txt", "here\n")
	// A port nothing listens on: the proxy's 502.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	app := repoPath(t, "cmd/portico/testdata/shape_app.py")
	cfg := writeFile(t, dir, "portico.toml", `
access_log = "off"

[[listener]]
addr = "127.0.0.1:0"

[app.main]
module = "`+app+`"
python = "`+python+`"
workers = 1
timeout = "1s"
grace = "1s"
max_body = "1KiB"

[app.b]
module = "`+app+`"
python = "`+python+`"
workers = 1

[[site]]
hosts = ["default"]
error_pages = { 404 = "/errors/404.html", 413 = "/errors/413.html", 429 = "/errors/429.html", "5xx" = "/errors/5xx.html", 403 = "/errors/missing.html" }

[[site.route]]
path = "/errors"
static = { dir = "errors", internal = true }

[[site.route]]
path = "/files"
static = { dir = "files" }

[[site.route]]
path = "/limited"
respond = { body = "ok" }
limit_req = { rate = "1r/m" }

[[site.route]]
path = "/down"
proxy = { upstreams = ["http://`+dead+`"], retries = 0 }

[[site.route]]
path = "/denied"
respond = { body = "never" }
deny = ["0.0.0.0/0", "::/0"]

[[site.route]]
path = "/b"
app = "b"
intercept_errors = true

[[site.route]]
path = "/"
app = "main"
limit_conn = { max = 1 }
`)
	p := startServe(t, cfg)
	c := newClient(t)
	page := func(path string, status int, want string) *http.Response {
		t.Helper()
		resp, body := get(t, c, p.URL(path))
		wantStatus(t, resp, body, status)
		if !strings.Contains(string(body), want) {
			t.Errorf("GET %s: body %q, want %q", path, body, want)
		}
		return resp
	}

	resp := page("/files/missing.txt", 404, "custom 404 page")
	wantContentType(t, resp, "text/html")
	if resp.Header.Get("Etag") != "" || resp.Header.Get("Last-Modified") != "" {
		t.Errorf("the page's validators leaked: %v", resp.Header)
	}
	page("/files/here.txt", 200, "here")
	page("/errors/404.html", 404, "custom 404 page") // internal: 404 from outside, with the page

	page("/limited", 200, "ok")
	resp = page("/limited", 429, "custom 429 page")
	if resp.Header.Get("Retry-After") == "" {
		t.Errorf("429 page without Retry-After: %v", resp.Header)
	}
	page("/down", 502, "custom 5xx page")

	req, _ := http.NewRequest(http.MethodPost, p.URL("/upload"), strings.NewReader(strings.Repeat("x", 4096)))
	resp, body := do(t, c, req)
	wantStatus(t, resp, body, 413)
	if !strings.Contains(string(body), "custom 413 page") {
		t.Errorf("413: %q", body)
	}

	// 504 (the app interrupted at its timeout), and meanwhile a 503 (a
	// second request in progress past the route's limit_conn).
	done := make(chan *http.Response, 1)
	go func() {
		resp, _ := get(t, c, p.URL("/sleep"))
		done <- resp
	}()
	p.waitLog(t, "sleeping now", 10*time.Second)
	page("/queued", 503, "custom 5xx page")
	if resp := <-done; resp.StatusCode != 504 {
		t.Errorf("/sleep: %d, want 504", resp.StatusCode)
	}
	page("/sleep-again-not", 200, "/sleep-again-not")

	// Without intercept_errors the app's own answers pass; with it, a
	// status that has a page gets the page, and one that has none passes.
	resp = page("/status/404", 404, "app says 404")
	if resp.Header.Get("X-From-App") != "yes" {
		t.Errorf("the app's own 404 lost its headers: %v", resp.Header)
	}
	resp = page("/b/status/404", 404, "custom 404 page")
	if resp.Header.Get("X-From-App") != "" {
		t.Errorf("an intercepted answer kept the app's headers: %v", resp.Header)
	}
	page("/b/status/503", 503, "custom 5xx page")
	page("/b/status/418", 418, "app says 418")
	page("/b/status/200", 200, "app says 200")

	// HEAD gets the page's head.
	hreq, _ := http.NewRequest(http.MethodHead, p.URL("/files/missing.txt"), nil)
	resp, body = do(t, c, hreq)
	wantStatus(t, resp, body, 404)
	if len(body) != 0 || resp.ContentLength != int64(len("<h1>custom 404 page</h1>\n")) {
		t.Errorf("HEAD: body %q, Content-Length %d", body, resp.ContentLength)
	}

	// A page that is missing: the plain answer, and the log says why.
	resp, body = get(t, c, p.URL("/denied"))
	wantStatus(t, resp, body, 403)
	if !strings.Contains(string(body), "403 forbidden") {
		t.Errorf("403 without a page: %q", body)
	}
	p.waitLog(t, "error page not served", 5*time.Second)
}
