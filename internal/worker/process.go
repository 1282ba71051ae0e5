package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"portico/internal/proxy"
)

// Process states.
const (
	stateStarting int32 = iota
	stateReady          // in the pool, taking requests
	stateRetiring       // finishing what it holds; takes no new request
	stateDead           // exited
)

// process is one Python worker process and its slots.
type process struct {
	id    int // label in logs: "worker 3"; a replacement gets a new id
	gen   int // generation (bumped by each reload)
	cmd   *exec.Cmd
	pid   int
	slots []*slot
	log   *slog.Logger

	ctlMu sync.Mutex
	ctl   *os.File // write end of the control pipe

	started  time.Time
	limit    int64 // requests before recycling (with jitter); 0: no limit
	requests atomic.Int64
	state    atomic.Int32
	// recycling is set once a replacement has been asked for, so that one
	// worker is replaced once however many requests cross its limit.
	recycling atomic.Bool
	// killed is set when Portico kills the process on purpose (a request
	// that did not unwind, a protocol error): the record of the cause is
	// written then, and the exit is not reported again as a crash.
	killed atomic.Bool
	// python and pyVersion are the interpreter worker.py reported ready.
	python, pyVersion string
	// open counts slots not yet closed; the last close ends the process's
	// connections, which tells worker.py to exit.
	open atomic.Int32

	exited  chan struct{} // closed when the process has exited
	exitErr error         // set before exited is closed
}

// ImportError is returned when the application cannot be imported: the
// worker printed a traceback instead of becoming ready. Restarting would not
// help, so `portico run` stops with it.
type ImportError struct {
	App       string
	Traceback string
}

func (e *ImportError) Error() string {
	return fmt.Sprintf("worker: importing %s failed:\n%s", e.App, strings.TrimRight(e.Traceback, "\n"))
}

type workerConfig struct {
	App          string `json:"app"`
	Chdir        string `json:"chdir,omitempty"`
	StatusFD     int    `json:"status_fd"`
	CtlFD        int    `json:"ctl_fd"`
	SlotFDs      []int  `json:"slot_fds"`
	Multiprocess bool   `json:"multiprocess"`
	SchedBatch   bool   `json:"sched_batch,omitempty"`
}

// spawn starts a worker process and waits until it has imported the app.
func (pl *Pool) spawn(ctx context.Context, id, gen int) (_ *process, err error) {
	opt := &pl.opt
	threads := opt.Threads
	var parentEnds, childEnds []*os.File
	defer func() {
		for _, f := range childEnds {
			f.Close()
		}
		if err != nil {
			for _, f := range parentEnds {
				f.Close()
			}
		}
	}()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("worker: creating status pipe: %w", err)
	}
	parentEnds = append(parentEnds, statusR)
	childEnds = append(childEnds, statusW)
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("worker: creating control pipe: %w", err)
	}
	parentEnds = append(parentEnds, ctlW)
	childEnds = append(childEnds, ctlR)
	cfg := workerConfig{App: opt.App, Chdir: opt.Dir, StatusFD: 3, CtlFD: 4, Multiprocess: opt.Workers > 1, SchedBatch: !opt.NormalSched}
	slotFiles := make([]*os.File, threads)
	for i := range threads {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("worker: creating slot socket pair: %w", err)
		}
		slotFiles[i] = os.NewFile(uintptr(fds[0]), "slot")
		parentEnds = append(parentEnds, slotFiles[i])
		childEnds = append(childEnds, os.NewFile(uintptr(fds[1]), "slot"))
		cfg.SlotFDs = append(cfg.SlotFDs, 5+i)
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("worker: encoding worker config: %w", err)
	}

	cmd := exec.Command(opt.Python, "-u", pl.script, string(cfgJSON))
	cmd.Dir = opt.Dir
	cmd.Env = append(os.Environ(), opt.Env...)
	cmd.ExtraFiles = childEnds
	// Own process group: a Ctrl-C in the terminal reaches portico only, which
	// then stops the workers in order; a kill reaches the app's children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("worker: creating stdout pipe: %w", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("worker: creating stderr pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("worker: starting %s: %w", opt.Python, err)
	}
	for _, f := range childEnds {
		f.Close()
	}
	childEnds = nil

	p := &process{
		id:      id,
		gen:     gen,
		cmd:     cmd,
		pid:     cmd.Process.Pid,
		ctl:     ctlW,
		started: time.Now(),
		exited:  make(chan struct{}),
	}
	p.log = pl.log.With("worker", id, "pid", p.pid)
	// Listed as starting (Workers) until it is ready or has failed.
	pl.mu.Lock()
	pl.spawning[p] = struct{}{}
	pl.mu.Unlock()
	defer func() {
		pl.mu.Lock()
		delete(pl.spawning, p)
		pl.mu.Unlock()
	}()
	if opt.MaxRequests > 0 {
		p.limit = int64(opt.MaxRequests) + pl.jitter()
	}
	var output sync.WaitGroup
	output.Add(2)
	go p.copyOutput(&output, stdout, "stdout")
	go p.copyOutput(&output, stderr, "stderr")
	go func() {
		output.Wait()
		p.exitErr = cmd.Wait()
		p.state.Store(stateDead)
		// What the worker wrote before it exited is in the pipe: let the
		// reader have it (closing the pipe here once cut an import
		// traceback short), but not wait for ever for an EOF that a child
		// of the worker holding the pipe's write end would hold back.
		_ = statusR.SetReadDeadline(time.Now().Add(time.Second))
		ctlW.Close()
		close(p.exited)
		pl.send(event{kind: evExit, proc: p})
	}()

	ready := make(chan error, 1)
	go func() {
		defer statusR.Close()
		var err error
		p.python, p.pyVersion, err = readStatus(statusR, opt.App)
		ready <- err
	}()
	timer := time.NewTimer(opt.StartTimeout)
	defer timer.Stop()
	select {
	case err = <-ready:
	case <-timer.C:
		err = fmt.Errorf("worker: app not ready after %s (still importing?)", opt.StartTimeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		p.kill()
		<-p.exited
		var ie *ImportError
		if !errors.As(err, &ie) && p.exitErr != nil {
			err = fmt.Errorf("%w (%v)", err, p.exitErr)
		}
		for _, f := range slotFiles {
			f.Close()
		}
		return nil, err
	}

	for i, f := range slotFiles {
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			p.kill()
			return nil, fmt.Errorf("worker: wrapping slot socket: %w", err)
		}
		s := &slot{proc: p, pool: pl, index: i, conn: c.(*net.UnixConn)}
		s.up = &proxy.Upstream{Name: fmt.Sprintf("worker %d slot %d", id, i), Transport: slotTransport{s}, MaxConns: 1,
			URL: &url.URL{Scheme: "http", Host: "localhost"}}
		s.br = bufio.NewReaderSize(s.conn, 64<<10)
		s.fr.br = s.br
		p.slots = append(p.slots, s)
	}
	p.open.Store(int32(len(p.slots)))
	return p, nil
}

