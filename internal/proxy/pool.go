package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Errors of Acquire; the Handler maps them to answers (errors.go).
var (
	// ErrNoUpstream: every upstream is down (or was tried already).
	ErrNoUpstream = errors.New("proxy: no upstream available")
	// ErrQueueFull: every usable upstream is at max_conns and the queue is
	// full (or there is none).
	ErrQueueFull = errors.New("proxy: request queue full")
	// ErrQueueTimeout: no upstream freed up within the queue timeout.
	ErrQueueTimeout = errors.New("proxy: no upstream free within the queue timeout")
	// ErrRequeue is what a transport answers when its lease turned out
	// unusable before anything was sent (a place offered behind a request
	// that has ended, a worker that died before reading): the request asks
	// the pool again, keeping its place at the head of the queue, without
	// counting a failure or a retry.
	ErrRequeue = errors.New("proxy: lease not usable; ask again")
)

// PoolOptions configure a Pool. The zero value has no passive health
// checks, no queue and no active checks.
type PoolOptions struct {
	// MaxFails failures within FailTimeout take an upstream out of rotation
	// for FailTimeout (nginx's max_fails; its default is 1). Zero: never.
	MaxFails int
	// FailTimeout is both the window in which MaxFails count and how long
	// the upstream then stays out (nginx's fail_timeout). Zero: 10s.
	FailTimeout time.Duration
	// QueueSize bounds the requests that may wait when every usable
	// upstream is at its MaxConns; past it, 503. Zero: none wait.
	QueueSize int
	// QueueTimeout bounds a request's wait in the queue; past it, 503.
	// Zero: 30s.
	QueueTimeout time.Duration
	// Health, when set, runs active health checks (see Start).
	Health *HealthCheck
	// Logger receives state changes. Nil: slog.Default().
	Logger *slog.Logger
	// WaitEmpty lets requests wait in the queue while the pool has no
	// upstream at all (the local workers between a crash and their
	// replacement), instead of failing at once with ErrNoUpstream.
	WaitEmpty bool
	// Now is the clock (tests inject one). Nil: time.Now.
	Now func() time.Time
}

// Pool is a set of upstreams, the policy that chooses among them, and a
// first-come, first-served queue for requests that find them all full.
//
// The set may change while requests flow (Add, Remove: the local worker
// processes come and go); requests read it through an atomic pointer.
//
// The queue came from the worker pool, where a first version let waiters
// select over two channels: one that received a stale grant had to select
// again and went to the back, and under a steady overload the wait became a
// lottery (a Django page at 64 connections on 2 workers had a p99 four
// times its p50). Here waiters are one list: capacity that frees goes
// straight to the first waiter that may use it, and a waiter whose grant
// turns out unusable (ErrRequeue) asks again at the head.
//
// Besides capacity, an upstream may offer a place behind the request it
// runs (Offer: write-ahead, HTTP pipelining one deep, which the worker
// pool uses when every worker is busy on short requests). An offer goes to
// the first waiter that accepts one, else to the next arrival.
type Pool struct {
	set     atomic.Pointer[upstreamSet]
	sel     Selector
	opt     PoolOptions
	log     *slog.Logger
	passive passive

	mu      sync.Mutex // the queue, the offers, changes of the set
	head    *waiter
	tail    *waiter
	n       int
	nwait   atomic.Int32
	offers  []*Upstream // oldest first
	noffers atomic.Int32
	nextIdx int

	stop chan struct{}
	done chan struct{}

	// For QueueStats: requests shed (ErrQueueFull, ErrQueueTimeout) and
	// the waits of Acquire, by QueueWaitBounds (the last: above them all).
	shed    atomic.Int64
	waits   [len(QueueWaitBounds) + 1]atomic.Int64
	waitSum atomic.Int64 // nanoseconds
}

// QueueWaitBounds are the upper bounds of the queue-wait histogram of
// QueueStats: from a wait for a slot freed at once to the default 30s
// queue timeout.
var QueueWaitBounds = [...]time.Duration{
	time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2500 * time.Millisecond,
	5 * time.Second, 10 * time.Second, 30 * time.Second,
}

