package worker

import (
	"slices"
	"time"

	"portico/internal/proxy"
)

// Worker states in Status (and in the metrics and status page).
const (
	StateStarting = "starting" // spawned, importing the app
	StateIdle     = "idle"     // serving, no request running
	StateBusy     = "busy"     // serving, at least one request running
	StateRetiring = "retiring" // finishing what it holds before it exits
)

// WorkerStatus is a snapshot of one worker process.
type WorkerStatus struct {
	// ID labels the worker in logs ("worker 3"); a replacement gets a new one.
	ID int `json:"id"`
	// PID is the process ID.
	PID int `json:"pid"`
	// Generation is bumped by each reload.
	Generation int `json:"generation"`
	// State is StateStarting, StateIdle, StateBusy or StateRetiring.
	State string `json:"state"`
	// Started is when the process was spawned.
	Started time.Time `json:"started"`
	// Requests is the number of requests it has finished.
	Requests int64 `json:"requests"`
	// RSS is its resident memory in bytes, read from /proc; 0 if unknown.
	RSS int64 `json:"rss"`
	// Current lists the requests it runs now, one per busy slot (thread).
	Current []CurrentRequest `json:"current"`
}

// CurrentRequest is a request running in a worker.
type CurrentRequest struct {
	Slot   int       `json:"slot"`
	Method string    `json:"method"`
	URI    string    `json:"uri"`
	Since  time.Time `json:"since"`
}

// running is what a slot records about the request it runs (see exchange);
// it is read only while the slot is busy.
type running struct {
	method, uri string
	since       time.Time
}

// Workers returns a snapshot of the pool's live worker processes, by ID.
// Each worker's RSS is read from /proc: the call costs a file read per
// worker, fine for a status page or a scrape, not for a request path.
func (pl *Pool) Workers() []WorkerStatus {
	pl.mu.Lock()
	procs := make([]*process, 0, len(pl.procs))
	for p := range pl.procs {
		procs = append(procs, p)
	}
	// A process being spawned is not registered yet, and its slots are
	// being built: only what spawn set before listing it is read.
	out := make([]WorkerStatus, 0, len(procs)+len(pl.spawning))
	for p := range pl.spawning {
		out = append(out, WorkerStatus{ID: p.id, PID: p.pid, Generation: p.gen, Started: p.started, State: StateStarting, Current: []CurrentRequest{}})
	}
	pl.mu.Unlock()
	for _, p := range procs {
		ws := WorkerStatus{ID: p.id, PID: p.pid, Generation: p.gen, Started: p.started, Requests: p.requests.Load(), Current: []CurrentRequest{}}
		switch p.state.Load() {
		case stateStarting:
			ws.State = StateStarting
		case stateRetiring:
			ws.State = StateRetiring
		case stateDead:
			continue
		default:
			ws.State = StateIdle
		}
		for _, s := range p.slots {
			if s.state.Load() != slotBusy {
				continue
			}
			if ws.State == StateIdle {
				ws.State = StateBusy
			}
			if cur := s.cur.Load(); cur != nil {
				ws.Current = append(ws.Current, CurrentRequest{Slot: s.index, Method: cur.method, URI: cur.uri, Since: cur.since})
			}
		}
		if rss, err := p.rss(); err == nil {
			ws.RSS = rss
		}
		out = append(out, ws)
	}
	slices.SortFunc(out, func(a, b WorkerStatus) int { return a.ID - b.ID })
	return out
}

// Queued returns the number of requests waiting for a free worker.
func (pl *Pool) Queued() int { return pl.pp.Queued() }

// Counts are the pool's event counters since it was created, for the
// metrics.
type Counts struct {
	// Crashes counts serving workers that died on their own (a worker
	// killed because a request did not unwind after its timeout is not
	// one; a worker that broke the protocol is).
	Crashes int64
	// TimeoutsUnwound counts requests answered 504 at their timeout whose
	// app code unwound after its interrupt; TimeoutsKilled those whose
	// worker was killed instead (it did not unwind within the grace, or
	// died meanwhile).
	TimeoutsUnwound, TimeoutsKilled int64
	// Recycles counts workers replaced: past max-requests, past max-rss,
	// or retired by a reload (once the new generation was ready).
	RecyclesMaxRequests, RecyclesMaxRSS, RecyclesReload int64
	// Queue is the queue's counters: 503s shed, and the waits for a free
	// worker.
	Queue proxy.QueueStats
}

// Counts returns the pool's event counters.
func (pl *Pool) Counts() Counts {
	return Counts{
		Crashes:             pl.crashes.Load(),
		TimeoutsUnwound:     pl.timeoutsUnwound.Load(),
		TimeoutsKilled:      pl.timeoutsKilled.Load(),
		RecyclesMaxRequests: pl.recycledMaxRequests.Load(),
		RecyclesMaxRSS:      pl.recycledMaxRSS.Load(),
		RecyclesReload:      pl.recycledReload.Load(),
		Queue:               pl.pp.QueueStats(),
	}
}