// readStatus waits for worker.py's first word on the status pipe: ready
// (then the interpreter's path and version), or error and the traceback.
func readStatus(r io.Reader, app string) (python, version string, err error) {
	data, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if rest, ok := bytes.CutPrefix(data, []byte("ready\n")); ok {
		var info struct {
			Executable string `json:"executable"`
			Version    string `json:"version"`
		}
		_ = json.Unmarshal(rest, &info) // an older line without it: unknown
		return info.Executable, info.Version, nil
	}
	if rest, ok := bytes.CutPrefix(data, []byte("error\n")); ok {
		return "", "", &ImportError{App: app, Traceback: string(rest)}
	}
	if err != nil {
		return "", "", fmt.Errorf("worker: reading status pipe: %w", err)
	}
	return "", "", errors.New("worker: process exited before the app was ready")
}

// copyOutput logs each line the app prints, attributed to its worker.
func (p *process) copyOutput(wg *sync.WaitGroup, r io.Reader, stream string) {
	defer wg.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 256<<10)
	for sc.Scan() {
		p.log.Info(sc.Text(), "stream", stream)
	}
}

// interrupt asks worker.py to raise RequestTimeout in the slot's request.
func (p *process) interrupt(index int, seq uint64) {
	p.ctlMu.Lock()
	defer p.ctlMu.Unlock()
	// The request's number on the slot: worker.py ignores the interrupt if
	// it has moved on to the next request (written ahead) meanwhile.
	if _, err := p.ctl.Write([]byte("i " + strconv.Itoa(index) + " " + strconv.FormatUint(seq, 10) + "\n")); err != nil {
		return // the process is gone
	}
	_ = p.cmd.Process.Signal(syscall.SIGUSR1)
}

// kill ends the process and its process group at once.
func (p *process) kill() {
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	_ = p.cmd.Process.Kill()
}

// rss returns the resident set size in bytes, read from /proc.
func (p *process) rss() (int64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/statm")
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(string(data))
	if len(fields) < 2 {
		return 0, fmt.Errorf("worker: unexpected statm %q", data)
	}
	pages, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("worker: parsing statm: %w", err)
	}
	return pages * int64(os.Getpagesize()), nil
}

// retire takes the process out of service: its slots leave the pool, idle
// ones close now, busy ones when their request ends; worker.py exits once
// all are closed. A process that does not exit in time is killed.
func (p *process) retire(deadline time.Duration) {
	if !p.state.CompareAndSwap(stateReady, stateRetiring) && !p.state.CompareAndSwap(stateStarting, stateRetiring) {
		return
	}
	if len(p.slots) > 0 {
		ups := make([]*proxy.Upstream, len(p.slots))
		for i, s := range p.slots {
			ups[i] = s.up
		}
		p.slots[0].pool.pp.Remove(ups...)
	}
	for _, s := range p.slots {
		if s.state.CompareAndSwap(slotIdle, slotClosed) {
			s.close()
		}
	}
	go func() {
		t := time.NewTimer(deadline)
		defer t.Stop()
		select {
		case <-p.exited:
		case <-t.C:
			p.log.Warn("retired worker did not exit in time; killing it", "after", deadline)
			p.kill()
		}
	}()
}
