// Package cache is Portico's shared HTTP cache (RFC 9111, with RFC 5861's
// stale-while-revalidate and stale-if-error) for app and proxy routes:
// nginx's proxy_cache and uwsgi_cache. A middleware: Handler wraps the
// route's handler (after compression in the chain, so that it stores what
// compression made, one entry per Accept-Encoding variant).
//
// The decisions, in the order Handler makes them:
//
//  1. Only GET and HEAD are looked up; an unsafe method (POST, PUT, PATCH,
//     DELETE) answered with 2xx or 3xx invalidates its URL (RFC 9111 4.4);
//     requests with Upgrade, Cache-Control: no-store or one of the
//     BypassCookies pass through untouched (X-Cache: BYPASS).
//  2. The key is the namespace, the host (lower case, port kept), the path
//     and the query; the variant adds the scheme and the request's values
//     of the fields the stored response's Vary names.
//  3. A fresh entry is served (HIT), with an Age; a client's conditional
//     request gets 304 from the cache. A stale one within its
//     stale-while-revalidate window is served (STALE) while one background
//     request revalidates it. Otherwise the app is asked, conditionally
//     when the entry has a validator: 304 refreshes the entry
//     (REVALIDATED), another answer replaces it (EXPIRED), and a 5xx
//     within the stale-if-error window is replaced by the stale entry
//     (STALE).
//  4. Concurrent misses for one key ask the app once; the others wait for
//     the stored answer. When the answer cannot be stored the key is
//     remembered for hitForPass, and requests meanwhile go to the app
//     without waiting (Varnish's hit-for-miss).
//  5. A response is stored only when a shared cache may store it (see
//     storable): never private, no-store, Vary: *, partial content, or,
//     unless IgnoreSetCookie, a Set-Cookie response.
package cache

