package cache

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"portico/internal/porticotest"
)

func redisClient(t *testing.T, s *porticotest.Redis) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), DisableIdentity: true})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRedisShared: two caches on one Redis are two nodes: B hits what A
// stored, a purge from one is seen by the other, the keys expire, and
// another namespace shares nothing.
func TestRedisShared(t *testing.T) {
	srv := porticotest.StartRedis(t)
	log := porticotest.NewLogRecorder()
	clk := newClock()
	o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60, stale-while-revalidate=30")
		w.Header().Set("Vary", "Accept-Language")
		w.Header().Set("X-Two", "a")
		w.Header().Add("X-Two", "b")
		io.WriteString(w, r.URL.RequestURI()+" "+r.Header.Get("Accept-Language"))
	}}
	node := func(ns string) *Cache {
		return newCache(t, Options{Store: srv.URL(), Namespace: ns, Logger: log.Logger()}, clk)
	}
	a, b, other := node("site/route"), node("site/route"), node("site/other")
	ha, hb, hother := a.Handler(o), b.Handler(o), other.Handler(o)

	expect(t, "A miss", get(ha, "GET", "/p?q=1", "Accept-Language", "en"), "MISS", 200, "/p?q=1 en")
	w := get(hb, "GET", "/p?q=1", "Accept-Language", "en")
	expect(t, "B hit", w, "HIT", 200, "/p?q=1 en")
	must(t, strings.Join(w.Header()["X-Two"], ",") == "a,b" && w.Header().Get("Content-Length") == "9", "fields from Redis %v", w.Header())
	expect(t, "B other variant", get(hb, "GET", "/p?q=1", "Accept-Language", "fr"), "MISS", 200, "/p?q=1 fr")
	expect(t, "A other variant", get(ha, "GET", "/p?q=1", "Accept-Language", "fr"), "HIT", 200, "/p?q=1 fr")
	expect(t, "other namespace", get(hother, "GET", "/p?q=1", "Accept-Language", "en"), "MISS", 200, "/p?q=1 en")
	must(t, o.calls.Load() == 3, "the app got %d requests, want 3", o.calls.Load())

	// TTL: lifetime plus the stale window, on the entries and the Vary list.
	rc := redisClient(t, srv)
	ctx := context.Background()
	keys, err := rc.Keys(ctx, "portico:cache:site/route*").Result()
	must(t, err == nil && len(keys) == 3, "keys %q %v", keys, err)
	for _, k := range keys {
		ttl, err := rc.PTTL(ctx, k).Result()
		must(t, err == nil && ttl > 85*time.Second && ttl <= 90*time.Second, "TTL of %q: %v %v", k, ttl, err)
	}

	// Purge from B, seen by A.
	get(ha, "GET", "/p?q=2")
	get(ha, "GET", "/pz")
	get(ha, "GET", "/x")
	n, err := b.Purge(ctx, "example.com/p?q=1", false)
	must(t, err == nil && n == 2, "exact purge: %d %v; want 2", n, err)
	expect(t, "A after purge", get(ha, "GET", "/p?q=1", "Accept-Language", "en"), "MISS", 200, "/p?q=1 en")
	expect(t, "other query kept", get(hb, "GET", "/p?q=2"), "HIT", 200, "/p?q=2 ")
	n, err = a.Purge(ctx, "example.com/p", true)
	must(t, err == nil && n == 3, "prefix purge: %d %v; want 3", n, err)
	expect(t, "B after prefix purge", get(hb, "GET", "/pz"), "MISS", 200, "/pz ")
	expect(t, "outside the prefix", get(hb, "GET", "/x"), "HIT", 200, "/x ")
	expect(t, "other namespace untouched", get(hother, "GET", "/p?q=1", "Accept-Language", "en"), "HIT", 200, "/p?q=1 en")
	// An unsafe request through one node invalidates for both.
	expect(t, "B before the POST", get(hb, "GET", "/x"), "HIT", 200, "/x ")
	get(ha, "POST", "/x")
	expect(t, "B after A's POST", get(hb, "GET", "/x"), "MISS", 200, "/x ")
	if recs := log.Records(); len(recs) != 0 {
		t.Fatalf("unexpected log records:\n%s", log)
	}
}

// TestRedisGlobPurge: a prefix with glob characters matches only itself.
func TestRedisGlobPurge(t *testing.T) {
	srv := porticotest.StartRedis(t)
	clk := newClock()
	o := &origin{respond: fixed(clk, 200, "x", "Cache-Control", "max-age=60")}
	c := newCache(t, Options{Store: srv.URL(), Namespace: "n*"}, clk)
	h := c.Handler(o)
	for _, u := range []string{"/a*", "/ab", "/a?x", "/b[1]", "/b1"} {
		get(h, "GET", u)
	}
	n, err := c.Purge(context.Background(), "example.com/a*", true)
	must(t, err == nil && n == 1, "purge /a*: %d %v; want 1", n, err)
	n, err = c.Purge(context.Background(), "example.com/b[1]", true)
	must(t, err == nil && n == 1, "purge /b[1]: %d %v; want 1", n, err)
	n, err = c.Purge(context.Background(), "example.com/a?", true)
	must(t, err == nil && n == 1, "purge /a?: %d %v; want 1", n, err)
	expect(t, "/ab kept", get(h, "GET", "/ab"), "HIT", 200, "x")
	expect(t, "/b1 kept", get(h, "GET", "/b1"), "HIT", 200, "x")
}

// TestRedisDown: with Redis killed, requests are answered (uncached) and
// the outage is logged once; when it is back, the cache works again.
func TestRedisDown(t *testing.T) {
	srv := porticotest.StartRedis(t)
	log := porticotest.NewLogRecorder()
	clk := newClock()
	o := &origin{respond: fixed(clk, 200, "page", "Cache-Control", "max-age=600")}
	c := newCache(t, Options{Store: srv.URL(), Logger: log.Logger()}, clk)
	h := c.Handler(o)
	get(h, "GET", "/")
	expect(t, "up", get(h, "GET", "/"), "HIT", 200, "page")
	c.store.(*redisStore).retry = 0 // every request asks Redis
	srv.Stop()
	for i := range 20 {
		expect(t, fmt.Sprint("down ", i), get(h, "GET", "/"), "MISS", 200, "page")
	}
	porticotest.WaitFor(t, "several failed calls", 10*time.Second, func() bool {
		expect(t, "down", get(h, "GET", "/"), "MISS", 200, "page")
		return c.Stats().StoreErrors >= 5
	})
	must(t, len(log.Records()) == 1 && log.Records()[0].Level == slog.LevelError, "log while down:\n%s", log)
	srv.Start()
	porticotest.WaitFor(t, "the cache to store again", 10*time.Second, func() bool {
		get(h, "GET", "/")
		return get(h, "GET", "/").Header().Get("X-Cache") == "HIT"
	})
	log.Wait(t, "the recovery record", time.Second, func(r porticotest.Record) bool { return r.Level == slog.LevelInfo })
	must(t, len(log.Records()) == 2, "log:\n%s", log)
}
