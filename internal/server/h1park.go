package server

import (
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// parkAfter is how long a keep-alive connection waits for its next request
// in its own goroutine before it is parked: handed to the parker, its
// goroutine gone. A browser's or a load balancer's next request usually
// comes well within it; a connection idle longer costs the server its
// socket (a bare descriptor: see park), 112 bytes of conn and an epoll
// entry (0.6 to 1 KiB of RSS each in bench/run.sh's idle scenario, the Go
// runtime's share included), instead of a goroutine stack, a net.Conn and
// the state of a connection being served as well (2 to 8 KiB).
const parkAfter = time.Second

// parkAfter is the server's wait before parking (parkAfter; tests shorten
// it).
func (s *HTTP) parkDelay() time.Duration {
	if s.parkAfter > 0 {
		return s.parkAfter
	}
	return parkAfter
}

// A parker holds idle keep-alive connections without goroutines, the way an
// event-loop server holds them: each is in an epoll set of its own (the Go
// runtime's netpoller needs a goroutine blocked in a read to watch a
// connection), and a new goroutine takes it over when it becomes readable.
// It closes the connections whose idle timeout passes.
type parker struct {
	srv  *HTTP
	epfd int

	mu     sync.Mutex
	conns  map[int32]*conn // by file descriptor
	queue  []parkedConn    // in parking order, so in expiry order
	fresh  []parkedConn    // the same for the not yet served: header timeout
	gen    uint64
	active bool // the loop goroutine runs
	closed bool // the server stopped: epfd is closed, or the loop closes it

	// For Options.OnIdleDrop: parks since the last call, the last park,
	// the last call.
	parks       int
	lastPark    time.Time
	lastRelease time.Time
}

// After a burst of connections goes idle (releaseAfterParks parked, none
// for a second), the memory their requests used is garbage the runtime
// would keep until its next collection, which an idle server may not have
// for two minutes; sync.Pool buffers need two. The parker then calls
// Options.OnIdleDrop (cmd/portico collects and returns the free memory to
// the OS: a process-wide policy, not the server's), at most once per
// releaseEvery.
const (
	releaseAfterParks = 1000
	releaseEvery      = 30 * time.Second
)

// idleDropParks is releaseAfterParks, or the server's own (tests shorten
// it).
func (s *HTTP) idleDropParks() int {
	if s.idleDropAfter > 0 {
		return s.idleDropAfter
	}
	return releaseAfterParks
}

type parkedConn struct {
	c   *conn
	gen uint64
	at  time.Time
}

// newParker returns a parker, or nil if epoll is not available.
func newParker(srv *HTTP) *parker {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		srv.logger.Warn("server: epoll unavailable; idle connections keep their goroutines", "err", err)
		return nil
	}
	return &parker{srv: srv, epfd: fd, conns: map[int32]*conn{}}
}

// park hands c over; it reports false if c cannot be parked (its
// goroutine then keeps waiting). c's read buffer must be released.
//
// A bare TCP connection is also detached from package net while parked:
// the parker keeps a duplicate of its descriptor and the net.Conn is
// closed (the socket stays open through the duplicate), so that its
// netFD, its two addresses and their sockaddrs, and its finalizer are
// freed; resume makes a net.Conn of the descriptor again (attach). That
// took 18,000 parked connections (bench/idleconns, hello handler, RSS
// after GC and FreeOSMemory) from 1.86 to 1.07 KiB each. It costs about
// a dozen system calls per park and resume, which happen at most once per
// parkAfter of idleness. A wrapped connection (one that counts, or TLS)
// is parked as it is: its wrapper must see its Close.
func (p *parker) park(c *conn) bool {
	if c.raw == nil {
		return false
	}
	var fd int32 = -1
	if err := c.raw.Control(func(s uintptr) { fd = int32(s) }); err != nil || fd < 0 {
		return false
	}
	var detach *net.TCPConn
	if tc, ok := c.rwc.(*net.TCPConn); ok && tc == c.tcp {
		var dup int = -1
		var derr error
		if err := c.raw.Control(func(s uintptr) { dup, derr = dupCloexec(int(s)) }); err == nil && derr == nil && dup >= 0 {
			detach, fd = tc, int32(dup)
		}
	}
	// The server's lock before the parker's (the order of closeIdle and
	// Close): a detached connection's rwc changes under it.
	p.srv.mu.Lock()
	p.mu.Lock()
	ok := p.parkLocked(c, fd)
	if ok && detach != nil {
		c.rwc, c.raw, c.tcp, c.detached = nil, nil, nil, true
	}
	// The active state goes back to its pool before the parker can hand
	// c to a new goroutine (which takes one): the parker's lock orders
	// the two.
	var a *connActive
	if ok {
		a, c.connActive = c.connActive, nil
	}
	p.mu.Unlock()
	p.srv.mu.Unlock()
	if a != nil {
		// Zeroed, the header map kept for the next response too: a
		// connection idle past parkAfter has no next response soon, and
		// the map was 0.54 of the 2.44 KiB each of 18,000 parked
		// connections held (bench/idleconns against a hello handler).
		*a = connActive{}
		activePool.Put(a)
	}
	if detach != nil {
		if ok {
			_ = detach.Close() // the duplicate keeps the socket open
		} else {
			syscall.Close(int(fd))
		}
	}
	return ok
}