import (
	"container/list"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Options.
const (
	DefaultSize     = 256 << 20
	DefaultMaxEntry = 8 << 20
)

const (
	// hitForPass is how long a key whose answer could not be stored is
	// not coalesced: requests go to the app at once, and the first
	// storable answer is stored again.
	hitForPass = 10 * time.Second
	// maxWaits bounds how often a request waits for another's fetch
	// (it may find a different variant stored each time).
	maxWaits = 3
	// backgroundTimeout bounds a stale-while-revalidate fetch, which no
	// client waits for.
	backgroundTimeout = 30 * time.Second
	// revalidationGrace keeps an entry with a validator in Redis this long
	// past its stale windows, so that it can still be revalidated.
	revalidationGrace = time.Hour
	// lockTimeout is how long a request waits for another's fetch of
	// the same key before it asks the app itself (nginx's
	// proxy_cache_lock_timeout, 5 s there too).
	lockTimeout = 5 * time.Second
	// keyMapSize bounds the maps of MinUses counts and hit-for-pass marks.
	keyMapSize = 16384
)

// Options configure a Cache. The zero value is a 256 MiB memory cache
// that stores what responses allow and nothing else.
type Options struct {
	// Size bounds the memory store, in bytes (keys, header fields and
	// bodies); the least recently used entries are evicted past it.
	// Default (0) DefaultSize, 256 MiB. Unused with a Redis Store (Redis's
	// own maxmemory bounds it). nginx: proxy_cache_path max_size.
	Size int64
	// MaxEntry is the largest body stored, in bytes; a larger response
	// streams through unstored. Default (0) DefaultMaxEntry, 8 MiB.
	MaxEntry int64
	// DefaultTTL is the freshness lifetime of a response that carries no
	// freshness information (no max-age, s-maxage or Expires) and has a
	// status cacheable by default (200, 301, 404...): micro-caching.
	// Default (0): such responses are not stored. nginx: proxy_cache_valid.
	DefaultTTL time.Duration
	// StaleWhileRevalidate is how long past its freshness a stale entry is
	// served while one background request revalidates it, for responses
	// that do not say (their stale-while-revalidate directive wins).
	// Default (0): none. nginx: proxy_cache_background_update with
	// proxy_cache_use_stale updating.
	StaleWhileRevalidate time.Duration
	// StaleIfError is how long past its freshness a stale entry replaces
	// an error (the app's 500, 502, 503, 504, or Portico's own 5xx when
	// the app or upstream is down), for responses that do not say (their
	// stale-if-error directive wins). Default (0): none. nginx:
	// proxy_cache_use_stale error timeout http_5xx.
	StaleIfError time.Duration
	// BypassCookies names cookies (exact names) whose presence in a
	// request makes it pass the cache both ways: not served from it, not
	// stored (X-Cache: BYPASS), e.g. Django's "sessionid". Default: none.
	// nginx: proxy_cache_bypass and proxy_no_cache $cookie_NAME.
	BypassCookies []string
	// MinUses is the number of misses of a key before its response is
	// stored (the count is kept for the most recent keys only). Default
	// (0) 1: the first. nginx: proxy_cache_min_uses.
	MinUses int
	// IgnoreSetCookie stores responses that carry Set-Cookie, without it:
	// only the client whose request caused the miss gets the cookie.
	// Default false: such responses are never stored (nginx instead
	// ignores them unless proxy_ignore_headers Set-Cookie says otherwise).
	IgnoreSetCookie bool
	// Store is where entries live: "" in memory (per node); a
	// "redis://host:port/db" or "rediss://..." URL (go-redis's ParseURL)
	// keeps them in Redis, shared by every node using it. Coalescing of
	// misses stays per node. While Redis is unreachable, requests pass
	// through uncached.
	Store string
	// Namespace is part of every key, so that caches (routes) sharing a
	// store never share entries. Default "".
	Namespace string
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
	// Logger receives the store's changes of state. Nil: slog.Default().
	Logger *slog.Logger
}

// Stats are a Cache's counters since New.
type Stats struct {
	// Answers by X-Cache value.
	Hit, Miss, Stale, Bypass, Expired, Revalidated int64
	// Entries and Bytes held (memory store only).
	Entries int
	Bytes   int64
	// Stores counts entries stored, Evictions entries evicted by the
	// memory store's bound, StoreErrors failed calls to the store.
	Stores, Evictions, StoreErrors int64
}

// Cache is a shared HTTP cache. Its methods are safe for concurrent use.
type Cache struct {
	opt   Options
	store store
	mem   *memory // the store, when in memory
	log   *slog.Logger

	results                        [numResults]atomic.Int64
	stores, evictions, storeErrors atomic.Int64
	mu                             sync.Mutex // guards the fields below
	flights                        map[string]*flight
	uses                           *keyLRU[int]       // misses per key (MinUses)
	pass                           *keyLRU[time.Time] // hit-for-pass: until when
	closed                         bool
	background                     sync.WaitGroup
}

type flight struct{ done chan struct{} }

// result is an X-Cache value.
type result int

const (
	resHit result = iota
	resMiss
	resStale
	resBypass
	resExpired
	resRevalidated
	numResults
)

// xCache holds the header values, shared by every answer: nothing in
// the chain writes into a header value slice.
var xCache = [numResults][]string{{"HIT"}, {"MISS"}, {"STALE"}, {"BYPASS"}, {"EXPIRED"}, {"REVALIDATED"}}

// New returns a cache for opt, or an error for a bad Store URL.
func New(opt Options) (*Cache, error) {
	if opt.Size <= 0 {
		opt.Size = DefaultSize
	}
	if opt.MaxEntry <= 0 {
		opt.MaxEntry = DefaultMaxEntry
	}
	if opt.MinUses <= 0 {
		opt.MinUses = 1
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	c := &Cache{opt: opt, log: opt.Logger, flights: make(map[string]*flight),
		uses: newKeyLRU[int](keyMapSize), pass: newKeyLRU[time.Time](keyMapSize)}
	switch {
	case opt.Store == "":
		c.mem = newMemory(opt.Size, &c.evictions)
		c.store = c.mem
	case strings.HasPrefix(opt.Store, "redis://") || strings.HasPrefix(opt.Store, "rediss://"):
		s, err := newRedisStore(c, opt.Store, opt.Namespace, opt.Logger)
		if err != nil {
			return nil, err
		}
		c.store = s
	default:
		return nil, errors.New("cache: the store must be empty (memory) or a redis:// or rediss:// URL")
	}
	return c, nil
}

// Stats returns the counters.
func (c *Cache) Stats() Stats {
	s := Stats{
		Hit: c.results[resHit].Load(), Miss: c.results[resMiss].Load(), Stale: c.results[resStale].Load(),
		Bypass: c.results[resBypass].Load(), Expired: c.results[resExpired].Load(), Revalidated: c.results[resRevalidated].Load(),
		Stores: c.stores.Load(), Evictions: c.evictions.Load(), StoreErrors: c.storeErrors.Load(),
	}
	if c.mem != nil {
		s.Entries, s.Bytes = c.mem.usage()
	}
	return s
}

// Purge removes the stored variants of target ("host/path?query", no
// scheme), or with prefix those of every URL starting with target, and
// returns how many entries it removed.
func (c *Cache) Purge(ctx context.Context, target string, prefix bool) (int, error) {
	host, rest, _ := strings.Cut(target, "/")
	if strings.Contains(target, "/") {
		rest = "/" + rest
	}
	return c.store.purge(ctx, strings.ToLower(host)+rest, prefix)
}

// Close waits for the background revalidations, then closes the store.
func (c *Cache) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.background.Wait()
	return c.store.close()
}

// Handler returns next with the cache in front.
func (c *Cache) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { c.serve(next, w, r) })
}

