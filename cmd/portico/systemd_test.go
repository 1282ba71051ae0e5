//go:build linux

// systemd and process management end to end: ports bound before the app is
// imported, sd_notify readiness over a fake NOTIFY_SOCKET, socket
// activation with inherited sockets, the switch to an unprivileged user,
// and the pidfile.

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"portico/internal/porticotest"
)

// systemdApp is a WSGI app that reports what the worker sees. At import it
// writes $PORTICO_TEST_MARKS/imported and, when $PORTICO_TEST_HOLD names a
// FIFO and $PORTICO_TEST_HOLD.released does not exist, blocks reading the
// FIFO: the test opens it (so it knows the import has begun) and closes it
// to let the import finish.
const systemdApp = `import json, os
marks = os.environ.get("PORTICO_TEST_MARKS")
if marks:
    open(os.path.join(marks, "imported"), "w").close()
hold = os.environ.get("PORTICO_TEST_HOLD")
if hold and not os.path.exists(hold + ".released"):
    with open(hold) as f:
        f.read()

def application(environ, start_response):
    body = json.dumps({
        "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "pid": os.getpid(),
        "env": {k: os.environ[k] for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC") if k in os.environ},
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
`

// appInfo is what systemdApp answers.
type appInfo struct {
	UID, EUID, GID, PID int
	Env                 map[string]string
}

// writeSystemdApp writes systemdApp as app.py in a new directory anyone
// may read (0755: workers may run as nobody) and returns the directory.
func writeSystemdApp(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "portico-systemd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "app.py", systemdApp)
	return dir
}

// getInfo GETs url and decodes systemdApp's answer.
func getInfo(t *testing.T, c *http.Client, url string) appInfo {
	t.Helper()
	resp, body := get(t, c, url)
	wantStatus(t, resp, body, http.StatusOK)
	var info appInfo
	if err := json.Unmarshal(body, &info); err != nil {
		t.Fatalf("GET %s: %v in %q", url, err, body)
	}
	return info
}

// runToExit runs portico with args until it exits (within readyTimeout)
// and returns its output and exit code.
func runToExit(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, porticoBin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 2 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("portico still running after %v; output:\n%s", readyTimeout, out.String())
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return out.String(), exitErr.ExitCode()
	}
	if err != nil {
		t.Fatalf("running portico: %v", err)
	}
	return out.String(), 0
}

// TestPortInUseFailsBeforeImport: a port in use makes `portico run` fail
// at once, naming the address, before any worker imports the app.
func TestPortInUseFailsBeforeImport(t *testing.T) {
	python := needPython(t)
	dir := writeSystemdApp(t)
	marks := t.TempDir()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	out, code := runToExit(t, []string{"PORTICO_TEST_MARKS=" + marks},
		"run", "--bind", addr, "--python", python, "--chdir", dir, "--workers", "1", "app:application")
	if code != 1 {
		t.Errorf("exit status %d, want 1; output:\n%s", code, out)
	}
	if !strings.Contains(out, "listening on "+addr) || !strings.Contains(out, "address already in use") {
		t.Errorf("output does not say %s is in use:\n%s", addr, out)
	}
	if _, err := os.Stat(filepath.Join(marks, "imported")); err == nil {
		t.Errorf("the app was imported before the port in use was reported; output:\n%s", out)
	}
}

// notifySocket is a fake systemd NOTIFY_SOCKET.
type notifySocket struct {
	path string
	c    *net.UnixConn
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &notifySocket{path: path, c: c}
}

// next returns the next notification as a map of its assignments.
func (n *notifySocket) next(t *testing.T, timeout time.Duration) map[string]string {
	t.Helper()
	buf := make([]byte, 4096)
	n.c.SetReadDeadline(time.Now().Add(timeout))
	k, err := n.c.Read(buf)
	if err != nil {
		t.Fatalf("waiting for a notification: %v", err)
	}
	return parseNotify(buf[:k])
}

// pending returns a notification already received, or nil. (A read
// deadline in the past would not do: Go reports the timeout without
// reading.)
func (n *notifySocket) pending(t *testing.T) map[string]string {
	raw, err := n.c.SyscallConn()
	if err != nil {
		t.Errorf("notify socket: %v", err)
		return nil
	}
	buf := make([]byte, 4096)
	k := -1
	raw.Read(func(fd uintptr) bool {
		k, _, err = syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
		return true // never wait
	})
	if k < 0 {
		return nil
	}
	return parseNotify(buf[:k])
}

