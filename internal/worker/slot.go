package worker

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"portico/internal/proxy"
	"portico/internal/requestid"
)

// Slot states.
const (
	slotIdle int32 = iota
	slotBusy
	slotClosed
)

// slot is one persistent connection to one request thread of a worker
// process: at most one request at a time travels on it.
type slot struct {
	proc  *process
	pool  *Pool
	index int
	// up is the slot as an upstream of the pool's proxy.Pool (MaxConns 1):
	// the proxy core queues requests and hands out slots.
	up    *proxy.Upstream
	conn  *net.UnixConn
	br    *bufio.Reader
	fr    frameReader
	state atomic.Int32

	// next is the request written ahead on this slot while another one
	// runs (see tryAhead); the exchange that ends hands the slot to it.
	// While next is set the slot never goes idle.
	next atomic.Pointer[ahead]
	// aheadOK is set while the current request's packet is all written (no
	// body streaming after it), so that another packet may follow it.
	aheadOK atomic.Bool
	// seq numbers the requests run on the slot (the current one's number),
	// for interrupts; only the slot's owner changes it.
	seq atomic.Uint64
	// started is when the current request's exchange began (owner only).
	started time.Time
	// cur describes the current request for Workers; read only while the
	// slot is busy.
	cur atomic.Pointer[running]
}

// ahead is a request written ahead on a busy slot, waiting for its turn.
type ahead struct{ turn chan turn }

// What a request written ahead learns when the request before it ends.
type turn int

const (
	turnYours  turn = iota // the slot is yours; your packet is in the worker
	turnRetry              // the worker died before your packet was read: take another slot
	turnFailed             // the worker died and may have started your request
)

// resolveNext tells the request written ahead, if any, what became of it.
func (s *slot) resolveNext(t turn) {
	if a := s.next.Swap(nil); a != nil {
		a.turn <- t
	}
}

// close takes the slot out of the pool and closes its connection; the
// last slot of a process to close tells worker.py to exit.
func (s *slot) close() {
	s.pool.pp.Remove(s.up)
	s.conn.Close()
	s.proc.open.Add(-1)
}

// tryAcquire claims an idle slot for a request.
func (s *slot) tryAcquire() bool {
	return s.state.CompareAndSwap(slotIdle, slotBusy)
}

// drainAfterTimeout runs after a request passed its deadline while the app
// still held the slot: it asks worker.py to interrupt the request, then
// waits up to grace for the end of the response. If the app unwinds, the slot
// is reused; if not, the worker is killed and replaced.
//
// The caller pauses the slot in the pool first: the request's lease ends
// with its 504, and no other request may be given the slot before it is
// back; it is resumed here.
//
// It writes the timeout's one log record (r's method, URI and ID, the
// status sent, the worker's pid), once the outcome is known: the app
// unwound (with the traceback of where it was interrupted), or the worker
// was killed.
func (pl *Pool) drainAfterTimeout(s *slot, bodyDone <-chan error, r *http.Request, status int) {
	p := s.proc
	defer pl.pp.Resume(s.up)
	s.proc.interrupt(s.index, s.seq.Load())
	deadline := time.Now().Add(pl.opt.Grace)
	_ = s.conn.SetDeadline(deadline)
	tb := ""
	err := func() error {
		for {
			typ, _, err := s.fr.next()
			if err != nil {
				return err
			}
			switch typ {
			case frameEnd:
				return nil
			case frameError:
				var f *failure
				if err := s.readAppError(false); !errors.As(err, &f) {
					return err
				}
				tb = f.traceback
				return nil
			}
		}
	}()
	if err == nil && bodyDone != nil {
		err = <-bodyDone
	}
	attrs := []slog.Attr{slog.String("method", r.Method), slog.String("uri", r.RequestURI), slog.Int("status", status)}
	if id := requestid.Of(r); id != "" {
		attrs = append(attrs, slog.String("request_id", id))
	}
	attrs = append(attrs, slog.Duration("timeout", pl.opt.Timeout), slog.Int("slot", s.index))
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			attrs = append(attrs, slog.String("outcome", "killed"), slog.Duration("grace", pl.opt.Grace))
			p.log.LogAttrs(context.Background(), slog.LevelError, "request timed out and did not unwind after its interrupt; killing the worker", attrs...)
		} else {
			attrs = append(attrs, slog.String("outcome", "lost"), slog.Any("err", err))
			p.log.LogAttrs(context.Background(), slog.LevelError, "request timed out and the worker was lost while interrupting it", attrs...)
		}
		s.state.Store(slotClosed)
		p.killed.Store(true)
		pl.timeoutsKilled.Add(1)
		p.kill()
		s.resolveNext(pl.afterKill(s))
		s.close()
		return
	}
	pl.timeoutsUnwound.Add(1)
	attrs = append(attrs, slog.String("outcome", "unwound"))
	if tb != "" {
		attrs = append(attrs, slog.String("traceback", tb))
	}
	p.log.LogAttrs(context.Background(), slog.LevelError, "request timed out; the app was interrupted and unwound, the worker lives on", attrs...)
	pl.release(s)
}