func (c *Cache) serve(next http.Handler, w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		c.bypass(w)
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if s := sw.status; s == 0 || (s >= 200 && s < 400) {
			if _, err := c.store.purge(r.Context(), urlKey(r), false); err != nil {
				c.storeErrors.Add(1)
			}
		}
		return
	default:
		c.bypass(w)
		next.ServeHTTP(w, r)
		return
	}
	rd := requestCC(r)
	if len(r.Header["Upgrade"]) > 0 || rd.noStore || c.bypassCookie(r) {
		c.bypass(w)
		next.ServeHTTP(w, r)
		return
	}
	url := urlKey(r)
	for waits := 0; ; waits++ {
		now := c.opt.Now()
		e, variant, err := c.store.get(r.Context(), url, r)
		if err != nil {
			// The store is down: as if there were no cache.
			c.storeErrors.Add(1)
			c.answered(w, resMiss)
			next.ServeHTTP(w, r)
			return
		}
		if e != nil && len(r.Header["Authorization"]) > 0 && !e.authOK {
			e = nil // RFC 9111 3.5: not for this request
		}
		expired := false
		if e != nil && e.dead(now) {
			if err := c.store.remove(r.Context(), url, variant); err != nil {
				c.storeErrors.Add(1)
			}
			e, expired = nil, true
		}
		if e != nil {
			age := e.age(now)
			if age < e.lifetime && !e.noCache && !rd.noCache &&
				(rd.maxAge < 0 || age <= rd.maxAge) && (rd.minFresh < 0 || e.lifetime-age >= rd.minFresh) {
				c.serveEntry(w, r, e, now, resHit)
				return
			}
			if age >= e.lifetime && age-e.lifetime < e.swr && !e.noCache && !rd.noCache && rd.maxAge < 0 {
				c.revalidateInBackground(next, r, url, variant, e)
				c.serveEntry(w, r, e, now, resStale)
				return
			}
		}
		if rd.onlyIf {
			c.answered(w, resMiss)
			http.Error(w, "not cached", http.StatusGatewayTimeout) // RFC 9111 5.2.1.7
			return
		}
		if r.Method == http.MethodHead || len(r.Header["Range"]) > 0 {
			// A HEAD miss goes through as HEAD, a range request as
			// itself (a hit answers it whole, which RFC 9110 14.2
			// allows); neither stores anything, nor makes others wait.
			c.answered(w, resMiss)
			next.ServeHTTP(w, r)
			return
		}
		key := url + "\x00" + variant
		if waits >= maxWaits || c.passing(key, now) {
			c.fetch(next, w, r, url, e, expired, false)
			return
		}
		f, leader := c.join(key)
		if leader {
			defer c.leave(key, f)
			c.fetch(next, w, r, url, e, expired, false)
			return
		}
		timer := time.NewTimer(lockTimeout)
		select {
		case <-f.done:
			timer.Stop()
		case <-timer.C:
			// The leader is slow: ask the app too, as nginx does after
			// proxy_cache_lock_timeout.
			c.fetch(next, w, r, url, e, expired, false)
			return
		case <-r.Context().Done():
			timer.Stop()
			return
		}
	}
}

