package limit

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"portico/internal/errpage"
)

// Key kinds: what a limit counts by.
const (
	KeyIP     = "ip"     // the client address, after the trusted-proxy rules (r.RemoteAddr without its port)
	KeyHeader = "header" // a request header's value ("header:NAME")
	KeyCookie = "cookie" // a cookie's value ("cookie:NAME")
	KeyRoute  = "route"  // the route: one budget for all its clients
)

// Key is what a limit counts by: the client address, a header or a
// cookie, or the route.
type Key struct {
	kind, name string
}

// ParseKey parses "ip", "header:NAME", "cookie:NAME" or "route".
func ParseKey(s string) (Key, error) {
	kind, name, _ := strings.Cut(s, ":")
	switch {
	case s == KeyIP || s == KeyRoute:
		return Key{kind: s}, nil
	case (kind == KeyHeader || kind == KeyCookie) && name != "":
		if kind == KeyHeader {
			name = http.CanonicalHeaderKey(name)
		}
		return Key{kind: kind, name: name}, nil
	}
	return Key{}, fmt.Errorf("limit: key %q is not \"ip\", \"header:NAME\", \"cookie:NAME\" or \"route\"", s)
}

func (k Key) String() string {
	if k.name != "" {
		return k.kind + ":" + k.name
	}
	return k.kind
}

// of returns r's value of the key ("" when r has none). route is the
// route's label, the value of KeyRoute.
func (k Key) of(r *http.Request, route string) string {
	switch k.kind {
	case KeyIP:
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			return host
		}
		return r.RemoteAddr // a bare address (realip), or a Unix peer
	case KeyHeader:
		return r.Header.Get(k.name)
	case KeyCookie:
		if c, err := r.Cookie(k.name); err == nil {
			return c.Value
		}
		return ""
	case KeyRoute:
		return "route:" + route
	}
	return ""
}

// HTTPOptions configure a limit's middleware on one route.
type HTTPOptions struct {
	// Key is what the limit counts by. A request without a value for it
	// (no such header or cookie) is not limited, as in nginx.
	Key Key
	// Route is the route's label: the value of the "route" key, and named
	// in log records.
	Route string
	// Name says which limit this is in log records ("site.limit_req").
	Name string
	// Logger receives the rejections: each at debug level, and the first
	// of a key in a minute at info. Nil: slog.Default().
	Logger *slog.Logger
	// Rejected, when set, counts the rejected requests.
	Rejected *atomic.Int64
}

// rejectLog samples rejection records: one per key per minute at info,
// every one at debug.
type rejectLog struct {
	mu   sync.Mutex
	seen *lru[time.Time]
}

const rejectLogKeys = 10_000

// sample reports whether a rejection of key at now is the first in a
// minute.
func (l *rejectLog) sample(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = newLRU[time.Time](rejectLogKeys)
	}
	if last, ok := l.seen.get(key); ok && now.Sub(last) < time.Minute {
		return false
	}
	l.seen.put(key, now)
	return true
}

func (o *HTTPOptions) reject(rl *rejectLog, r *http.Request, key string, status int, attrs ...any) {
	if o.Rejected != nil {
		o.Rejected.Add(1)
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	level := slog.LevelDebug
	if rl.sample(key, time.Now()) {
		level = slog.LevelInfo
		attrs = append(attrs, "sampled", "first rejection of this key in a minute; the others are logged at debug level")
	}
	if !log.Enabled(r.Context(), level) {
		return
	}
	attrs = append([]any{"limit", o.Name, "route", o.Route, "key", o.Key.String(), "value", key, "client", r.RemoteAddr, "status", status}, attrs...)
	log.Log(r.Context(), level, "request refused by a limit", attrs...)
}

// Middleware limits the rate of the requests through it: past the burst
// they get 429 Too Many Requests with Retry-After (the seconds until a
// request of the key would pass, rounded up; nginx sends 503 and no
// Retry-After). With Options.Delay the requests beyond the rate wait for
// their turn; one whose client goes away meanwhile gets no answer. A
// store's error lets the request pass (fail open; the store logs it).
func (l *Limiter) Middleware(opt HTTPOptions) func(http.Handler) http.Handler {
	rl := &rejectLog{}
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			key := opt.Key.of(r, opt.Route)
			if key == "" {
				h.ServeHTTP(w, r)
				return
			}
			d, _ := l.Allow(key) // an error came with OK: fail open
			if !d.OK {
				secs := RetryAfterSeconds(d.RetryAfter)
				opt.reject(rl, r, key, http.StatusTooManyRequests, "retry_after", secs)
				w.Header().Set("Retry-After", strconv.Itoa(secs))
				if !errpage.Serve(w, http.StatusTooManyRequests) {
					http.Error(w, "429 too many requests", http.StatusTooManyRequests)
				}
				return
			}
			if d.Delay > 0 {
				t := time.NewTimer(d.Delay)
				select {
				case <-t.C:
				case <-r.Context().Done():
					t.Stop()
					return
				}
			}
			h.ServeHTTP(w, r)
		})
	}
}

// Concurrency limits the requests in progress per key (nginx's limit_conn
// in a server or location, which counts requests being processed). It
// keeps only the keys with requests in progress. Safe for concurrent use.
type Concurrency struct {
	max int
	mu  sync.Mutex
	n   map[string]int
}

// NewConcurrency returns a limit of max requests in progress per key.
func NewConcurrency(max int) (*Concurrency, error) {
	if max <= 0 {
		return nil, errors.New("limit: the maximum of requests in progress must be positive")
	}
	return &Concurrency{max: max, n: map[string]int{}}, nil
}

func (c *Concurrency) acquire(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[key] >= c.max {
		return false
	}
	c.n[key]++
	return true
}

func (c *Concurrency) release(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[key]--; c.n[key] <= 0 {
		delete(c.n, key)
	}
}

// Len returns the number of keys with requests in progress.
func (c *Concurrency) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.n)
}

// Middleware answers 503 Service Unavailable to a request whose key
// already has the maximum in progress (nginx's limit_conn_status default),
// until one of them ends.
func (c *Concurrency) Middleware(opt HTTPOptions) func(http.Handler) http.Handler {
	rl := &rejectLog{}
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			key := opt.Key.of(r, opt.Route)
			if key == "" {
				h.ServeHTTP(w, r)
				return
			}
			if !c.acquire(key) {
				opt.reject(rl, r, key, http.StatusServiceUnavailable, "max", c.max)
				if !errpage.Serve(w, http.StatusServiceUnavailable) {
					http.Error(w, "503 too many requests in progress", http.StatusServiceUnavailable)
				}
				return
			}
			defer c.release(key)
			h.ServeHTTP(w, r)
		})
	}
}
