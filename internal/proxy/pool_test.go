package proxy

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"portico/internal/porticotest"
)

// acquireAsync runs Acquire in the background and returns its result.
func acquireAsync(p *Pool, front, canAhead bool) <-chan Lease {
	out := make(chan Lease, 1)
	go func() {
		l, err := p.Acquire(context.Background(), httptest.NewRequest("GET", "/", nil), nil, front, canAhead)
		if err != nil {
			close(out)
			return
		}
		out <- l
	}()
	return out
}

func queued(t *testing.T, p *Pool, n int) {
	t.Helper()
	porticotest.WaitFor(t, "waiters queued", 5*time.Second, func() bool { return p.Queued() == n })
}

func got(t *testing.T, c <-chan Lease) Lease {
	t.Helper()
	select {
	case l, ok := <-c:
		if !ok {
			t.Fatal("Acquire failed")
		}
		return l
	case <-time.After(5 * time.Second):
		t.Fatal("no lease")
	}
	return Lease{}
}

func none(t *testing.T, cs ...<-chan Lease) {
	t.Helper()
	for i, c := range cs {
		select {
		case l := <-c:
			t.Fatalf("waiter %d got a lease on %v too early", i, l.u)
		default:
		}
	}
}

// The queue alone, as the worker pool uses it: capacity goes to waiters in
// arrival order; a place offered behind a running request goes to the
// first waiter that accepts one; a waiter that could not use its lease
// asks again at the head; the size bound holds.
func TestPoolQueueOrder(t *testing.T) {
	u := &Upstream{Name: "slot", MaxConns: 1}
	p := NewPool([]*Upstream{u}, &LeastConn{}, PoolOptions{QueueSize: 3, QueueTimeout: time.Minute, Logger: slog.New(slog.DiscardHandler)})
	running, err := p.Acquire(t.Context(), httptest.NewRequest("GET", "/", nil), nil, false, true)
	if err != nil || running.Ahead() {
		t.Fatalf("first Acquire: %v %v", running, err)
	}
	a := acquireAsync(p, false, true)
	queued(t, p, 1)
	b := acquireAsync(p, false, false) // has a body to stream: no write-ahead
	queued(t, p, 2)
	c := acquireAsync(p, false, true)
	queued(t, p, 3)
	if _, err := p.Acquire(t.Context(), httptest.NewRequest("GET", "/", nil), nil, false, true); err != ErrQueueFull {
		t.Fatalf("a fourth waiter: %v, want ErrQueueFull", err)
	}
	// An offer goes to a, the first that accepts one.
	p.Offer(u)
	la := got(t, a)
	if !la.Ahead() || u.InFlight() != 2 {
		t.Fatalf("a got %+v (in flight %d), want the offer", la, u.InFlight())
	}
	none(t, b, c)
	// The running request ends while a was looking: a's place is gone; a
	// asks again and, first in line, gets the capacity before b.
	running.Release()
	relA, err := p.Requeue(t.Context(), httptest.NewRequest("GET", "/", nil), la, nil, true)
	if err != nil || relA.Ahead() || u.InFlight() != 1 {
		t.Fatalf("requeued a: %+v %v, in flight %d", relA, err, u.InFlight())
	}
	none(t, b, c)
	// b cannot be written ahead: the next offer skips it for c.
	p.Offer(u)
	if lc := got(t, c); !lc.Ahead() {
		t.Fatalf("c got %+v, want the offer", lc)
	} else {
		lc.Release()
	}
	none(t, b)
	relA.Release()
	if lb := got(t, b); lb.Ahead() || u.InFlight() != 1 {
		t.Fatalf("b got %+v", lb)
	} else {
		lb.Release()
	}
	if u.InFlight() != 0 || p.Queued() != 0 {
		t.Errorf("in flight %d, queued %d after every release", u.InFlight(), p.Queued())
	}
}

