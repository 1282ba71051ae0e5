package worker

import (
	"sync"
	"time"
)

// queue hands slots to requests in the order the requests arrived.
//
// Idle slots wait in a FIFO list; requests that find none wait in a FIFO
// list of waiters, and a slot that becomes idle goes straight to the first
// of them. A busy slot whose request is all written may also offer a place
// behind that request (write-ahead, see Pool.acquire): the offer goes to the
// first waiter that can take it, or waits in a short list for the next
// arrival.
//
// An earlier version waited in a select over two channels (free slots and
// write-ahead offers). A waiter that received a stale offer had to select
// again, and so went to the back of both channels' queues: under a steady
// overload the wait became a lottery (a Django page at 64 connections on 2
// workers had a p99 four times its p50). Here a waiter that cannot use what
// it got keeps its place at the head.
type queue struct {
	mu     sync.Mutex
	idle   []*slot // idle slots, oldest first
	offers []*slot // busy slots offering a write-ahead place, oldest first
	head   *waiter
	tail   *waiter
	n      int // waiters in the list
}

// waiter is a request waiting for a slot.
type waiter struct {
	// grant receives exactly one grant after the waiter has been taken out
	// of the list by put or offer; never once it removed itself.
	grant      chan grant
	canAhead   bool
	queued     bool // in the list (guarded by queue.mu)
	prev, next *waiter
	timer      *time.Timer
}

// grant is what a waiter gets: an idle slot, or (ahead) a busy slot whose
// request it may be written behind.
type grant struct {
	s     *slot
	ahead bool
	taken bool // s is acquired already (by take)
}

var waiterPool = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &waiter{grant: make(chan grant, 1), timer: t}
}}

// pushLocked appends w, or puts it first (a waiter that keeps its place).
func (q *queue) pushLocked(w *waiter, front bool) {
	w.queued = true
	q.n++
	if q.head == nil {
		w.prev, w.next = nil, nil
		q.head, q.tail = w, w
		return
	}
	if front {
		w.prev, w.next = nil, q.head
		q.head.prev = w
		q.head = w
		return
	}
	w.prev, w.next = q.tail, nil
	q.tail.next = w
	q.tail = w
}

func (q *queue) removeLocked(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next = nil, nil
	w.queued = false
	q.n--
}

// put makes an idle slot available: to the first waiter, else to the idle
// list.
func (q *queue) put(s *slot) {
	q.mu.Lock()
	if w := q.head; w != nil {
		q.removeLocked(w)
		q.mu.Unlock()
		w.grant <- grant{s: s}
		return
	}
	q.idle = append(q.idle, s)
	q.mu.Unlock()
}

// offer makes a place behind the request running on s available: to the
// first waiter that can be written ahead, else to the next arrival that can.
func (q *queue) offer(s *slot) {
	q.mu.Lock()
	for w := q.head; w != nil; w = w.next {
		if w.canAhead {
			q.removeLocked(w)
			q.mu.Unlock()
			w.grant <- grant{s: s, ahead: true}
			return
		}
	}
	// Bounded: an offer is one per exchange and goes stale when the
	// exchange ends, so only the latest few are worth keeping.
	if len(q.offers) < maxOffers {
		q.offers = append(q.offers, s)
	} else {
		copy(q.offers, q.offers[1:])
		q.offers[len(q.offers)-1] = s
	}
	q.mu.Unlock()
}

const maxOffers = 64

// take is an arrival's first look: an idle slot, else (canAhead, nobody
// waiting) a write-ahead offer, else w queued at the tail (w nil: do not
// queue). full is set when the queue holds limit waiters already.
func (q *queue) take(w *waiter, canAhead bool, limit int) (g grant, ok, full bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if s := q.acquireIdleLocked(); s != nil {
		return grant{s: s, taken: true}, true, false
	}
	if canAhead && q.head == nil && len(q.offers) > 0 {
		s := q.offers[len(q.offers)-1] // the newest is the likeliest still busy
		q.offers[len(q.offers)-1] = nil
		q.offers = q.offers[:len(q.offers)-1]
		return grant{s: s, ahead: true}, true, false
	}
	if w == nil {
		return grant{}, false, false
	}
	if q.n >= limit {
		return grant{}, false, true
	}
	w.canAhead = canAhead
	q.pushLocked(w, false)
	return grant{}, false, false
}

// acquireIdleLocked takes the oldest idle slot, dropping those closed
// while idle (their worker retired); nil when there is none.
func (q *queue) acquireIdleLocked() *slot {
	for len(q.idle) > 0 {
		s := q.idle[0]
		copy(q.idle, q.idle[1:])
		q.idle[len(q.idle)-1] = nil
		q.idle = q.idle[:len(q.idle)-1]
		if s.tryAcquire() {
			return s
		}
	}
	return nil
}

// requeue puts w back at the head of the list: it got a grant it could not
// use and keeps its turn.
func (q *queue) requeue(w *waiter) {
	q.mu.Lock()
	if s := q.acquireIdleLocked(); s != nil {
		// An idle slot appeared meanwhile: it would have gone to w.
		q.mu.Unlock()
		w.grant <- grant{s: s, taken: true}
		return
	}
	q.pushLocked(w, true)
	q.mu.Unlock()
}

// leave takes w out of the list; false means a grant is on its way to w.
func (q *queue) leave(w *waiter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !w.queued {
		return false
	}
	q.removeLocked(w)
	return true
}

// compact drops slots that are no longer idle (closed by a retirement) from
// the idle list, and stale offers.
func (q *queue) compact() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.idle = keepState(q.idle, slotIdle)
	q.offers = keepState(q.offers, slotBusy)
}

// keepState filters list in place down to the slots in state.
func keepState(list []*slot, state int32) []*slot {
	keep := list[:0]
	for _, s := range list {
		if s.state.Load() == state {
			keep = append(keep, s)
		}
	}
	clear(list[len(keep):])
	return keep
}

// idleLen is the number of entries in the idle list (for tests).
func (q *queue) idleLen() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.idle)
}