// release makes a slot whose exchange ended cleanly idle again, hands it
// to the request written ahead on it, or closes it when its process is
// retiring or has reached its request limit.
func (pl *Pool) release(s *slot) {
	p := s.proc
	_ = s.conn.SetDeadline(time.Time{})
	if !s.started.IsZero() {
		// A moving average of the time requests hold a slot (1/8 weight).
		d, avg := int64(time.Since(s.started)), pl.serviceTime.Load()
		pl.serviceTime.Store(avg + (d-avg)/8)
	}
	n := p.requests.Add(1)
	if p.limit > 0 && n >= p.limit && p.recycling.CompareAndSwap(false, true) {
		pl.send(event{kind: evRecycle, proc: p, reason: "max-requests"})
	}
	// No request may be written ahead any more, then the one written ahead,
	// if any, gets the slot. In this order a request that sets next after
	// the Swap (which would never get its turn) must have seen aheadOK set
	// before the Store, and so set next before the Swap: tryAhead loads
	// aheadOK after its CompareAndSwap of next. (The other order once left
	// a request written ahead waiting for ever.)
	s.aheadOK.Store(false)
	if a := s.next.Swap(nil); a != nil {
		// Its packet is in the worker already: it runs there even if the
		// process is retiring; the slot closes after it.
		a.turn <- turnYours
		return
	}
	pl.pp.Withdraw(s.up) // offers made behind the request that ended
	if p.state.Load() != stateReady {
		s.state.Store(slotClosed)
		s.close()
		return
	}
	s.state.Store(slotIdle)
	// Check again: retire() may have run between the load and the store and
	// skipped this slot because it was busy.
	if p.state.Load() != stateReady {
		if s.state.CompareAndSwap(slotIdle, slotClosed) {
			s.close()
		}
	}
	// The request's lease, released by the proxy handler once the response
	// is read, gives the slot to the next request.
}

// broken closes a slot whose connection can no longer be trusted; the
// request written ahead on it, if any, learns t.
func (s *slot) broken(t turn) {
	s.state.Store(slotClosed)
	s.resolveNext(t)
	s.close()
}

// afterKill tells what became of the request written ahead on s, whose
// worker was killed while its current request ran: if the end of the
// current response had been sent after all, the worker may have started
// the next one (turnFailed); if not, it never read it (turnRetry).
func (pl *Pool) afterKill(s *slot) turn {
	if s.next.Load() == nil {
		return turnRetry
	}
	_ = s.conn.SetReadDeadline(time.Now().Add(time.Second))
	for {
		typ, _, err := s.fr.next()
		if err != nil {
			return turnRetry
		}
		if typ == frameEnd || typ == frameError {
			return turnFailed
		}
	}
}