// QueueStats counts what the queue did since the pool was created.
type QueueStats struct {
	// Shed is the number of requests refused because the queue was full or
	// their wait passed the queue timeout (answered 503).
	Shed int64
	// Waits counts Acquire's waits by QueueWaitBounds: Waits[i] were at
	// most QueueWaitBounds[i] (and above the bound before); the last, those
	// above every bound. A request that found capacity at once counts in
	// Waits[0]. WaitSum is their total.
	Waits   [len(QueueWaitBounds) + 1]int64
	WaitSum time.Duration
}

// QueueStats returns the queue's counters.
func (p *Pool) QueueStats() QueueStats {
	st := QueueStats{Shed: p.shed.Load(), WaitSum: time.Duration(p.waitSum.Load())}
	for i := range p.waits {
		st.Waits[i] = p.waits[i].Load()
	}
	return st
}

// observeWait counts one wait of Acquire.
func (p *Pool) observeWait(d time.Duration) {
	i := len(QueueWaitBounds)
	for j, b := range QueueWaitBounds {
		if d <= b {
			i = j
			break
		}
	}
	p.waits[i].Add(1)
	p.waitSum.Add(int64(d))
}

// upstreamSet is one version of the pool's upstreams.
type upstreamSet struct {
	all, primary, backup []*Upstream
}

func newSet(all []*Upstream) *upstreamSet {
	s := &upstreamSet{all: all}
	for _, u := range all {
		if u.Backup {
			s.backup = append(s.backup, u)
		} else {
			s.primary = append(s.primary, u)
		}
	}
	return s
}

// waiter is a request waiting in the queue.
type waiter struct {
	avoid      []*Upstream
	canAhead   bool       // accepts a place offered behind a running request
	grant      chan Lease // one lease, sent after removal
	queued     bool
	prev, next *waiter
	timer      *time.Timer // the wait's bound, stopped while pooled
}

// waiterPool keeps waiters with their channel and timer: under a steady
// overload most requests wait, and a new channel and timer each cost.
var waiterPool = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &waiter{grant: make(chan Lease, 1), timer: t}
}}

func newWaiter(avoid []*Upstream, canAhead bool) *waiter {
	w := waiterPool.Get().(*waiter)
	w.avoid, w.canAhead = avoid, canAhead
	return w
}

// maxOffers bounds the offers kept: an offer goes stale when the request
// behind which it was made ends, so only the latest few are worth keeping.
const maxOffers = 64

// NewPool returns a Pool over ups, choosing with sel.
func NewPool(ups []*Upstream, sel Selector, opt PoolOptions) *Pool {
	if opt.FailTimeout <= 0 {
		opt.FailTimeout = 10 * time.Second
	}
	if opt.QueueTimeout <= 0 {
		opt.QueueTimeout = 30 * time.Second
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	p := &Pool{sel: sel, opt: opt, log: opt.Logger,
		passive: passive{maxFails: opt.MaxFails, failTimeout: opt.FailTimeout}}
	for _, u := range ups {
		u.index = p.nextIdx
		p.nextIdx++
	}
	p.set.Store(newSet(slices.Clone(ups)))
	return p
}

// Upstreams returns the pool's upstreams in configuration order.
func (p *Pool) Upstreams() []*Upstream { return p.set.Load().all }

// Add puts upstreams into the pool; requests waiting get their capacity.
// The selector must keep no per-upstream state fixed at construction
// (least_conn, round_robin, random_two and first do not; hash does).
func (p *Pool) Add(ups ...*Upstream) {
	p.mu.Lock()
	all := slices.Clone(p.set.Load().all)
	for _, u := range ups {
		u.index = p.nextIdx
		p.nextIdx++
		u.removed.Store(false)
		all = append(all, u)
	}
	p.set.Store(newSet(all))
	p.mu.Unlock()
	for _, u := range ups {
		p.wake(u)
	}
}

// Remove takes upstreams out of the pool: no new request goes to them;
// requests in flight there finish.
func (p *Pool) Remove(ups ...*Upstream) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range ups {
		u.removed.Store(true)
	}
	all := slices.DeleteFunc(slices.Clone(p.set.Load().all), func(u *Upstream) bool { return slices.Contains(ups, u) })
	p.set.Store(newSet(all))
	p.offers = slices.DeleteFunc(p.offers, func(u *Upstream) bool { return slices.Contains(ups, u) })
	p.noffers.Store(int32(len(p.offers)))
}

