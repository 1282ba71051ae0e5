package server

import (
	"fmt"
	"net/http"
	"runtime"
	"runtime/debug"
	"sync"
	"time"
)

// net/http's HTTP/2 server runs each stream's handler on a goroutine of
// its own, started with a small stack. Portico's handler chain (access
// log, router, static files) needs more, so every request grew its stack,
// copying it each time: runtime.newstack was 10-15% of Portico's CPU under
// h2load -c 64 -m 10 on a 1 KiB static file (the plain front serves a
// connection's requests on one goroutine, whose stack grows once). A
// handlerPool runs the handlers of HTTP/2 streams on goroutines kept
// between requests, whose stacks have grown already. Measured (server on
// one core, 3 interleaved runs, medians, a loaded machine): server CPU
// 52.8 -> 48.8 us/request, 9,533 -> 10,532 req/s (on top of the write
// combining of deadlineConn).
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
	jobs  chan poolJob
	done  chan any  // after each job: the handler's panic value, or nil
	since time.Time // idle since
}

type poolJob struct {
	task poolTask // a task (start), or a handler (serve)
	h    http.Handler
	w    http.ResponseWriter
	r    *http.Request
}

// A handlerPanic carries a handler's panic, with the stack where it
// happened, to the stream's goroutine, where net/http recovers and logs it.
type handlerPanic struct {
	v     any
	stack []byte
}

func (p handlerPanic) String() string { return fmt.Sprintf("%v\n%s", p.v, p.stack) }

// serve runs h.ServeHTTP(w, r) on a pooled goroutine and returns when it
// has returned; a panic of the handler is raised again here (as
// http.ErrAbortHandler itself, so net/http keeps quiet about it).
func (p *handlerPool) serve(h http.Handler, w http.ResponseWriter, r *http.Request) {
	wk := p.take()
	wk.jobs <- poolJob{h: h, w: w, r: r}
	v := <-wk.done
	if v == goexited {
		runtime.Goexit() // as the handler did; the worker has ended
	}
	// The worker goes back to the pool only once its done is taken here:
	// a caller taking it next cannot receive this one's.
	p.putIdle(wk)
	if v != nil {
		panic(v)
	}
}

// goexited is the done value of a handler that called runtime.Goexit.
var goexited = new(int)

func (p *handlerPool) work(wk *poolWorker) {
	for j := range wk.jobs {
		if j.task != nil {
			j.task.run() // a runtime.Goexit in it ends the worker here
			p.putIdle(wk)
			continue
		}
		p.run(wk, j)
	}
}

// A poolTask is work for start: an HTTP/2 stream of Portico's own server,
// which handles its handler's panics itself.
type poolTask interface{ run() }

// start runs t.run() on a pooled goroutine and returns at once.
func (p *handlerPool) start(t poolTask) {
	p.take().jobs <- poolJob{task: t}
}

// take returns an idle worker, or a new one.
func (p *handlerPool) take() *poolWorker {
	p.mu.Lock()
	var wk *poolWorker
	if n := len(p.idle); n > 0 {
		wk = p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
	}
	p.mu.Unlock()
	if wk == nil {
		wk = &poolWorker{jobs: make(chan poolJob, 1), done: make(chan any, 1)}
		go p.work(wk)
	}
	return wk
}

// putIdle returns wk to the pool.
func (p *handlerPool) putIdle(wk *poolWorker) {
	p.mu.Lock()
	wk.since = time.Now()
	p.idle = append(p.idle, wk)
	if !p.reaping {
		p.reaping = true
		time.AfterFunc(p.idleTime(), p.reap)
	}
	p.mu.Unlock()
}

// run runs one job, handing its panic, if any, to the caller. A handler
// that calls runtime.Goexit ends the worker (and its job, with no panic).
func (p *handlerPool) run(wk *poolWorker, j poolJob) {
	returned := false
	defer func() {
		v := recover()
		switch {
		case v != nil && v != http.ErrAbortHandler:
			v = handlerPanic{v: v, stack: debug.Stack()}
		case v == nil && !returned:
			v = goexited
		}
		wk.done <- v
	}()
	j.h.ServeHTTP(j.w, j.r)
	returned = true
}

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
