package server

import (
	"net"
	"net/http"
	"sync"
	"time"

	"portico/internal/uwsgi"
)

// A reqCtx is a request's context, the same for the HTTP/1.1 front and the
// uwsgi listener. It is cancelled when the handler returns and, once the
// request body has been read, when the client (or, over uwsgi, nginx, when
// its client went away) closes the connection. Watching the connection
// costs a goroutine and a read, so it starts only when someone asks for
// Done (a handler waiting for a worker does; a handler that answers at
// once does not). It answers http.LocalAddrContextKey and, for a uwsgi
// request, uwsgi.OriginContextKey, without a context.WithValue each.
type reqCtx struct {
	c      clientWatch
	origin *uwsgi.Origin // uwsgi requests only

	mu   sync.Mutex
	done chan struct{}
	err  error
}

// clientWatch is the connection side of a reqCtx.
type clientWatch interface {
	// watchClient is called on the first Done: the connection starts
	// watching for the client going away (now, or once the body is read,
	// which the watch would otherwise eat), and cancels the context then.
	watchClient()
	localAddr() net.Addr
}

func (x *reqCtx) Deadline() (time.Time, bool) { return time.Time{}, false }

func (x *reqCtx) Done() <-chan struct{} {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.done == nil {
		x.done = make(chan struct{})
		if x.err != nil {
			close(x.done)
		} else {
			x.c.watchClient()
		}
	}
	return x.done
}

func (x *reqCtx) Err() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.err
}

func (x *reqCtx) Value(key any) any {
	switch key {
	case http.LocalAddrContextKey:
		return x.c.localAddr()
	case uwsgi.OriginContextKey:
		if x.origin != nil {
			return x.origin
		}
	}
	return nil
}

func (x *reqCtx) cancel(err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.err == nil {
		x.err = err
		if x.done != nil {
			close(x.done)
		}
	}
}

func (x *reqCtx) String() string { return "server.reqCtx" }

// The HTTP/1.1 front's side: its monitor (see conn.wantMonitor).
func (c *conn) watchClient() { c.wantMonitor() }

// localAddr is nil once the connection is parked detached (see
// parker.park): only a goroutine that outlived its request asks then.
func (c *conn) localAddr() net.Addr {
	if rwc := c.rwc; rwc != nil {
		return rwc.LocalAddr()
	}
	return nil
}

// The uwsgi listener's side: its background read (see
// uwConn.wantBackgroundRead).
func (c *uwConn) watchClient()        { c.wantBackgroundRead() }
func (c *uwConn) localAddr() net.Addr { return c.rwc.LocalAddr() }