// parkLocked adds c, readable on fd, to the parker.
func (p *parker) parkLocked(c *conn, fd int32) bool {
	if p.srv.shuttingDown() || p.closed {
		return false
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | epollOneShot, Fd: fd}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev); err != nil {
		return false
	}
	p.gen++
	c.parkFD, c.parkGen = fd, p.gen
	p.conns[fd] = c
	now := time.Now()
	if c.served {
		p.queue = append(p.queue, parkedConn{c: c, gen: p.gen, at: now})
	} else {
		p.fresh = append(p.fresh, parkedConn{c: c, gen: p.gen, at: now})
	}
	p.parks++
	p.lastPark = now
	if !p.active {
		p.active = true
		go p.loop()
	}
	return true
}

// dupCloexec duplicates fd, close-on-exec.
func dupCloexec(fd int) (int, error) {
	r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

// attach makes a net.Conn again of the descriptor of a connection parked
// detached (see park), which its goroutine owns once the parker took it
// out. It reports false, the descriptor closed, if it cannot.
func (c *conn) attach() bool {
	f := os.NewFile(uintptr(c.parkFD), "")
	nc, err := net.FileConn(f) // a duplicate, with its own netFD
	f.Close()
	s := c.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	c.detached = false
	if err != nil {
		s.logger.Warn("server: resuming a parked connection", "remote", c.remote, "err", err)
		return false
	}
	c.rwc = nc
	c.tcp, _ = nc.(*net.TCPConn)
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw = raw
		}
	}
	return true
}

// epollOneShot is EPOLLONESHOT, which package syscall does not name.
const epollOneShot = 1 << 30

// takeLocked removes c from the parker if it is parked there (with the
// generation gen, or any if gen is 0) and reports whether it was.
func (p *parker) takeLocked(c *conn, gen uint64) bool {
	if c.parkGen == 0 || gen != 0 && c.parkGen != gen || p.conns[c.parkFD] != c {
		return false
	}
	delete(p.conns, c.parkFD)
	_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(c.parkFD), nil)
	c.parkGen = 0
	return true
}

// forget removes c if it is parked and reports whether it was: the caller
// then owns it (it has no goroutine).
func (p *parker) forget(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.takeLocked(c, 0)
}

// expireLocked takes the connections of q parked for longer than wait
// (counting the wait before parking) out of the parker, appends them to
// expired and returns it.
func (p *parker) expireLocked(q *[]parkedConn, wait time.Duration, expired []*conn) []*conn {
	if wait <= 0 {
		return expired
	}
	limit := time.Now().Add(-(wait - p.srv.parkDelay()))
	i := 0
	for ; i < len(*q) && (*q)[i].at.Before(limit); i++ {
		if pc := (*q)[i]; p.takeLocked(pc.c, pc.gen) {
			expired = append(expired, pc.c)
		}
		(*q)[i] = parkedConn{} // no reference left behind
	}
	*q = (*q)[i:]
	return expired
}

// close releases the epoll descriptor once nothing can be parked any more
// (the server is shutting down, so park refuses): at once if the loop is
// not running, else when the loop ends (the server's Shutdown or Close
// takes the parked connections away, so it ends within a second). The
// loop never waits on a closed descriptor, or on its number reused.
func (p *parker) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	if !p.active {
		syscall.Close(p.epfd)
	}
}

// loop waits for parked connections to become readable and resumes them in
// new goroutines; once a second it closes those past the idle timeout. It
// ends when nothing is parked, and the next park starts it again.
func (p *parker) loop() {
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(p.epfd, events, 1000)
		if err != nil && err != syscall.EINTR {
			p.srv.logger.Error("server: waiting on parked connections", "err", err)
			n = 0
			time.Sleep(100 * time.Millisecond)
		}
		var resume, expired []*conn
		p.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			if c := p.conns[ev.Fd]; c != nil && p.takeLocked(c, 0) {
				resume = append(resume, c)
			}
		}
		expired = p.expireLocked(&p.queue, p.srv.waitTimeout(true), expired)
		expired = p.expireLocked(&p.fresh, p.srv.waitTimeout(false), expired)
		if len(p.conns) == 0 {
			p.queue, p.fresh = nil, nil
		}
		release := false
		if now := time.Now(); p.parks >= p.srv.idleDropParks() && now.Sub(p.lastPark) >= time.Second && now.Sub(p.lastRelease) >= releaseEvery {
			p.parks, p.lastRelease, release = 0, now, true
		}
		done := len(p.conns) == 0
		if done {
			p.active = false
			if p.closed {
				syscall.Close(p.epfd)
			}
		}
		p.mu.Unlock()

		for _, c := range resume {
			go c.resume()
		}
		if f := p.srv.onIdleDrop; release && f != nil {
			go f()
		}
		for _, c := range expired {
			if c.state.CompareAndSwap(stateIdle, stateClosed) {
				c.close()
			}
		}
		if done {
			return
		}
	}
}
