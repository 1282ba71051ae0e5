// Package ban lets an app ban a client: a response header
// X-Portico-Block: SECONDS from the app (a worker or a proxy upstream)
// bans the client's address for that long, and every request from it
// gets 403 until the ban ends. The app knows best who is hammering its
// login page; nginx has no equivalent (fail2ban reading its log is the
// usual stand-in).
//
// The decisions, in the order a request meets them:
//
//  1. The address is the real client's (after internal/realip), without
//     its port; an IPv4-mapped IPv6 address counts as IPv4. Unix-socket
//     peers have no address and are never banned (the header is still
//     removed, and a record says why nothing was banned).
//  2. A banned client gets 403 on every route, with one debug record.
//     403 rather than 429: the refusal is a verdict about the client, not
//     a rate, and a Retry-After would tell an attacker when to come back.
//  3. The header never reaches the client: it is removed from the head of
//     every app and upstream response, whatever its value, as the proxy
//     handler reads it (Take; Portico's own answers never carry it).
//  4. SECONDS is a positive integer, bounded by Options.MaxDuration (one
//     day by default; longer is cut to it); anything else is ignored with
//     one warn record. A second ban of a banned address keeps the later
//     end.
//  5. The table is bounded (Options.MaxEntries): when it is full, expired
//     bans go first, then the one that ends soonest.
//
// Bans live in memory, for the life of the process: they survive config
// reloads, not restarts. The admin listener lists them (GET /bans) and
// lifts them (DELETE /bans/ADDR).
package ban

import (
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"portico/internal/requestid"
)

// Header is the response header an app sets to ask for a ban.
const Header = "X-Portico-Block"

// Defaults.
const (
	DefaultMaxDuration = 24 * time.Hour
	DefaultMaxEntries  = 100_000
)

// Options configure a Table. The zero value is usable.
type Options struct {
	// MaxDuration bounds one ban; a longer request is cut to it. Zero:
	// one day.
	MaxDuration time.Duration
	// MaxEntries bounds the table (about 100 bytes an entry). Zero:
	// 100,000.
	MaxEntries int
	// Logger receives bans, refusals (debug) and bad header values. Nil:
	// slog.Default().
	Logger *slog.Logger
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
}

// Table holds the bans; safe for concurrent use.
type Table struct {
	opt Options
	mu  sync.Mutex
	m   map[netip.Addr]time.Time // address → end of its ban
	// size is len(m), kept under mu and read without it: a request meets
	// no lock while nobody is banned (the common case).
	size atomic.Int64
}

