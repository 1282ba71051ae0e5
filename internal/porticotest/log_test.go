package porticotest

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLogRecorder(t *testing.T) {
	rec := NewLogRecorder()
	log := rec.Logger().With("worker", 3).WithGroup("req").With("id", "a")
	log.Debug("served", "status", 200, slog.Group("client", "addr", "x"))
	go rec.Logger().Warn("later", "n", 1)
	got := rec.Wait(t, "the later record", 5*time.Second, func(r Record) bool { return r.Message == "later" })
	if got.Level != slog.LevelWarn || got.Attrs["n"] != "1" || got.Text == "" {
		t.Errorf("later: %+v", got)
	}
	first := rec.Records()[0]
	want := map[string]string{"worker": "3", "req.id": "a", "req.status": "200", "req.client.addr": "x"}
	for k, v := range want {
		if first.Attrs[k] != v {
			t.Errorf("attr %s = %q, want %q (all: %v)", k, first.Attrs[k], v, first.Attrs)
		}
	}
	if !strings.HasSuffix(first.Text, ` level=DEBUG msg=served worker=3 req.id=a req.status=200 req.client.addr=x`) {
		t.Errorf("text: %s", first.Text)
	}
}

func TestWaitFor(t *testing.T) {
	start := time.Now()
	WaitFor(t, "50 ms to pass", 5*time.Second, func() bool { return time.Since(start) > 50*time.Millisecond })
}
