// Package worker runs a WSGI application in supervised Python processes and
// serves HTTP requests with them.
//
// Each worker process runs the embedded worker.py with a number of request
// threads ("slots"). Every slot has its own persistent unix socket pair to
// portico, created before the process starts and inherited by it: no socket
// file, no connect per request. A request travels as one uwsgi packet (the
// codec nginx and uWSGI speak, see internal/uwsgi) followed by its body; the
// response comes back as frames (see frame.go) so that the connection can be
// reused, errors are told apart from responses, and a file can follow with
// sendfile(2). A persistent connection per slot saves the socket, connect,
// accept and close of a connection per request on both sides.
//
// The slots of the serving processes are the upstreams of a proxy.Pool, and
// the Pool serves HTTP through a proxy.Handler over them (NewHandler): the
// proxy core queues requests first come, first served, spools bodies both
// ways and maps failures to answers, as for any upstream; this package
// keeps the wire (packets, frames), write-ahead and supervision.
//
// The Pool supervises: crashed workers are replaced with exponential
// backoff; a request past its timeout gets 504 while worker.py raises
// RequestTimeout inside the app (finally blocks and transactions unwind), and
// only a worker that does not unwind within the grace period is killed;
// workers past max-requests or max-rss are replaced, the replacement started
// and ready first; Reload starts a new generation and retires the old one
// only once the new one is ready.
package worker

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"portico/internal/proxy"
)

//go:embed python/worker.py
var workerScript []byte

