//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const (
	djangoUser     = "admin"
	djangoPassword = "portico-e2e-Pa55word"
)

var csrfInput = regexp.MustCompile(`name="csrfmiddlewaretoken" value="([^"]+)"`)

// TestDjango serves a copy of examples/djangoproject (migrated, static files
// collected, a superuser created) and goes through the admin login, static
// files served by portico, a CSRF-protected multipart upload, JSON views, a
// template page and the WSGI environ Django sees.
func TestDjango(t *testing.T) {
	python := needPython(t, "django")
	dir := filepath.Join(t.TempDir(), "djangoproject")
	copyTree(t, repoPath(t, "examples/djangoproject"), dir, "db.sqlite3", "staticfiles", "__pycache__")
	manage(t, python, dir, "migrate", "--noinput")
	manage(t, python, dir, "collectstatic", "--noinput")
	manage(t, python, dir, "createsuperuser", "--noinput")

	p := startPortico(t,
		"--python", python,
		"--chdir", dir,
		"--static", "/static/="+filepath.Join(dir, "staticfiles"),
		"--workers", "2",
		"--env", "DJANGO_DEBUG=0",
		"mysite.wsgi",
	)

	t.Run("admin login", func(t *testing.T) {
		c := newClient(t)
		resp, body := get(t, c, p.URL("/admin/"))
		wantStatus(t, resp, body, http.StatusFound)
		if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, "/admin/login/") {
			t.Errorf("anonymous /admin/ redirects to %q, want /admin/login/...", loc)
		}

		loginURL := p.URL("/admin/login/?next=/admin/")
		resp, body = get(t, c, loginURL)
		wantStatus(t, resp, body, http.StatusOK)
		wantContentType(t, resp, "text/html")
		if cookie(c, loginURL, "csrftoken") == "" {
			t.Fatalf("no csrftoken cookie after GET %s; Set-Cookie: %q", loginURL, resp.Header.Values("Set-Cookie"))
		}
		token := csrfToken(t, body)

		login := func(password string) (*http.Response, []byte) { return djangoLogin(t, c, loginURL, token, password) }

		resp, body = login("wrong-password")
		wantStatus(t, resp, body, http.StatusOK)
		if !bytes.Contains(body, []byte("Please enter the correct username and password")) {
			t.Errorf("login with a wrong password: no error message in the page")
		}

		resp, body = login(djangoPassword)
		wantStatus(t, resp, body, http.StatusFound)
		if loc := resp.Header.Get("Location"); loc != "/admin/" {
			t.Fatalf("login redirects to %q, want /admin/", loc)
		}
		if cookie(c, loginURL, "sessionid") == "" {
			t.Fatalf("no sessionid cookie after login; Set-Cookie: %q", resp.Header.Values("Set-Cookie"))
		}
		resp, body = get(t, c, p.URL("/admin/"))
		wantStatus(t, resp, body, http.StatusOK)
		if !bytes.Contains(body, []byte("Site administration")) {
			t.Errorf("/admin/ after login does not contain %q:\n%s", "Site administration", truncate(body, 2000))
		}
	})

	t.Run("static", func(t *testing.T) {
		c := newClient(t)
		for _, tc := range []struct {
			path, file, contentType string
		}{
			{"/static/admin/css/base.css", "admin/css/base.css", "text/css"},
			{"/static/admin/js/core.js", "admin/js/core.js", "text/javascript"},
			{"/static/demo/style.css", "demo/style.css", "text/css"},
		} {
			t.Run(tc.file, func(t *testing.T) {
				want, err := os.ReadFile(filepath.Join(dir, "staticfiles", filepath.FromSlash(tc.file)))
				if err != nil {
					t.Fatalf("collectstatic did not produce %s: %v", tc.file, err)
				}
				resp, body := get(t, c, p.URL(tc.path))
				wantStatus(t, resp, body, http.StatusOK)
				if tc.contentType == "text/javascript" {
					// mime tables differ on JavaScript's type; both are right.
					if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, "javascript") {
						t.Errorf("Content-Type %q, want a JavaScript type", ct)
					}
				} else {
					wantContentType(t, resp, tc.contentType)
				}
				if !bytes.Equal(body, want) {
					t.Errorf("body differs from %s (%d bytes, want %d)", tc.file, len(body), len(want))
				}
				staticSemantics(t, c, p.URL(tc.path), filepath.Join(dir, "staticfiles", filepath.FromSlash(tc.file)), want)
			})
		}
		resp, body := get(t, c, p.URL("/static/admin/css/no-such-file.css"))
		wantStatus(t, resp, body, http.StatusNotFound)
	})

	t.Run("upload", func(t *testing.T) {
		c := newClient(t)
		uploadURL := p.URL("/upload")
		resp, body := get(t, c, uploadURL)
		wantStatus(t, resp, body, http.StatusOK)
		token := csrfToken(t, body)

		data, sum := randomData(t, 3<<20)
		post := func(fields []string) (*http.Response, []byte) {
			buf, contentType := multipartBody(t, fields, formFile{field: "file", name: "random.bin", data: data})
			req, err := http.NewRequest(http.MethodPost, uploadURL, buf)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", contentType)
			req.Header.Set("Referer", uploadURL)
			return do(t, c, req)
		}

		resp, body = post(nil)
		wantStatus(t, resp, body, http.StatusForbidden) // no CSRF token: Django refuses

		resp, body = post([]string{"csrfmiddlewaretoken", token})
		wantStatus(t, resp, body, http.StatusOK)
		wantContentType(t, resp, "application/json")
		var got struct {
			Name   string `json:"name"`
			Size   int    `json:"size"`
			SHA256 string `json:"sha256"`
		}
		decodeJSON(t, body, &got)
		if got.Name != "random.bin" || got.Size != len(data) || got.SHA256 != sum {
			t.Errorf("upload answer %+v, want name random.bin, size %d, sha256 %s", got, len(data), sum)
		}
	})

	t.Run("api hello", func(t *testing.T) {
		resp, body := get(t, newClient(t), p.URL("/api/hello"))
		wantStatus(t, resp, body, http.StatusOK)
		wantContentType(t, resp, "application/json")
		var got map[string]any
		decodeJSON(t, body, &got)
		if got["message"] != "Hello from Django" || got["path"] != "/api/hello" || got["method"] != "GET" {
			t.Errorf("/api/hello answered %v", got)
		}
	})

	t.Run("template page", func(t *testing.T) {
		resp, body := get(t, newClient(t), p.URL("/"))
		wantStatus(t, resp, body, http.StatusOK)
		wantContentType(t, resp, "text/html")
		for _, want := range []string{"<h1>Django on Portico</h1>", `href="/static/demo/style.css"`, "Rendered from a template by Django 3."} {
			if !bytes.Contains(body, []byte(want)) {
				t.Errorf("page does not contain %q:\n%s", want, truncate(body, 2000))
			}
		}
	})

	t.Run("environ", func(t *testing.T) {
		resp, body := get(t, newClient(t), p.URL("/env?x=1&y=%C3%A9"))
		wantStatus(t, resp, body, http.StatusOK)
		var got map[string]any
		decodeJSON(t, body, &got)
		want := map[string]any{
			"SCRIPT_NAME":     "",
			"PATH_INFO":       "/env",
			"wsgi.url_scheme": "http",
			"absolute_uri":    p.URL("/env?x=1&y=%C3%A9"),
			"HTTP_HOST":       p.HTTPAddr,
			"REMOTE_ADDR":     "127.0.0.1",
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %#v, want %#v", k, got[k], v)
			}
		}
	})
}

