//go:build linux

package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"portico/internal/porticotest"
)

// pep3333 starts portico on the worker tests' app with extra flags.
func pep3333(t *testing.T, args ...string) *proc {
	t.Helper()
	python := needPython(t)
	return startPortico(t, append([]string{"--python", python, "--chdir", repoPath(t, "internal/worker/testdata")}, append(args, "pep3333:application")...)...)
}

func TestSIGHUPReloadUnderLoadNoFailures(t *testing.T) {
	p := pep3333(t, "--workers", "2", "--threads", "2")
	c := newClient(t)
	var failures, total atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				total.Add(1)
				resp, err := c.Get(p.URL("/sleep?s=0.02"))
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, resp.Status)
				}
			}
		}()
	}
	// Each reload starts and ends under load: a few more requests sent
	// before and after it.
	loaded := func() {
		t.Helper()
		n := total.Load() + 20
		porticotest.WaitFor(t, "20 more requests", 30*time.Second, func() bool { return total.Load() >= n })
	}
	for i := 2; i <= 4; i++ {
		loaded()
		p.cmd.Process.Signal(syscall.SIGHUP)
		p.waitLog(t, fmt.Sprintf("generation=%d", i), 30*time.Second)
	}
	loaded()
	close(stop)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d requests failed across 3 reloads; first: %v", n, total.Load(), firstErr.Load())
	}
	if total.Load() < 50 {
		t.Errorf("only %d requests: the load did not run", total.Load())
	}
}

// TestGracefulStopFinishesInFlight: on SIGTERM portico closes its
// listeners, lets the request a worker holds finish with its whole body,
// and exits 0.
func TestGracefulStopFinishesInFlight(t *testing.T) {
	marks := t.TempDir() // the app's marks (testdata/pep3333.py)
	p := pep3333(t, "--workers", "1", "--env", "PORTICO_TEST_MARKS="+marks)
	c := newClient(t)
	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := c.Get(p.URL("/wait?go=go&enter=inflight"))
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{resp.StatusCode, string(b), err}
	}()
	// The request is in the app, which holds it until the "go" mark.
	porticotest.WaitFor(t, "the request in the app", 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(marks, "inflight"))
		return err == nil
	})
	p.Signal(syscall.SIGTERM)
	p.waitLog(t, "stopping: finishing in-flight requests", 10*time.Second)
	// The listener is closed while the request is still in flight.
	porticotest.WaitFor(t, "the listener to close", 10*time.Second, func() bool {
		conn, err := net.DialTimeout("tcp", p.HTTPAddr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err != nil
	})
	select {
	case r := <-done:
		t.Fatalf("the in-flight request ended before it was let go: %d %q %v", r.status, r.body, r.err)
	default:
	}
	if err := os.WriteFile(filepath.Join(marks, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.status != 200 || r.body != "went" {
		t.Errorf("in-flight request across SIGTERM: %d %q %v", r.status, r.body, r.err)
	}
	if err := p.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v, want status 0", err)
	}
	// New connections are refused once stopped.
	if _, err := net.DialTimeout("tcp", p.HTTPAddr, time.Second); err == nil {
		t.Error("still accepting after the stop")
	}
}

func TestBadFlagsExit2(t *testing.T) {
	for _, args := range [][]string{{"run"}, {"run", "--workers", "x", "a:b"}, {"frobnicate"}} {
		cmd := exec.Command(porticoBin, args...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%q: %v, want exit status 2\n%s", args, err, out)
		}
	}
	out, err := exec.Command(porticoBin, "run", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--max-requests") || !strings.Contains(string(out), "harakiri") {
		t.Errorf("run --help: %v\n%s", err, out)
	}
	out, err = exec.Command(porticoBin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "portico ") || !strings.Contains(string(out), "go1.") {
		t.Errorf("version: %v\n%s", err, out)
	}
}

func TestHTTPFrontLimits(t *testing.T) {
	p := pep3333(t, "--workers", "1")
	raw := func(req string) string {
		t.Helper()
		conn, err := net.Dial("tcp", p.HTTPAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, req)
		line, _ := bufio.NewReader(conn).ReadString('\n')
		return line
	}
	// 60 KiB of headers pass (uWSGI's default would refuse 4 KiB)...
	big := strings.Repeat("a", 60<<10)
	if got := raw("GET /status HTTP/1.1\r\nHost: x\r\nX-Big: " + big + "\r\n\r\n"); !strings.Contains(got, "418") {
		t.Errorf("60 KiB header: %q", got)
	}
	// ...past 64 KiB is 431...
	huge := strings.Repeat("a", 80<<10)
	if got := raw("GET /status HTTP/1.1\r\nHost: x\r\nX-Big: " + huge + "\r\n\r\n"); !strings.Contains(got, "431") {
		t.Errorf("80 KiB header: %q", got)
	}
	// ...garbage is 400...
	if got := raw("NOT HTTP AT ALL\r\n\r\n"); !strings.Contains(got, "400") {
		t.Errorf("garbage: %q", got)
	}
	// ...and the server serves on.
	resp, body := get(t, newClient(t), p.URL("/status"))
	wantStatus(t, resp, body, 418)
}

func TestAccessLogCombined(t *testing.T) {
	p := pep3333(t, "--workers", "1")
	req, _ := http.NewRequest("GET", p.URL("/status?x=1"), nil)
	req.Header.Set("User-Agent", "portico-test/1")
	req.Header.Set("Referer", "http://ref.example/")
	do(t, newClient(t), req)
	p.waitLog(t, `"GET /status?x=1 HTTP/1.1" 418 6 "http://ref.example/" "portico-test/1"`, 5*time.Second)
}

// TestRunReloadBrokenCode: under portico run, POST /reload of code that
// cannot be imported answers 422 with the traceback, the old workers keep
// serving, and a fixed deploy then loads.
func TestRunReloadBrokenCode(t *testing.T) {
	python := needPython(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	writeFile(t, dir, "app.py", "def application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'v1']\n")
	p := startPortico(t, "--python", python, "--chdir", dir, "--workers", "1", "--admin", "unix:"+sock, "app:application")
	admin := unixClient(t, sock)
	c := newClient(t)
	reload := func() (*http.Response, []byte) {
		req, _ := http.NewRequest("POST", "http://admin/reload", nil)
		return do(t, admin, req)
	}

	writeFile(t, dir, "app.py", "def application(environ, start_response)\n")
	resp, body := reload()
	wantStatus(t, resp, body, http.StatusUnprocessableEntity)
	for _, want := range []string{"SyntaxError", "old workers keep serving"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("POST /reload of broken code: body lacks %q:\n%s", want, body)
		}
	}
	if resp, body := get(t, c, p.URL("/")); string(body) != "v1" {
		t.Errorf("after the failed reload: %d %q, want v1", resp.StatusCode, body)
	}

	writeFile(t, dir, "app.py", "def application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'v2']\n")
	resp, body = reload()
	wantStatus(t, resp, body, http.StatusOK)
	if resp, body := get(t, c, p.URL("/")); string(body) != "v2" {
		t.Errorf("after the fixed deploy: %d %q, want v2", resp.StatusCode, body)
	}
}
