//go:build linux

// End-to-end tests of deploying new Python code under `portico serve`:
// SIGHUP and POST /reload restart every app's workers (reload_code), with
// no failed request.

package main

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"portico/internal/porticotest"
)

// versionApp is a WSGI module that answers its version.
func versionApp(version string) string {
	return `VERSION = "` + version + `"


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [VERSION.encode()]
`
}

// deployConfig serves app.py in dir as app "site" (reload_code as given,
// "" for the default) and opens the admin listener on dir/admin.sock.
func deployConfig(python, reloadCode string) string {
	rc := ""
	if reloadCode != "" {
		rc = "reload_code = " + reloadCode + "\n"
	}
	// PYTHONDONTWRITEBYTECODE: the test rewrites app.py within the second
	// with the same size, which a cached .pyc (keyed by mtime and size)
	// would not notice; a real deploy changes the mtime.
	return `
access_log = "off"
[admin]
addr = "unix:admin.sock"
[[listener]]
addr = "127.0.0.1:0"
[app.site]
module = "app.py:application"
python = "` + python + `"
workers = 2
threads = 2
env = { PYTHONDONTWRITEBYTECODE = "1" }
` + rc + `
[[site]]
hosts = ["default"]
[[site.route]]
path = "/"
app = "site"
`
}

func deployAdminClient(t *testing.T, sock string) *http.Client {
	c := unixClient(t, sock)
	c.Timeout = 2 * readyTimeout
	return c
}

// answer GETs / and returns the body, failing the test on a non-200.
func answer(t *testing.T, c *http.Client, p *proc) string {
	t.Helper()
	resp, body := get(t, c, p.URL("/"))
	wantStatus(t, resp, body, http.StatusOK)
	return string(body)
}

// TestServeDeployUnderLoad deploys new code with SIGHUP while clients
// send requests: none fails, the answers switch from v1 to v2, and after
// the reload every answer is v2. The log says why the app was restarted.
func TestServeDeployUnderLoad(t *testing.T) {
	python := needPython(t)
	dir := t.TempDir()
	writeFile(t, dir, "app.py", versionApp("v1"))
	p := startServe(t, writeFile(t, dir, "portico.toml", deployConfig(python, "")))
	c := newClient(t)
	if v := answer(t, c, p); v != "v1" {
		t.Fatalf("before the deploy: %q, want v1", v)
	}

	// Load: a few clients in a loop, each for at most maxEach requests.
	const clients, maxEach = 4, 20000
	var (
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		sent     atomic.Int64
		mu       sync.Mutex
		failures []string
		seen     = map[string]int{}
	)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lc := newClient(t)
			for range maxEach {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := lc.Get(p.URL("/"))
				var msg, body string
				if err != nil {
					msg = err.Error()
				} else {
					b, rerr := io.ReadAll(resp.Body)
					resp.Body.Close()
					body = string(b)
					switch {
					case rerr != nil:
						msg = rerr.Error()
					case resp.StatusCode != http.StatusOK:
						msg = resp.Status + ": " + body
					}
				}
				mu.Lock()
				if msg != "" {
					failures = append(failures, msg)
				} else {
					seen[body]++
				}
				mu.Unlock()
				sent.Add(1)
			}
		}()
	}
	porticotest.WaitFor(t, "requests before the deploy", readyTimeout, func() bool { return sent.Load() >= 50 })

	writeFile(t, dir, "app.py", versionApp("v2"))
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "msg=reloaded", 2*readyTimeout)
	atReload := sent.Load()
	porticotest.WaitFor(t, "requests after the deploy", readyTimeout, func() bool { return sent.Load() >= atReload+50 })
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed during the deploy: %q", len(failures), sent.Load(), failures[:min(len(failures), 10)])
	}
	if seen["v1"] == 0 || seen["v2"] == 0 || len(seen) != 2 {
		t.Errorf("answers during the deploy: %v; want both v1 and v2, nothing else", seen)
	}
	for range 20 {
		if v := answer(t, c, p); v != "v2" {
			t.Fatalf("after the deploy: %q, want v2", v)
		}
	}
	var restarted bool
	for _, line := range p.log.snapshot() {
		kv := logfmt(line)
		if kv["msg"] == "restarting app workers" && kv["app"] == "site" && kv["reason"] == "code reload" {
			restarted = true
		}
		if kv["msg"] == "reloaded" && (kv["apps_restarted"] != "1" || kv["apps_kept"] != "0") {
			t.Errorf("reload summary: %s; want apps_restarted=1 apps_kept=0", line)
		}
	}
	if !restarted {
		t.Errorf(`no msg="restarting app workers" app=site reason="code reload" record (log below)`)
	}
	if t.Failed() {
		t.Logf("log:\n%s", p.Log())
	}
}