// Pause holds u out of rotation until Resume (its owner needs it for a
// moment: a worker slot unwinding an interrupted request).
func (p *Pool) Pause(u *Upstream) { u.paused.Store(true) }

// Resume puts a paused upstream back; waiters get its capacity.
func (p *Pool) Resume(u *Upstream) {
	u.paused.Store(false)
	p.wake(u)
}

// wake gives u's free capacity to waiters, as much as it has.
func (p *Pool) wake(u *Upstream) {
	for p.nwait.Load() > 0 && p.dispatch(u) {
	}
}

// Lease is a claim on one unit of an upstream's capacity, held while a
// request is in flight there. Release it exactly once.
type Lease struct {
	u     *Upstream
	pool  *Pool
	ahead bool
}

// Upstream is the leased upstream.
func (l Lease) Upstream() *Upstream { return l.u }

// Ahead reports that the lease is a place offered behind the request the
// upstream runs (Offer), not free capacity: the transport must check that
// the place is still there and answer ErrRequeue if not.
func (l Lease) Ahead() bool { return l.ahead }

// Release returns the capacity: to the first waiter that may use this
// upstream, else to the upstream.
func (l Lease) Release() {
	u, p := l.u, l.pool
	u.inflight.Add(-1)
	if p.nwait.Load() > 0 {
		p.dispatch(u)
	}
}

// usableBy reports whether a waiter may be given u (capacity aside).
func (w *waiter) usableBy(u *Upstream, now int64) bool {
	return u.healthy(now) && !u.paused.Load() && !u.removed.Load() && !slices.Contains(w.avoid, u)
}

// dispatch gives one unit of u's capacity to the first waiter that may
// use it; false when there was none to give or nobody to take it.
func (p *Pool) dispatch(u *Upstream) bool {
	now := p.opt.Now().UnixNano()
	p.mu.Lock()
	defer p.mu.Unlock()
	for w := p.head; w != nil; w = w.next {
		if !w.usableBy(u, now) {
			continue
		}
		if !u.claim() {
			return false // full (taken meanwhile)
		}
		p.removeLocked(w)
		w.grant <- Lease{u: u, pool: p}
		return true
	}
	return false
}

// Offer makes a place behind the request u runs available (write-ahead):
// to the first waiter that accepts one, else to the next arrival. The
// place is counted as capacity while it is leased.
func (p *Pool) Offer(u *Upstream) {
	now := p.opt.Now().UnixNano()
	p.mu.Lock()
	defer p.mu.Unlock()
	for w := p.head; w != nil; w = w.next {
		if w.canAhead && w.usableBy(u, now) {
			p.removeLocked(w)
			u.inflight.Add(1)
			w.grant <- Lease{u: u, pool: p, ahead: true}
			return
		}
	}
	if len(p.offers) >= maxOffers {
		copy(p.offers, p.offers[1:])
		p.offers = p.offers[:len(p.offers)-1]
	}
	p.offers = append(p.offers, u)
	p.noffers.Store(int32(len(p.offers)))
}

// takeOfferLocked takes the newest offer a request may use (the likeliest
// still good).
func (p *Pool) takeOfferLocked(f Usable) (Lease, bool) {
	for i := len(p.offers) - 1; i >= 0; i-- {
		u := p.offers[i]
		if !u.healthy(f.now) || u.paused.Load() || u.removed.Load() || slices.Contains(f.avoid, u) {
			continue
		}
		p.offers = slices.Delete(p.offers, i, i+1)
		p.noffers.Store(int32(len(p.offers)))
		u.inflight.Add(1)
		return Lease{u: u, pool: p, ahead: true}, true
	}
	return Lease{}, false
}

