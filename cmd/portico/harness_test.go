//go:build linux

// End-to-end harness: TestMain builds the portico binary once (with -race, so
// e2e runs catch data races in the server too), and startPortico runs it as a
// real process on ephemeral loopback ports, the way a user would.

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"portico/internal/porticotest"
)

// porticoBin is the path of the binary TestMain built.
var porticoBin string

const (
	readyTimeout = 30 * time.Second   // start to msg=ready (Django import on a race build, 2 cores)
	stopTimeout  = 10 * time.Second   // SIGTERM to exit, before SIGKILL
	systemPython = "/usr/bin/python3" // Debian's python3, with python3-django and python3-flask
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "portico-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: creating build dir: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "portico")
	build := exec.Command("go", "build", "-race", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building portico: %v\n%s", err, out)
		return 1
	}
	porticoBin = bin
	return m.Run()
}

// proc is one running portico process.
type proc struct {
	cmd *exec.Cmd
	// HTTPAddr is the address of the first proto=http listener (from the
	// msg=listening log line), e.g. "127.0.0.1:40123".
	HTTPAddr string
	// UWSGIAddr is the address of the first proto=uwsgi listener, or "".
	UWSGIAddr string
	// HTTPSAddr is the address of the first proto=https listener, or "".
	HTTPSAddr string

	log            *logBuffer
	stdout, stderr *lineWriter

	done    chan struct{} // closed when the process has exited and its output is read
	waitErr error         // cmd.Wait's result; read only after done is closed

	mu       sync.Mutex
	signaled bool // Signal was called: an exit is expected
}

// startPortico runs `portico run --bind 127.0.0.1:0 args...`, waits for
// msg=ready and records the listener addresses. A cleanup stops it with
// SIGTERM (SIGKILL after stopTimeout) and checks that it exited 0, left no
// process of its group behind and reported no data race.
func startPortico(t testing.TB, args ...string) *proc {
	t.Helper()
	return startCommand(t, append([]string{"run", "--bind", "127.0.0.1:0"}, args...)...)
}

// startCommand runs the portico binary with args (a command and its
// flags) and does what startPortico describes.
func startCommand(t testing.TB, args ...string) *proc {
	t.Helper()
	p := launch(t, args...)
	if err := p.waitLine(func(line string) bool { return logfmt(line)["msg"] == "ready" }, readyTimeout); err != nil {
		t.Fatalf("waiting for msg=ready: %v (log below)", err)
	}
	return p.findAddrs(t)
}

// startExecReady is startExec, then the wait for msg=ready and the
// listener addresses, as startCommand does.
func startExecReady(t testing.TB, cmd *exec.Cmd) *proc {
	t.Helper()
	p := startExec(t, cmd)
	if err := p.waitLine(func(line string) bool { return logfmt(line)["msg"] == "ready" }, readyTimeout); err != nil {
		t.Fatalf("waiting for msg=ready: %v (log below)", err)
	}
	return p.findAddrs(t)
}

// launch runs the portico binary with args and registers the cleanup
// startPortico describes, without waiting for anything.
func launch(t testing.TB, args ...string) *proc {
	t.Helper()
	if porticoBin == "" {
		t.Fatal("portico binary not built (TestMain did not run)")
	}
	return startExec(t, exec.Command(porticoBin, args...))
}

// startExec runs cmd, a portico command (or a wrapper that execs one, so
// that its pid is portico's), and does what startPortico describes. It
// sets cmd's output and process attributes; Env and ExtraFiles are the
// caller's.
func startExec(t testing.TB, cmd *exec.Cmd) *proc {
	t.Helper()
	lb := newLogBuffer()
	p := &proc{
		log:    lb,
		stdout: &lineWriter{buf: lb, prefix: "[stdout] "},
		stderr: &lineWriter{buf: lb},
		done:   make(chan struct{}),
	}
	p.cmd = cmd
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	// Workers inherit the output pipes; once portico is gone, stop waiting
	// for them to close after a moment.
	p.cmd.WaitDelay = 2 * time.Second
	p.cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // its own group, so leftover workers can be found and killed
		Pdeathsig: syscall.SIGKILL, // never outlive a crashed or timed-out test binary
	}
	t.Logf("starting %s", strings.Join(p.cmd.Args, " "))
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting portico: %v", err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		p.stdout.flush()
		p.stderr.flush()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// findAddrs records the listener addresses from the msg=listening lines.
