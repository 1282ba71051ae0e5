package cache

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"portico/internal/negotiate"
	"portico/internal/requestid"
)

// cacheControl is a parsed Cache-Control (RFC 9111 section 5.2), request
// or response. A delta-seconds of -1 means absent.
type cacheControl struct {
	noStore, noCache, private, public   bool
	mustRevalidate, proxyRevalidate     bool
	onlyIfCached                        bool
	maxAge, sMaxAge, minFresh, maxStale time.Duration
	swr, sie                            time.Duration
	maxStaleAny                         bool // max-stale without a value
}

const absent = time.Duration(-1)

// parseCacheControl parses every Cache-Control field value. Directive
// names are case-insensitive; a directive with a malformed or missing
// delta-seconds where one is required is ignored, except max-age, which
// RFC 9111 4.2.1 says to treat as stale (0) when invalid.
func parseCacheControl(values []string) cacheControl {
	cc := cacheControl{maxAge: absent, sMaxAge: absent, minFresh: absent, maxStale: absent, swr: absent, sie: absent}
	for _, v := range values {
		for d := range strings.SplitSeq(v, ",") {
			name, arg, hasArg := strings.Cut(d, "=")
			name = strings.ToLower(strings.TrimSpace(name))
			arg = strings.Trim(strings.TrimSpace(arg), `"`)
			switch name {
			case "no-store":
				cc.noStore = true
			case "no-cache":
				// no-cache="Set-Cookie" (field names) would let the rest
				// be stored; treating it as plain no-cache is the safe
				// reading (revalidate every time).
				cc.noCache = true
			case "private":
				cc.private = true
			case "public":
				cc.public = true
			case "must-revalidate":
				cc.mustRevalidate = true
			case "proxy-revalidate":
				cc.proxyRevalidate = true
			case "only-if-cached":
				cc.onlyIfCached = true
			case "max-age":
				cc.maxAge = deltaSeconds(arg, 0)
			case "s-maxage":
				cc.sMaxAge = deltaSeconds(arg, 0)
			case "min-fresh":
				cc.minFresh = deltaSeconds(arg, absent)
			case "max-stale":
				if !hasArg {
					cc.maxStaleAny = true
				} else {
					cc.maxStale = deltaSeconds(arg, absent)
				}
			case "stale-while-revalidate":
				cc.swr = deltaSeconds(arg, absent)
			case "stale-if-error":
				cc.sie = deltaSeconds(arg, absent)
			}
		}
	}
	return cc
}

