package worker

import (
	"testing"
	"time"
)

func newWaiter() *waiter {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &waiter{grant: make(chan grant, 1), timer: t}
}

func granted(t *testing.T, w *waiter) grant {
	t.Helper()
	select {
	case g := <-w.grant:
		return g
	default:
		t.Fatal("no grant")
		return grant{}
	}
}

func noGrant(t *testing.T, w *waiter) {
	t.Helper()
	select {
	case g := <-w.grant:
		t.Fatalf("unexpected grant %+v", g)
	default:
	}
}

// TestQueueOrder drives the queue alone: idle slots first, then waiters in
// arrival order, a requeued waiter keeps the head, offers go to waiters
// that can be written ahead, and the limit holds.
func TestQueueOrder(t *testing.T) {
	var q queue
	s1, s2 := &slot{index: 1}, &slot{index: 2}
	q.put(s1)
	if g, ok, _ := q.take(newWaiter(), true, 10); !ok || g.s != s1 || !g.taken {
		t.Fatalf("take with an idle slot = %+v, %v", g, ok)
	}
	// No idle slot: three waiters queue in order; the limit refuses a fourth.
	a, b, c := newWaiter(), newWaiter(), newWaiter()
	for _, w := range []*waiter{a, b, c} {
		if _, ok, full := q.take(w, w != b, 3); ok || full {
			t.Fatalf("take queued nothing (ok %v full %v)", ok, full)
		}
	}
	if _, _, full := q.take(newWaiter(), true, 3); !full {
		t.Fatal("a fourth waiter was queued past the limit of 3")
	}
	// An offer skips b (it has a body to stream) only when a is gone; here a
	// is first and gets it.
	q.offer(s1)
	if g := granted(t, a); g.s != s1 || !g.ahead {
		t.Fatalf("a got %+v, want the offer", g)
	}
	noGrant(t, b)
	// a could not use it (stale): it goes back to the head, before b.
	q.requeue(a)
	q.put(s2)
	if g := granted(t, a); g.s != s2 || g.ahead {
		t.Fatalf("requeued a got %+v, want the idle slot", g)
	}
	noGrant(t, b)
	// b cannot be written ahead: the next offer goes to c.
	q.offer(s1)
	noGrant(t, b)
	if g := granted(t, c); !g.ahead {
		t.Fatalf("c got %+v, want the offer", g)
	}
	// b leaves (its timeout); a later put does not reach it.
	if !q.leave(b) {
		t.Fatal("leave: b was not queued")
	}
	if q.leave(b) {
		t.Fatal("leave twice succeeded")
	}
	s2.state.Store(slotIdle)
	q.put(s2)
	noGrant(t, b)
	if n := q.idleLen(); n != 1 {
		t.Fatalf("idle list has %d entries, want 1", n)
	}
	// A slot closed while idle is dropped, not handed out.
	s2.state.Store(slotClosed)
	if g, ok, _ := q.take(nil, false, 0); ok {
		t.Fatalf("take handed out a closed slot: %+v", g)
	}
	if n := q.idleLen(); n != 0 {
		t.Fatalf("idle list has %d entries after dropping a closed slot", n)
	}
	// compact keeps the idle slots and the busy offers only.
	s3, s4 := &slot{index: 3}, &slot{index: 4}
	q.put(s2) // closed
	q.put(s3) // idle
	s4.state.Store(slotBusy)
	q.offer(s4)
	q.offer(s2)
	q.compact()
	if q.idleLen() != 1 || q.idle[0] != s3 || len(q.offers) != 1 || q.offers[0] != s4 {
		t.Fatalf("after compact: idle %v, offers %v", q.idle, q.offers)
	}
}
