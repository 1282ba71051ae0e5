package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"portico/internal/porticotest"
)

// TestExampleMixed serves examples/configs/mixed, the site the container
// Portico replaces served: a Vue SPA at /app/, a Java API on Debian's
// Tomcat 10 at /api/, a PHP blog on Debian's php-fpm at /blog/ and the
// Django example app at /, all through one Portico.
func TestExampleMixed(t *testing.T) {
	python := needPython(t, "django")
	fpm := porticotest.StartPHPFPM(t, 2)
	tc := startTomcat(t, repoPath(t, "examples/configs/mixed/api"))
	tree := exampleTree(t)
	cfg := filepath.Join(tree, "configs", "mixed", "portico.toml")
	data, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for old, repl := range map[string]string{
		`addr = "127.0.0.1:8080"`:                  `addr = "127.0.0.1:0"`,
		`"http://127.0.0.1:8081"`:                  `"http://` + tc.addr + `"`,
		`fastcgi+unix:///run/php/php8.2-fpm.sock"`: `fastcgi+unix://` + fpm.Unix + `"`,
		`max_conns = 5`:                            `max_conns = 2`,
		"[app.django]\n":                           "[app.django]\npython = \"" + python + "\"\n",
	} {
		if !strings.Contains(text, old) {
			t.Fatalf("the example has no %q any more", old)
		}
		text = strings.Replace(text, old, repl, 1)
	}
	writeFile(t, filepath.Dir(cfg), "portico.toml", text)
	p := startServe(t, cfg)
	c := newClient(t)

	t.Run("spa", func(t *testing.T) {
		for _, path := range []string{"/app/", "/app/users/7"} {
			resp, body := get(t, c, p.URL(path))
			wantStatus(t, resp, body, http.StatusOK)
			if !strings.Contains(string(body), `<div id="app">`) {
				t.Errorf("%s: not the SPA's index.html: %s", path, truncate(body, 200))
			}
		}
		resp, body := get(t, c, p.URL("/app/assets/app.3f9a2b1c.js"))
		wantStatus(t, resp, body, http.StatusOK)
		if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "immutable") {
			t.Errorf("hashed asset Cache-Control %q", cc)
		}
	})

	t.Run("api on tomcat", func(t *testing.T) {
		resp, body := get(t, c, p.URL("/api/"))
		wantStatus(t, resp, body, http.StatusOK)
		var api struct{ Service, URI, Forwarded_For string }
		if err := json.Unmarshal(body, &api); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		if api.Service != "api" || api.Forwarded_For != "127.0.0.1" {
			t.Errorf("Tomcat answered %+v", api)
		}
	})

	t.Run("blog on php-fpm", func(t *testing.T) {
		resp, body := get(t, c, p.URL("/blog/style.css"))
		wantStatus(t, resp, body, http.StatusOK)
		if string(body) != "body { font-family: serif; }\n" {
			t.Errorf("style.css: %q", body)
		}
		type blog struct {
			Service, Script_Name, Path_Info, Request_URI, Method string
			Post                                                 map[string]string
		}
		for path, want := range map[string]blog{
			"/blog/2026/12/hello?x=1":   {Service: "blog", Script_Name: "/blog/index.php", Request_URI: "/blog/2026/12/hello?x=1", Method: "GET"},
			"/blog/":                    {Service: "blog", Script_Name: "/blog/index.php", Request_URI: "/blog/", Method: "GET"},
			"/blog/index.php/feed/atom": {Service: "blog", Script_Name: "/blog/index.php", Path_Info: "/feed/atom", Request_URI: "/blog/index.php/feed/atom", Method: "GET"},
		} {
			resp, body := get(t, c, p.URL(path))
			wantStatus(t, resp, body, http.StatusOK)
			var got blog
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("%s: %v: %s", path, err, body)
			}
			if got.Service != want.Service || got.Script_Name != want.Script_Name || got.Path_Info != want.Path_Info ||
				got.Request_URI != want.Request_URI || got.Method != want.Method {
				t.Errorf("%s: php saw %+v, want %+v", path, got, want)
			}
		}
		resp, body = do(t, c, mustRequest(t, "POST", p.URL("/blog/comment"), url.Values{"text": {"nice post"}}))
		wantStatus(t, resp, body, http.StatusOK)
		var got blog
		if err := json.Unmarshal(body, &got); err != nil || got.Post["text"] != "nice post" || got.Method != "POST" {
			t.Errorf("form POST: %s (%v)", body, err)
		}
		resp, body = get(t, c, p.URL("/blog/missing.php"))
		wantStatus(t, resp, body, http.StatusNotFound)
		_, body = get(t, c, p.URL("/blog/index.php"))
		if strings.Contains(string(body), "<?php") {
			t.Errorf("PHP source served: %s", body)
		}
	})

	t.Run("django", func(t *testing.T) {
		resp, body := get(t, c, p.URL("/env"))
		wantStatus(t, resp, body, http.StatusOK)
		if !strings.Contains(string(body), `"PATH_INFO": "/env"`) {
			t.Errorf("/env: %s", truncate(body, 300))
		}
	})
}

// mustRequest builds a form POST.
func mustRequest(t testing.TB, method, target string, form url.Values) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, target, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}