// Options configure a Pool. Zero values get the defaults noted.
type Options struct {
	// App is MODULE:CALLABLE (MODULE dotted or a path to a .py file;
	// CALLABLE defaults to application, then app; "name()" calls a factory,
	// "name('testing', debug=False)" with literal arguments only).
	App string
	// Python is the interpreter. Empty: "python3".
	Python string
	// Dir is the directory the app is imported from (prepended to sys.path)
	// and the workers' working directory. Empty: the current directory.
	Dir string
	// Env is extra KEY=VALUE environment for the workers.
	Env []string
	// Workers is the number of worker processes. Zero: 1.
	Workers int
	// Threads is the number of concurrent requests per worker. Zero: 1.
	Threads int
	// Timeout bounds a request's time in a worker; past it the client gets
	// 504 and the app is interrupted. Zero: 30s.
	Timeout time.Duration
	// Grace is how long an interrupted request has to unwind before its
	// worker is killed. Zero: 5s.
	Grace time.Duration
	// StartTimeout bounds how long a worker may take to import the app.
	// Zero: 60s.
	StartTimeout time.Duration
	// MaxRequests recycles a worker after about this many requests (plus a
	// random jitter of up to 10%, so that workers do not recycle together).
	// Zero: never.
	MaxRequests int
	// MaxRSS recycles a worker whose resident memory passes this many bytes
	// (checked every second). Zero: never.
	MaxRSS int64
	// MaxBody is the largest request body accepted; larger gets 413.
	// Zero: 10 MiB. Negative: no limit.
	MaxBody int64
	// BodyMemory is how much of a request body (or of a response) is kept in
	// memory before it spills to a temporary file. Zero: 1 MiB.
	BodyMemory int64
	// MaxResponseBuffer bounds how far a response is read ahead of a slow
	// client (memory, then temporary file); past it the worker waits for the
	// client. Zero: 1 GiB (nginx's proxy_max_temp_file_size).
	MaxResponseBuffer int64
	// TempDir holds spilled bodies (unlinked at once). Empty: os.TempDir().
	TempDir string
	// QueueSize bounds how many requests may wait for a free slot; past it
	// the answer is 503 at once. Zero: 1024. Negative: no waiting at all.
	QueueSize int
	// QueueTimeout bounds a request's wait for a free slot; past it, 503.
	// Zero: 30s.
	QueueTimeout time.Duration
	// ScriptName is the URL prefix the app is mounted under ("" for the root).
	ScriptName string
	// InternalRedirect, when set, serves app responses carrying
	// X-Accel-Redirect (nginx's convention) or X-Sendfile: the worker's body
	// is discarded and its slot freed at once, then InternalRedirect writes
	// the response, given the app's status and headers (the redirect header
	// included, for it to read and remove). Nil: such responses are relayed
	// unchanged, as a server without the feature would.
	InternalRedirect func(w http.ResponseWriter, r *http.Request, status int, header http.Header)
	// ResponseHead, when set, sees the header of each app response before
	// it is relayed, and may change it (proxy.Options.ResponseHead).
	ResponseHead func(r *http.Request, h http.Header)
	// Watch restarts the workers when a .py file under Dir changes
	// (development). Polls once a second.
	Watch bool
	// NormalSched keeps the workers under Linux's default scheduling
	// policy. False (the default): each worker puts itself under
	// SCHED_BATCH before it imports the app, so that the threads it starts
	// inherit it. A batch task's wake-up does not preempt the task running
	// on its CPU: when portico hands a request to a worker, portico goes on
	// with the other connections ready at that moment instead of being
	// switched out at once, and the worker runs when portico waits. Sharing
	// a CPU, the pair then switches about once per request instead of
	// three times (measured with perf: 315,000 -> 129,000 context switches
	// in 4 s for the hello app on one core, +26% requests/s). The workers
	// keep their nice value and their fair share of the CPU; elsewhere than
	// Linux the setting is a no-op.
	NormalSched bool
	// Logger receives supervision events and the app's output lines.
	// Nil: slog.Default().
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.Python == "" {
		o.Python = "python3"
	}
	if o.Workers <= 0 {
		o.Workers = 1
	}
	if o.Threads <= 0 {
		o.Threads = 1
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Grace <= 0 {
		o.Grace = 5 * time.Second
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 60 * time.Second
	}
	if o.MaxBody == 0 {
		o.MaxBody = 10 << 20
	}
	if o.BodyMemory <= 0 {
		o.BodyMemory = 1 << 20
	}
	if o.MaxResponseBuffer <= 0 {
		o.MaxResponseBuffer = 1 << 30
	}
	if o.QueueSize == 0 {
		o.QueueSize = 1024
	}
	if o.QueueTimeout <= 0 {
		o.QueueTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Pool is a supervised set of worker processes serving one app. It is an
// http.Handler.
type Pool struct {
	opt    Options
	log    *slog.Logger
	script string // path of worker.py, written at Start
	rundir string

	// handler serves HTTP with the pool as its one upstream (ServeHTTP).
	handler *proxy.Handler

	// pp hands the slots out: each slot of a serving process is one of its
	// upstreams (MaxConns 1), and requests that find none free wait in its
	// first-come, first-served queue.
	pp     *proxy.Pool
	aheads atomic.Int64 // requests that ran written ahead (see tryAhead)
	// aheadRetries counts requests written ahead whose worker died first.
	aheadRetries atomic.Int64
	// serviceTime is a moving average of how long requests hold a slot,
	// in nanoseconds (see aheadMaxService).
	serviceTime atomic.Int64
	ready       atomic.Bool

	// Event counters, for Counts.
	crashes, timeoutsUnwound, timeoutsKilled            atomic.Int64
	recycledMaxRequests, recycledMaxRSS, recycledReload atomic.Int64

	events chan event
	done   chan struct{} // closed when the manager loop has ended

	mu    sync.Mutex
	procs map[*process]struct{} // every process started and not yet exited
	// spawning are the processes being started (importing the app), for
	// Workers.
	spawning map[*process]struct{}

	startOnce sync.Once
	stopOnce  sync.Once
}

// New checks the options and returns a Pool; Start launches the workers.
func New(opt Options) (*Pool, error) {
	opt.setDefaults()
	if opt.App == "" {
		return nil, errors.New("worker: no app given (MODULE:CALLABLE)")
	}
	pl := &Pool{
		opt:    opt,
		log:    opt.Logger,
		events: make(chan event, 64),
		done:   make(chan struct{}),
		procs:  make(map[*process]struct{}),

		spawning: make(map[*process]struct{}),
	}
	// Least in flight, ties in turn: an idle slot if there is one, spread
	// over the workers. While no worker serves (at start, between a crash
	// and its replacement) requests wait rather than fail.
	pl.pp = proxy.NewPool(nil, &proxy.LeastConn{}, proxy.PoolOptions{
		QueueSize: max(opt.QueueSize, 0), QueueTimeout: opt.QueueTimeout, WaitEmpty: true, Logger: opt.Logger})
	h, err := NewHandler(pl, opt.InternalRedirect)
	if err != nil {
		return nil, err
	}
	pl.handler = h
	return pl, nil
}

// NewHandler returns the proxy handler that serves HTTP with pl as its one
// upstream: the request body is read completely (memory, then a temporary
// file; 413 past MaxBody) before a worker is taken; the response is relayed
// through a buffer as fast as the worker writes it; failures get their
// answers in the proxy's one error map; the request timeout stays the
// pool's own, which interrupts the app. redirect, when set, serves
// responses carrying X-Accel-Redirect or X-Sendfile: the worker's body is
// discarded and its slot freed first.
func NewHandler(pl *Pool, redirect func(w http.ResponseWriter, r *http.Request, status int, header http.Header)) (*proxy.Handler, error) {
	opt := proxy.Options{
		Pool:              pl.pp,
		Timeout:           -1,
		Gateway:           true,
		Ahead:             true,
		AheadMaxBody:      inlineBody,
		MaxBody:           pl.opt.MaxBody,
		BodyMemory:        pl.opt.BodyMemory,
		MaxResponseBuffer: pl.opt.MaxResponseBuffer,
		TempDir:           pl.opt.TempDir,
		ResponseHead:      pl.opt.ResponseHead,
		Logger:            pl.log,
	}
	if redirect != nil {
		opt.Intercept = proxy.AccelRedirect(redirect)
	}
	return proxy.New(opt)
}

type eventKind int

const (
	evExit    eventKind = iota // a process exited
	evStarted                  // a spawn finished (proc or err set)
	evRecycle                  // replace proc (max-requests, max-rss)
	evReload                   // start a new generation
	evRespawn                  // time to replace a crashed worker
	evStop
)

type event struct {
	kind   eventKind
	proc   *process
	err    error
	reason string
	gen    int
	batch  *batch
	old    *process // with evStarted: the worker the new one replaces
	reply  chan error
}

// send delivers an event to the manager unless it has stopped.
func (pl *Pool) send(ev event) {
	select {
	case pl.events <- ev:
	case <-pl.done:
	}
}

// batch tracks a generation being started (by Start or Reload).
type batch struct {
	gen     int
	want    int
	started []*process
	failed  int
	err     error
	reply   chan error
}

// Start writes worker.py, launches the workers and waits until all of them
// have imported the app. An *ImportError means the app is broken.
func (pl *Pool) Start(ctx context.Context) error {
	var err error
	pl.startOnce.Do(func() {
		dir, derr := os.MkdirTemp("", "portico-")
		if derr != nil {
			err = fmt.Errorf("worker: creating runtime directory: %w", derr)
			return
		}
		pl.rundir = dir
		pl.script = filepath.Join(dir, "worker.py")
		if werr := os.WriteFile(pl.script, workerScript, 0o600); werr != nil {
			err = fmt.Errorf("worker: writing worker.py: %w", werr)
			return
		}
		go pl.run()
	})
	if err != nil {
		return err
	}
	return pl.Reload(ctx)
}

// Reload starts a new generation of workers; once all of them are ready the
// old ones stop taking requests and exit after finishing what they hold. If
// the new generation fails (an import error after a code change), the old
// one keeps serving and the error is returned.
func (pl *Pool) Reload(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case pl.events <- event{kind: evReload, reply: reply}:
	case <-pl.done:
		return errors.New("worker: pool stopped")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Ready reports whether at least one worker takes requests.
func (pl *Pool) Ready() bool { return pl.ready.Load() }

// Stop retires every worker (they finish the requests they hold) and waits
// for them to exit; when ctx ends first, the rest are killed.
func (pl *Pool) Stop(ctx context.Context) error {
	var err error
	pl.stopOnce.Do(func() {
		if pl.rundir == "" {
			return
		}
		reply := make(chan error, 1)
		pl.events <- event{kind: evStop, reply: reply}
		<-reply
		// Wait for every process to exit; spawns cancelled by the stop may
		// still register one, hence the loop over fresh snapshots.
		for {
			pl.mu.Lock()
			left := make([]*process, 0, len(pl.procs))
			for p := range pl.procs {
				left = append(left, p)
			}
			pl.mu.Unlock()
			if len(left) == 0 {
				break
			}
			for _, p := range left {
				select {
				case <-p.exited:
				case <-ctx.Done():
					if err == nil {
						err = ctx.Err()
					}
					p.log.Warn("worker did not stop in time; killing it")
					p.kill()
					<-p.exited
				}
				pl.mu.Lock()
				delete(pl.procs, p)
				pl.mu.Unlock()
			}
		}
		close(pl.done)
		os.RemoveAll(pl.rundir)
	})
	return err
}

// manager state, owned by the run goroutine.
type manager struct {
	gen      int
	nextID   int
	serving  map[*process]struct{} // ready, current generation or replacements
	pending  *batch                // generation being started
	crashes  int                   // consecutive early crashes, for backoff
	stopping bool
	cancel   context.CancelFunc // cancels spawns under way, at stop
}

func (pl *Pool) run() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := &manager{serving: make(map[*process]struct{}), cancel: cancel}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var watch *watcher
	if pl.opt.Watch {
		watch = newWatcher(pl.opt.Dir)
	}
	for {
		select {
		case <-pl.done:
			return
		case ev := <-pl.events:
			pl.handle(ctx, m, ev)
		case <-tick.C:
			if m.stopping {
				continue
			}
			pl.checkRSS(m)
			if watch != nil && watch.changed() && m.pending == nil {
				pl.log.Info("python files changed; reloading the workers")
				pl.startBatch(ctx, m, nil)
			}
		}
	}
}

// handle applies one event.
func (pl *Pool) handle(ctx context.Context, m *manager, ev event) {
	switch ev.kind {
	case evReload:
		if m.stopping {
			ev.reply <- errors.New("worker: pool stopping")
			return
		}
		if m.pending != nil {
			ev.reply <- errors.New("worker: a reload is already under way")
			return
		}
		pl.startBatch(ctx, m, ev.reply)

	case evStarted:
		pl.started(m, ev)

	case evExit:
		pl.mu.Lock()
		_, known := pl.procs[ev.proc]
		delete(pl.procs, ev.proc)
		pl.mu.Unlock()
		_, serving := m.serving[ev.proc]
		delete(m.serving, ev.proc)
		pl.ready.Store(len(m.serving) > 0)
		for _, s := range ev.proc.slots {
			if s.state.Swap(slotClosed) == slotIdle {
				s.close()
			}
		}
		if m.stopping || !known || !serving {
			return // stopping, retired, or never admitted
		}
		if !ev.proc.killed.Load() {
			pl.crashes.Add(1) // a death Portico did not cause
		}
		lived := time.Since(ev.proc.started)
		if lived > 30*time.Second {
			m.crashes = 0
		}
		m.crashes++
		delay := backoff(m.crashes)
		if ev.proc.killed.Load() {
			// Killed on purpose: the record of why was written then.
			ev.proc.log.Info("killed worker exited; replacing it", "restart_in", delay)
		} else {
			ev.proc.log.Error("worker died; replacing it", "exit", exitString(ev.proc.exitErr), "lived", lived.Round(time.Millisecond), "restart_in", delay)
		}
		gen := m.gen
		time.AfterFunc(delay, func() { pl.send(event{kind: evRespawn, gen: gen}) })

	case evRespawn:
		if m.stopping || ev.gen != m.gen {
			return
		}
		pl.spawnOne(ctx, m, nil, "crash")

	case evRecycle:
		if m.stopping {
			return
		}
		if _, ok := m.serving[ev.proc]; !ok {
			return
		}
		ev.proc.log.Info("recycling worker; starting its replacement first", "reason", ev.reason, "requests", ev.proc.requests.Load())
		pl.spawnOne(ctx, m, ev.proc, ev.reason)

	case evStop:
		m.stopping = true
		m.cancel() // spawns under way fail and kill their process
		pl.ready.Store(false)
		for p := range m.serving {
			p.retire(pl.opt.Timeout + pl.opt.Grace)
		}
		clear(m.serving)
		ev.reply <- nil
	}
}

// startBatch launches a new generation of Workers processes.
func (pl *Pool) startBatch(ctx context.Context, m *manager, reply chan error) {
	m.gen++
	b := &batch{gen: m.gen, want: pl.opt.Workers, reply: reply}
	m.pending = b
	for range b.want {
		m.nextID++
		id := m.nextID
		go func() {
			p, err := pl.spawn(ctx, id, b.gen)
			pl.register(p)
			pl.send(event{kind: evStarted, proc: p, err: err, batch: b})
		}()
	}
}

// spawnOne starts a single worker: a crash replacement, or the replacement
// of old (recycling), which retires once the new one is ready.
func (pl *Pool) spawnOne(ctx context.Context, m *manager, old *process, reason string) {
	m.nextID++
	id, gen := m.nextID, m.gen
	go func() {
		p, err := pl.spawn(ctx, id, gen)
		pl.register(p)
		pl.send(event{kind: evStarted, proc: p, err: err, old: old, reason: reason})
	}()
}

func (pl *Pool) register(p *process) {
	if p == nil {
		return
	}
	pl.mu.Lock()
	pl.procs[p] = struct{}{}
	pl.mu.Unlock()
	// The exit may have been seen before registration: evExit then finds
	// nothing to delete, so check here.
	select {
	case <-p.exited:
		pl.mu.Lock()
		delete(pl.procs, p)
		pl.mu.Unlock()
	default:
	}
}

// started handles the end of a spawn.
func (pl *Pool) started(m *manager, ev event) {
	p := ev.proc
	if b := ev.batch; b != nil {
		if ev.err != nil {
			b.failed++
			if b.err == nil {
				b.err = ev.err
			}
		} else {
			b.started = append(b.started, p)
		}
		if len(b.started)+b.failed < b.want {
			return
		}
		m.pending = nil
		if b.err != nil || m.stopping {
			for _, p := range b.started {
				p.retire(pl.opt.Grace)
			}
			if b.err == nil {
				b.err = errors.New("worker: pool stopping")
			}
			if m.gen == b.gen {
				m.gen--
			}
			// The error is logged once: by whoever asked for the
			// generation (Start's or Reload's caller), or here for the
			// file watcher, which gets no reply.
			if b.reply != nil {
				b.reply <- b.err
			} else {
				logStartError(pl.log, "new workers failed to start; the old ones keep serving", b.err)
			}
			return
		}
		old := make([]*process, 0, len(m.serving))
		for p := range m.serving {
			old = append(old, p)
		}
		for _, p := range b.started {
			pl.admit(m, p)
		}
		for _, p := range old {
			delete(m.serving, p)
			p.retire(pl.opt.Timeout + pl.opt.Grace)
		}
		pl.recycledReload.Add(int64(len(old)))
		pl.log.Info("workers ready", "generation", b.gen, "workers", len(b.started), "threads", pl.opt.Threads, "retired", len(old),
			"python", b.started[0].python, "python_version", b.started[0].pyVersion)
		if b.reply != nil {
			b.reply <- nil
		}
		return
	}
	// A single replacement.
	if ev.err != nil {
		logStartError(pl.log, "starting a replacement worker failed", ev.err)
		if ev.old != nil {
			ev.old.recycling.Store(false) // try again at the next trigger
			return
		}
		if !m.stopping {
			m.crashes++
			delay := backoff(m.crashes)
			gen := m.gen
			time.AfterFunc(delay, func() { pl.send(event{kind: evRespawn, gen: gen}) })
		}
		return
	}
	if m.stopping || p.gen != m.gen {
		p.retire(pl.opt.Grace)
		return
	}
	pl.admit(m, p)
	if old := ev.old; old != nil {
		if _, ok := m.serving[old]; ok {
			delete(m.serving, old)
			old.retire(pl.opt.Timeout + pl.opt.Grace)
			switch ev.reason {
			case "max-requests":
				pl.recycledMaxRequests.Add(1)
			case "max-rss":
				pl.recycledMaxRSS.Add(1)
			}
		}
	}
}

// admit puts a started process into service.
func (pl *Pool) admit(m *manager, p *process) {
	if !p.state.CompareAndSwap(stateStarting, stateReady) {
		return // died meanwhile
	}
	m.serving[p] = struct{}{}
	ups := make([]*proxy.Upstream, len(p.slots))
	for i, s := range p.slots {
		ups[i] = s.up
	}
	pl.pp.Add(ups...)
	pl.ready.Store(true)
}

// checkRSS recycles workers past MaxRSS.
func (pl *Pool) checkRSS(m *manager) {
	if pl.opt.MaxRSS <= 0 {
		return
	}
	for p := range m.serving {
		rss, err := p.rss()
		if err != nil || rss <= pl.opt.MaxRSS {
			continue
		}
		if p.recycling.CompareAndSwap(false, true) {
			p.log.Info("worker memory past max-rss", "rss", rss, "max_rss", pl.opt.MaxRSS)
			pl.handle(context.Background(), m, event{kind: evRecycle, proc: p, reason: "max-rss"})
		}
	}
}

// jitter spreads recycling so that workers do not all restart together.
func (pl *Pool) jitter() int64 {
	j := pl.opt.MaxRequests / 10
	if j <= 0 {
		return 0
	}
	return rand.Int64N(int64(j) + 1)
}

// backoff is the delay before the n-th consecutive crash replacement: the
// first is immediate, then 100ms doubling up to 10s.
func backoff(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	d := 100 * time.Millisecond << min(n-2, 10)
	return min(d, 10*time.Second)
}

// logStartError logs a failed start: an import error as its traceback, in
// one attribute.
func logStartError(log *slog.Logger, msg string, err error) {
	var ie *ImportError
	if errors.As(err, &ie) {
		log.Error(msg+": the app cannot be imported", "app", ie.App, "traceback", strings.TrimRight(ie.Traceback, "\n"))
		return
	}
	log.Error(msg, "err", err)
}

func exitString(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
