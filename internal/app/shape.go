package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"

	"portico/internal/cache"
	"portico/internal/compress"
	"portico/internal/config"
	"portico/internal/metrics"
	"portico/internal/negotiate"
)

// shape wraps an app or proxy route's handler in its compression and its
// cache, innermost first: the cache keeps what compression made, one
// entry per coding the clients ask for, so that a hit costs no
// compression. The returned func closes the cache.
func shape(r *route, rc config.Route, site string, caches *cacheRegistry, log *slog.Logger) (func(), error) {
	closeFunc := func() {}
	if rc.App == "" && rc.Proxy == nil {
		return closeFunc, nil
	}
	if rc.CompressOn() {
		cz := compress.New(compress.Options{Logger: log})
		r.h = cz.Handler(r.h)
		r.compressor = cz
		r.desc += " compress"
	}
	if cc := rc.Cache; cc != nil {
		ns := site + "/" + r.label
		c, release, err := caches.take(ns+" "+fmt.Sprintf("%+v", *cc), func() (*cache.Cache, error) {
			return cache.New(cache.Options{
				Size:                 cc.Size,
				MaxEntry:             cc.MaxEntry,
				DefaultTTL:           cc.DefaultTTL,
				StaleWhileRevalidate: cc.StaleWhileRevalidate,
				StaleIfError:         cc.StaleIfError,
				BypassCookies:        cc.BypassCookies,
				MinUses:              cc.MinUses,
				IgnoreSetCookie:      cc.IgnoreSetCookie,
				Store:                cc.Store,
				Namespace:            ns,
				Logger:               log.With("site", site, "route", r.label),
			})
		})
		if err != nil {
			return nil, err
		}
		r.h = c.Handler(r.h)
		r.cache = c
		closeFunc = release
		r.desc += " cache"
		if cc.Store != "" {
			r.desc += "=redis"
		}
	}
	return closeFunc, nil
}

// cacheRegistry keeps the route caches across reloads: a route whose
// site, name and cache settings are the same in the new config keeps its
// cache and what it holds (as nginx's cache outlives a reload); the others
// start empty, and a cache no generation uses any more is closed. A nil
// registry builds a cache per call.
type cacheRegistry struct {
	mu sync.Mutex
	m  map[string]*sharedCache
}

type sharedCache struct {
	c    *cache.Cache
	refs int
}

// take returns the cache for key, built by build if no generation holds
// it, and the func that releases it.
func (cr *cacheRegistry) take(key string, build func() (*cache.Cache, error)) (*cache.Cache, func(), error) {
	if cr == nil {
		c, err := build()
		if err != nil {
			return nil, nil, err
		}
		return c, func() { c.Close() }, nil
	}
	cr.mu.Lock()
	defer cr.mu.Unlock()
	sc := cr.m[key]
	if sc == nil {
		c, err := build()
		if err != nil {
			return nil, nil, err
		}
		if cr.m == nil {
			cr.m = map[string]*sharedCache{}
		}
		sc = &sharedCache{c: c}
		cr.m[key] = sc
	}
	sc.refs++
	var once sync.Once
	return sc.c, func() {
		once.Do(func() {
			cr.mu.Lock()
			sc.refs--
			last := sc.refs == 0
			if last {
				delete(cr.m, key)
			}
			cr.mu.Unlock()
			if last {
				sc.c.Close()
			}
		})
	}, nil
}

// purgeTarget turns what POST /purge was given — a URL, with or without
// its scheme — into the cache's "host/path?query" form.
func purgeTarget(s string) string {
	if u, err := url.Parse(s); err == nil && u.Host != "" {
		t := u.Host + u.EscapedPath()
		if u.RawQuery != "" {
			t += "?" + u.RawQuery
		}
		return t
	}
	return strings.TrimPrefix(strings.TrimPrefix(s, "http://"), "https://")
}

// purge removes target's entries (every URL starting with it, with
// prefix) from every route cache of the router; it returns how many.
func (rt *router) purge(ctx context.Context, target string, prefix bool) (int, error) {
	n := 0
	for _, c := range rt.caches {
		k, err := c.Purge(ctx, target, prefix)
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// responseCacheStats is a route cache's snapshot for the metrics.
func responseCacheStats(c *cache.Cache) metrics.ResponseCacheStats {
	st := c.Stats()
	return metrics.ResponseCacheStats{
		Results: map[string]int64{"hit": st.Hit, "miss": st.Miss, "stale": st.Stale, "bypass": st.Bypass, "expired": st.Expired, "revalidated": st.Revalidated},
		Stores:  st.Stores, Evicted: st.Evictions, Errors: st.StoreErrors, Entries: int64(st.Entries), Bytes: st.Bytes,
	}
}

// compressStats is a route's compression snapshot for the metrics.
func compressStats(cz *compress.Compressor) []metrics.CodingStats {
	st := cz.Stats()
	out := make([]metrics.CodingStats, 0, len(st.Codings))
	for i, cs := range st.Codings {
		out = append(out, metrics.CodingStats{Coding: negotiate.Coding(i).Token(), Responses: cs.Responses, BytesIn: cs.BytesIn, BytesOut: cs.BytesOut})
	}
	return out
}
