package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"portico/internal/porticotest"
)

// getAsync runs GET path in the background and returns a channel with the
// status and the worker's pid (for /env) or 0.
func (tp *testPool) getAsync(path string) <-chan [2]float64 {
	out := make(chan [2]float64, 1)
	go func() {
		resp, err := http.Get(tp.srv.URL + path)
		if err != nil {
			out <- [2]float64{-1, 0}
			return
		}
		defer resp.Body.Close()
		var pid float64
		if resp.StatusCode == 200 && strings.HasPrefix(path, "/env") {
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
	before := tp.pid(t)
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			for j := range 40 {
				path := "/sleep?s=0.0002"
				if (i+j)%4 != 0 {
					path = "/env"
				}
				resp, body := tp.get(t, path)
				if resp.StatusCode != 200 {
					t.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
				}
			}
		})
	}
	wg.Wait()
	if tp.aheads.Load() == 0 {
		t.Error("no request was written ahead on the busy slot")
	}
	// The slot went back and forth between the queue, the written-ahead
	// path and the free list without being lost (a slot put in the free
	// list twice once overflowed it and closed the worker's socket).
	if after := tp.pid(t); after != before || strings.Contains(tp.log.String(), "worker died") {
		t.Errorf("the worker was replaced (pid %v -> %v)", before, after)
	}
	porticotest.WaitFor(t, "the slot idle again", 5*time.Second, func() bool { return tp.idleLen() == 1 })
	if n := len(tp.pp.Upstreams()); n != 1 {
		t.Errorf("%d slots in the pool for 1 worker of 1 thread", n)
	}
}

// writeAheadBehind sends first, waits until the app has it (its ?enter=
// mark), then sends second and waits until second is written ahead on
// first's slot. The order is the marks'; the only clock is first's timeout,
// which must leave the few milliseconds this takes.
func (tp *testPool) writeAheadBehind(t *testing.T, first, second string) (<-chan [2]float64, <-chan [2]float64) {
	t.Helper()
	sep := "?"
	if strings.Contains(first, "?") {
		sep = "&"
	}
	f := tp.getAsync(first + sep + "enter=first")
	tp.waitMarked(t, "first")
	s := tp.getAsync(second)
	porticotest.WaitFor(t, "the second request written ahead", 10*time.Second, func() bool { return tp.aheadLen() == 1 })
	return f, s
}

// TestWriteAheadAfterTimeout: the request written ahead behind one that
// times out runs normally on the same worker once that one unwinds; the
// late interrupt does not hit it.
func TestWriteAheadAfterTimeout(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1, Timeout: 2 * time.Second, Grace: 3 * time.Second})
	before := tp.pid(t)
	first, second := tp.writeAheadBehind(t, "/sleep?s=30", "/env")
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
	first, second := tp.writeAheadBehind(t, "/crash?go=crash", "/env")
	tp.mark(t, "crash") // the worker dies with the second request unread
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
	tp := newTestPool(t, Options{Workers: 1, App: "pep3333:raw", Timeout: time.Second, Grace: 500 * time.Millisecond})
	before := tp.pid(t)
	first, second := tp.writeAheadBehind(t, "/hang", "/env")
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

// TestQueuedClientLeaves: a request waiting in the queue for longer than
// clientWatchDelay whose client goes away leaves the queue (499 in the log)
// and never reaches the app.
func TestQueuedClientLeaves(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1})
	first := tp.getAsync("/wait?go=go&enter=first")
	tp.waitMarked(t, "first") // the only worker is busy until "go"
	// A body too large to be written ahead: this request queues.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	left := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", tp.srv.URL+"/sleep?s=0&enter=left", strings.NewReader(strings.Repeat("x", 100<<10)))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		left <- err
	}()
	porticotest.WaitFor(t, "the request in the queue", 10*time.Second, func() bool { return tp.waitingLen() == 1 })
	cancel() // the client goes away
	if err := <-left; err == nil {
		t.Fatal("the queued request was answered while the only worker was busy")
	}
	// It leaves the queue while the worker is still busy.
	tp.log.Wait(t, "the queued request's 499", 10*time.Second, func(r porticotest.Record) bool { return r.Attrs["status"] == "499" })
	if n := tp.waitingLen(); n != 0 {
		t.Errorf("%d requests still waiting after the client left", n)
	}
	tp.mark(t, "go")
	if r := <-first; r[0] != 200 {
		t.Errorf("first: %v", r[0])
	}
	tp.get(t, "/env") // the worker is free again, and ran everything before
	if tp.marked("left") {
		t.Error("the app ran the request of a client that had left")
	}
}

// TestTryAheadLeavesIdleSlots: a write-ahead offer that has gone stale
// (the slot finished and went idle) must not be taken as a free slot: the
// slot is in the idle list already, and taking it from both lists once put
// it in the free list twice, until the list overflowed and the pool closed
// the worker's socket under load.
func TestTryAheadLeavesIdleSlots(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1})
	porticotest.WaitFor(t, "an idle slot", 5*time.Second, func() bool { return tp.idleLen() == 1 })
	s := tp.idleSlot()
	if _, _, ok, err := tp.tryAhead(s, nil); ok || err != nil {
		t.Fatalf("tryAhead took an idle slot (ok %v, err %v)", ok, err)
	}
	if st := s.state.Load(); st != slotIdle {
		t.Errorf("slot state %d after a stale offer, want idle", st)
	}
	tp.get(t, "/env") // still served through the free list
}

// TestQueueIsFirstComeFirstServed: requests waiting for the only worker are
// served in the order they arrived. (Waiters once selected over two
// channels, and one that got a stale write-ahead offer went to the back:
// under steady overload the order became a lottery and the p99 of a Django
// page was four times its p50.)
func TestQueueIsFirstComeFirstServed(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1})
	first := tp.getAsync("/wait?go=go&enter=first")
	tp.waitMarked(t, "first")
	// Request i is sent once i requests wait (the first of them written
	// ahead on the busy slot, the others queued): arrival order is i.
	const n = 12
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			resp, body := tp.get(t, fmt.Sprintf("/sleep?s=0&enter=order&i=%d", i))
			if resp.StatusCode != 200 {
				t.Errorf("request %d: %d %s", i, resp.StatusCode, body)
			}
		})
		porticotest.WaitFor(t, fmt.Sprintf("%d requests waiting", i+1), 10*time.Second, func() bool { return tp.waitingLen() == i+1 })
	}
	tp.mark(t, "go")
	wg.Wait()
	if r := <-first; r[0] != 200 {
		t.Errorf("first: %v", r[0])
	}
	// The app marks each request as it enters it: the order it ran them.
	order := tp.markLines(t, "order")
	for i, got := range order {
		if got != strconv.Itoa(i) {
			t.Fatalf("served in the order %v, want arrival order", order)
		}
	}
	if len(order) != n {
		t.Errorf("%d requests served, want %d", len(order), n)
	}
}