func (c *Cache) bypass(w http.ResponseWriter) { c.answered(w, resBypass) }

// answered counts res and puts it into w's X-Cache.
func (c *Cache) answered(w http.ResponseWriter, res result) {
	c.results[res].Add(1)
	w.Header()["X-Cache"] = xCache[res]
}

func (c *Cache) bypassCookie(r *http.Request) bool {
	if len(c.opt.BypassCookies) == 0 || len(r.Header["Cookie"]) == 0 {
		return false
	}
	for _, name := range c.opt.BypassCookies {
		if len(r.CookiesNamed(name)) > 0 {
			return true
		}
	}
	return false
}

// dead reports whether e is past its freshness and both stale windows
// with nothing to revalidate it with: it can never be used again.
func (e *entry) dead(now time.Time) bool {
	return !e.hasValidator() && e.age(now)-e.lifetime >= max(e.swr, e.sie)
}

// staleUsable reports whether e may replace an error answer at now.
func (e *entry) staleUsable(now time.Time) bool {
	return e != nil && !e.mustRevalidate && e.age(now)-e.lifetime < e.sie
}

// serveEntry answers r from e.
func (c *Cache) serveEntry(w http.ResponseWriter, r *http.Request, e *entry, now time.Time, res result) {
	h := w.Header()
	for k, v := range e.header {
		h[k] = v
	}
	h["Age"] = ageValue(int64(e.age(now) / time.Second))
	c.answered(w, res)
	if e.status == http.StatusOK && notModified(r, e.etag, e.lastMod) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.WriteHeader(e.status)
	if r.Method != http.MethodHead {
		w.Write(e.body)
	}
}

// ageValues are the Age header values of the first minute, shared by
// every answer like xCache: a micro-cached hit is seconds old, and its
// Age then costs no allocation.
var ageValues = func() (v [60][]string) {
	for i := range v {
		v[i] = []string{strconv.Itoa(i)}
	}
	return v
}()

func ageValue(secs int64) []string {
	if secs >= 0 && secs < int64(len(ageValues)) {
		return ageValues[secs]
	}
	return []string{strconv.FormatInt(secs, 10)}
}

// notModified evaluates r's If-None-Match, or without it its
// If-Modified-Since, against a response's validators (RFC 9110 13.1.2,
// 13.1.3; weak comparison).
func notModified(r *http.Request, etag, lastMod string) bool {
	if inm := r.Header["If-None-Match"]; len(inm) > 0 {
		if etag == "" {
			return false
		}
		for _, v := range inm {
			for t := range strings.SplitSeq(v, ",") {
				t = strings.TrimSpace(t)
				if t == "*" || strings.TrimPrefix(t, "W/") == strings.TrimPrefix(etag, "W/") {
					return true
				}
			}
		}
		return false
	}
	ims := r.Header.Get("If-Modified-Since")
	if ims == "" || lastMod == "" {
		return false
	}
	since, err1 := http.ParseTime(ims)
	mod, err2 := http.ParseTime(lastMod)
	return err1 == nil && err2 == nil && !mod.After(since)
}

// join makes the caller the leader of key's fetch, or returns the
// flight to wait for.
func (c *Cache) join(key string) (*flight, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.flights[key]; f != nil {
		return f, false
	}
	f := &flight{done: make(chan struct{})}
	c.flights[key] = f
	return f, true
}

func (c *Cache) leave(key string, f *flight) {
	c.mu.Lock()
	delete(c.flights, key)
	c.mu.Unlock()
	close(f.done)
}

func (c *Cache) passing(key string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	until, ok := c.pass.get(key)
	return ok && now.Before(until)
}

// revalidateInBackground starts one fetch for e's key unless one runs.
func (c *Cache) revalidateInBackground(next http.Handler, r *http.Request, url, variant string, e *entry) {
	key := url + "\x00" + variant
	f, leader := c.join(key)
	if !leader {
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.leave(key, f)
		return
	}
	c.background.Add(1)
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), backgroundTimeout)
	br := r.Clone(ctx)
	br.Method = http.MethodGet
	go func() {
		defer c.background.Done()
		defer cancel()
		defer c.leave(key, f)
		defer func() {
			// A handler aborts a broken stream with a panic, which
			// net/http would recover on a client's goroutine.
			if v := recover(); v != nil && v != http.ErrAbortHandler {
				c.log.Error("cache: the background revalidation panicked", "url", url, "panic", v)
			}
		}()
		c.fetch(next, &discard{h: make(http.Header)}, br, url, e, false, true)
	}()
}

