package config

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Response shaping: the cache and compression of app and proxy routes, and
// a site's custom error pages.

// Cache is a route's shared HTTP cache (RFC 9111): nginx's proxy_cache /
// uwsgi_cache with a proxy_cache_path zone of its own.
type Cache struct {
	// Size bounds the memory the entries take (keys, headers, bodies);
	// the least recently used go first (nginx's max_size). Default 256
	// MiB. Not used with Store.
	Size int64
	// Store, when set, keeps the entries in Redis ("redis://host:6379/0",
	// "rediss://" for TLS) so that several Portico nodes share them;
	// concurrent misses are still coalesced per node. Default "": memory.
	Store string
	// DefaultTTL is how long a response that says nothing of its
	// freshness (no Cache-Control max-age or s-maxage, no Expires) stays
	// fresh: micro-caching (nginx's proxy_cache_valid). Default 0: such
	// responses are not stored.
	DefaultTTL time.Duration
	// StaleWhileRevalidate serves a stale entry this long past its
	// freshness while one background request refreshes it, when the
	// response has no stale-while-revalidate of its own (nginx's
	// proxy_cache_use_stale updating + proxy_cache_background_update).
	// Default 0: only the response's directive.
	StaleWhileRevalidate time.Duration
	// StaleIfError serves a stale entry this long past its freshness when
	// the app or upstream fails (a 500, 502, 503 or 504, or no answer),
	// when the response has no stale-if-error of its own (nginx's
	// proxy_cache_use_stale error timeout http_5xx). Default 0: only the
	// response's directive.
	StaleIfError time.Duration
	// BypassCookies names cookies that take a request past the cache: it
	// is neither served from it nor stored into it (nginx's
	// proxy_cache_bypass + proxy_no_cache $cookie_NAME). ["sessionid"]
	// keeps a logged-in Django user out. Default none.
	BypassCookies []string
	// MinUses is the number of misses of a URL before its response is
	// stored (nginx's proxy_cache_min_uses). Default 1.
	MinUses int
	// MaxEntry is the largest response stored; larger ones pass through.
	// Default 8 MiB.
	MaxEntry int64
	// IgnoreSetCookie stores responses that carry Set-Cookie, without
	// their Set-Cookie: only the client whose request caused the miss
	// gets the cookie (nginx's proxy_ignore_headers Set-Cookie, without
	// the cookie leak). Default false: such responses are not stored.
	IgnoreSetCookie bool
}

// Defaults of a cache table.
const (
	DefaultCacheSize     = 256 << 20
	DefaultCacheMaxEntry = 8 << 20
)

// DefaultCache is a cache table with every key at its default.
func DefaultCache() *Cache {
	return &Cache{Size: DefaultCacheSize, MaxEntry: DefaultCacheMaxEntry, MinUses: 1}
}

const cacheKeys = "size, store, default_ttl, stale_while_revalidate, stale_if_error, bypass_cookies, min_uses, max_entry, ignore_set_cookie"

// cache decodes a route's cache table.
func (d *decoder) cache(t *value, p string) *Cache {
	v := d.get(t, p, "cache", kTable)
	if v == nil {
		return nil
	}
	cp := p + ".cache"
	c := DefaultCache()
	d.size(v, cp, "size", &c.Size)
	d.str(v, cp, "store", &c.Store)
	d.duration(v, cp, "default_ttl", &c.DefaultTTL)
	d.duration(v, cp, "stale_while_revalidate", &c.StaleWhileRevalidate)
	d.duration(v, cp, "stale_if_error", &c.StaleIfError)
	d.strings(v, cp, "bypass_cookies", &c.BypassCookies)
	d.integer(v, cp, "min_uses", &c.MinUses)
	d.size(v, cp, "max_entry", &c.MaxEntry)
	d.boolean(v, cp, "ignore_set_cookie", &c.IgnoreSetCookie)
	d.unknown(v, cp, cacheKeys)
	return c
}

