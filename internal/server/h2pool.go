package server

import (
	"sync"
	"time"
)

// A handlerPool runs the handlers of HTTP/2 streams on goroutines kept
// between requests. A goroutine per stream starts with a small stack, and
// Portico's handler chain (access log, router, static files) needs more,
// so every request grew its stack, copying it each time: under net/http's
// HTTP/2 server, runtime.newstack was 10-15% of Portico's CPU under h2load
// -c 64 -m 10 on a 1 KiB static file (the plain front serves a
// connection's requests on one goroutine, whose stack grows once). Pooled
// goroutines' stacks have grown already. Measured then (server on one
// core, 3 interleaved runs, medians, a loaded machine): server CPU 52.8 ->
// 48.8 us/request, 9,533 -> 10,532 req/s.
//
// A worker idle for poolIdle exits, so the pool shrinks back after a
// burst (as the garbage collector shrinks the stacks of idle ones).
type handlerPool struct {
	mu      sync.Mutex
	idle    []*poolWorker // the most recently idle last
	reaping bool          // a reap is scheduled
	idleFor time.Duration // poolIdle; a test may shorten it
}

// poolIdle is how long a pool worker waits for another request before it
// exits.
const poolIdle = 10 * time.Second

type poolWorker struct {
	jobs  chan poolTask
	since time.Time // idle since
}

// A poolTask is work for the pool: an HTTP/2 stream, which handles its
// handler's panics itself.
type poolTask interface{ run() }

// start runs t.run() on a pooled goroutine and returns at once.
func (p *handlerPool) start(t poolTask) {
	p.mu.Lock()
	var wk *poolWorker
	if n := len(p.idle); n > 0 {
		wk = p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
	}
	p.mu.Unlock()
	if wk == nil {
		wk = &poolWorker{jobs: make(chan poolTask, 1)}
		go p.work(wk)
	}
	wk.jobs <- t
}

// work runs the worker's tasks until the reaper closes its jobs. A
// runtime.Goexit in a task ends the worker (the task's deferred calls
// run; the worker never returns to the pool).
func (p *handlerPool) work(wk *poolWorker) {
	// The worker waits for its next task below a frame of stackPad bytes,
	// so that the garbage collector, which halves the stack of a goroutine
	// using less than a quarter of it, does not shrink a stack the next
	// handler grows again.
	var pad [stackPad]byte
	keepStack(&pad)
	for t := range wk.jobs {
		t.run()
		p.mu.Lock()
		wk.since = time.Now()
		p.idle = append(p.idle, wk)
		if !p.reaping {
			p.reaping = true
			time.AfterFunc(p.idleTime(), p.reap)
		}
		p.mu.Unlock()
	}
}

// stackPad is the stack a pool worker keeps while idle: the handlers'
// stack (the chain, the router, static files) grew it to 16-32 KiB.
const stackPad = 8 << 10

//go:noinline
func keepStack(*[stackPad]byte) {}

func (p *handlerPool) idleTime() time.Duration {
	if p.idleFor > 0 {
		return p.idleFor
	}
	return poolIdle
}

// reap ends the workers idle for idleTime, and schedules itself again
// while some are idle.
func (p *handlerPool) reap() {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.idleTime()
	now := time.Now()
	n := 0 // the oldest come first
	for n < len(p.idle) && now.Sub(p.idle[n].since) >= d {
		close(p.idle[n].jobs)
		n++
	}
	p.idle = append(p.idle[:0], p.idle[n:]...)
	clear(p.idle[len(p.idle):cap(p.idle)])
	if len(p.idle) == 0 {
		p.reaping = false
		return
	}
	time.AfterFunc(d-now.Sub(p.idle[0].since), p.reap)
}