// fetch asks next for r and answers w, storing what may be stored. old is
// the stale entry (nil on a plain miss); expired says that an entry was
// there but could not be used any more (the answer is EXPIRED, not
// MISS); bg marks a background fetch, whose answer goes nowhere.
func (c *Cache) fetch(next http.Handler, w http.ResponseWriter, r *http.Request, url string, old *entry, expired, bg bool) {
	out := r
	clientConditional := len(r.Header["If-None-Match"]) > 0 || len(r.Header["If-Modified-Since"]) > 0
	conditional := old != nil && old.hasValidator()
	if conditional || clientConditional {
		out = r.Clone(r.Context())
		delete(out.Header, "If-None-Match")
		delete(out.Header, "If-Modified-Since")
		if old != nil && old.etag != "" {
			out.Header["If-None-Match"] = []string{old.etag}
		}
		if old != nil && old.lastMod != "" {
			out.Header["If-Modified-Since"] = []string{old.lastMod}
		}
	}
	t := &teeWriter{c: c, w: w, r: r, old: old, expired: expired || old != nil, bg: bg, conditional: conditional,
		clientConditional: clientConditional, reqTime: c.opt.Now(), h: make(http.Header)}
	next.ServeHTTP(t, out)
	t.finish(url)
}

// put stores e for r, with the Redis TTL its windows give.
func (c *Cache) put(r *http.Request, url string, e *entry, now time.Time) {
	ttl := e.lifetime - e.age(now) + max(e.swr, e.sie)
	if e.hasValidator() {
		ttl = max(ttl, 0) + revalidationGrace
	}
	if ttl <= 0 {
		return
	}
	if err := c.store.put(r.Context(), url, variantKey(r, e.vary), e, ttl); err != nil {
		if err != errTooLarge {
			c.storeErrors.Add(1)
		}
		return
	}
	c.stores.Add(1)
}

// refresh returns old updated by a 304's header fields (RFC 9111 4.3.4):
// every field but the ones describing the stored body.
func (c *Cache) refresh(old *entry, h http.Header, reqTime, resTime time.Time) *entry {
	nh := make(http.Header, len(old.header))
	for k, v := range old.header {
		nh[k] = v
	}
	if len(h["Date"]) == 0 {
		delete(nh, "Date") // newEntry dates it now
	}
	for k, v := range c.storedHeader(h) {
		switch k {
		case "Content-Length", "Content-Encoding", "Content-Type", "Content-Range", "Set-Cookie":
			continue
		}
		nh[k] = v
	}
	delete(nh, "Age")
	if len(h["Age"]) > 0 {
		nh["Age"] = h["Age"]
	}
	return c.newEntry(old.status, nh, old.body, reqTime, resTime)
}

// keyLRU is a map of at most cap keys, evicting the least recently used.
// The caller locks.
type keyLRU[V any] struct {
	cap int
	l   list.List
	m   map[string]*list.Element
}

type keyValue[V any] struct {
	k string
	v V
}

func newKeyLRU[V any](capacity int) *keyLRU[V] {
	return &keyLRU[V]{cap: capacity, m: make(map[string]*list.Element)}
}

func (k *keyLRU[V]) get(key string) (V, bool) {
	if el, ok := k.m[key]; ok {
		k.l.MoveToFront(el)
		return el.Value.(*keyValue[V]).v, true
	}
	var zero V
	return zero, false
}

func (k *keyLRU[V]) put(key string, v V) {
	if el, ok := k.m[key]; ok {
		el.Value.(*keyValue[V]).v = v
		k.l.MoveToFront(el)
		return
	}
	k.m[key] = k.l.PushFront(&keyValue[V]{key, v})
	if k.l.Len() > k.cap {
		old := k.l.Back()
		k.l.Remove(old)
		delete(k.m, old.Value.(*keyValue[V]).k)
	}
}

func (k *keyLRU[V]) remove(key string) {
	if el, ok := k.m[key]; ok {
		k.l.Remove(el)
		delete(k.m, key)
	}
}
