// Command idleconns opens many idle HTTP/1.1 keep-alive connections to one
// server and holds them, so that the benchmark harness (bench/run.sh) can
// measure what an idle connection costs the server (RSS per connection) and
// check that the server still answers while it holds them.
//
//	idleconns -addr 127.0.0.1:18000 -n 18000
//
// Each connection sends one GET request and reads the whole response, so the
// server holds an established HTTP connection in its keep-alive state, not a
// bare TCP socket that never spoke. The connections come from several
// loopback source addresses (-sources) so that their number is not bounded by
// the ephemeral port range of one address pair, and they are split over
// several processes (-per-child per process; the command re-executes itself
// with -child) because one process may not hold more open files than the hard
// RLIMIT_NOFILE allows.
//
// Output on stdout, one line each:
//
//	established N failed F seconds S   once every connection was attempted
//	alive N                            after SIGINT or SIGTERM: connections the server had not closed
//
// Between the two lines the command holds the connections until SIGINT or
// SIGTERM (or -hold passes); then it closes them and exits. The exit status is
// 1 when a connection could not be established or a child failed.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// config is what one process (parent or child) needs to open its share.
type config struct {
	addr     string        // server host:port
	path     string        // request path of the one request per connection
	sources  []net.IP      // local source addresses, used round-robin
	parallel int           // connections being dialled at once
	timeout  time.Duration // bound on dial + request + response, per connection
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("idleconns", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "server address host:port (required)")
	n := fs.Int("n", 1000, "number of connections")
	perChild := fs.Int("per-child", 5000, "most connections per process (below the hard open-file limit)")
	sources := fs.String("sources", "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9",
		"comma-separated local source addresses, used round-robin")
	path := fs.String("path", "/", "request path of the one request sent on each connection")
	parallel := fs.Int("parallel", 64, "connections dialled at once, per process")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on dial, request and response, per connection")
	hold := fs.Duration("hold", 0, "hold the connections this long, then exit (0: until SIGINT or SIGTERM)")
	child := fs.Bool("child", false, "internal: run as a child process that opens -n connections starting at -first")
	first := fs.Int("first", 0, "internal: index of the child's first connection (picks its source addresses)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *addr == "" || *n < 1 || *perChild < 1 || *parallel < 1 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "idleconns: -addr is required; -n, -per-child and -parallel must be positive")
		fs.Usage()
		return 2
	}
	cfg := config{addr: *addr, path: *path, parallel: *parallel, timeout: *timeout}
	for _, s := range strings.Split(*sources, ",") {
		ip := net.ParseIP(strings.TrimSpace(s))
		if ip == nil {
			fmt.Fprintf(stderr, "idleconns: bad source address %q\n", s)
			return 2
		}
		cfg.sources = append(cfg.sources, ip)
	}
	if *child {
		return runChild(cfg, *n, *first, stdin, stdout, stderr)
	}
	return runParent(args, *n, *perChild, *hold, stdout, stderr)
}

// runChild opens n connections, reports them, holds them until stdin is
// closed (the parent closes it, or dies), then reports how many are alive.
func runChild(cfg config, n, first int, stdin io.Reader, stdout, stderr io.Writer) int {
	start := time.Now()
	h, failed, firstErr := open(context.Background(), cfg, n, first)
	if firstErr != nil {
		fmt.Fprintf(stderr, "idleconns: %d of %d connections failed; first: %v\n", failed, n, firstErr)
	}
	fmt.Fprintf(stdout, "established %d failed %d seconds %.2f\n", h.len(), failed, time.Since(start).Seconds())
	_, _ = io.Copy(io.Discard, stdin) // hold until the parent closes our stdin
	fmt.Fprintf(stdout, "alive %d\n", h.alive())
	h.close()
	if failed > 0 {
		return 1
	}
	return 0
}

// childProc is one re-executed child and the pipes the parent talks over.
type childProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines *bufio.Scanner
}

