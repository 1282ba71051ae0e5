package worker

import (
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"
)

// startAfter runs GET path in the background after d and returns a channel
// with the status and the worker's pid (for /env) or 0.
func (tp *testPool) getLater(t *testing.T, path string, d time.Duration) <-chan [2]float64 {
	t.Helper()
	out := make(chan [2]float64, 1)
	go func() {
		time.Sleep(d)
		resp, err := http.Get(tp.srv.URL + path)
		if err != nil {
			out <- [2]float64{-1, 0}
			return
		}
		defer resp.Body.Close()
		var pid float64
		if resp.StatusCode == 200 && path == "/env" {
			var env map[string]any
			if jsonDecode(resp.Body, &env) == nil {
				pid, _ = env["pid"].(float64)
			}
		}
		out <- [2]float64{float64(resp.StatusCode), pid}
	}()
	return out
}

// TestWriteAheadServesEveryRequest: with one slot and many concurrent
// requests, requests are written ahead on the busy slot and every one is
// answered in order.
func TestWriteAheadServesEveryRequest(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1})
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			path := "/sleep?s=0.005"
			if i%2 == 0 {
				path = "/env"
			}
			resp, body := tp.get(t, path)
			if resp.StatusCode != 200 {
				t.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
			}
		})
	}
	wg.Wait()
	if tp.aheads.Load() == 0 {
		t.Error("no request was written ahead on the busy slot")
	}
}

// TestWriteAheadAfterTimeout: the request written ahead behind one that
// times out runs normally on the same worker once that one unwinds; the
// late interrupt does not hit it.
func TestWriteAheadAfterTimeout(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1, Timeout: time.Second, Grace: 3 * time.Second})
	before := tp.pid(t)
	first := tp.getLater(t, "/sleep?s=30", 0)
	second := tp.getLater(t, "/env", 200*time.Millisecond)
	if r := <-first; r[0] != 504 {
		t.Errorf("first: %v, want 504", r[0])
	}
	if r := <-second; r[0] != 200 || r[1] != before {
		t.Errorf("second: status %v pid %v, want 200 from pid %v", r[0], r[1], before)
	}
	if tp.aheads.Load() == 0 {
		t.Error("the second request was not written ahead")
	}
}

// TestWriteAheadAfterCrash: the request written ahead behind one whose
// worker dies never reached the app, so it is run on the replacement.
func TestWriteAheadAfterCrash(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1, App: "pep3333:raw"})
	before := tp.pid(t)
	first := tp.getLater(t, "/crash?s=0.5", 0)
	second := tp.getLater(t, "/env", 200*time.Millisecond)
	if r := <-first; r[0] != 502 {
		t.Errorf("first: %v, want 502", r[0])
	}
	if r := <-second; r[0] != 200 || r[1] == before || r[1] == 0 {
		t.Errorf("second: status %v pid %v, want 200 from a new worker (not %v)", r[0], r[1], before)
	}
	if tp.aheadRetries.Load() != 1 {
		t.Errorf("aheadRetries = %d, want 1: the second request was not written ahead", tp.aheadRetries.Load())
	}
}

// TestWriteAheadAfterKill: the request written ahead behind one that hangs
// past its grace (the worker is killed) is run on the replacement.
func TestWriteAheadAfterKill(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1, App: "pep3333:raw", Timeout: 500 * time.Millisecond, Grace: 500 * time.Millisecond})
	before := tp.pid(t)
	first := tp.getLater(t, "/hang", 0)
	second := tp.getLater(t, "/env", 200*time.Millisecond)
	if r := <-first; r[0] != 504 {
		t.Errorf("first: %v, want 504", r[0])
	}
	if r := <-second; r[0] != 200 || r[1] == before || r[1] == 0 {
		t.Errorf("second: status %v pid %v, want 200 from a new worker (not %v)", r[0], r[1], before)
	}
	if tp.aheadRetries.Load() != 1 {
		t.Errorf("aheadRetries = %d, want 1: the second request was not written ahead", tp.aheadRetries.Load())
	}
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }

// TestNoWriteAheadBehindSlowRequests: once requests take longer than
// aheadMaxService on average, none is written ahead (it would wait for a
// slow one while another worker may free up).
func TestNoWriteAheadBehindSlowRequests(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1})
	for range 20 {
		tp.get(t, "/sleep?s=0.05")
	}
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() { tp.get(t, "/sleep?s=0.05") })
	}
	wg.Wait()
	if n := tp.aheads.Load(); n != 0 {
		t.Errorf("%d requests written ahead behind 50 ms requests, want none", n)
	}
}
