//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"portico/internal/porticotest"
)

// cacheServer is a portico serve of testdata/shape_app.py behind a route
// with a cache, with an admin listener; calls is the file where the app
// appends one line per call, down the file whose presence makes every
// request crash its worker.
type cacheServer struct {
	p           *proc
	admin       string
	calls, down string
}

func startCacheServer(t *testing.T, cache string) *cacheServer {
	t.Helper()
	python := needPython(t)
	dir := t.TempDir()
	cs := &cacheServer{calls: filepath.Join(dir, "calls.log"), down: filepath.Join(dir, "down")}
	cfg := writeFile(t, dir, "portico.toml", `
access_log = "off"

[admin]
addr = "127.0.0.1:0"

[[listener]]
addr = "127.0.0.1:0"

[app.main]
module = "`+repoPath(t, "cmd/portico/testdata/shape_app.py")+`"
python = "`+python+`"
workers = 2
env = { SHAPE_CALLS = "`+cs.calls+`", SHAPE_DOWN = "`+cs.down+`" }

[[site]]
hosts = ["default"]

[[site.route]]
path = "/"
app = "main"
cache = `+cache+`
`)
	cs.p = startServe(t, cfg)
	cs.admin = cs.p.adminAddr(t)
	return cs
}

// appCalls counts the app's calls for path.
func (cs *cacheServer) appCalls(path string) int {
	b, _ := os.ReadFile(cs.calls)
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, path+" ") {
			n++
		}
	}
	return n
}

// fetch GETs path with extra headers ("Name: value") and checks X-Cache.
func fetch(t *testing.T, c *http.Client, u, wantCache string, headers ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Add(k, v)
	}
	resp, body := do(t, c, req)
	if got := resp.Header.Get("X-Cache"); got != wantCache {
		t.Errorf("GET %s %v: X-Cache %q, want %q (status %d, body %q)", u, headers, got, wantCache, resp.StatusCode, truncate(body, 200))
	}
	return resp, string(body)
}

