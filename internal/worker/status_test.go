package worker

import (
	"testing"
	"time"
)

// TestWorkersStatus: the snapshot shows each worker's pid, state, requests
// served, memory, and the request a busy one runs.
func TestWorkersStatus(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 2})
	for range 3 {
		if resp, _ := tp.get(t, "/env"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	before := time.Now()
	first := tp.getAsync("/wait?go=go&enter=first&x=1")
	tp.waitMarked(t, "first")

	ws := tp.Workers()
	if len(ws) != 2 {
		t.Fatalf("%d workers, want 2: %+v", len(ws), ws)
	}
	var busy, idle, served int64
	for _, w := range ws {
		if w.PID <= 0 || w.RSS <= 0 || w.Started.IsZero() {
			t.Errorf("worker %d: pid %d, rss %d, started %v", w.ID, w.PID, w.RSS, w.Started)
		}
		served += w.Requests
		switch w.State {
		case StateBusy:
			busy++
			if len(w.Current) != 1 {
				t.Fatalf("busy worker lists %d requests: %+v", len(w.Current), w.Current)
			}
			c := w.Current[0]
			if c.Method != "GET" || c.URI != "/wait?go=go&enter=first&x=1" || c.Since.Before(before.Add(-time.Second)) {
				t.Errorf("current request %+v", c)
			}
		case StateIdle:
			idle++
			if len(w.Current) != 0 {
				t.Errorf("idle worker lists %+v", w.Current)
			}
		default:
			t.Errorf("worker %d state %q", w.ID, w.State)
		}
	}
	if busy != 1 || idle != 1 || served != 3 {
		t.Errorf("busy %d, idle %d, served %d; want 1, 1, 3", busy, idle, served)
	}
	if q := tp.Queued(); q != 0 {
		t.Errorf("queued %d", q)
	}
	tp.mark(t, "go")
	if r := <-first; r[0] != 200 {
		t.Errorf("first: %v", r[0])
	}
}
