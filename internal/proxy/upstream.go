package proxy

import (
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Upstream is one server behind a Pool. Its configuration fields are set
// before the Pool is built and never change; its state is kept in atomics
// that requests read without a lock.
type Upstream struct {
	// Name identifies the upstream in logs, metrics and /upstreams: its URL
	// as configured ("http://10.0.0.5:8080", "fastcgi+unix:///run/php.sock").
	Name string
	// Transport sends requests to this upstream. Required.
	Transport http.RoundTripper
	// URL is the scheme and host the outgoing request's URL gets
	// ("http://10.0.0.5:8080"; "http://localhost" for a unix socket, whose
	// Transport dials the socket). Required.
	URL *url.URL
	// Weight is the upstream's share for the weighted policies
	// (round_robin, least_conn). Zero: 1.
	Weight int
	// MaxConns bounds the requests in flight on the upstream at once
	// (nginx's max_conns); a request that finds every usable upstream full
	// waits in the Pool's queue. Zero: no bound.
	MaxConns int
	// Backup upstreams get requests only while no primary one is usable
	// (nginx's backup).
	Backup bool

	index int // position in the Pool, for the selectors' per-upstream state

	inflight atomic.Int64
	// downUntil (unix nanoseconds) takes the upstream out of rotation after
	// MaxFails passive failures, until then.
	downUntil atomic.Int64
	// activeDown is set while active health checks say the upstream fails.
	activeDown atomic.Bool
	// paused is set while the upstream's owner holds it out of rotation for
	// a moment (Pool.Pause: a worker slot unwinding an interrupted request).
	paused atomic.Bool
	// removed is set once Pool.Remove took the upstream out of its pool.
	removed atomic.Bool
	// ewma is a moving average of response-head latency, in nanoseconds.
	ewma atomic.Int64

	requests atomic.Int64 // requests sent
	failures atomic.Int64 // failures counted (passive health)
	retries  atomic.Int64 // requests retried after failing here

	// troubled is set while fails > 0 or wasDown, so that a success
	// takes the lock only when it has something to reset.
	troubled atomic.Bool

	mu       sync.Mutex // guards the failure window and state changes
	fails    int        // failures in the current window
	window   time.Time  // start of the current failure window
	wasDown  bool       // the last state logged was down
	checkOK  int        // consecutive active check successes
	checkBad int        // consecutive active check failures
}

// InFlight is the number of requests on the upstream now.
func (u *Upstream) InFlight() int64 { return u.inflight.Load() }

// weight returns Weight with its default.
func (u *Upstream) weight() int64 {
	if u.Weight <= 0 {
		return 1
	}
	return int64(u.Weight)
}

// Healthy reports whether the upstream is in rotation at now: neither
// taken out by passive failures nor failing its active checks.
func (u *Upstream) Healthy(now time.Time) bool { return u.healthy(now.UnixNano()) }

func (u *Upstream) healthy(now int64) bool {
	return !u.activeDown.Load() && now >= u.downUntil.Load()
}

// Available reports whether a request may be sent to the upstream at now:
// it is healthy, not paused, and below its MaxConns.
func (u *Upstream) Available(now time.Time) bool { return u.available(now.UnixNano()) }

func (u *Upstream) available(now int64) bool {
	return u.healthy(now) && !u.paused.Load() && !u.removed.Load() && (u.MaxConns <= 0 || u.inflight.Load() < int64(u.MaxConns))
}

// claim takes one unit of the upstream's capacity, exactly: false when it
// is at MaxConns.
func (u *Upstream) claim() bool {
	if u.MaxConns <= 0 {
		u.inflight.Add(1)
		return true
	}
	for {
		n := u.inflight.Load()
		if n >= int64(u.MaxConns) {
			return false
		}
		if u.inflight.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// observe folds one response-head latency into the moving average (1/8
// weight: a slow upstream shows within a few requests).
func (u *Upstream) observe(d time.Duration) {
	for {
		old := u.ewma.Load()
		next := int64(d)
		if old != 0 {
			next = old + (int64(d)-old)/8
		}
		if u.ewma.CompareAndSwap(old, next) {
			return
		}
	}
}

// Latency is the moving average of the upstream's response-head latency.
func (u *Upstream) Latency() time.Duration { return time.Duration(u.ewma.Load()) }

// Health settings of a Pool for passive checks.
type passive struct {
	maxFails    int
	failTimeout time.Duration
}

// fail records a failed request at now (passive health). With maxFails
// failures inside one failTimeout window the upstream leaves rotation for
// failTimeout (nginx's max_fails and fail_timeout). It logs the change of
// state once.
func (u *Upstream) fail(now time.Time, p passive, log *slog.Logger, cause error) {
	u.failures.Add(1)
	if p.maxFails <= 0 {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if now.Sub(u.window) > p.failTimeout {
		u.window, u.fails = now, 0
	}
	u.fails++
	u.troubled.Store(true)
	if u.fails < p.maxFails {
		return
	}
	u.fails = 0
	u.window = time.Time{}
	u.downUntil.Store(now.Add(p.failTimeout).UnixNano())
	if !u.wasDown {
		u.wasDown = true
		u.troubled.Store(true)
		log.Warn("upstream down: taken out of rotation", "upstream", u.Name, "fails", p.maxFails, "for", p.failTimeout, "err", cause)
	}
}

// succeed records a request the upstream answered well: the failure window
// starts over, and an upstream that was down is logged back.
func (u *Upstream) succeed(log *slog.Logger) {
	if !u.troubled.Load() {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.fails = 0
	if u.wasDown && !u.activeDown.Load() {
		u.wasDown = false
		log.Info("upstream up: back in rotation", "upstream", u.Name)
	}
	u.troubled.Store(u.wasDown)
}

// checked records an active health check's outcome: rise successes in a row
// bring a failing upstream back, fall failures in a row take it out.
func (u *Upstream) checked(ok bool, rise, fall int, log *slog.Logger, cause string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if ok {
		u.checkBad = 0
		u.checkOK++
		if u.activeDown.Load() && u.checkOK >= rise {
			u.activeDown.Store(false)
			u.downUntil.Store(0)
			u.wasDown = false
			log.Info("upstream up: health checks pass", "upstream", u.Name, "rise", rise)
		}
		return
	}
	u.checkOK = 0
	u.checkBad++
	if !u.activeDown.Load() && u.checkBad >= fall {
		u.activeDown.Store(true)
		if !u.wasDown {
			u.wasDown = true
			u.troubled.Store(true)
			log.Warn("upstream down: health checks fail", "upstream", u.Name, "fall", fall, "err", cause)
		}
	}
}

// Status is a snapshot of an upstream's state, for /upstreams and /readyz.
type Status struct {
	Name      string  `json:"name"`
	Healthy   bool    `json:"healthy"`
	Backup    bool    `json:"backup,omitempty"`
	InFlight  int64   `json:"in_flight"`
	MaxConns  int     `json:"max_conns,omitempty"`
	Weight    int64   `json:"weight"`
	Requests  int64   `json:"requests"`
	Failures  int64   `json:"failures"`
	Retries   int64   `json:"retries"`
	LatencyMS float64 `json:"latency_ewma_ms"`
}

// Status returns a snapshot of the upstream's state at now.
func (u *Upstream) Status(now time.Time) Status {
	return Status{
		Name:      u.Name,
		Healthy:   u.Healthy(now),
		Backup:    u.Backup,
		InFlight:  u.inflight.Load(),
		MaxConns:  u.MaxConns,
		Weight:    u.weight(),
		Requests:  u.requests.Load(),
		Failures:  u.failures.Load(),
		Retries:   u.retries.Load(),
		LatencyMS: float64(u.ewma.Load()) / 1e6,
	}
}
