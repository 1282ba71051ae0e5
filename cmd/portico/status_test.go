//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"portico/internal/porticotest"
)

// statusServer is a `portico serve` with an admin listener, one app of
// three real workers (internal/worker/testdata/pep3333.py) and a proxy
// route, for the status page and `portico top` tests.
type statusServer struct {
	*proc
	admin string // the admin listener's address, as its log line gives it
	marks string // the app's marks directory (PORTICO_TEST_MARKS)
}

// startStatusServer starts it; adminAddr is the [admin] addr.
func startStatusServer(t *testing.T, adminAddr string) *statusServer {
	t.Helper()
	python := needPython(t)
	dir, marks := t.TempDir(), t.TempDir()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "api") }))
	t.Cleanup(upstream.Close)
	cfg := writeFile(t, dir, "portico.toml", `
access_log = "off"
[admin]
addr = "`+adminAddr+`"
[[listener]]
addr = "127.0.0.1:0"
[app.shop]
module = "pep3333:application"
chdir = "`+repoPath(t, "internal/worker/testdata")+`"
python = "`+python+`"
env = { PORTICO_TEST_MARKS = "`+marks+`" }
workers = 3
[[site]]
hosts = ["default"]
[[site.route]]
path = "/api"
name = "api"
proxy = { upstreams = ["`+upstream.URL+`"] }
[[site.route]]
path = "/"
name = "shop"
app = "shop"
`)
	p := startServe(t, cfg)
	s := &statusServer{proc: p, marks: marks}
	for _, line := range p.log.snapshot() {
		if kv := logfmt(line); kv["msg"] == "listening" && kv["proto"] == "admin" {
			s.admin = kv["addr"]
		}
	}
	if s.admin == "" {
		t.Fatal("no msg=listening proto=admin line")
	}
	return s
}

// hold sends a request the app holds until release is called (the
// pep3333 app waits for a mark) and returns its URI and the pid of the
// worker that holds it, once it is in the app.
func (s *statusServer) hold(t *testing.T) (uri string, pid int, release func()) {
	t.Helper()
	uri = "/wait?go=go&enter=inflight"
	c := newClient(t)
	done := make(chan error, 1)
	go func() {
		resp, err := c.Get(s.URL(uri))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "went" {
				err = fmt.Errorf("%s %q", resp.Status, b)
			}
		}
		done <- err
	}()
	mark := filepath.Join(s.marks, "inflight")
	porticotest.WaitFor(t, "the held request in the app", 10*time.Second, func() bool {
		_, err := os.Stat(mark)
		return err == nil
	})
	b, err := os.ReadFile(mark)
	if err != nil {
		t.Fatal(err)
	}
	if pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
		t.Fatalf("mark %s: %q", mark, b)
	}
	var once bool
	release = func() {
		if once {
			return
		}
		once = true
		if err := os.WriteFile(filepath.Join(s.marks, "go"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Errorf("the held request: %v", err)
		}
	}
	t.Cleanup(release)
	return uri, pid, release
}

// workerPIDs returns the pids of the portico process's live children (its
// Python workers), read from /proc: the running state the page and top
// are checked against.
func (s *statusServer) workerPIDs(t *testing.T) []int {
	t.Helper()
	return liveChildren(s.cmd.Process.Pid)
}

// chromium runs Debian's headless Chromium with args and returns its
// standard output. Its whole process group is killed when it ends.
func chromium(t *testing.T, args ...string) []byte {
	t.Helper()
	bin := porticotest.RequireProgram(t, "chromium")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// As root Chromium needs --no-sandbox; a private profile per run keeps
	// concurrent runs apart.
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--hide-scrollbars", "--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // helpers left behind, if any
	}
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// pageWorker is a row of the status page's workers table.
type pageWorker struct {
	pid   int
	state string
	text  string // the row's text, cells separated by " | "
}

var (
	tableRE = regexp.MustCompile(`(?s)<table id="workers-shop"[^>]*>(.*?)</table>`)
	rowRE   = regexp.MustCompile(`(?s)<tr([^>]*)>(.*?)</tr>`)
	attrRE  = regexp.MustCompile(`(data-[a-z]+)="([^"]*)"`)
	tagRE   = regexp.MustCompile(`<[^>]*>`)
)