// pick chooses and claims an upstream usable for a request, primaries
// first, then backups; nil when none could be claimed.
func (p *Pool) pick(set *upstreamSet, r *http.Request, f Usable) *Upstream {
	for _, ups := range [2][]*Upstream{set.primary, set.backup} {
		if len(ups) == 0 {
			continue
		}
		// A claim lost to a concurrent request is chosen again; bounded,
		// since each loss means another upstream filled up.
		for range len(ups) + 1 {
			u := p.sel.Select(ups, f, r)
			if u == nil {
				break
			}
			if u.claim() {
				return u
			}
		}
	}
	return nil
}

// clientWatchDelay is how long a request waits in the queue before the
// wait also ends when the client goes away: asking a request's context
// for Done makes the server watch the client's connection, which costs
// more than the short waits of a busy but healthy server.
const clientWatchDelay = 100 * time.Millisecond

// Acquire leases an upstream for r, avoiding those in avoid. When every
// usable upstream is full the request waits in the queue, at its tail, or
// at its head when front is set (a retry, or a request whose grant was not
// usable, keeps its place). canAhead accepts a place offered behind a
// running request (see Offer). It fails with ErrNoUpstream when no upstream
// is healthy (unless PoolOptions.WaitEmpty lets it wait for one),
// ErrQueueFull, ErrQueueTimeout, or the context's error.
func (p *Pool) Acquire(ctx context.Context, r *http.Request, avoid []*Upstream, front, canAhead bool) (Lease, error) {
	f := Usable{now: p.opt.Now().UnixNano(), avoid: avoid}
	set := p.set.Load()
	if p.nwait.Load() == 0 || front {
		if len(set.all) == 1 && len(avoid) == 0 {
			// One upstream: no choice to make.
			if u := set.all[0]; f.OK(u) && u.claim() {
				p.waits[0].Add(1)
				return Lease{u: u, pool: p}, nil
			}
		} else if u := p.pick(set, r, f); u != nil {
			p.waits[0].Add(1)
			return Lease{u: u, pool: p}, nil
		}
		if canAhead && p.noffers.Load() > 0 {
			p.mu.Lock()
			l, ok := Lease{}, false
			if p.head == nil || front {
				l, ok = p.takeOfferLocked(f)
			}
			p.mu.Unlock()
			if ok {
				p.waits[0].Add(1)
				return l, nil
			}
		}
	}
	healthy := p.opt.WaitEmpty && len(set.all) == 0
	for _, u := range set.all {
		if u.healthy(f.now) && !slices.Contains(avoid, u) {
			healthy = true
			break
		}
	}
	if !healthy {
		return Lease{}, ErrNoUpstream
	}

	// Every usable upstream is full: wait.
	start := p.opt.Now()
	w := newWaiter(avoid, canAhead)
	p.mu.Lock()
	if p.n >= p.opt.QueueSize {
		p.mu.Unlock()
		waiterPool.Put(w)
		p.shed.Add(1)
		return Lease{}, ErrQueueFull
	}
	p.pushLocked(w, front)
	// Look again under the lock: a Release between the first look and the
	// push found nobody waiting.
	if u := p.pick(p.set.Load(), r, f); u != nil {
		p.removeLocked(w)
		p.mu.Unlock()
		waiterPool.Put(w)
		p.observeWait(p.opt.Now().Sub(start))
		return Lease{u: u, pool: p}, nil
	}
	if canAhead && p.head == w {
		if l, ok := p.takeOfferLocked(f); ok {
			p.removeLocked(w)
			p.mu.Unlock()
			waiterPool.Put(w)
			p.observeWait(p.opt.Now().Sub(start))
			return l, nil
		}
	}
	p.mu.Unlock()
	l, err := p.wait(ctx, w)
	p.observeWait(p.opt.Now().Sub(start))
	return l, err
}

// Requeue gives back l, which the transport could not use (ErrRequeue),
// and asks again first in line: free capacity, even l's own, goes to this
// request before anyone else; otherwise it waits at the head of the queue
// for capacity or a fresh offer.
func (p *Pool) Requeue(ctx context.Context, r *http.Request, l Lease, avoid []*Upstream, canAhead bool) (Lease, error) {
	f := Usable{now: p.opt.Now().UnixNano(), avoid: avoid}
	p.mu.Lock()
	l.u.inflight.Add(-1)
	if u := p.pick(p.set.Load(), r, f); u != nil {
		p.mu.Unlock()
		return Lease{u: u, pool: p}, nil
	}
	w := newWaiter(avoid, canAhead)
	p.pushLocked(w, true)
	p.mu.Unlock()
	p.dispatch(l.u) // what l held, if another waiter may use it
	return p.wait(ctx, w)
}

