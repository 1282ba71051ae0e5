package limit

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"portico/internal/porticotest"
)

func newRedisLimiter(t *testing.T, url string, opt Options, log *slog.Logger) *Limiter {
	t.Helper()
	st, err := NewRedisStore(RedisOptions{URL: url, Prefix: "test:" + t.Name() + ":", Retry: 20 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	opt.Store = st
	return newLimiter(t, opt)
}

// TestRedisShared: two limiters (two nodes) with one Redis share one
// budget per key.
func TestRedisShared(t *testing.T) {
	srv := porticotest.StartRedis(t)
	log := porticotest.NewLogRecorder()
	opt := Options{Rate: Rate{1, time.Minute}, Burst: 2}
	a := newRedisLimiter(t, srv.URL(), opt, log.Logger())
	b := newRedisLimiter(t, srv.URL(), opt, log.Logger())
	for i, l := range []*Limiter{a, b, a} {
		d, err := l.Allow("client")
		if err != nil || !d.OK {
			t.Fatalf("request %d: %+v, %v; want passed", i, d, err)
		}
	}
	for i, l := range []*Limiter{b, a} {
		d, err := l.Allow("client")
		if err != nil || d.OK {
			t.Fatalf("request %d past the shared burst: %+v, %v; want refused", i+3, d, err)
		}
		if s := RetryAfterSeconds(d.RetryAfter); s < 59 || s > 60 {
			t.Fatalf("retry after %v, want about a minute", d.RetryAfter)
		}
	}
	if d, err := b.Allow("other"); err != nil || !d.OK {
		t.Fatalf("another key: %+v, %v", d, err)
	}
	// Delay mode (nginx without nodelay): the store says how long to wait.
	c := newRedisLimiter(t, srv.URL(), Options{Rate: Rate{1, time.Minute}, Burst: 2, Delay: true}, log.Logger())
	c.Allow("delayed")
	d, err := c.Allow("delayed")
	if err != nil || !d.OK || d.Delay < 59*time.Second || d.Delay > time.Minute {
		t.Fatalf("second delayed request: %+v, %v; want passed after about a minute", d, err)
	}
	if recs := log.Records(); len(recs) != 0 {
		t.Fatalf("unexpected log records:\n%s", log)
	}
}

// TestRedisOutage: with Redis stopped, every request passes, quickly, with
// one error record for the outage; when Redis is back the limit applies
// again, with one info record.
func TestRedisOutage(t *testing.T) {
	srv := porticotest.StartRedis(t)
	log := porticotest.NewLogRecorder()
	l := newRedisLimiter(t, srv.URL(), Options{Rate: Rate{1, time.Minute}}, log.Logger())
	if d, _ := l.Allow("k"); !d.OK {
		t.Fatal("first refused")
	}
	if d, _ := l.Allow("k"); d.OK {
		t.Fatal("second passed while Redis is up")
	}
	srv.Stop()
	calls := 0
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline) || calls < 5; calls++ {
		start := time.Now()
		d, err := l.Allow("k")
		if !d.OK || err == nil {
			t.Fatalf("call %d with Redis down: %+v, %v; want passed with an error", calls, d, err)
		}
		if el := time.Since(start); el > time.Second {
			t.Fatalf("a call with Redis down took %v", el)
		}
	}
	errs := 0
	for _, r := range log.Records() {
		if r.Level == slog.LevelError {
			errs++
		}
	}
	if errs != 1 {
		t.Fatalf("%d error records for one outage of %d calls, want 1:\n%s", errs, calls, log)
	}
	srv.Start() // a fresh Redis: the key is gone
	porticotest.WaitFor(t, "the limit to apply again", 10*time.Second, func() bool {
		d, err := l.Allow("k2")
		return err == nil && d.OK
	})
	if d, err := l.Allow("k2"); err != nil || d.OK {
		t.Fatalf("after the outage: %+v, %v; want refused", d, err)
	}
	log.Wait(t, "the recovery record", time.Second, func(r porticotest.Record) bool {
		return r.Level == slog.LevelInfo && strings.Contains(r.Message, "answers again")
	})
	n := 0
	for _, r := range log.Records() {
		if r.Level >= slog.LevelInfo {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d records, want one for the outage and one for the recovery:\n%s", n, log)
	}
}
