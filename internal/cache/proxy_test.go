package cache

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"portico/internal/proxy"
)

// TestProxyUpstreamDown: the cache in front of Portico's proxy handler,
// as a proxy route has it. With the upstream stopped, the proxy's own 502
// is replaced by the stale page within stale-if-error, and goes out past it.
func TestProxyUpstreamDown(t *testing.T) {
	clk := newClock()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10, stale-if-error=60")
		w.Header().Set("Etag", `"p1"`)
		io.WriteString(w, "from upstream")
	}))
	defer up.Close()
	tg, err := proxy.ParseTarget(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	tr := proxy.NewHTTPTransport(tg, time.Second)
	defer tr.(interface{ CloseIdleConnections() }).CloseIdleConnections()
	ups := []*proxy.Upstream{{Name: up.URL, URL: tg.URL, Transport: tr}}
	sel, err := proxy.NewSelector(proxy.PolicyRoundRobin, "", ups)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	ph, err := proxy.New(proxy.Options{Pool: proxy.NewPool(ups, sel, proxy.PoolOptions{Logger: quiet}), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	c := newCache(t, Options{}, clk)
	front := httptest.NewServer(c.Handler(ph))
	defer front.Close()
	fetch := func() (*http.Response, string) {
		t.Helper()
		res, err := http.Get(front.URL + "/page")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res, string(b)
	}
	check := func(what, xcache string, status int, body string) {
		t.Helper()
		res, b := fetch()
		if res.Header.Get("X-Cache") != xcache || res.StatusCode != status || b != body {
			t.Fatalf("%s: %s %d %q; want %s %d %q", what, res.Header.Get("X-Cache"), res.StatusCode, b, xcache, status, body)
		}
	}
	check("miss", "MISS", 200, "from upstream")
	check("hit", "HIT", 200, "from upstream")
	up.Close()
	clk.add(20 * time.Second)
	check("upstream down, in the window", "STALE", 200, "from upstream")
	clk.add(60 * time.Second)
	res, _ := fetch()
	if res.StatusCode != http.StatusBadGateway || res.Header.Get("X-Cache") != "EXPIRED" {
		t.Fatalf("past the window: %d %s; want the proxy's 502", res.StatusCode, res.Header.Get("X-Cache"))
	}
}
