package server

import "sync/atomic"

// Stats is a snapshot of a server's connections, for the metrics.
type Stats struct {
	// Open is the number of client connections open now; Idle, those of
	// them waiting for a request (their first or their next).
	Open, Idle int64
	// Accepted counts the connections accepted since the server was made.
	Accepted int64
	// Refused counts connections closed before a request could be read:
	// on a plain listener, a PROXY protocol header that was missing or
	// broken; on a TLS listener, a handshake that did not complete (a
	// refused PROXY header, a client that gave up or spoke something
	// else).
	Refused int64
}

// stats holds the counters behind Stats.
type stats struct {
	accepted atomic.Int64
	refused  atomic.Int64
}

// Stats returns a snapshot of the server's connections: plain and TLS
// listeners together.
func (s *HTTP) Stats() Stats {
	out := Stats{Accepted: s.stats.accepted.Load(), Refused: s.stats.refused.Load()}
	s.mu.Lock()
	for c := range s.conns {
		out.Open++
		if c.state.Load() == stateIdle {
			out.Idle++
		}
	}
	out.Open += int64(len(s.uwConns))
	for c := range s.h2conns {
		out.Open++
		if c.idleNow.Load() {
			out.Idle++
		}
	}
	s.mu.Unlock()
	return out
}