// pageWorkers parses the workers table of the app "shop" out of a DOM
// dump; ok is false when the page has not shown a snapshot yet.
func pageWorkers(dom string) (rows []pageWorker, ok bool) {
	if !regexp.MustCompile(`<body[^>]* data-ready=`).MatchString(dom) {
		return nil, false
	}
	m := tableRE.FindStringSubmatch(dom)
	if m == nil {
		return nil, false
	}
	for _, r := range rowRE.FindAllStringSubmatch(m[1], -1) {
		attrs := map[string]string{}
		for _, a := range attrRE.FindAllStringSubmatch(r[1], -1) {
			attrs[a[1]] = html.UnescapeString(a[2])
		}
		pid, err := strconv.Atoi(attrs["data-pid"])
		if err != nil {
			continue // the header row
		}
		text := tagRE.ReplaceAllString(strings.ReplaceAll(r[2], "</td><td", "</td> | <td"), "")
		rows = append(rows, pageWorker{pid: pid, state: attrs["data-state"], text: html.UnescapeString(text)})
	}
	return rows, true
}

// TestStatusPageInChromium loads the admin listener's status page in
// Debian's headless Chromium while the test holds one worker busy, waits
// for the page to fill the workers table from GET /status, checks it
// against the running state (the workers' pids from the process tree, the
// busy one with the held request's URI, the others idle), and saves a
// screenshot ($PORTICO_ARTIFACTS, else a temporary directory).
func TestStatusPageInChromium(t *testing.T) {
	porticotest.RequireProgram(t, "chromium")
	s := startStatusServer(t, "127.0.0.1:0")
	c := newClient(t)
	for range 6 {
		resp, body := get(t, c, s.URL("/sleep?s=0"))
		wantStatus(t, resp, body, http.StatusOK)
	}
	resp, body := get(t, c, s.URL("/api/x"))
	wantStatus(t, resp, body, http.StatusOK)
	apiAt := time.Now()
	uri, heldPID, release := s.hold(t)
	pids := s.workerPIDs(t)
	if len(pids) != 3 || !slices.Contains(pids, heldPID) {
		t.Fatalf("portico's children %v, want 3 workers, one of them %d (the held request's)", pids, heldPID)
	}

	page := "http://" + s.admin + "/"
	var rows []pageWorker
	var dom string
	porticotest.WaitFor(t, "the page to show the workers", 3*time.Minute, func() bool {
		dom = string(chromium(t, "--virtual-time-budget=5000", "--dump-dom", page))
		var ok bool
		rows, ok = pageWorkers(dom)
		return ok && len(rows) == 3
	})

	var got []int
	busy := 0
	for _, r := range rows {
		got = append(got, r.pid)
		switch {
		case r.pid == heldPID:
			busy++
			if r.state != "busy" || !strings.Contains(r.text, "GET "+uri) || !strings.Contains(r.text, "busy") {
				t.Errorf("the worker holding the request (pid %d) shows %q: %q, want busy with GET %s", r.pid, r.state, r.text, uri)
			}
		case r.state != "idle" || strings.Contains(r.text, "/wait"):
			t.Errorf("worker pid %d shows %q: %q, want idle with no request", r.pid, r.state, r.text)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, pids) || busy != 1 {
		t.Errorf("the page shows workers %v (%d busy), the process tree has %v", got, busy, pids)
	}
	// The proxy route's upstream, healthy, and the app's queue.
	if !regexp.MustCompile(`<tr data-upstream="http://127\.0\.0\.1:\d+" data-healthy="true">`).MatchString(dom) {
		t.Errorf("the page has no healthy upstream row")
	}
	// The routes table, from the last minute's window: the one request
	// sent to the proxy route (unless a loaded machine took Chromium so
	// long that it left the window), and the app's route.
	inWindow := time.Since(apiAt) < 50*time.Second
	for _, route := range []string{"api", "shop"} {
		m := regexp.MustCompile(`<tr data-site="default" data-route="` + route + `">(.*?)</tr>`).FindStringSubmatch(dom)
		if m == nil {
			t.Errorf("the routes table has no row for route %s", route)
		} else if route == "api" && inWindow && !strings.Contains(m[1], ">1<") {
			t.Errorf("route api's row %q does not count its one request", m[1])
		}
	}
	if !strings.Contains(dom, `<span class="queue" id="queue-shop">0 / 1024</span>`) {
		t.Errorf("the page does not show the queue as 0 / 1024")
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}

	dir := os.Getenv("PORTICO_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "status-page.png")
	chromium(t, "--virtual-time-budget=5000", "--window-size=1280,900", "--screenshot="+shot, page)
	png, err := os.ReadFile(shot)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot %s: %v (%d bytes)", shot, err, len(png))
	}
	t.Logf("screenshot of the status page: %s", shot)
	release()
}

// topWorker is a worker line of `portico top --once`.
type topWorker struct {
	pid   int
	state string
	line  string
}

// topWorkers parses the worker lines of the app "shop" from top's output:
// "  ID  PID  STATE  REQUESTS  RSS  UPTIME  ELAPSED  REQUEST".
func topWorkers(t *testing.T, out string) []topWorker {
	t.Helper()
	var ws []topWorker
	in := false
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "app shop "):
			in = true
		case in && strings.HasPrefix(line, "  ID "):
		case in && strings.HasPrefix(line, "  "):
			f := strings.Fields(line)
			pid, err := strconv.Atoi(f[1])
			if len(f) < 8 || err != nil {
				t.Fatalf("top: worker line %q", line)
			}
			ws = append(ws, topWorker{pid: pid, state: f[2], line: line})
		default:
			in = false
		}
	}
	return ws
}

