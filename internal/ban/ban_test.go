package ban

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTable(opt Options) (*Table, *clock, *bytes.Buffer) {
	c := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	var log bytes.Buffer
	opt.Now = c.now
	opt.Logger = slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return New(opt), c, &log
}

func TestTable(t *testing.T) {
	tb, c, _ := newTable(Options{MaxDuration: time.Hour})
	a := netip.MustParseAddr("192.0.2.1")
	tb.Ban(a, 10*time.Second)
	if _, ok := tb.Banned(netip.MustParseAddr("::ffff:192.0.2.1")); !ok {
		t.Error("the v4-mapped form is not banned")
	}
	c.t = c.t.Add(9 * time.Second)
	if _, ok := tb.Banned(a); !ok {
		t.Error("ban ended early")
	}
	tb.Ban(a, 500*time.Millisecond) // a shorter second ban keeps the later end
	c.t = c.t.Add(time.Second)
	if _, ok := tb.Banned(a); ok {
		t.Error("ban did not end at 10s")
	}
	end := tb.Ban(a, 48*time.Hour)
	if got := end.Sub(c.t); got != time.Hour {
		t.Errorf("ban of 48h lasts %v, want the 1h bound", got)
	}
	if l := tb.List(); len(l) != 1 || l[0].Addr != "192.0.2.1" || l[0].Remaining != 3600 {
		t.Errorf("List = %+v", l)
	}
	if !tb.Lift(a) || tb.Lift(a) {
		t.Error("Lift: want true then false")
	}
	if _, ok := tb.Banned(a); ok {
		t.Error("lifted ban still in force")
	}
}

func TestTableBound(t *testing.T) {
	tb, c, _ := newTable(Options{MaxEntries: 3})
	for i := range 3 {
		tb.Ban(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), time.Duration(10+i)*time.Second)
	}
	// Full: the ban ending soonest (10.0.0.0) makes room.
	tb.Ban(netip.MustParseAddr("10.0.0.9"), time.Minute)
	if _, ok := tb.Banned(netip.MustParseAddr("10.0.0.0")); ok {
		t.Error("the soonest-ending ban was not evicted")
	}
	// A flood of distinct addresses never grows the table past its bound.
	for i := range 1000 {
		c.t = c.t.Add(time.Millisecond)
		tb.Ban(netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}), time.Minute)
		if n := len(tb.m); n > 3 {
			t.Fatalf("table holds %d bans, bound 3", n)
		}
	}
}

func TestMiddleware(t *testing.T) {
	tb, c, log := newTable(Options{})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.URL.Query().Get("block"); v != "" {
			w.Header().Set(Header, v)
		}
		tb.Take(r, w.Header()) // as the proxy handler does with an app's response head
		w.Write([]byte("app"))
	})
	h := tb.Middleware(app)
	do := func(remote, target string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", target, nil)
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for _, bad := range []string{"soon", "-5", "0", "1.5"} {
		w := do("192.0.2.7:1", "/?block="+bad)
		if w.Code != 200 || w.Header().Get(Header) != "" {
			t.Errorf("block=%s: %d, header %q", bad, w.Code, w.Header().Get(Header))
		}
	}
	if n := strings.Count(log.String(), "ignoring X-Portico-Block"); n != 4 {
		t.Errorf("%d warn records for bad values, want 4", n)
	}
	w := do("@", "/?block=60") // a unix-socket peer: nothing to ban
	if w.Code != 200 || w.Header().Get(Header) != "" || !strings.Contains(log.String(), "no IP address") {
		t.Errorf("unix peer: %d %q", w.Code, w.Header().Get(Header))
	}
	w = do("192.0.2.7:1", "/login?block=60")
	if w.Code != 200 || w.Header().Get(Header) != "" || w.Body.String() != "app" {
		t.Fatalf("the banning response: %d, header %q, body %q", w.Code, w.Header().Get(Header), w.Body)
	}
	for _, remote := range []string{"192.0.2.7:2", "192.0.2.7", "[::ffff:192.0.2.7]:3"} {
		if w := do(remote, "/other"); w.Code != 403 {
			t.Errorf("%s during the ban: %d, want 403", remote, w.Code)
		}
	}
	if w := do("192.0.2.8:1", "/"); w.Code != 200 {
		t.Errorf("another client: %d", w.Code)
	}
	c.t = c.t.Add(time.Minute)
	if w := do("192.0.2.7:2", "/"); w.Code != 200 {
		t.Errorf("after the ban: %d, want 200", w.Code)
	}
	if !strings.Contains(log.String(), `msg="client banned" client=192.0.2.7 seconds=60`) {
		t.Errorf("no ban record:\n%s", log)
	}
}