// TestCache: the route cache in front of real workers: what is stored and
// what is not, X-Cache on every answer, HEAD from a stored GET, 100
// concurrent misses calling the app once, stale-if-error with the app's
// workers killed, purge through the admin listener, and the metrics.
func TestCache(t *testing.T) {
	cs := startCacheServer(t, `{ size = "16MiB", bypass_cookies = ["sessionid"] }`)
	p := cs.p
	c := newClient(t)
	seen := map[string]int{}
	count := func(resp *http.Response) { seen[strings.ToLower(resp.Header.Get("X-Cache"))]++ }
	u := func(q string) string { return p.URL("/cached?" + q) }

	t.Run("stored or not", func(t *testing.T) {
		r1, b1 := fetch(t, c, u("cc=max-age%3D60&tag=a"), "MISS")
		r2, b2 := fetch(t, c, u("cc=max-age%3D60&tag=a"), "HIT")
		count(r1)
		count(r2)
		if b1 != b2 || r2.Header.Get("Age") == "" {
			t.Errorf("hit: body %q after %q, Age %q", b2, b1, r2.Header.Get("Age"))
		}
		if r1.Header.Get("X-Request-Id") == r2.Header.Get("X-Request-Id") {
			t.Error("a hit carries the stored request's ID")
		}
		for _, q := range []string{"cc=no-store&tag=b", "cc=private%2C%20max-age%3D60&tag=c", "cc=max-age%3D60&cookie=x&tag=d", "tag=no-freshness"} {
			r1, b1 := fetch(t, c, u(q), "MISS")
			r2, b2 := fetch(t, c, u(q), "MISS")
			count(r1)
			count(r2)
			if b1 == b2 {
				t.Errorf("%s: served twice the same %q: stored", q, b1)
			}
		}
		// A session cookie goes past the cache both ways.
		r, _ := fetch(t, c, u("cc=max-age%3D60&tag=a"), "BYPASS", "Cookie: sessionid=abc")
		count(r)
		r, _ = fetch(t, c, u("cc=max-age%3D60&tag=e"), "BYPASS", "Cookie: theme=dark; sessionid=abc")
		count(r)
		r, _ = fetch(t, c, u("cc=max-age%3D60&tag=e"), "MISS")
		count(r)
		// POST is never served from the cache.
		resp, body := do(t, c, mustRequest(t, http.MethodPost, u("cc=max-age%3D60&tag=a"), nil))
		wantStatus(t, resp, body, 200)
		if resp.Header.Get("X-Cache") != "BYPASS" {
			t.Errorf("POST: X-Cache %q", resp.Header.Get("X-Cache"))
		}
		count(resp)
		// HEAD is answered from the stored GET.
		resp, body = do(t, c, mustRequest(t, http.MethodHead, u("cc=max-age%3D60&tag=e"), nil))
		wantStatus(t, resp, body, 200)
		if resp.Header.Get("X-Cache") != "HIT" || len(body) != 0 {
			t.Errorf("HEAD: X-Cache %q, body %q", resp.Header.Get("X-Cache"), body)
		}
		count(resp)
	})

	t.Run("coalescing", func(t *testing.T) {
		until := filepath.Join(t.TempDir(), "release")
		target := p.URL("/block?tag=c&until=" + url.QueryEscape(until))
		tr := &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: 100}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
		const n = 100
		var wg sync.WaitGroup
		results := make(chan string, n)
		for range n {
			wg.Go(func() {
				resp, err := client.Get(target)
				if err != nil {
					results <- "error: " + err.Error()
					return
				}
				defer resp.Body.Close()
				var b strings.Builder
				_, _ = fmt.Fprint(&b, resp.StatusCode, " ", resp.Header.Get("X-Cache"), " ")
				buf := make([]byte, 64)
				k, _ := resp.Body.Read(buf)
				b.Write(buf[:k])
				results <- b.String()
			})
		}
		// The first request is in the app; the others are all in (their
		// connections open) before it answers.
		porticotest.WaitFor(t, "the app's first call", 30*time.Second, func() bool { return cs.appCalls("/block") >= 1 })
		porticotest.WaitFor(t, "100 connections", 30*time.Second, func() bool {
			accepted := 0.0
			for _, smp := range scrapeMetrics(t, c, cs.admin).matching("portico_listener_accepted_total") {
				accepted += smp.value
			}
			return accepted >= n
		})
		if err := os.WriteFile(until, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		close(results)
		byResult := map[string]int{}
		for r := range results {
			byResult[r]++
		}
		if byResult["200 MISS released c"] != 1 || byResult["200 HIT released c"] != n-1 {
			t.Errorf("answers: %v, want one MISS and %d HITs", byResult, n-1)
		}
		if got := cs.appCalls("/block"); got != 1 {
			t.Errorf("the app was called %d times for %d concurrent misses, want once", got, n)
		}
		seen["miss"]++
		seen["hit"] += n - 1
	})

	t.Run("purge", func(t *testing.T) {
		admin := newClient(t)
		purge := func(form string) int {
			t.Helper()
			resp, err := admin.Post("http://"+cs.admin+"/purge?"+form, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got struct{ Purged int }
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != 200 {
				t.Fatalf("POST /purge?%s: %d %v", form, resp.StatusCode, err)
			}
			return got.Purged
		}
		for _, tag := range []string{"p1", "p2", "q1"} {
			r, _ := fetch(t, c, u("cc=max-age%3D60&tag="+tag), "MISS")
			count(r)
			r, _ = fetch(t, c, u("cc=max-age%3D60&tag="+tag), "HIT")
			count(r)
		}
		if n := purge("url=" + url.QueryEscape(u("cc=max-age%3D60&tag=p1"))); n != 1 {
			t.Errorf("purge url: %d entries, want 1", n)
		}
		r, _ := fetch(t, c, u("cc=max-age%3D60&tag=p1"), "MISS")
		count(r)
		r, _ = fetch(t, c, u("cc=max-age%3D60&tag=p2"), "HIT")
		count(r)
		if n := purge("prefix=" + url.QueryEscape(p.URL("/cached?cc=max-age%3D60&tag=p"))); n != 2 {
			t.Errorf("purge prefix: %d entries, want 2", n)
		}
		for tag, want := range map[string]string{"p1": "MISS", "p2": "MISS", "q1": "HIT"} {
			r, _ := fetch(t, c, u("cc=max-age%3D60&tag="+tag), want)
			count(r)
		}
		resp, err := admin.Post("http://"+cs.admin+"/purge", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("POST /purge without url or prefix: %d, want 400", resp.StatusCode)
		}
	})

	t.Run("kept across a reload", func(t *testing.T) {
		r, before := fetch(t, c, u("cc=max-age%3D60&tag=q1"), "HIT")
		count(r)
		resp, err := newClient(t).Post("http://"+cs.admin+"/reload", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST /reload: %d", resp.StatusCode)
		}
		r, after := fetch(t, c, u("cc=max-age%3D60&tag=q1"), "HIT")
		count(r)
		if after != before {
			t.Errorf("after the reload: %q, want the stored %q", after, before)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		m := scrapeMetrics(t, c, cs.admin)
		for _, res := range []string{"hit", "miss", "bypass"} {
			if got := m.value(t, "portico_cache_requests_total", "route", "0", "result", res); got != float64(seen[res]) {
				t.Errorf("portico_cache_requests_total{result=%q} = %v, want %d", res, got, seen[res])
			}
		}
		if m.value(t, "portico_cache_entries", "route", "0") < 1 {
			t.Error("portico_cache_entries: none")
		}
	})

	// Last: it takes the app down.
	t.Run("stale-if-error with the workers killed", func(t *testing.T) {
		q := "cc=max-age%3D1%2C%20stale-if-error%3D300&tag=s"
		_, fresh := fetch(t, c, u(q), "MISS")
		if err := os.WriteFile(cs.down, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, pid := range liveChildren(p.cmd.Process.Pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		// A URL never stored now fails: the app is down.
		resp, body := get(t, c, u("tag=never-stored"))
		if resp.StatusCode < 500 {
			t.Fatalf("the app is not down: %d %q", resp.StatusCode, body)
		}
		// Once the entry is stale, the failure is answered with it.
		var stale string
		porticotest.WaitFor(t, "the entry to go stale", 10*time.Second, func() bool {
			resp, body := get(t, c, u(q))
			if resp.Header.Get("X-Cache") == "HIT" {
				return false
			}
			if resp.StatusCode != 200 || resp.Header.Get("X-Cache") != "STALE" {
				t.Fatalf("stale-if-error: %d X-Cache %q %q", resp.StatusCode, resp.Header.Get("X-Cache"), body)
			}
			stale = string(body)
			return true
		})
		if stale != fresh {
			t.Errorf("stale answer %q, want the stored %q", stale, fresh)
		}
	})
}

// TestCacheDjango: micro-caching a Django site with bypass_cookies =
// ["sessionid"]: the anonymous home page is computed once and served from
// the cache; a logged-in user's pages are never served from it nor stored
// into it, and an anonymous visitor never sees them.
func TestCacheDjango(t *testing.T) {
	python := needPython(t, "django")
	dir := filepath.Join(t.TempDir(), "djangoproject")
	copyTree(t, repoPath(t, "examples/djangoproject"), dir, "db.sqlite3", "staticfiles", "__pycache__")
	manage(t, python, dir, "migrate", "--noinput")
	manage(t, python, dir, "createsuperuser", "--noinput")
	cfg := writeFile(t, dir, "portico.toml", `
access_log = "off"

[[listener]]
addr = "127.0.0.1:0"

[app.django]
module = "mysite.wsgi"
python = "`+python+`"
chdir = "."
workers = 2
env = { DJANGO_DEBUG = "0" }

[[site]]
hosts = ["default"]

[[site.route]]
path = "/"
app = "django"
cache = { default_ttl = "60s", bypass_cookies = ["sessionid"] }
`)
	p := startServe(t, cfg)

	anon := newClient(t)
	_, home := fetch(t, anon, p.URL("/"), "MISS")
	_, again := fetch(t, anon, p.URL("/"), "HIT")
	if home != again || !strings.Contains(home, "<h1>Django on Portico</h1>") {
		t.Errorf("anonymous home page: %q then %q", truncate([]byte(home), 200), truncate([]byte(again), 200))
	}

	// Log in. The login page sets the CSRF cookie: never stored.
	user := newClient(t)
	loginURL := p.URL("/admin/login/?next=/admin/")
	_, page := fetch(t, user, loginURL, "MISS")
	resp, body := djangoLogin(t, user, loginURL, csrfToken(t, []byte(page)), djangoPassword)
	wantStatus(t, resp, body, http.StatusFound)
	if cookie(user, loginURL, "sessionid") == "" {
		t.Fatal("no sessionid after login")
	}
	for range 2 {
		_, admin := fetch(t, user, p.URL("/admin/"), "BYPASS")
		if !strings.Contains(admin, "Site administration") {
			t.Fatalf("logged-in /admin/: %q", truncate([]byte(admin), 300))
		}
		fetch(t, user, p.URL("/"), "BYPASS")
	}
	// The anonymous visitor gets the login redirect, and the home page
	// from before.
	resp, body = get(t, anon, p.URL("/admin/"))
	wantStatus(t, resp, body, http.StatusFound)
	if strings.Contains(string(body), "Site administration") || resp.Header.Get("X-Cache") == "HIT" {
		t.Errorf("anonymous /admin/: X-Cache %q, body %q", resp.Header.Get("X-Cache"), truncate(body, 300))
	}
	if _, h := fetch(t, anon, p.URL("/"), "HIT"); h != home {
		t.Error("the home page changed in the cache after the logged-in visits")
	}
}

// TestCacheRedisNodes: two Portico nodes whose route caches share one
// Redis (Debian's redis-server): B answers from what A stored, a purge on
// one is seen by the other, and each node's X-Cache says so.
func TestCacheRedisNodes(t *testing.T) {
	redis := porticotest.StartRedis(t)
	cache := `{ store = "` + redis.URL() + `" }`
	a, b := startCacheServer(t, cache), startCacheServer(t, cache)
	c := newClient(t)
	// The key holds the host: both nodes are asked for one name.
	at := func(cs *cacheServer, q string) string {
		return "http://" + cs.p.HTTPAddr + "/cached?" + q
	}
	host := "Host: www.example.com"
	_, fromA := fetch(t, c, at(a, "cc=max-age%3D60&tag=shared"), "MISS", host)
	// A stores the entry once its handler returns, which may be after the
	// client has the whole answer: wait for the store before asking B.
	porticotest.WaitFor(t, "node A's store in Redis", 10*time.Second, func() bool {
		for _, smp := range scrapeMetrics(t, c, a.admin).matching("portico_cache_stores_total") {
			if smp.value >= 1 {
				return true
			}
		}
		return false
	})
	_, fromB := fetch(t, c, at(b, "cc=max-age%3D60&tag=shared"), "HIT", host)
	if fromA != fromB {
		t.Errorf("node B answered %q, want node A's stored %q", fromB, fromA)
	}
	if b.appCalls("/cached") != 0 {
		t.Error("node B called its app for an entry node A stored")
	}
	resp, err := c.Post("http://"+b.admin+"/purge?url="+url.QueryEscape("www.example.com/cached?cc=max-age%3D60&tag=shared"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	fetch(t, c, at(a, "cc=max-age%3D60&tag=shared"), "MISS", host)
}