func (p *proc) findAddrs(t testing.TB) *proc {
	t.Helper()
	// The first address of each protocol, preferring TCP (host:port) ones:
	// listeners may start in any order, and URL needs a TCP address.
	for _, line := range p.log.snapshot() {
		kv := logfmt(line)
		if kv["msg"] != "listening" {
			continue
		}
		switch kv["proto"] {
		case "http":
			p.HTTPAddr = firstAddr(p.HTTPAddr, kv["addr"])
		case "uwsgi":
			p.UWSGIAddr = firstAddr(p.UWSGIAddr, kv["addr"])
		case "https":
			p.HTTPSAddr = firstAddr(p.HTTPSAddr, kv["addr"])
		}
	}
	if p.HTTPAddr == "" && p.HTTPSAddr == "" {
		t.Fatalf("no msg=listening proto=http line before msg=ready (log below)")
	}
	return p
}

// firstAddr returns cur unless it is empty, or a non-TCP address and next
// is a TCP one.
func firstAddr(cur, next string) string {
	isTCP := func(a string) bool {
		_, _, err := net.SplitHostPort(a)
		return err == nil && !strings.HasPrefix(a, "unix:")
	}
	if cur == "" || (!isTCP(cur) && isTCP(next)) {
		return next
	}
	return cur
}

// unixClient is an HTTP client for a portico listening on a unix socket.
func unixClient(t testing.TB, sock string) *http.Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// URL returns the http URL of path on the first HTTP listener.
func (p *proc) URL(path string) string {
	return "http://" + p.HTTPAddr + path
}

// Log returns everything the process wrote so far, one line per log line;
// stdout lines are prefixed with "[stdout] ".
func (p *proc) Log() string {
	return strings.Join(p.log.snapshot(), "\n")
}

// waitLog waits until a log line contains substr; the test fails if it does
// not come within timeout or the process exits first.
func (p *proc) waitLog(t testing.TB, substr string, timeout time.Duration) {
	t.Helper()
	if err := p.waitLine(func(line string) bool { return strings.Contains(line, substr) }, timeout); err != nil {
		t.Fatalf("waiting for log line with %q: %v (log below)", substr, err)
	}
}

// waitLine waits for a log line (old or new) for which match is true.
func (p *proc) waitLine(match func(string) bool, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	seen := 0
	for {
		lines, changed := p.log.since(seen)
		for _, l := range lines {
			if match(l) {
				return nil
			}
		}
		seen += len(lines)
		select {
		case <-changed:
		case <-p.done:
			// The output is complete; look at the last lines, then give up.
			if lines, _ := p.log.since(seen); len(lines) > 0 {
				continue
			}
			return fmt.Errorf("portico exited (%v)", p.waitErr)
		case <-timer.C:
			return fmt.Errorf("timed out after %v", timeout)
		}
	}
}

// Signal sends sig to the portico process; an exit after it is expected.
func (p *proc) Signal(sig os.Signal) error {
	p.mu.Lock()
	p.signaled = true
	p.mu.Unlock()
	return p.cmd.Process.Signal(sig)
}

// Wait waits for the process to exit and returns cmd.Wait's error (nil for
// exit status 0).
func (p *proc) Wait() error {
	<-p.done
	return p.waitErr
}

// stop is the cleanup registered by startPortico.
func (p *proc) stop(t testing.TB) {
	t.Helper()
	pgid := p.cmd.Process.Pid
	select {
	case <-p.done:
		p.mu.Lock()
		expected := p.signaled
		p.mu.Unlock()
		if !expected {
			t.Errorf("portico exited before the test ended: %v", p.waitErr)
		}
	default:
		_ = p.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			if p.waitErr != nil {
				t.Errorf("portico exited with %v after SIGTERM, want exit status 0", p.waitErr)
			}
		case <-time.After(stopTimeout):
			t.Errorf("portico did not exit within %v of SIGTERM; sending SIGKILL", stopTimeout)
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
	}
	if left := waitGroupEmpty(pgid, 3*time.Second); len(left) > 0 {
		t.Errorf("processes of portico's group still running after it exited (killing them): %s", strings.Join(left, "; "))
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	if log := p.Log(); strings.Contains(log, "WARNING: DATA RACE") {
		t.Errorf("the race detector reported a data race in portico")
	}
	if t.Failed() {
		t.Logf("portico log:\n%s", p.Log())
	}
}

// waitGroupEmpty waits up to timeout for process group pgid to have no
// live (non-zombie) member, and returns the "pid cmdline" of those left.
func waitGroupEmpty(pgid int, timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	for {
		left := liveGroupMembers(pgid)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond) // polling /proc: there is nothing to wait on
	}
}

