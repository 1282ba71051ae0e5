//go:build linux

package main

import (
	"net/url"
	"path/filepath"
	"testing"
)

// TestInternalRedirect: an app answers with X-Accel-Redirect (a URI on an
// internal static route) or X-Sendfile (a path inside a static route's
// directory) and Portico sends the file with the app's headers; the
// internal route is 404 from outside; anything else is a 404, never a file
// outside the static roots.
func TestInternalRedirect(t *testing.T) {
	python := needPython(t)
	dir := t.TempDir()
	writeFile(t, dir, "protected/report.txt", "secret report\n")
	writeFile(t, dir, "public/logo.txt", "logo\n")
	writeFile(t, dir, "elsewhere/passwd.txt", "must never be served\n")
	cfg := writeFile(t, dir, "portico.toml", `
access_log = "off"

[[listener]]
addr = "127.0.0.1:0"

[app.main]
module = "`+repoPath(t, "internal/worker/testdata/pep3333.py")+`:app"
python = "`+python+`"
workers = 1

[[site]]
hosts = ["default"]

[[site.route]]
path = "/protected"
static = { dir = "protected", internal = true }

[[site.route]]
path = "/public"
static = { dir = "public", max_age = "1h" }

[[site.route]]
path = "/"
app = "main"
`)
	p := startServe(t, cfg)
	c := newClient(t)

	resp, body := get(t, c, p.URL("/accel?to=/protected/report.txt"))
	wantStatus(t, resp, body, 200)
	if string(body) != "secret report\n" || resp.Header.Get("Content-Type") != "application/pdf" || resp.Header.Get("X-Other") != "kept" {
		t.Errorf("X-Accel-Redirect: %q, headers %v", body, resp.Header)
	}
	if resp.Header.Get("X-Accel-Redirect") != "" {
		t.Error("X-Accel-Redirect leaked to the client")
	}
	resp, body = get(t, c, p.URL("/protected/report.txt"))
	wantStatus(t, resp, body, 404)

	resp, body = get(t, c, p.URL("/sendfile?path="+url.QueryEscape(filepath.Join(dir, "public/logo.txt"))))
	wantStatus(t, resp, body, 200)
	if string(body) != "logo\n" || resp.Header.Get("Content-Type") != "text/x-sent" {
		t.Errorf("X-Sendfile: %q, headers %v", body, resp.Header)
	}
	for _, bad := range []string{
		"/sendfile?path=" + url.QueryEscape(filepath.Join(dir, "elsewhere/passwd.txt")),
		"/sendfile?path=" + url.QueryEscape(filepath.Join(dir, "public/../elsewhere/passwd.txt")),
		"/accel?to=/public/../elsewhere/passwd.txt",
		"/accel?to=/env",
	} {
		resp, body = get(t, c, p.URL(bad))
		wantStatus(t, resp, body, 404)
	}
	p.waitLog(t, "internal redirect failed", 5e9)
}
