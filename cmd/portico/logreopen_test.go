//go:build linux

package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"portico/internal/porticotest"
)

// TestLogReopen checks --error-log and --log-format json, and that SIGUSR1
// (and SIGHUP under run) reopens the access log and the error log after
// logrotate renamed them: new lines go to new files at the same paths,
// the renamed files keep the old lines.
func TestLogReopen(t *testing.T) {
	python := needPython(t)
	app := repoPath(t, "cmd/portico/testdata/errors_app.py")
	t.Run("run", func(t *testing.T) {
		dir := t.TempDir()
		sock := filepath.Join(dir, "p.sock")
		accessLog, errLog := filepath.Join(dir, "access.log"), filepath.Join(dir, "error.log")
		p, c := launchQuiet(t, sock, "--python", python, "--workers", "1",
			"--access-log", accessLog, "--error-log", errLog, "--log-format", "json",
			"--env", "PYTHONDONTWRITEBYTECODE=1", app)
		testLogReopen(t, p, c, python, accessLog, errLog, "workers ready")
	})
	// Under serve, SIGHUP re-reads the config: the new routing opens the
	// access log anew, and the error log is reopened.
	t.Run("serve", func(t *testing.T) {
		dir := t.TempDir()
		sock := filepath.Join(dir, "p.sock")
		accessLog, errLog := filepath.Join(dir, "access.log"), filepath.Join(dir, "error.log")
		conf := writeFile(t, dir, "portico.toml", fmt.Sprintf(`
access_log = "access.log"
error_log = "error.log"
log_format = "json"
[[listener]]
addr = "unix:p.sock"
[app.web]
module = %q
python = %q
workers = 1
env = { PYTHONDONTWRITEBYTECODE = "1" }
[[site]]
hosts = ["default"]
[[site.route]]
path = "/"
app = "web"
`, app, python))
		p, c := launchQuietCmd(t, sock, "serve", "-c", conf)
		testLogReopen(t, p, c, python, accessLog, errLog, "reloaded")
	})
}

// testLogReopen renames the logs of p and sends SIGUSR1, then again with
// SIGHUP, whose record hupMsg must land in the new error log.
func testLogReopen(t *testing.T, p *proc, c *http.Client, python, accessLog, errLog, hupMsg string) {

	fileHas := func(path, s string) bool {
		data, _ := os.ReadFile(path)
		return strings.Contains(string(data), s)
	}
	request := func(path string, status int) {
		t.Helper()
		resp, err := c.Get("http://portico.test" + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != status {
			t.Fatalf("%s: status %d, want %d", path, resp.StatusCode, status)
		}
		porticotest.WaitFor(t, path+" in the access log", 10*time.Second, func() bool { return fileHas(accessLog, "GET "+path+" ") })
	}

	// The log went to the file, as JSON lines, and names the interpreter.
	porticotest.WaitFor(t, "msg ready in the error log", 10*time.Second, func() bool { return fileHas(errLog, `"msg":"ready"`) })
	var ready map[string]any
	for _, r := range jsonRecords(t, errLog) {
		if r["msg"] == "workers ready" {
			ready = r
		}
	}
	if ready == nil || ready["python"] != python || !regexp.MustCompile(`^3\.\d+\.\d+`).MatchString(ready["python_version"].(string)) {
		t.Errorf("workers ready record %v: want python=%s and its version", ready, python)
	}
	if strings.Contains(p.Log(), "msg") {
		t.Errorf("the log went to stderr too:\n%s", p.Log())
	}

	request("/before", http.StatusOK)
	for i, sig := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGHUP} {
		n := string(rune('1' + i))
		if err := os.Rename(accessLog, accessLog+"."+n); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(errLog, errLog+"."+n); err != nil {
			t.Fatal(err)
		}
		if err := p.cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		// Reopening creates the files again at their paths.
		porticotest.WaitFor(t, "the logs reopened after "+sig.String(), 10*time.Second, func() bool {
			_, e1 := os.Stat(accessLog)
			_, e2 := os.Stat(errLog)
			return e1 == nil && e2 == nil
		})
		if sig == syscall.SIGHUP {
			// The reload's records go to the new file.
			porticotest.WaitFor(t, "the reload in the new error log", readyTimeout, func() bool { return fileHas(errLog, `"msg":"`+hupMsg+`"`) })
		}
		path := "/after-" + sig.String()
		path = strings.ReplaceAll(path, " ", "-")
		request(path, http.StatusOK)
		raise := "/raise?" + n
		request(raise, http.StatusInternalServerError)
		porticotest.WaitFor(t, "the error record in the new error log", 10*time.Second, func() bool { return fileHas(errLog, `"uri":"`+raise+`"`) })
		if fileHas(accessLog+"."+n, path) || fileHas(errLog+"."+n, `"uri":"`+raise+`"`) {
			t.Errorf("%s: new lines went to the renamed files", sig)
		}
		if !fileHas(accessLog+"."+n, "GET /before ") && n == "1" || !fileHas(errLog+"."+n, `"msg":`) {
			t.Errorf("%s: the renamed files lost their lines", sig)
		}
		jsonRecords(t, errLog)
		jsonRecords(t, errLog+"."+n)
		request("/before", http.StatusOK)
	}
}