// procStat is a process as /proc/PID/stat describes it.
type procStat struct {
	pid, ppid, pgrp int
	state           string
}

// liveProcs lists the processes that are not zombies, from /proc.
func liveProcs() []procStat {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []procStat
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 || f[0] == "Z" {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		pgrp, _ := strconv.Atoi(f[2])
		out = append(out, procStat{pid: pid, ppid: ppid, pgrp: pgrp, state: f[0]})
	}
	return out
}

// liveChildren lists the pids of pid's children that are not zombies (a
// portico's Python workers), sorted.
func liveChildren(pid int) []int {
	var out []int
	for _, p := range liveProcs() {
		if p.ppid == pid {
			out = append(out, p.pid)
		}
	}
	slices.Sort(out)
	return out
}

// liveGroupMembers lists the processes of group pgid that are not zombies,
// as "pid cmdline".
func liveGroupMembers(pgid int) []string {
	var left []string
	for _, p := range liveProcs() {
		if p.pgrp != pgid {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.pid), "cmdline"))
		left = append(left, fmt.Sprintf("%d %s", p.pid, strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))))
	}
	return left
}

// logBuffer holds a process's output lines; safe for concurrent use.
type logBuffer struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed (and replaced) when a line is added
}

func newLogBuffer() *logBuffer {
	return &logBuffer{changed: make(chan struct{})}
}

func (b *logBuffer) add(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, line)
	close(b.changed)
	b.changed = make(chan struct{})
}

// since returns the lines after the first n and a channel closed when more come.
func (b *logBuffer) since(n int) ([]string, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.lines[n:]...), b.changed
}

func (b *logBuffer) snapshot() []string {
	lines, _ := b.since(0)
	return lines
}

// lineWriter splits what one stream writes into lines for a logBuffer. exec
// copies each stream from one goroutine, so partial needs no lock.
type lineWriter struct {
	buf     *logBuffer
	prefix  string
	partial []byte
}

func (w *lineWriter) Write(b []byte) (int, error) {
	n := len(b)
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			w.partial = append(w.partial, b...)
			return n, nil
		}
		w.buf.add(w.prefix + string(append(w.partial, b[:i]...)))
		w.partial = w.partial[:0]
		b = b[i+1:]
	}
}

// flush adds an unterminated last line; call it after the stream is done.
func (w *lineWriter) flush() {
	if len(w.partial) > 0 {
		w.buf.add(w.prefix + string(w.partial))
		w.partial = nil
	}
}