// deltaSeconds parses a delta-seconds (RFC 9111 1.2.2): digits only; a
// value too large for a Duration is capped at a century.
func deltaSeconds(s string, invalid time.Duration) time.Duration {
	if s == "" {
		return invalid
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return invalid
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	const maxSeconds = 100 * 365 * 24 * 3600
	if err != nil || n > maxSeconds {
		n = maxSeconds
	}
	return time.Duration(n) * time.Second
}

// heuristic reports whether status is cacheable by default (RFC 9110
// 15.1): a cache may give it a freshness lifetime of its own
// (Options.DefaultTTL) when the response gives none.
func heuristic(status int) bool {
	switch status {
	case 200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// understood reports whether a shared cache may store status at all when
// the response gives explicit freshness: every final status except 206
// (partial content is not stored) and 304 (a validation answer, not a
// representation).
func understood(status int) bool {
	return status >= 200 && status < 600 && status != http.StatusPartialContent && status != http.StatusNotModified
}

// policy is what a stored response's headers decide, derived once when it
// is stored or decoded.
type policy struct {
	lifetime       time.Duration // freshness lifetime (RFC 9111 4.2.1)
	swr, sie       time.Duration // stale windows (RFC 5861, or the Options)
	noCache        bool          // every use is revalidated
	mustRevalidate bool          // never served stale (must- or proxy-revalidate, s-maxage)
	authOK         bool          // may answer requests with Authorization (RFC 9111 3.5)
	etag, lastMod  string        // validators
	vary           []string      // lower-case field names, sorted; nil: none
	varyStar       bool
}

// policyOf derives the policy of a response, and tells whether it carries
// freshness information of its own (explicit). The lifetime is s-maxage,
// else max-age, else Expires minus Date, else DefaultTTL for a status
// cacheable by default. There is no heuristic from Last-Modified (RFC 9111
// 4.2.2 allows one; nginx has none, and a page would be cached that its
// author never marked cacheable).
func (c *Cache) policyOf(status int, h http.Header) (p policy, explicit bool) {
	cc := parseCacheControl(h["Cache-Control"])
	switch {
	case cc.sMaxAge >= 0:
		p.lifetime, explicit = cc.sMaxAge, true
	case cc.maxAge >= 0:
		p.lifetime, explicit = cc.maxAge, true
	case len(h["Expires"]) > 0:
		explicit = true
		exp, err1 := http.ParseTime(h.Get("Expires"))
		date, err2 := http.ParseTime(h.Get("Date"))
		if err1 == nil && err2 == nil && exp.After(date) {
			p.lifetime = exp.Sub(date)
		} // an invalid Expires means already expired (RFC 9111 5.3)
	case heuristic(status) && !cc.noCache:
		p.lifetime = c.opt.DefaultTTL
	}
	p.swr, p.sie = c.opt.StaleWhileRevalidate, c.opt.StaleIfError
	if cc.swr >= 0 {
		p.swr = cc.swr
	}
	if cc.sie >= 0 {
		p.sie = cc.sie
	}
	p.noCache = cc.noCache
	p.mustRevalidate = cc.mustRevalidate || cc.proxyRevalidate || cc.sMaxAge >= 0
	if p.mustRevalidate {
		// RFC 9111 5.2.2.2: once stale, never served without a successful
		// revalidation, so neither stale window applies.
		p.swr, p.sie = 0, 0
	}
	p.authOK = cc.public || cc.sMaxAge >= 0 || cc.mustRevalidate
	p.etag = h.Get("Etag")
	p.lastMod = h.Get("Last-Modified")
	p.vary, p.varyStar = varyNames(h["Vary"])
	return p, explicit
}

// varyNames returns the sorted, de-duplicated, lower-case field names of
// the Vary values, and whether one of them is "*".
func varyNames(values []string) ([]string, bool) {
	var names []string
	for _, v := range values {
		for n := range strings.SplitSeq(v, ",") {
			n = strings.ToLower(strings.TrimSpace(n))
			if n == "*" {
				return nil, true
			}
			if n != "" {
				names = append(names, n)
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names), false
}

// storable decides whether a response to r may be stored (RFC 9111
// section 3, for a shared cache) and returns a short reason when not.
func (c *Cache) storable(r *http.Request, status int, h http.Header) string {
	cc := parseCacheControl(h["Cache-Control"])
	p, explicit := c.policyOf(status, h)
	switch {
	case !understood(status):
		return "status"
	case cc.noStore:
		return "no-store"
	case cc.private:
		return "private"
	case p.varyStar:
		return "vary-star"
	case len(h["Set-Cookie"]) > 0 && !c.opt.IgnoreSetCookie:
		return "set-cookie"
	case len(r.Header["Authorization"]) > 0 && !p.authOK:
		return "authorization"
	case !explicit && !cc.noCache && !(heuristic(status) && c.opt.DefaultTTL > 0):
		return "no-freshness"
	case !explicit && cc.noCache && p.etag == "" && p.lastMod == "":
		return "no-freshness"
	case p.lifetime+p.swr+p.sie <= 0 && p.etag == "" && p.lastMod == "":
		// Stale on arrival and nothing to revalidate with: useless.
		return "no-freshness"
	}
	return ""
}

// hopByHop are the connection-specific fields (RFC 9110 7.6.1) and the
// ones this package owns; none is stored.
var hopByHop = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
	"X-Cache", requestid.Header,
}

// storedHeader copies the fields of h worth storing: no hop-by-hop field
// (nor any named by Connection), no X-Cache, Age (recomputed on every
// hit), request ID (each hit carries its own) and, with IgnoreSetCookie,
// no Set-Cookie. Value slices are clipped, so that a layer appending to a
// served copy never writes into the stored array.
func (c *Cache) storedHeader(h http.Header) http.Header {
	out := make(http.Header, len(h))
	for k, v := range h {
		out[k] = slices.Clip(slices.Clone(v))
	}
	for _, v := range h["Connection"] {
		for n := range strings.SplitSeq(v, ",") {
			delete(out, http.CanonicalHeaderKey(strings.TrimSpace(n)))
		}
	}
	for _, k := range hopByHop {
		delete(out, k)
	}
	delete(out, "Set-Cookie")
	return out
}

// urlKey is the part of the key every variant of a URL shares: the host
// as sent (lower case, port kept), the path and the query. Purge targets
// have the same form.
func urlKey(r *http.Request) string {
	if r.URL.Opaque != "" || r.URL.Path == "" {
		return strings.ToLower(r.Host) + r.URL.RequestURI()
	}
	path := r.URL.EscapedPath()
	var b strings.Builder
	b.Grow(len(r.Host) + len(path) + 1 + len(r.URL.RawQuery))
	for i := 0; i < len(r.Host); i++ {
		c := r.Host[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	b.WriteString(path)
	if r.URL.ForceQuery || r.URL.RawQuery != "" {
		b.WriteByte('?')
		b.WriteString(r.URL.RawQuery)
	}
	return b.String()
}

// variantKey distinguishes the variants of one URL: the scheme, and the
// request's values of the fields vary names, whitespace normalised;
// Accept-Encoding as the sorted set of the codings it accepts, so that
// browsers' different spellings share entries.
func variantKey(r *http.Request, vary []string) string {
	var b strings.Builder
	b.Grow(8 + 48*len(vary))
	if r.TLS != nil {
		b.WriteString("https")
	} else {
		b.WriteString("http")
	}
	for _, name := range vary {
		b.WriteByte('\x00')
		b.WriteString(name)
		b.WriteByte('=')
		values := r.Header[http.CanonicalHeaderKey(name)]
		if name == "accept-encoding" {
			ae := negotiate.ParseAcceptEncoding(values)
			for cd := range negotiate.NumCodings {
				if ae.Q(cd) > 0 {
					b.WriteString(cd.Token())
					b.WriteByte(' ')
				}
			}
			continue
		}
		for i, v := range values {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strings.Join(strings.Fields(v), " "))
		}
	}
	return b.String()
}

// requestDirectives are what the request asks of the cache.
type requestDirectives struct {
	noCache  bool          // revalidate (no-cache, Pragma: no-cache, max-age=0)
	maxAge   time.Duration // -1: absent
	minFresh time.Duration
	noStore  bool
	onlyIf   bool
}

func requestCC(r *http.Request) requestDirectives {
	cc := parseCacheControl(r.Header["Cache-Control"])
	d := requestDirectives{noCache: cc.noCache, maxAge: cc.maxAge, minFresh: cc.minFresh, noStore: cc.noStore, onlyIf: cc.onlyIfCached}
	if len(r.Header["Cache-Control"]) == 0 {
		for _, v := range r.Header["Pragma"] {
			if strings.Contains(strings.ToLower(v), "no-cache") {
				d.noCache = true
			}
		}
	}
	if d.maxAge == 0 {
		d.noCache = true
	}
	return d
}