// runParent starts ceil(n/perChild) children, sums their reports, holds until
// a signal (or hold), then stops them and sums the alive counts.
func runParent(args []string, n, perChild int, hold time.Duration, stdout, stderr io.Writer) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "idleconns: finding own executable: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var children []*childProc
	defer func() {
		for _, c := range children {
			_ = c.stdin.Close()
			_ = c.cmd.Wait()
		}
	}()
	start := time.Now()
	for first := 0; first < n; first += perChild {
		k := min(perChild, n-first)
		// Flags given later win, so the parent's own flags pass through unchanged.
		cargs := append(append([]string{}, args...), "-child", "-n", strconv.Itoa(k), "-first", strconv.Itoa(first))
		cmd := exec.Command(self, cargs...)
		cmd.Stderr = stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			fmt.Fprintf(stderr, "idleconns: creating child stdin: %v\n", err)
			return 1
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			fmt.Fprintf(stderr, "idleconns: creating child stdout: %v\n", err)
			return 1
		}
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(stderr, "idleconns: starting child: %v\n", err)
			return 1
		}
		children = append(children, &childProc{cmd: cmd, stdin: in, lines: bufio.NewScanner(out)})
	}

	status := 0
	established, failed := 0, 0
	for _, c := range children {
		var e, f int
		var secs float64
		if !c.lines.Scan() {
			fmt.Fprintln(stderr, "idleconns: a child exited before reporting")
			return 1
		}
		if _, err := fmt.Sscanf(c.lines.Text(), "established %d failed %d seconds %f", &e, &f, &secs); err != nil {
			fmt.Fprintf(stderr, "idleconns: parsing child report %q: %v\n", c.lines.Text(), err)
			return 1
		}
		established += e
		failed += f
	}
	if failed > 0 {
		status = 1
	}
	fmt.Fprintf(stdout, "established %d failed %d seconds %.2f\n", established, failed, time.Since(start).Seconds())

	if hold > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(hold):
		}
	} else {
		<-ctx.Done()
	}

	alive := 0
	for _, c := range children {
		_ = c.stdin.Close()
		var a int
		if c.lines.Scan() {
			if _, err := fmt.Sscanf(c.lines.Text(), "alive %d", &a); err != nil {
				fmt.Fprintf(stderr, "idleconns: parsing child report %q: %v\n", c.lines.Text(), err)
				status = 1
			}
		}
		alive += a
	}
	fmt.Fprintf(stdout, "alive %d\n", alive)
	return status
}

// held is a set of open connections, each watched by a goroutine blocked in
// Read, so that a connection the server closes is counted as dead.
type held struct {
	mu    sync.Mutex
	conns []net.Conn
	dead  atomic.Int64
	wg    sync.WaitGroup
}

func (h *held) add(c net.Conn) {
	h.mu.Lock()
	h.conns = append(h.conns, c)
	h.mu.Unlock()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		var b [1]byte
		_, _ = c.Read(b[:]) // returns when the server closes or sends (neither should happen)
		h.dead.Add(1)
	}()
}

func (h *held) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

// alive is the number of connections the server has not closed (nor written to).
func (h *held) alive() int {
	return h.len() - int(h.dead.Load())
}

// close closes every connection and waits for the watchers.
func (h *held) close() {
	h.mu.Lock()
	for _, c := range h.conns {
		_ = c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// open establishes n HTTP keep-alive connections to cfg.addr, connection i
// (counted from first) coming from cfg.sources[i % len(sources)]. It returns
// the connections it could establish, how many failed and the first error.
func open(ctx context.Context, cfg config, n, first int) (h *held, failed int, firstErr error) {
	h = &held{}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		next = make(chan int)
	)
	for range min(cfg.parallel, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := openOne(ctx, cfg, cfg.sources[i%len(cfg.sources)])
				if err != nil {
					mu.Lock()
					failed++
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				h.add(c)
			}
		}()
	}
	for i := first; i < first+n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return h, failed, firstErr
}

// openOne dials from src, sends one GET and reads its whole response, leaving
// the connection idle in the server's keep-alive state.
func openOne(ctx context.Context, cfg config, src net.IP) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
	c, err := d.DialContext(ctx, "tcp", cfg.addr)
	if err != nil {
		return nil, fmt.Errorf("idleconns: dialing %s from %s: %w", cfg.addr, src, err)
	}
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	req := "GET " + cfg.path + " HTTP/1.1\r\nHost: " + cfg.addr + "\r\nUser-Agent: idleconns\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		return nil, fmt.Errorf("idleconns: writing request: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 1024), nil)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("idleconns: reading response: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("idleconns: reading response body: %w", err)
	}
	if resp.Close {
		c.Close()
		return nil, errors.New("idleconns: the server closes the connection after a response (no keep-alive)")
	}
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("idleconns: status %d, want 200", resp.StatusCode)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