// logfmt parses a log/slog text handler line (key=value pairs, values
// quoted with Go syntax when needed) into a map. Malformed parts are skipped.
func logfmt(line string) map[string]string {
	kv := make(map[string]string)
	for s := strings.TrimSpace(line); s != ""; s = strings.TrimLeft(s, " ") {
		eq := strings.IndexByte(s, '=')
		sp := strings.IndexByte(s, ' ')
		if eq < 0 || (sp >= 0 && sp < eq) {
			if sp < 0 {
				break
			}
			s = s[sp:] // a bare word: skip it
			continue
		}
		key, rest := s[:eq], s[eq+1:]
		if strings.HasPrefix(rest, `"`) {
			end := 1
			for end < len(rest) && rest[end] != '"' {
				if rest[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(rest) {
				break
			}
			if v, err := strconv.Unquote(rest[:end+1]); err == nil {
				kv[key] = v
			}
			s = rest[end+1:]
			continue
		}
		v, after, _ := strings.Cut(rest, " ")
		kv[key] = v
		s = after
	}
	return kv
}

// needPython returns /usr/bin/python3 if it exists and imports modules.
// Otherwise the test is skipped, or fails when PORTICO_REQUIRE_INTEROP=1.
func needPython(t testing.TB, modules ...string) string {
	t.Helper()
	if _, err := os.Stat(systemPython); err != nil {
		porticotest.Missing(t, "%s: %v", systemPython, err)
	}
	script := "pass"
	if len(modules) > 0 {
		script = "import " + strings.Join(modules, ", ")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, systemPython, "-c", script).CombinedOutput(); err != nil {
		porticotest.Missing(t, "%s cannot %q: %v\n%s", systemPython, script, err, out)
	}
	return systemPython
}

// repoPath returns the absolute path of rel, relative to the repository root.
func repoPath(t testing.TB, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", filepath.FromSlash(rel)))
	if err != nil {
		t.Fatalf("resolving %s: %v", rel, err)
	}
	return p
}

// copyTree copies the regular files and directories under src to dst,
// leaving out entries whose base name is in skip.
func copyTree(t testing.TB, src, dst string, skip ...string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		for _, s := range skip {
			if rel != "." && d.Name() == s {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(target, data, info.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("copying %s to %s: %v", src, dst, err)
	}
}

// newClient returns an HTTP client with a cookie jar that does not follow
// redirects (tests check them), and closes its idle connections at cleanup.
func newClient(t testing.TB) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatalf("creating cookie jar: %v", err)
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport: tr,
		Jar:       jar,
		Timeout:   30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// do sends req and returns the response with its body read and closed.
func do(t testing.TB, c *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return resp, body
}

// get GETs url and returns the response with its body read.
func get(t testing.TB, c *http.Client, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return do(t, c, req)
}

// wantStatus fails the test unless resp has status code want.
func wantStatus(t testing.TB, resp *http.Response, body []byte, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d; body:\n%s", resp.Request.Method, resp.Request.URL, resp.StatusCode, want, truncate(body, 2000))
	}
}

// wantContentType fails the test unless resp's media type is want.
func wantContentType(t testing.TB, resp *http.Response, want string) {
	t.Helper()
	got := resp.Header.Get("Content-Type")
	if mt, _, _ := strings.Cut(got, ";"); strings.TrimSpace(mt) != want {
		t.Errorf("%s %s: Content-Type %q, want %s", resp.Request.Method, resp.Request.URL, got, want)
	}
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + fmt.Sprintf("... (%d bytes more)", len(b)-n)
}

// randomData returns n random bytes and their hex sha256.
func randomData(t testing.TB, n int) ([]byte, string) {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("reading random bytes: %v", err)
	}
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:])
}

// formFile is a file part of a multipart form.
type formFile struct {
	field, name string
	data        []byte
}