// TestTop runs `portico top` against a server whose admin listener is a
// unix socket while one worker is held: --once prints plain text whose
// worker lines match the process tree, the held request on the busy one;
// without --once it redraws with ANSI escapes and exits 0 on SIGINT.
func TestTop(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	s := startStatusServer(t, "unix:"+sock)
	if s.admin != "unix:"+sock {
		t.Fatalf("admin listener at %q, want unix:%s", s.admin, sock)
	}
	uri, heldPID, release := s.hold(t)
	pids := s.workerPIDs(t)

	out, err := exec.Command(porticoBin, "top", "--admin", s.admin, "--once").CombinedOutput()
	if err != nil {
		t.Fatalf("portico top --once: %v\n%s", err, out)
	}
	t.Logf("portico top --once:\n%s", out)
	if bytes.ContainsRune(out, '\x1b') {
		t.Errorf("top --once wrote terminal escapes")
	}
	if !regexp.MustCompile(`(?m)^portico \S+  pid ` + strconv.Itoa(s.cmd.Process.Pid) + `  up `).Match(out) {
		t.Errorf("top --once: no header line with portico's pid %d", s.cmd.Process.Pid)
	}
	if !strings.Contains(string(out), "queue 0/1024") || !regexp.MustCompile(`(?m)^  http://127\.0\.0\.1:\d+ +up `).Match(out) {
		t.Errorf("top --once: no queue or no healthy upstream line")
	}
	var got []int
	for _, w := range topWorkers(t, string(out)) {
		got = append(got, w.pid)
		if w.pid == heldPID {
			if w.state != "busy" || !strings.HasSuffix(w.line, "GET "+uri) {
				t.Errorf("the worker holding the request: %q, want busy with GET %s", w.line, uri)
			}
		} else if w.state != "idle" || !strings.HasSuffix(w.line, " -") {
			t.Errorf("an idle worker: %q", w.line)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, pids) {
		t.Errorf("top shows workers %v, the process tree has %v", got, pids)
	}

	t.Run("refresh and SIGINT", func(t *testing.T) {
		cmd := exec.Command(porticoBin, "top", "--admin", s.admin, "--interval", "50ms")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		// Two frames, each starting with cursor home + clear screen and
		// showing the held request.
		const clear = "\x1b[H\x1b[2J"
		r := bufio.NewReader(stdout)
		frames, shown := 0, 0
		for frames < 3 {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("reading top's output: %v", err)
			}
			if strings.HasPrefix(line, clear) {
				frames++
			}
			if strings.Contains(line, "GET "+uri) {
				shown++
			}
		}
		if shown < 2 {
			t.Errorf("%d frames showed the held request, want 2", shown)
		}
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		go io.Copy(io.Discard, r)
		if err := cmd.Wait(); err != nil {
			t.Errorf("top after SIGINT: %v, want exit status 0", err)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for _, args := range [][]string{{"top"}, {"top", "--admin", s.admin, "--interval", "0s"}, {"top", "--admin", s.admin, "extra"}} {
			out, err := exec.Command(porticoBin, args...).CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
				t.Errorf("%q: %v, want exit status 2\n%s", args, err, out)
			}
		}
		out, err := exec.Command(porticoBin, "top", "--admin", "unix:"+sock+".none", "--once").CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "fetching status") {
			t.Errorf("top against no server: %v, want exit status 1 and the cause\n%s", err, out)
		}
		out, err = exec.Command(porticoBin, "top", "--help").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--once") && !strings.Contains(string(out), "-once") {
			t.Errorf("top --help: %v\n%s", err, out)
		}
	})
	release()
}