func parseNotify(b []byte) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		k, v, _ := strings.Cut(line, "=")
		m[k] = v
	}
	return m
}

// monotonicUsec reads CLOCK_MONOTONIC, as systemd and portico do.
func monotonicUsec(t *testing.T) int64 {
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		t.Fatalf("clock_gettime: %v", errno)
	}
	return ts.Sec*1_000_000 + ts.Nsec/1_000
}

// TestSystemdNotify: with NOTIFY_SOCKET set, READY=1 comes only once the
// workers have imported the app (a request sent while they import waits
// in the listen backlog and succeeds), RELOADING=1 with MONOTONIC_USEC then
// READY=1 frame each reload (POST /reload and SIGHUP), and STOPPING=1
// starts the stop. The workers do not see NOTIFY_SOCKET.
func TestSystemdNotify(t *testing.T) {
	python := needPython(t)
	dir := writeSystemdApp(t)
	ns := newNotifySocket(t)
	hold := filepath.Join(t.TempDir(), "hold")
	if err := syscall.Mkfifo(hold, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := porticotest.FreeAddr(t)
	adminSock := filepath.Join(dir, "admin.sock")
	cfg := writeFile(t, dir, "portico.toml", fmt.Sprintf(`
access_log = "off"
[admin]
addr = "unix:%s"
[[listener]]
addr = %q
[app.a]
module = "app:application"
chdir = %q
python = %q
workers = 1
env = { PORTICO_TEST_HOLD = %q }
[[site]]
hosts = ["default"]
[[site.route]]
path = "/"
app = "a"
`, adminSock, addr, dir, python, hold))

	// Should portico fail before its worker opens the FIFO, a reader
	// opened here unblocks the goroutine below.
	t.Cleanup(func() {
		if f, err := os.OpenFile(hold, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	c := newClient(t)
	type result struct {
		status int
		err    error
	}
	early := make(chan result, 1)
	released := make(chan struct{})
	go func() {
		defer close(released)
		// Opening the FIFO blocks until the worker opens it: the import
		// has begun, so the listeners are bound.
		f, err := os.OpenFile(hold, os.O_WRONLY, 0)
		if err != nil {
			t.Errorf("opening the hold FIFO: %v", err)
			return
		}
		if m := ns.pending(t); m != nil {
			t.Errorf("notification %v while the app was still importing", m)
		}
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Errorf("connecting to %s while the app imports: %v (the listener should be bound)", addr, err)
		} else {
			conn.Close()
		}
		go func() {
			resp, err := c.Get("http://" + addr + "/")
			if err != nil {
				early <- result{err: err}
				return
			}
			resp.Body.Close()
			early <- result{status: resp.StatusCode}
		}()
		if m := ns.pending(t); m != nil {
			t.Errorf("notification %v while the app was still importing", m)
		}
		os.WriteFile(hold+".released", nil, 0o600)
		f.Close()
	}()
	cmd := exec.Command(porticoBin, "serve", "-c", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+ns.path)
	p := startExecReady(t, cmd)
	<-released

	m := ns.next(t, 10*time.Second)
	if m["READY"] != "1" || m["STATUS"] == "" {
		t.Fatalf("first notification %v, want READY=1 with a STATUS", m)
	}
	select {
	case r := <-early:
		if r.err != nil || r.status != http.StatusOK {
			t.Errorf("request sent while the app imported: %d %v, want 200", r.status, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the request sent while the app imported did not finish")
	}
	if info := getInfo(t, c, "http://"+addr+"/"); len(info.Env) > 0 {
		t.Errorf("the worker sees systemd's variables: %v", info.Env)
	}

	admin := unixClient(t, adminSock)
	wantReload := func(how string, trigger func()) {
		t.Helper()
		before := monotonicUsec(t)
		trigger()
		m := ns.next(t, 30*time.Second)
		after := monotonicUsec(t)
		if m["RELOADING"] != "1" {
			t.Fatalf("%s: notification %v, want RELOADING=1", how, m)
		}
		if us, err := strconv.ParseInt(m["MONOTONIC_USEC"], 10, 64); err != nil || us < before || us > after {
			t.Errorf("%s: MONOTONIC_USEC=%q, want CLOCK_MONOTONIC between %d and %d", how, m["MONOTONIC_USEC"], before, after)
		}
		if m := ns.next(t, 30*time.Second); m["READY"] != "1" {
			t.Fatalf("%s: notification %v after RELOADING=1, want READY=1", how, m)
		}
	}
	wantReload("POST /reload", func() {
		go func() {
			req, _ := http.NewRequest("POST", "http://admin/reload", nil)
			if resp, err := admin.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	})
	wantReload("SIGHUP", func() { p.cmd.Process.Signal(syscall.SIGHUP) })
	getInfo(t, c, "http://"+addr+"/")

	p.Signal(syscall.SIGTERM)
	if m := ns.next(t, 10*time.Second); m["STOPPING"] != "1" {
		t.Errorf("notification %v after SIGTERM, want STOPPING=1", m)
	}
	if err := p.Wait(); err != nil {
		t.Errorf("portico exited with %v after SIGTERM", err)
	}
}

// TestSocketActivation: portico started with sockets it did not open
// (LISTEN_FDS, as systemd passes them; the test keeps its own copies, as
// systemd does) serves the configured TCP, unix and admin listeners on
// them, keeps them across a reload, closes the one no listener matches,
// and hides LISTEN_* from the workers. The same config without activation
// fails: the addresses are in use.
func TestSocketActivation(t *testing.T) {
	python := needPython(t)
	dir := writeSystemdApp(t)
	tcpL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcpL.Close()
	adminL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer adminL.Close()
	strayL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer strayL.Close()
	sock := filepath.Join(dir, "web.sock")
	unixL, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer unixL.Close()
	var files []*os.File
	for _, l := range []net.Listener{tcpL, unixL, adminL, strayL} {
		var f *os.File
		switch l := l.(type) {
		case *net.TCPListener:
			f, err = l.File()
		case *net.UnixListener:
			f, err = l.File()
		}
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	cfg := writeFile(t, dir, "portico.toml", fmt.Sprintf(`
access_log = "off"
[admin]
addr = %q
[[listener]]
addr = %q
[[listener]]
addr = "unix:%s"
[app.a]
module = "app:application"
chdir = %q
python = %q
workers = 1
[[site]]
hosts = ["default"]
[[site.route]]
path = "/"
app = "a"
`, adminL.Addr().String(), tcpL.Addr().String(), sock, dir, python))

	// The address in use without activation.
	out, code := runToExit(t, nil, "serve", "-c", cfg)
	if code == 0 || !strings.Contains(out, "address already in use") {
		t.Fatalf("without activation: exit %d, want a failure naming \"address already in use\"; output:\n%s", code, out)
	}

	// LISTEN_PID must be portico's own pid: sh sets it, then execs.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$@"`, "sh", porticoBin, "serve", "-c", cfg)
	cmd.Env = append(os.Environ(), "LISTEN_FDS=4", "LISTEN_FDNAMES=web:sock:admin:stray")
	cmd.ExtraFiles = files
	p := startExecReady(t, cmd)

	for _, kv := range []map[string]string{
		{"proto": "http", "addr": tcpL.Addr().String()},
		{"proto": "http", "addr": "unix:" + sock},
		{"proto": "admin", "addr": adminL.Addr().String()},
	} {
		found := false
		for _, line := range p.log.snapshot() {
			m := logfmt(line)
			if m["msg"] == "listening" && m["proto"] == kv["proto"] && m["addr"] == kv["addr"] && m["inherited"] == "true" {
				found = true
			}
		}
		if !found {
			t.Errorf("no msg=listening proto=%s addr=%s inherited=true line", kv["proto"], kv["addr"])
		}
	}
	if !strings.Contains(p.Log(), "closing a socket systemd passed") || !strings.Contains(p.Log(), strayL.Addr().String()) {
		t.Errorf("no warning about the unmatched socket %s", strayL.Addr())
	}

	c := newClient(t)
	unixC := unixClient(t, sock)
	check := func(when string) {
		t.Helper()
		info := getInfo(t, c, "http://"+tcpL.Addr().String()+"/")
		if len(info.Env) > 0 {
			t.Errorf("%s: the worker sees %v", when, info.Env)
		}
		getInfo(t, unixC, "http://unix/")
		resp, body := get(t, c, "http://"+adminL.Addr().String()+"/healthz")
		wantStatus(t, resp, body, http.StatusOK)
	}
	check("after start")
	req, _ := http.NewRequest("POST", "http://"+adminL.Addr().String()+"/reload", nil)
	resp, body := do(t, c, req)
	wantStatus(t, resp, body, http.StatusOK)
	p.waitLog(t, "listeners_added=0", 10*time.Second)
	check("after a reload")
}

// procStatusIDs returns the Uid and Gid lines of /proc/PID/status (real,
// effective, saved, filesystem).
func procStatusIDs(t *testing.T, pid int) (uid, gid string) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			uid = strings.Join(strings.Fields(v), " ")
		}
		if v, ok := strings.CutPrefix(line, "Gid:"); ok {
			gid = strings.Join(strings.Fields(v), " ")
		}
	}
	return uid, gid
}

// TestUserSwitch: started as root with --user nobody, portico binds its
// port, then it and its workers run as nobody (read from /proc), requests
// work, and the pidfile (in a directory nobody may write, as systemd's
// RuntimeDirectory=) is removed at exit.
func TestUserSwitch(t *testing.T) {
	if os.Getuid() != 0 {
		porticotest.Missing(t, "switching users needs root")
	}
	python := needPython(t)
	dir := writeSystemdApp(t)
	run := filepath.Join(dir, "run")
	if err := os.Mkdir(run, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(run, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	pidfile := filepath.Join(run, "portico.pid")
	p := startPortico(t, "--user", "nobody", "--pidfile", pidfile, "--python", python, "--chdir", dir, "--workers", "2", "app:application")
	pid := p.cmd.Process.Pid

	c := newClient(t)
	if info := getInfo(t, c, p.URL("/")); info.UID != 65534 || info.EUID != 65534 || info.GID != 65534 {
		t.Errorf("the app runs as uid %d euid %d gid %d, want nobody (65534)", info.UID, info.EUID, info.GID)
	}
	const nobody = "65534 65534 65534 65534"
	if uid, gid := procStatusIDs(t, pid); uid != nobody || gid != nobody {
		t.Errorf("portico: Uid %q Gid %q, want %q", uid, gid, nobody)
	}
	workers := liveChildren(pid)
	if len(workers) != 2 {
		t.Errorf("portico has children %v, want 2 workers", workers)
	}
	for _, w := range workers {
		if uid, gid := procStatusIDs(t, w); uid != nobody || gid != nobody {
			t.Errorf("worker %d: Uid %q Gid %q, want %q", w, uid, gid, nobody)
		}
	}
	if b, err := os.ReadFile(pidfile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(pid) {
		t.Errorf("pidfile holds %q (%v), want %d", b, err, pid)
	}
	p.Signal(syscall.SIGTERM)
	if err := p.Wait(); err != nil {
		t.Errorf("portico exited with %v after SIGTERM", err)
	}
	if _, err := os.Stat(pidfile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pidfile left after a clean exit: %v", err)
	}
}

// TestPIDFile: --pidfile is written once portico listens and removed at a
// clean exit, unless it then holds another process's pid.
func TestPIDFile(t *testing.T) {
	python := needPython(t)
	dir := writeSystemdApp(t)
	for _, overwrite := range []bool{false, true} {
		t.Run(fmt.Sprintf("overwritten=%t", overwrite), func(t *testing.T) {
			pidfile := filepath.Join(t.TempDir(), "portico.pid")
			p := startPortico(t, "--pidfile", pidfile, "--python", python, "--chdir", dir, "--workers", "1", "app:application")
			b, err := os.ReadFile(pidfile)
			if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(p.cmd.Process.Pid) {
				t.Fatalf("pidfile holds %q (%v), want %d", b, err, p.cmd.Process.Pid)
			}
			if overwrite {
				writeFile(t, filepath.Dir(pidfile), "portico.pid", "1\n")
			}
			p.Signal(syscall.SIGTERM)
			if err := p.Wait(); err != nil {
				t.Errorf("portico exited with %v after SIGTERM", err)
			}
			b, err = os.ReadFile(pidfile)
			switch {
			case overwrite && string(b) != "1\n":
				t.Errorf("another process's pidfile: now %q (%v), want it left as \"1\\n\"", b, err)
			case !overwrite && !errors.Is(err, os.ErrNotExist):
				t.Errorf("pidfile left after a clean exit: %q %v", b, err)
			}
		})
	}
}

// TestUserErrors: an unknown user or group is a config error naming the
// key (file:line for serve), before anything starts.
func TestUserErrors(t *testing.T) {
	dir := t.TempDir()
	out, code := runToExit(t, nil, "run", "--user", "no-such-user-portico", "--chdir", dir, "app:application")
	if code != 2 || !strings.Contains(out, `user: unknown user "no-such-user-portico"`) {
		t.Errorf("run --user: exit %d, output:\n%s", code, out)
	}
	cfg := writeFile(t, dir, "portico.toml", `
user = "nobody"
group = "no-such-group-portico"
[[listener]]
addr = "127.0.0.1:0"
[[site]]
hosts = ["default"]
[[site.route]]
path = "/"
respond = { body = "x" }
`)
	out, code = runCheck(t, cfg)
	if code != 1 || !strings.Contains(out, cfg+`:3: group: unknown group "no-such-group-portico"`) {
		t.Errorf("check: exit %d, output:\n%s", code, out)
	}
}

// TestSystemdUnits checks examples/systemd with systemd-analyze verify
// (with ExecStart= pointing at the test's binary, which it checks is
// executable). systemd is not a test dependency: without systemd-analyze
// the test is skipped, even under PORTICO_REQUIRE_INTEROP.
func TestSystemdUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skipf("systemd-analyze not installed: %v", err)
	}
	dir := t.TempDir()
	for _, name := range []string{"portico.service", "portico.socket"} {
		b, err := os.ReadFile(repoPath(t, "examples/systemd/"+name))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, dir, name, strings.ReplaceAll(string(b), "/usr/local/bin/portico", porticoBin))
	}
	out, err := exec.Command(analyze, "verify", "--man=no", filepath.Join(dir, "portico.service"), filepath.Join(dir, "portico.socket")).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestUserSwitchReload: after switching to nobody, `portico serve` hands
// its access log to nobody, so a reload reopens it; a reload that needs
// root (a port below 1024) fails with an error that says why, and the
// running config stays.
func TestUserSwitchReload(t *testing.T) {
	if os.Getuid() != 0 {
		porticotest.Missing(t, "switching users needs root")
	}
	python := needPython(t)
	dir := writeSystemdApp(t) // root's, 0755: nobody cannot create files in it
	logPath := filepath.Join(dir, "access.log")
	adminSock := filepath.Join(t.TempDir(), "admin.sock")
	// A port below 1024 that root can bind here.
	low := ""
	for port := 1023; port > 900 && low == ""; port-- {
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			low = l.Addr().String()
			l.Close()
		}
	}
	if low == "" {
		t.Fatal("no free port below 1024")
	}
	text := func(extra string) string {
		return fmt.Sprintf(`
user = "nobody"
access_log = %q
[admin]
addr = "unix:%s"
[[listener]]
addr = "127.0.0.1:0"
%s
[app.a]
module = "app:application"
chdir = %q
python = %q
workers = 1
[[site]]
hosts = ["default"]
[[site.route]]
path = "/"
app = "a"
`, logPath, adminSock, extra, dir, python)
	}
	cfg := writeFile(t, dir, "portico.toml", text(""))
	p := startServe(t, cfg)
	c := newClient(t)
	if info := getInfo(t, c, p.URL("/")); info.UID != 65534 {
		t.Fatalf("the app runs as uid %d, want 65534", info.UID)
	}
	fi, err := os.Stat(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 65534 {
		t.Errorf("access log owned by uid %d, want nobody's 65534", uid)
	}
	admin := unixClient(t, adminSock)
	reload := func() (*http.Response, []byte) {
		req, _ := http.NewRequest("POST", "http://admin/reload", nil)
		return do(t, admin, req)
	}
	if resp, body := reload(); resp.StatusCode != http.StatusOK {
		t.Errorf("reload with the same config as nobody: %d %s", resp.StatusCode, body)
	}
	writeFile(t, dir, "portico.toml", text(fmt.Sprintf("[[listener]]\naddr = %q\n", low)))
	resp, body := reload()
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(body), "permission denied") || !strings.Contains(string(body), `switched from root to user "nobody"`) {
		t.Errorf("reload adding %s as nobody: %d %q, want 422 naming the switch", low, resp.StatusCode, body)
	}
	getInfo(t, c, p.URL("/"))
}
