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
	// Now is the clock (tests inject one). Nil: time.Now.
	Now func() time.Time
}

// Pool is a set of upstreams, the policy that chooses among them, and a
// first-come, first-served queue for requests that find them all full.
type Pool struct {
	ups     []*Upstream // configuration order
	primary []*Upstream
	backup  []*Upstream
	sel     Selector
	opt     PoolOptions
	log     *slog.Logger
	passive passive

	// The queue: waiters in arrival order. nwait lets Release skip the
	// lock while nobody waits.
	mu    sync.Mutex
	head  *waiter
	tail  *waiter
	n     int
	nwait atomic.Int32

	stop chan struct{}
	done chan struct{}
}

// waiter is a request waiting in the queue.
type waiter struct {
	usable     func(*Upstream) bool
	grant      chan *Upstream // one claimed upstream, sent after removal
	queued     bool
	prev, next *waiter
}

// NewPool returns a Pool over ups (at least one), choosing with sel.
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
	p := &Pool{ups: ups, sel: sel, opt: opt, log: opt.Logger,
		passive: passive{maxFails: opt.MaxFails, failTimeout: opt.FailTimeout}}
	for i, u := range ups {
		u.index = i
		if u.Backup {
			p.backup = append(p.backup, u)
		} else {
			p.primary = append(p.primary, u)
		}
	}
	return p
}

// Upstreams returns the pool's upstreams in configuration order.
func (p *Pool) Upstreams() []*Upstream { return p.ups }

// Lease is a claim on one unit of an upstream's capacity, held while a
// request is in flight there. Release it exactly once.
type Lease struct {
	u    *Upstream
	pool *Pool
}

// Upstream is the leased upstream.
func (l Lease) Upstream() *Upstream { return l.u }

// Release returns the capacity: to the first waiter that may use this
// upstream, else to the upstream.
func (l Lease) Release() {
	u, p := l.u, l.pool
	u.inflight.Add(-1)
	if p.nwait.Load() > 0 {
		p.dispatch(u)
	}
}

// dispatch gives capacity of u to the first waiter that may use it.
func (p *Pool) dispatch(u *Upstream) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for w := p.head; w != nil; w = w.next {
		if !w.usable(u) {
			continue
		}
		if !u.claim() {
			return // taken meanwhile
		}
		p.removeLocked(w)
		w.grant <- u
		return
	}
}

// pick chooses and claims an upstream usable for a request, primaries
// first, then backups; nil when none could be claimed.
func (p *Pool) pick(r *http.Request, usable func(*Upstream) bool) *Upstream {
	for _, set := range [2][]*Upstream{p.primary, p.backup} {
		if len(set) == 0 {
			continue
		}
		// A claim lost to a concurrent request is chosen again; bounded,
		// since each loss means another upstream filled up.
		for range len(set) + 1 {
			u := p.sel.Select(set, usable, r)
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

// Acquire leases an upstream for r among those avoid does not exclude
// (nil: none excluded). When every usable upstream is full the request
// waits in the queue, at its tail, or at its head when front is set (a
// retry keeps its place). It fails with ErrNoUpstream when no upstream is
// healthy, ErrQueueFull, ErrQueueTimeout, or the context's error.
func (p *Pool) Acquire(ctx context.Context, r *http.Request, avoid func(*Upstream) bool, front bool) (Lease, error) {
	now := p.opt.Now()
	if len(p.ups) == 1 && avoid == nil {
		// One upstream (an app's worker pool, a single server): no choice
		// to make.
		if u := p.ups[0]; u.Available(now) && u.claim() {
			return Lease{u: u, pool: p}, nil
		}
	}
	usable := func(u *Upstream) bool {
		return u.Available(now) && (avoid == nil || !avoid(u))
	}
	if p.nwait.Load() == 0 || front {
		if u := p.pick(r, usable); u != nil {
			return Lease{u: u, pool: p}, nil
		}
	}
	healthy := false
	for _, u := range p.ups {
		if u.Healthy(now) && (avoid == nil || !avoid(u)) {
			healthy = true
			break
		}
	}
	if !healthy {
		return Lease{}, ErrNoUpstream
	}

	// Every usable upstream is full: wait.
	w := &waiter{usable: func(u *Upstream) bool {
		return u.Healthy(p.opt.Now()) && (avoid == nil || !avoid(u))
	}, grant: make(chan *Upstream, 1)}
	p.mu.Lock()
	if p.n >= p.opt.QueueSize {
		p.mu.Unlock()
		return Lease{}, ErrQueueFull
	}
	p.pushLocked(w, front)
	// Look again under the lock: a Release between the first look and the
	// push found nobody waiting.
	if u := p.pick(r, usable); u != nil {
		p.removeLocked(w)
		p.mu.Unlock()
		return Lease{u: u, pool: p}, nil
	}
	p.mu.Unlock()

	t := time.NewTimer(p.opt.QueueTimeout)
	defer t.Stop()
	var quit error
	select {
	case u := <-w.grant:
		return Lease{u: u, pool: p}, nil
	case <-t.C:
		quit = ErrQueueTimeout
	case <-ctx.Done():
		quit = ctx.Err()
	}
	p.mu.Lock()
	if w.queued {
		p.removeLocked(w)
		p.mu.Unlock()
		return Lease{}, quit
	}
	p.mu.Unlock()
	// A grant is on its way: it wins the race.
	return Lease{u: <-w.grant, pool: p}, nil
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
	for _, x := range p.ups {
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
	out := make([]Status, len(p.ups))
	for i, u := range p.ups {
		out[i] = u.Status(now)
	}
	return out
}

// Healthy reports whether at least one upstream is in rotation.
func (p *Pool) Healthy() bool {
	now := p.opt.Now()
	for _, u := range p.ups {
		if u.Healthy(now) {
			return true
		}
	}
	return false
}