// multipartBody encodes fields (in the order given: name, value, name,
// value...) and files as multipart/form-data; it returns the body and its
// Content-Type.
func multipartBody(t testing.TB, fields []string, files ...formFile) (*bytes.Buffer, string) {
	t.Helper()
	if len(fields)%2 != 0 {
		t.Fatalf("multipartBody: odd number of field strings")
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for i := 0; i < len(fields); i += 2 {
		if err := mw.WriteField(fields[i], fields[i+1]); err != nil {
			t.Fatalf("writing field %s: %v", fields[i], err)
		}
	}
	for _, f := range files {
		w, err := mw.CreateFormFile(f.field, f.name)
		if err != nil {
			t.Fatalf("creating file part %s: %v", f.field, err)
		}
		if _, err := w.Write(f.data); err != nil {
			t.Fatalf("writing file part %s: %v", f.field, err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatalf("closing multipart writer: %v", err)
	}
	return &buf, mw.FormDataContentType()
}

// TestHello runs examples/hello/app.py (by file path, default callable) on
// TCP, a unix socket and a uwsgi socket behind nginx, then stops portico
// with SIGTERM and checks a clean exit.
func TestHello(t *testing.T) {
	python := needPython(t)
	sock := filepath.Join(t.TempDir(), "hello.sock")
	p := startPortico(t,
		"--python", python,
		"--workers", "1",
		"--bind", "unix:"+sock,
		"--uwsgi-socket", "127.0.0.1:0",
		"--env", "PYTHONDONTWRITEBYTECODE=1",
		repoPath(t, "examples/hello/app.py"),
	)
	const want = "Hello, World!\n"
	check := func(t *testing.T, resp *http.Response, body []byte, wantBody string) {
		t.Helper()
		wantStatus(t, resp, body, http.StatusOK)
		wantContentType(t, resp, "text/plain")
		if got := resp.Header.Get("Content-Length"); got != strconv.Itoa(len(want)) {
			t.Errorf("Content-Length %q, want %d", got, len(want))
		}
		if string(body) != wantBody {
			t.Errorf("body %q, want %q", body, wantBody)
		}
	}

	t.Run("tcp", func(t *testing.T) {
		c := newClient(t)
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			req, err := http.NewRequest(method, p.URL("/some/path?q=1"), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, body := do(t, c, req)
			wantBody := want
			if method == http.MethodHead {
				wantBody = ""
			}
			check(t, resp, body, wantBody)
		}
		// The default --access-log is "-": nginx "combined" lines.
		p.waitLog(t, `"GET /some/path?q=1 HTTP/1.1" 200 14`, 5*time.Second)
	})

	t.Run("unix socket", func(t *testing.T) {
		c := unixClient(t, sock)
		resp, body := get(t, c, "http://portico.test/")
		check(t, resp, body, want)
	})

	t.Run("nginx uwsgi_pass", func(t *testing.T) {
		if p.UWSGIAddr == "" {
			t.Fatalf("no msg=listening proto=uwsgi line for --uwsgi-socket")
		}
		ngx := porticotest.StartNginx(t, fmt.Sprintf(`    server {
        listen {{.Addr}};
        location / {
            include /etc/nginx/uwsgi_params;
            uwsgi_pass %s;
        }
    }`, p.UWSGIAddr))
		resp, body := get(t, newClient(t), "http://"+ngx.Addr+"/via/nginx")
		check(t, resp, body, want)
	})

	t.Run("graceful stop", func(t *testing.T) {
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatalf("sending SIGTERM: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- p.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("exit after SIGTERM: %v, want status 0", err)
			}
		case <-time.After(stopTimeout):
			t.Fatalf("portico still running %v after SIGTERM", stopTimeout)
		}
		if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("unix socket %s still there after exit (err=%v), want it removed", sock, err)
		}
	})
}

// TestImportErrorExits checks that an app that cannot be imported makes
// `portico run` exit non-zero with the Python traceback in its output,
// instead of restarting workers forever.
func TestImportErrorExits(t *testing.T) {
	python := needPython(t)
	dir, err := filepath.Abs(filepath.Join("testdata", "importerror"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	// Two workers: each fails; the traceback is still said once.
	cmd := exec.CommandContext(ctx, porticoBin, "run", "--bind", "127.0.0.1:0", "--python", python, "--chdir", dir,
		"--workers", "2", "--env", "PYTHONDONTWRITEBYTECODE=1", "broken")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 2 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("portico still running after %v with an app that cannot be imported; output:\n%s", readyTimeout, out.String())
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		t.Fatalf("run: %v, want a non-zero exit; output:\n%s", err, out.String())
	}
	if exitErr.ExitCode() != 1 {
		t.Errorf("exit status %d, want 1", exitErr.ExitCode())
	}
	for _, want := range []string{"Traceback (most recent call last)", "ModuleNotFoundError", "no_such_module_portico_e2e"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q; output:\n%s", want, out.String())
		}
	}
	if n := strings.Count(out.String(), "Traceback (most recent call last)"); n != 1 {
		t.Errorf("the traceback is printed %d times, want once; output:\n%s", n, out.String())
	}
	if n := strings.Count(out.String(), "level=ERROR"); n != 1 {
		t.Errorf("%d error records, want one (the traceback is one attribute); output:\n%s", n, out.String())
	}
	if strings.Contains(out.String(), "old ones") {
		t.Errorf("a first start speaks of old workers; output:\n%s", out.String())
	}
	// The listeners open before the import (a port in use fails first:
	// TestPortInUseFailsBeforeImport), but never serve a broken app.
	if strings.Contains(out.String(), "msg=ready") {
		t.Error("portico said ready with an app that cannot be imported")
	}
}