// New returns an empty Table.
func New(opt Options) *Table {
	if opt.MaxDuration <= 0 {
		opt.MaxDuration = DefaultMaxDuration
	}
	if opt.MaxEntries <= 0 {
		opt.MaxEntries = DefaultMaxEntries
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Table{opt: opt, m: map[netip.Addr]time.Time{}}
}

// Ban bans a for d (cut to MaxDuration) and returns the end of its ban.
func (t *Table) Ban(a netip.Addr, d time.Duration) time.Time {
	a = a.Unmap().WithZone("")
	d = min(d, t.opt.MaxDuration)
	now := t.opt.Now()
	end := now.Add(d)
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.m[a]; ok {
		if old.After(end) {
			end = old
		}
	} else if len(t.m) >= t.opt.MaxEntries {
		t.evictLocked(now)
	}
	t.m[a] = end
	t.size.Store(int64(len(t.m)))
	return end
}

// evictLocked makes room for one entry: expired bans go, and when none
// has, the one that ends soonest.
func (t *Table) evictLocked(now time.Time) {
	var soonest netip.Addr
	var soonestEnd time.Time
	freed := false
	for a, end := range t.m {
		if !end.After(now) {
			delete(t.m, a)
			freed = true
			continue
		}
		if !soonest.IsValid() || end.Before(soonestEnd) {
			soonest, soonestEnd = a, end
		}
	}
	if !freed && soonest.IsValid() {
		delete(t.m, soonest)
	}
}

// Banned reports whether a is banned now, and until when.
func (t *Table) Banned(a netip.Addr) (time.Time, bool) {
	if t.size.Load() == 0 {
		return time.Time{}, false
	}
	a = a.Unmap().WithZone("")
	now := t.opt.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	end, ok := t.m[a]
	if !ok {
		return time.Time{}, false
	}
	if !end.After(now) {
		delete(t.m, a)
		t.size.Store(int64(len(t.m)))
		return time.Time{}, false
	}
	return end, true
}

// Lift ends a's ban; false when a was not banned.
func (t *Table) Lift(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	now := t.opt.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	end, ok := t.m[a]
	delete(t.m, a)
	t.size.Store(int64(len(t.m)))
	return ok && end.After(now)
}

// Entry is one ban, as GET /bans lists it.
type Entry struct {
	Addr      string    `json:"addr"`
	Until     time.Time `json:"until"`
	Remaining float64   `json:"remaining_seconds"`
}

// List returns the bans in force, the one ending soonest first.
func (t *Table) List() []Entry {
	now := t.opt.Now()
	t.mu.Lock()
	out := make([]Entry, 0, len(t.m))
	for a, end := range t.m {
		if !end.After(now) {
			delete(t.m, a)
			continue
		}
		out = append(out, Entry{Addr: a.String(), Until: end.UTC(), Remaining: end.Sub(now).Seconds()})
	}
	t.size.Store(int64(len(t.m)))
	t.mu.Unlock()
	slices.SortFunc(out, func(x, y Entry) int {
		if c := x.Until.Compare(y.Until); c != 0 {
			return c
		}
		return strings.Compare(x.Addr, y.Addr)
	})
	return out
}

// clientAddr parses an http.Request.RemoteAddr ("ip:port" or a bare ip);
// false for a Unix-socket peer or garbage.
func clientAddr(remote string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	if a, err := netip.ParseAddr(remote); err == nil {
		return a.Unmap().WithZone(""), true
	}
	return netip.Addr{}, false
}

// Middleware refuses banned clients with 403. The Header of responses
// is turned into bans by Take, which the proxy handler calls on the head
// of every app and upstream response (proxy.Options.ResponseHead): only
// they can carry it, so no other response is wrapped to look for it.
func (t *Table) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := clientAddr(r.RemoteAddr)
		if ok {
			if end, banned := t.Banned(a); banned {
				t.opt.Logger.Debug("banned client refused", "client", r.RemoteAddr, "until", end.UTC().Format(time.RFC3339),
					"uri", r.RequestURI, "request_id", requestid.Of(r))
				http.Error(w, "403 forbidden", http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// Take removes the Header from h, the head of the response to r, and
// bans r's client if it asks for it (proxy.Options.ResponseHead).
func (t *Table) Take(r *http.Request, h http.Header) {
	vs, ok := h[Header]
	if !ok {
		return
	}
	delete(h, Header)
	v := strings.TrimSpace(vs[0])
	secs, err := strconv.ParseInt(v, 10, 64)
	if err != nil || secs <= 0 || len(vs) > 1 {
		t.opt.Logger.Warn("ignoring "+Header+": want one positive number of seconds", "value", strings.Join(vs, ", "),
			"uri", r.RequestURI, "request_id", requestid.Of(r))
		return
	}
	a, ok := clientAddr(r.RemoteAddr)
	if !ok {
		t.opt.Logger.Warn("ignoring "+Header+": the client has no IP address (a unix-socket peer)", "client", r.RemoteAddr,
			"request_id", requestid.Of(r))
		return
	}
	d := time.Duration(min(secs, int64(t.opt.MaxDuration/time.Second))) * time.Second
	end := t.Ban(a, d)
	t.opt.Logger.Info("client banned", "client", a.String(), "seconds", secs, "until", end.UTC().Format(time.RFC3339),
		"uri", r.RequestURI, "request_id", requestid.Of(r))
}