// djangoLogin posts the admin login form at loginURL with the CSRF token
// of its page (c holds the csrftoken cookie).
func djangoLogin(t *testing.T, c *http.Client, loginURL, token, password string) (*http.Response, []byte) {
	t.Helper()
	form := url.Values{
		"csrfmiddlewaretoken": {token},
		"username":            {djangoUser},
		"password":            {password},
		"next":                {"/admin/"},
	}
	req, err := http.NewRequest(http.MethodPost, loginURL, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Referer", loginURL)
	return do(t, c, req)
}

// manage runs `python manage.py args...` in dir, with the superuser
// variables createsuperuser --noinput reads and without DJANGO_* variables
// from the caller's environment (the project's defaults apply).
func manage(t *testing.T, python, dir string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, append([]string{"manage.py"}, args...)...)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DJANGO_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env,
		"PYTHONDONTWRITEBYTECODE=1",
		"DJANGO_SUPERUSER_USERNAME="+djangoUser,
		"DJANGO_SUPERUSER_PASSWORD="+djangoPassword,
		"DJANGO_SUPERUSER_EMAIL=admin@example.com",
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("manage.py %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// csrfToken returns the csrfmiddlewaretoken of the form in an HTML page.
func csrfToken(t *testing.T, page []byte) string {
	t.Helper()
	m := csrfInput.FindSubmatch(page)
	if m == nil {
		t.Fatalf("no csrfmiddlewaretoken input in the page:\n%s", truncate(page, 2000))
	}
	return string(m[1])
}

// cookie returns the value of the cookie name c's jar sends to rawURL.
func cookie(c *http.Client, rawURL, name string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == name {
			return ck.Value
		}
	}
	return ""
}

func decodeJSON(t *testing.T, body []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("decoding JSON %q: %v", truncate(body, 500), err)
	}
}