// Upstreams come and go (the worker processes): a waiter gets one added
// while it waits; a paused upstream takes nobody until resumed; a removed
// one takes nobody; WaitEmpty makes an empty pool wait rather than fail.
func TestPoolDynamicSet(t *testing.T) {
	p := NewPool(nil, &LeastConn{}, PoolOptions{QueueSize: 10, QueueTimeout: time.Minute, WaitEmpty: true, Logger: slog.New(slog.DiscardHandler)})
	w := acquireAsync(p, false, false)
	queued(t, p, 1)
	u1 := &Upstream{Name: "u1", MaxConns: 1}
	p.Add(u1)
	l1 := got(t, w)
	if l1.Upstream() != u1 {
		t.Fatalf("got %v", l1.Upstream())
	}
	// u1 pauses with its lease ending (a worker unwinding): nobody gets it.
	w = acquireAsync(p, false, false)
	queued(t, p, 1)
	p.Pause(u1)
	l1.Release()
	none(t, w)
	p.Resume(u1)
	l1 = got(t, w)
	// Removed: the next waiter gets the new upstream, never u1.
	u2 := &Upstream{Name: "u2", MaxConns: 1}
	w = acquireAsync(p, false, false)
	queued(t, p, 1)
	p.Remove(u1)
	l1.Release()
	none(t, w)
	p.Add(u2)
	if l := got(t, w); l.Upstream() != u2 {
		t.Fatalf("got %v, want u2", l.Upstream())
	}
	// Without WaitEmpty an empty pool fails at once.
	q := NewPool(nil, &LeastConn{}, PoolOptions{QueueSize: 10, Logger: slog.New(slog.DiscardHandler)})
	if _, err := q.Acquire(t.Context(), httptest.NewRequest("GET", "/", nil), nil, false, false); err != ErrNoUpstream {
		t.Errorf("empty pool: %v", err)
	}
}

// QueueStats: a request that finds capacity counts a zero wait; one that
// waits counts its wait (by the pool's clock); a full queue and a queue
// timeout each count one shed request.
func TestPoolQueueStats(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	u := &Upstream{Name: "u", MaxConns: 1}
	p := NewPool([]*Upstream{u}, &LeastConn{}, PoolOptions{QueueSize: 1, QueueTimeout: time.Minute, Now: clock, Logger: slog.New(slog.DiscardHandler)})
	first := got(t, acquireAsync(p, false, false))
	waiting := acquireAsync(p, false, false)
	queued(t, p, 1)
	if _, err := p.Acquire(context.Background(), httptest.NewRequest("GET", "/", nil), nil, false, false); err != ErrQueueFull {
		t.Fatalf("third request: %v, want ErrQueueFull", err)
	}
	mu.Lock()
	now = now.Add(300 * time.Millisecond)
	mu.Unlock()
	first.Release()
	got(t, waiting).Release()
	st := p.QueueStats()
	var want [len(QueueWaitBounds) + 1]int64
	want[0] = 1 // the first, at once
	want[7] = 1 // 300ms: at most 500ms, above 250ms
	if st.Shed != 1 || st.Waits != want || st.WaitSum != 300*time.Millisecond {
		t.Errorf("QueueStats %+v, want shed 1, waits %v, sum 300ms", st, want)
	}

	// A queue timeout.
	q := NewPool([]*Upstream{{Name: "v", MaxConns: 1}}, &LeastConn{}, PoolOptions{QueueSize: 1, QueueTimeout: time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	l := got(t, acquireAsync(q, false, false))
	defer l.Release()
	if _, err := q.Acquire(context.Background(), httptest.NewRequest("GET", "/", nil), nil, false, false); err != ErrQueueTimeout {
		t.Fatalf("%v, want ErrQueueTimeout", err)
	}
	st = q.QueueStats()
	var n int64
	for _, w := range st.Waits {
		n += w
	}
	if st.Shed != 1 || st.Waits[0] < 1 || n != 2 {
		t.Errorf("after a queue timeout: %+v", st)
	}
}
