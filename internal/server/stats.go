package server

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

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

	// HTTP/2 connections, from serveH2Conn (ServeTLS counts them
	// accepted, or refused if their handshake failed, before it hands
	// them over): StateNew, then StateIdle and StateActive as their
	// streams come and go, then StateClosed.
	mu       sync.Mutex
	tlsConns map[net.Conn]http.ConnState
	tlsIdle  int64
}

func (st *stats) tlsConnState(c net.Conn, state http.ConnState) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.tlsConns == nil {
		st.tlsConns = map[net.Conn]http.ConnState{}
	}
	prev, known := st.tlsConns[c]
	if prev == http.StateIdle && known {
		st.tlsIdle--
	}
	switch state {
	case http.StateNew, http.StateActive:
		st.tlsConns[c] = state
	case http.StateIdle:
		st.tlsIdle++
		st.tlsConns[c] = state
	case http.StateClosed, http.StateHijacked:
		delete(st.tlsConns, c)
	}
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
	s.mu.Unlock()
	st := &s.stats
	st.mu.Lock()
	out.Open += int64(len(st.tlsConns))
	out.Idle += st.tlsIdle
	st.mu.Unlock()
	return out
}
