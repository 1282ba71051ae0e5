package app

import (
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"portico/internal/config"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// fakeApp answers with its name and the path it saw.
func fakeApp(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, name+" "+r.URL.Path)
	})
}

func loadRouter(t *testing.T, file string) *router {
	t.Helper()
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	apps := map[string]http.Handler{}
	for _, a := range cfg.Apps {
		apps[a.Name] = fakeApp(a.Name)
	}
	rt, closeAll, err := buildRouter(cfg, apps, nil, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeAll)
	return rt
}

// TestRouteTableGolden compares the route table built from each
// testdata/*.toml with testdata/*.golden (go test -update rewrites them).
func TestRouteTableGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.toml")
	if len(files) == 0 {
		t.Fatal("no testdata/*.toml")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			rt := loadRouter(t, file)
			var b strings.Builder
			rt.dump(&b)
			abs, _ := filepath.Abs("testdata")
			got := strings.ReplaceAll(b.String(), abs, "TESTDATA")
			golden := strings.TrimSuffix(file, ".toml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("route table of %s:\n%s\nwant (%s):\n%s", file, got, golden, want)
			}
		})
	}
}

// TestRouting sends requests through the router of testdata/routes.toml:
// host precedence, then path precedence.
func TestRouting(t *testing.T) {
	rt := loadRouter(t, "testdata/routes.toml")
	cases := []struct {
		method, host, path string
		header             map[string]string
		status             int
		want               string // body prefix, or Location for redirects
	}{
		{"GET", "shop.example.com", "/shop/cart", nil, 200, "shop /shop/cart"},
		{"GET", "SHOP.example.com:8443", "/shop/cart", nil, 200, "shop /shop/cart"}, // case and port
		{"GET", "eu.shop.example.com", "/shop", nil, 308, "/shop/"},                 // longer wildcard; exact path beats prefix
		{"GET", "shop.example.com", "/shopping", nil, 404, "404"},                   // prefix at a segment boundary
		{"GET", "shop.example.com", "/shop/x.php", nil, 404, "no php here"},         // regex beats prefix
		{"GET", "shop.example.com", "/x.php", nil, 404, "no php here"},
		{"GET", "shop.example.com", "/shop/admin", nil, 200, "shop /shop/admin"}, // header condition unmet
		{"GET", "shop.example.com", "/shop/admin", map[string]string{"X-Admin": "yes"}, 403, "admins only"},
		{"POST", "shop.example.com", "/shop/admin", map[string]string{"X-Admin": "yes"}, 200, "shop"}, // method unmet
		{"GET", "www.example.com", "/a?b=1", nil, 301, "https://shop.example.com/a?b=1"},
		{"GET", "example.com", "/a", nil, 200, "blog /a"},        // *.example.com needs a label before it
		{"GET", "blog.example.com", "/old/x", nil, 302, "/new/"}, // regexes in file order, before the prefix "/"
		{"GET", "unknown.org", "/other", nil, 410, ""},           // the default site
		{"GET", "unknown.org", "/post", nil, 200, "blog /post"},
		{"GET", "shop.example.com", "/static/site.css", nil, 200, "body{}"},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.host+c.path, func(t *testing.T) {
			req := httptest.NewRequest(c.method, "http://"+c.host+c.path, nil)
			for k, v := range c.header {
				req.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			rt.ServeHTTP(w, req)
			if w.Code != c.status {
				t.Fatalf("status %d, want %d (body %q)", w.Code, c.status, w.Body)
			}
			got := w.Body.String()
			if c.status >= 300 && c.status < 400 {
				got = w.Header().Get("Location")
			}
			if !strings.HasPrefix(got, c.want) {
				t.Errorf("got %q, want it to start with %q", got, c.want)
			}
		})
	}
	// headers_add and headers_remove.
	req := httptest.NewRequest("GET", "http://shop.example.com/static/site.css", nil)
	w := httptest.NewRecorder()
	w.Header().Set("Server", "x")
	rt.ServeHTTP(w, req)
	if w.Header().Get("Cache-Control") != "max-age=3600" || w.Header().Get("Server") != "" {
		t.Errorf("headers %v", w.Header())
	}
}

// Routes with the same WAF settings share one loaded rule set; the
// generation's close releases them.
func TestGuardSharesWAF(t *testing.T) {
	cfg, err := config.Load("testdata/protect.toml")
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	rt, closeAll, err := buildRouter(cfg, map[string]http.Handler{"shop": fakeApp("shop")}, nil, nil, nil, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll()
	if n := strings.Count(log.String(), `msg="waf rules loaded"`); n != 2 {
		t.Errorf("%d rule sets loaded for 2 distinct settings:\n%s", n, log.String())
	}
	for _, tt := range []struct {
		remote, target string
		status         int
	}{
		{"10.1.0.5:1", "/admin/", 200},
		{"10.2.0.5:1", "/admin/", 403},                             // the route's allow list
		{"10.9.0.5:1", "/", 403},                                   // the site's deny list
		{"10.2.0.5:1", "/api?id=1%27%20OR%20%271%27=%271", 403},    // the WAF
		{"10.2.0.5:1", "/search?id=1%27%20OR%20%271%27=%271", 200}, // detect mode
		{"@", "/", 200},                                            // unix peer, "unix" in the site's allow list
	} {
		r := httptest.NewRequest("GET", "http://shop.example.com"+tt.target, nil)
		r.RemoteAddr = tt.remote
		w := httptest.NewRecorder()
		rt.ServeHTTP(w, r)
		if w.Code != tt.status {
			t.Errorf("%s %s: %d, want %d", tt.remote, tt.target, w.Code, tt.status)
		}
	}
}
