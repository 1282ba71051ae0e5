package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestShapeKeys(t *testing.T) {
	path := writeConfig(t, `
[[listener]]
addr = "127.0.0.1:0"

[app.a]
module = "app.py"

[[site]]
hosts = ["default"]
error_pages = { 404 = "/errors/404.html", "5xx" = "/errors/5xx.html" }

[[site.route]]
path = "/api"
proxy = { upstreams = ["http://127.0.0.1:9"] }
compress = false
intercept_errors = true

[[site.route]]
path = "/"
app = "a"
cache = { size = "64MiB", store = "redis://127.0.0.1:6379/0", default_ttl = "1s", bypass_cookies = ["sessionid"], min_uses = 2, max_entry = "1MiB", stale_if_error = "1m", stale_while_revalidate = "5s", ignore_set_cookie = true }

[[site.route]]
path = "/errors"
static = { dir = "." }
`)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Sites[0]
	if len(s.ErrorPages) != 2 || s.ErrorPages["404"] != "/errors/404.html" || s.ErrorPages["5xx"] != "/errors/5xx.html" {
		t.Errorf("error_pages: %v", s.ErrorPages)
	}
	px, app, st := s.Routes[0], s.Routes[1], s.Routes[2]
	if px.CompressOn() || !px.InterceptErrors || px.Cache != nil {
		t.Errorf("proxy route: compress %v intercept %v cache %+v", px.CompressOn(), px.InterceptErrors, px.Cache)
	}
	if !app.CompressOn() || app.InterceptErrors {
		t.Errorf("app route: compress %v intercept %v", app.CompressOn(), app.InterceptErrors)
	}
	want := Cache{Size: 64 << 20, Store: "redis://127.0.0.1:6379/0", DefaultTTL: time.Second, BypassCookies: []string{"sessionid"}, MinUses: 2, MaxEntry: 1 << 20,
		StaleIfError: time.Minute, StaleWhileRevalidate: 5 * time.Second, IgnoreSetCookie: true}
	if cc := app.Cache; cc == nil || !slices.Equal(cc.BypassCookies, want.BypassCookies) || cc.Size != want.Size || cc.Store != want.Store || cc.DefaultTTL != want.DefaultTTL ||
		cc.MinUses != want.MinUses || cc.MaxEntry != want.MaxEntry || cc.StaleIfError != want.StaleIfError || cc.StaleWhileRevalidate != want.StaleWhileRevalidate || !cc.IgnoreSetCookie {
		t.Errorf("cache: %+v, want %+v", app.Cache, want)
	}
	if st.CompressOn() {
		t.Error("a static route compresses through the compress key")
	}
}

func TestShapeDefaults(t *testing.T) {
	path := writeConfig(t, `
[[listener]]
addr = "127.0.0.1:0"
[app.a]
module = "app.py"
[[site]]
hosts = ["default"]
[[site.route]]
path = "/"
app = "a"
cache = {}
`)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cc := c.Sites[0].Routes[0].Cache; cc == nil || cc.Size != 256<<20 || cc.MaxEntry != 8<<20 || cc.MinUses != 1 || cc.DefaultTTL != 0 || cc.Store != "" {
		t.Errorf("cache = {}: %+v", cc)
	}
}

func TestShapeErrors(t *testing.T) {
	path := writeConfig(t, `
[[listener]]
addr = "127.0.0.1:0"

[app.a]
module = "app.py"

[[site]]
hosts = ["default"]
error_pages = { 200 = "/ok.html", "6xx" = "/x.html", 404 = "errors/404.html" }

[[site.route]]
path = "/"
app = "a"
cache = { size = "1KiB", max_entry = "1MiB", min_uses = 0, default_ttl = "-1s", bypass_cookies = ["a b"], sized = 1 }

[[site.route]]
path = "/s"
static = { dir = "." }
compress = true
cache = {}
intercept_errors = true

[[site.route]]
path = "/p"
proxy = { upstreams = ["http://127.0.0.1:9"] }
cache = { store = "memcached://x" }
`)
	_, err := Load(path)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`portico.toml:10: site[0].error_pages.200: "200" is not a status from 300 to 599`,
		`site[0].error_pages.6xx: "6xx" is not a status`,
		`site[0].error_pages.404: "errors/404.html" is not a path on the site`,
		`portico.toml:15: site[0].route[0].cache.max_entry: 1048576 is larger than the cache's size (1024)`,
		`site[0].route[0].cache.min_uses: 0: must be at least 1`,
		`site[0].route[0].cache.default_ttl: -1s: must not be negative`,
		`site[0].route[0].cache.bypass_cookies[0]: "a b" is not a cookie name`,
		`portico.toml:27: site[0].route[2].cache.store: "memcached://x" is not a redis://host:port/db URL`,
		`site[0].route[0].cache.sized: unknown key`,
		`portico.toml:20: site[0].route[1].compress: applies to app and proxy routes`,
		`portico.toml:21: site[0].route[1].cache: applies to app and proxy routes`,
		`portico.toml:22: site[0].route[1].intercept_errors: applies to app and proxy routes`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func TestShapeFlags(t *testing.T) {
	dir := t.TempDir()
	c, err := ParseRun([]string{"--static", "/s=" + dir, "--static-max-age", "1h", "--proxy", "/api=http://127.0.0.1:9", "--cache", "32MiB", "--cache-ttl", "1s", "--compress=false", "app:application"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range c.Sites[0].Routes {
		switch {
		case r.Static != nil:
			if r.Static.MaxAge != time.Hour || r.Cache != nil || r.Compress != nil {
				t.Errorf("static route: max_age %v cache %+v", r.Static.MaxAge, r.Cache)
			}
		default:
			if r.Cache == nil || r.Cache.Size != 32<<20 || r.Cache.DefaultTTL != time.Second || r.Cache.StaleWhileRevalidate != time.Second || r.CompressOn() {
				t.Errorf("route %s: cache %+v compress %v", r.Path, r.Cache, r.CompressOn())
			}
		}
	}
	c, err = ParseRun([]string{"app:application"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Sites[0].Routes[0]; r.Cache != nil || !r.CompressOn() {
		t.Errorf("defaults: cache %+v compress %v", r.Cache, r.CompressOn())
	}
	if _, err := ParseRun([]string{"--cache-ttl", "1s", "app"}, nil); err == nil || !strings.Contains(err.Error(), "--cache-ttl needs --cache") {
		t.Errorf("--cache-ttl alone: %v", err)
	}
	if _, err := ParseRun([]string{"--cache", "lots", "app"}, nil); err == nil || !strings.Contains(err.Error(), `"lots" is not a size`) {
		t.Errorf("--cache lots: %v", err)
	}
}