// TestServeDeployKeepsWarmWorkers: with reload_code = false, an unchanged
// app keeps its workers, and so its old code, across a reload.
func TestServeDeployKeepsWarmWorkers(t *testing.T) {
	python := needPython(t)
	dir := t.TempDir()
	writeFile(t, dir, "app.py", versionApp("v1"))
	p := startServe(t, writeFile(t, dir, "portico.toml", deployConfig(python, "false")))
	c := newClient(t)
	if v := answer(t, c, p); v != "v1" {
		t.Fatalf("before the deploy: %q, want v1", v)
	}
	writeFile(t, dir, "app.py", versionApp("v2"))
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "msg=reloaded", readyTimeout)
	for range 10 {
		if v := answer(t, c, p); v != "v1" {
			t.Fatalf("after SIGHUP with reload_code = false: %q, want v1 (warm workers kept)", v)
		}
	}
	if !strings.Contains(p.Log(), `msg="keeping app workers" app=site reason="reload_code = false"`) {
		t.Errorf("the log does not say the app's workers were kept (log below):\n%s", p.Log())
	}
}

// TestServeDeployBrokenCode: new code that cannot be imported fails the
// reload (POST /reload answers 422 with the import error) and the old
// workers keep serving the old code.
func TestServeDeployBrokenCode(t *testing.T) {
	python := needPython(t)
	dir := t.TempDir()
	writeFile(t, dir, "app.py", versionApp("v1"))
	p := startServe(t, writeFile(t, dir, "portico.toml", deployConfig(python, "")))
	admin := deployAdminClient(t, filepath.Join(dir, "admin.sock"))
	c := newClient(t)

	writeFile(t, dir, "app.py", versionApp("v2")+"\ndef broken(:\n")
	req, _ := http.NewRequest(http.MethodPost, "http://admin/reload", nil)
	resp, body := do(t, admin, req)
	wantStatus(t, resp, body, http.StatusUnprocessableEntity)
	for _, want := range []string{"restarting app site (code reload)", "SyntaxError", "old workers keep serving"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("POST /reload of broken code: body lacks %q:\n%s", want, body)
		}
	}
	for range 10 {
		if v := answer(t, c, p); v != "v1" {
			t.Fatalf("after a failed deploy: %q, want v1 (the old workers)", v)
		}
	}

	// Fixed code deploys.
	writeFile(t, dir, "app.py", versionApp("v3"))
	resp, body = do(t, admin, req)
	wantStatus(t, resp, body, http.StatusOK)
	if v := answer(t, c, p); v != "v3" {
		t.Errorf("after the fixed deploy: %q, want v3", v)
	}
}

// TestServePythonFlag: serve --python overrides every app's interpreter,
// at start and on reload.
func TestServePythonFlag(t *testing.T) {
	python := needPython(t)
	dir := t.TempDir()
	interp := filepath.Join(dir, "bin", "mypython")
	if err := os.MkdirAll(filepath.Dir(interp), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(python, interp); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "exe.py", `import os, sys


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("%s %d" % (sys.executable, os.getpid())).encode()]
`)
	// The file names an interpreter that does not exist: the flag wins,
	// so the config is valid.
	cfg := writeFile(t, dir, "portico.toml", `
access_log = "off"
[[listener]]
addr = "127.0.0.1:0"
[app.one]
module = "exe.py"
python = "/nonexistent/python3"
workers = 1
[app.two]
module = "exe.py"
workers = 1
[[site]]
hosts = ["default"]
[[site.route]]
path = "/one"
app = "one"
[[site.route]]
path = "/two"
app = "two"
`)
	p := startCommand(t, "serve", "-c", cfg, "--python", interp)
	c := newClient(t)
	exe := func(path string) (string, string) {
		t.Helper()
		resp, body := get(t, c, p.URL(path))
		wantStatus(t, resp, body, http.StatusOK)
		e, pid, _ := strings.Cut(string(body), " ")
		return e, pid
	}
	_, pid := exe("/one")
	for _, path := range []string{"/one", "/two"} {
		if got, _ := exe(path); got != interp {
			t.Errorf("%s: the worker runs %s, want %s (serve --python)", path, got, interp)
		}
	}
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "msg=reloaded", readyTimeout)
	if got, newPid := exe("/one"); got != interp || newPid == pid {
		t.Errorf("after a reload: %s pid %s (was %s); want %s in a new worker", got, newPid, pid, interp)
	}

	// Without the flag the file's missing interpreter is an error; check
	// takes the flag too.
	out, code := runCheck(t, cfg)
	if code != 1 || !strings.Contains(out, "app.one.python") {
		t.Errorf("check without --python: exit %d, output %q; want 1 and an app.one.python error", code, out)
	}
	if out, err := exec.Command(porticoBin, "check", "-c", cfg, "--python", interp).CombinedOutput(); err != nil || string(out) != cfg+": OK\n" {
		t.Errorf("check --python %s: %v, output %q; want %s: OK", interp, err, out, cfg)
	}
	if out, _ := exec.Command(porticoBin, "check", "-c", cfg, "--python", filepath.Join(dir, "nope")).CombinedOutput(); !strings.Contains(string(out), "--python: stat "+filepath.Join(dir, "nope")) {
		t.Errorf("check --python with a missing interpreter: output %q, want a --python error", out)
	}
}