// Withdraw takes back u's offers: the request they were behind has ended.
func (p *Pool) Withdraw(u *Upstream) {
	if p.noffers.Load() == 0 {
		return
	}
	p.mu.Lock()
	p.offers = slices.DeleteFunc(p.offers, func(x *Upstream) bool { return x == u })
	p.noffers.Store(int32(len(p.offers)))
	p.mu.Unlock()
}

// wait waits for w's grant within the queue timeout.
//
// Every path leaves w out of the queue with its grant channel empty (a
// grant is sent only to a waiter taken out of the list, and is then always
// received), so w goes back to waiterPool.
func (p *Pool) wait(ctx context.Context, w *waiter) (Lease, error) {
	defer waiterPool.Put(w)
	timeout := p.opt.QueueTimeout
	watchAt := clientWatchDelay
	if timeout <= watchAt {
		watchAt = 0
	}
	first := timeout
	if watchAt > 0 {
		first = watchAt
	}
	t := w.timer
	t.Reset(first)
	defer t.Stop()
	var gone <-chan struct{}
	var quit error
	for quit == nil {
		select {
		case l := <-w.grant:
			return l, nil
		case <-t.C:
			if watchAt > 0 && gone == nil {
				gone = ctx.Done()
				t.Reset(timeout - watchAt)
				continue
			}
			quit = ErrQueueTimeout
		case <-gone:
			quit = ctx.Err()
		}
	}
	p.mu.Lock()
	if w.queued {
		p.removeLocked(w)
		p.mu.Unlock()
		if quit == ErrQueueTimeout {
			p.shed.Add(1)
		}
		return Lease{}, quit
	}
	p.mu.Unlock()
	// A grant is on its way: it wins the race.
	return <-w.grant, nil
}

func (p *Pool) pushLocked(w *waiter, front bool) {
	w.queued = true
	p.n++
	p.nwait.Add(1)
	switch {
	case p.head == nil:
		w.prev, w.next = nil, nil
		p.head, p.tail = w, w
	case front:
		w.prev, w.next = nil, p.head
		p.head.prev = w
		p.head = w
	default:
		w.prev, w.next = p.tail, nil
		p.tail.next = w
		p.tail = w
	}
}

func (p *Pool) removeLocked(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		p.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		p.tail = w.prev
	}
	w.prev, w.next = nil, nil
	w.queued = false
	p.n--
	p.nwait.Add(-1)
}

// other reports whether an upstream other than u and those tried is
// healthy: whether a retry has somewhere to go.
func (p *Pool) other(u *Upstream, tried []*Upstream) bool {
	now := p.opt.Now()
	for _, x := range p.set.Load().all {
		if x != u && x.Healthy(now) && !slices.Contains(tried, x) {
			return true
		}
	}
	return false
}

// Queued is the number of requests waiting now.
func (p *Pool) Queued() int { return int(p.nwait.Load()) }

// Fail records a failure of u for passive health.
func (p *Pool) Fail(u *Upstream, cause error) { u.fail(p.opt.Now(), p.passive, p.log, cause) }

// Succeed records a good answer of u, with its response-head latency.
func (p *Pool) Succeed(u *Upstream, latency time.Duration) {
	u.observe(latency)
	u.succeed(p.log)
}

// Status returns a snapshot of every upstream.
func (p *Pool) Status() []Status {
	now := p.opt.Now()
	ups := p.set.Load().all
	out := make([]Status, len(ups))
	for i, u := range ups {
		out[i] = u.Status(now)
	}
	return out
}

// Healthy reports whether at least one upstream is in rotation.
func (p *Pool) Healthy() bool {
	now := p.opt.Now()
	for _, u := range p.set.Load().all {
		if u.Healthy(now) {
			return true
		}
	}
	return false
}