// shaping decodes a route's compress, cache and intercept_errors keys.
func (d *decoder) shaping(t *value, p string, r *Route) {
	if v := d.get(t, p, "compress", kBool); v != nil {
		b := v.b
		r.Compress = &b
	}
	r.Cache = d.cache(t, p)
	d.boolean(t, p, "intercept_errors", &r.InterceptErrors)
}

// validateShaping checks a route's compress, cache and intercept_errors.
func (c *Config) validateShaping(errs *[]error, key string, r *Route) {
	bad := func(k, format string, args ...any) {
		*errs = append(*errs, c.errorAt(key+"."+k, format, args...))
	}
	dynamic := r.App != "" || r.Proxy != nil
	if r.Compress != nil && !dynamic {
		bad("compress", "applies to app and proxy routes (a static route compresses by itself)")
	}
	if r.InterceptErrors && !dynamic {
		bad("intercept_errors", "applies to app and proxy routes")
	}
	cc := r.Cache
	if cc == nil {
		return
	}
	if !dynamic {
		bad("cache", "applies to app and proxy routes")
	}
	if cc.Size <= 0 {
		bad("cache.size", "%d: must be positive", cc.Size)
	}
	if cc.MaxEntry <= 0 {
		bad("cache.max_entry", "%d: must be positive", cc.MaxEntry)
	} else if cc.Store == "" && cc.MaxEntry > cc.Size {
		bad("cache.max_entry", "%d is larger than the cache's size (%d)", cc.MaxEntry, cc.Size)
	}
	if cc.MinUses < 1 {
		bad("cache.min_uses", "%d: must be at least 1", cc.MinUses)
	}
	for _, d := range []struct {
		k string
		v time.Duration
	}{{"default_ttl", cc.DefaultTTL}, {"stale_while_revalidate", cc.StaleWhileRevalidate}, {"stale_if_error", cc.StaleIfError}} {
		if d.v < 0 {
			bad("cache."+d.k, "%v: must not be negative", d.v)
		}
	}
	for i, name := range cc.BypassCookies {
		if !tokenRE.MatchString(name) {
			bad(fmt.Sprintf("cache.bypass_cookies[%d]", i), "%q is not a cookie name", name)
		}
	}
	if cc.Store != "" {
		u, err := url.Parse(cc.Store)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			bad("cache.store", "%q is not a redis://host:port/db URL", cc.Store)
		}
	}
}

// CompressOn reports whether the route's answers are compressed: the
// compress key, on by default for app and proxy routes.
func (r *Route) CompressOn() bool {
	if r.Compress != nil {
		return *r.Compress
	}
	return r.App != "" || r.Proxy != nil
}

// validateErrorPages checks a site's error_pages table: each key a status
// from 300 to 599 or a class ("4xx", "5xx"), each value an absolute path.
func (c *Config) validateErrorPages(errs *[]error, key string, pages map[string]string) {
	keys := make([]string, 0, len(pages))
	for k := range pages {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := pages[k]
		ek := key + ".error_pages." + k
		if _, ok := ErrorPageStatus(k); !ok {
			*errs = append(*errs, c.errorAt(ek, "%q is not a status from 300 to 599 or a class (\"4xx\", \"5xx\")", k))
		}
		if u, err := url.Parse(v); err != nil || !strings.HasPrefix(v, "/") || u.Host != "" {
			*errs = append(*errs, c.errorAt(ek, "%q is not a path on the site (like \"/errors/404.html\")", v))
		}
	}
}

// ErrorPageStatus parses an error_pages key: a status (300..599) gives it
// and ok; a class "4xx" or "5xx" gives 4 or 5 and ok.
func ErrorPageStatus(k string) (int, bool) {
	if len(k) == 3 && (k[0] == '4' || k[0] == '5') && strings.EqualFold(k[1:], "xx") {
		return int(k[0] - '0'), true
	}
	n, err := strconv.Atoi(k)
	if err != nil || n < 300 || n > 599 || len(k) != 3 {
		return 0, false
	}
	return n, true
}