// staticSemantics checks what a browser relies on for a collectstatic file:
// a strong ETag made like nginx's, a 304 for If-None-Match and for
// If-Modified-Since, and compression chosen by Accept-Encoding (brotli
// over gzip) for files of 1 KiB or more, each compressed body decoding to
// the file.
func staticSemantics(t *testing.T, c *http.Client, url, path string, want []byte) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf(`"%x-%x"`, fi.ModTime().Unix(), fi.Size())
	req := func(hdr ...string) (*http.Response, []byte) {
		r, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Accept-Encoding", "identity") // no transparent gzip by the client
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		return do(t, c, r)
	}
	resp, _ := req()
	if got := resp.Header.Get("ETag"); got != tag {
		t.Errorf("ETag %q, want %q", got, tag)
	}
	lastMod := resp.Header.Get("Last-Modified")
	if lastMod != fi.ModTime().UTC().Format(http.TimeFormat) {
		t.Errorf("Last-Modified %q", lastMod)
	}
	if resp, body := req("If-None-Match", tag); resp.StatusCode != http.StatusNotModified || len(body) != 0 {
		t.Errorf("If-None-Match with its ETag: %d, %d bytes; want 304 and no body", resp.StatusCode, len(body))
	}
	if resp, _ := req("If-Modified-Since", lastMod); resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-Modified-Since its Last-Modified: %d, want 304", resp.StatusCode)
	}
	if resp, _ := req("If-None-Match", `"other"`); resp.StatusCode != http.StatusOK {
		t.Errorf("If-None-Match with another tag: %d, want 200", resp.StatusCode)
	}
	if len(want) < 1024 {
		// Below the smallest size compressed on the fly: sent as it is.
		if resp, _ := req("Accept-Encoding", "gzip, br"); resp.Header.Get("Content-Encoding") != "" {
			t.Errorf("a %d-byte file was compressed (%s)", len(want), resp.Header.Get("Content-Encoding"))
		}
		return
	}
	for _, tc := range []struct{ accept, coding string }{{"gzip, deflate, br", "br"}, {"gzip", "gzip"}} {
		resp, body := req("Accept-Encoding", tc.accept)
		if got := resp.Header.Get("Content-Encoding"); got != tc.coding {
			t.Errorf("Accept-Encoding %q: Content-Encoding %q, want %q", tc.accept, got, tc.coding)
			continue
		}
		if !strings.Contains(resp.Header.Get("Vary"), "Accept-Encoding") {
			t.Errorf("compressed answer without Vary: Accept-Encoding: %v", resp.Header)
		}
		if plain := decodeBody(t, tc.coding, body); !bytes.Equal(plain, want) {
			t.Errorf("%s body does not decode to the file (%d bytes, want %d)", tc.coding, len(plain), len(want))
		}
		if len(body) >= len(want) {
			t.Errorf("%s body is %d bytes for a %d-byte file", tc.coding, len(body), len(want))
		}
	}
}
