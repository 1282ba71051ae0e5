package worker

import (
	"bufio"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"time"
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
	index int
	conn  *net.UnixConn
	br    *bufio.Reader
	fr    frameReader
	state atomic.Int32
	// scratch is the pump's read buffer, allocated on first use.
	scratch []byte
}

// close closes the connection; the last slot of a process to close tells
// worker.py to exit.
func (s *slot) close() {
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
func (pl *Pool) drainAfterTimeout(s *slot, bodyDone <-chan error) {
	p := s.proc
	s.proc.interrupt(s.index)
	deadline := time.Now().Add(pl.opt.Grace)
	_ = s.conn.SetDeadline(deadline)
	err := func() error {
		for {
			typ, _, err := s.fr.next()
			if err != nil {
				return err
			}
			if typ == frameEnd || typ == frameError {
				return nil
			}
		}
	}()
	if err == nil && bodyDone != nil {
		err = <-bodyDone
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			p.log.Error("request did not unwind after its interrupt; killing the worker", "slot", s.index, "grace", pl.opt.Grace)
		} else {
			p.log.Error("lost the worker while interrupting a request", "slot", s.index, "err", err)
		}
		s.state.Store(slotClosed)
		s.close()
		p.kill()
		return
	}
	p.log.Info("request interrupted at its timeout; the worker lives on", "slot", s.index)
	pl.release(s)
}

// release returns a slot whose exchange ended cleanly to the pool, or closes
// it when its process is retiring or has reached its request limit.
func (pl *Pool) release(s *slot) {
	p := s.proc
	_ = s.conn.SetDeadline(time.Time{})
	n := p.requests.Add(1)
	if p.limit > 0 && n >= p.limit && p.recycling.CompareAndSwap(false, true) {
		pl.send(event{kind: evRecycle, proc: p, reason: "max-requests"})
	}
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
		return
	}
	select {
	case pl.free <- s:
	default:
		// Cannot happen with the channel sized for every slot; closing keeps
		// the pool consistent if it ever does.
		if s.state.CompareAndSwap(slotIdle, slotClosed) {
			s.close()
		}
	}
}

// broken closes a slot whose connection can no longer be trusted.
func (s *slot) broken() {
	s.state.Store(slotClosed)
	s.close()
}
