//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"portico/internal/porticotest"
)

// launchQuiet starts portico with its log in a file (or at a level that
// hides msg=ready): it is ready once a GET over its unix socket answers.
func launchQuiet(t *testing.T, sock string, args ...string) (*proc, *http.Client) {
	t.Helper()
	return launchQuietCmd(t, sock, append([]string{"run", "--bind", "unix:" + sock}, args...)...)
}

// launchQuietCmd is launchQuiet for any command (serve -c FILE) whose
// listener is the unix socket sock.
func launchQuietCmd(t *testing.T, sock string, args ...string) (*proc, *http.Client) {
	t.Helper()
	p := launch(t, args...)
	c := unixClient(t, sock)
	porticotest.WaitFor(t, "portico to answer", readyTimeout, func() bool {
		resp, err := c.Get("http://portico.test/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p, c
}

// jsonRecords parses a --log-format json log: every line must be a JSON
// object.
func jsonRecords(t testing.TB, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON (%v): %q", err, line)
		}
		recs = append(recs, m)
	}
	return recs
}

func recordsFor(recs []map[string]any, uri string) []map[string]any {
	var out []map[string]any
	for _, r := range recs {
		if r["uri"] == uri {
			out = append(out, r)
		}
	}
	return out
}

var hexID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// TestAppErrorsLogged checks that every failure of a request to the app is
// one ERROR record at --log-level error, with method, uri, status, the
// worker's pid and the request's ID, and for an exception the whole
// traceback as one attribute; and that nothing else about it is logged.
func TestAppErrorsLogged(t *testing.T) {
	python := needPython(t)
	dir := t.TempDir()
	sock, errLog := filepath.Join(dir, "p.sock"), filepath.Join(dir, "error.log")
	p, c := launchQuiet(t, sock, "--python", python, "--workers", "1", "--timeout", "1s", "--grace", "1s",
		"--log-level", "error", "--log-format", "json", "--error-log", errLog,
		"--env", "PYTHONDONTWRITEBYTECODE=1", repoPath(t, "cmd/portico/testdata/errors_app.py"))

	_, body := get(t, c, "http://portico.test/pid")
	pid, _, _ := strings.Cut(string(body), " ")

	type want struct {
		uri, tb string
		status  int
		pid     string // "" : not checked (the worker was replaced)
		outcome string
	}
	cases := []want{
		{uri: "/raise", status: 500, tb: "ValueError: boom from the app", pid: pid},
		// Raised after start_response, but the response had not left:
		// still a 500.
		// (status 0: 500, or 200 when the head had left already: it
		// depends on whether the error frame came in the same read.)
		{uri: "/after", tb: "KeyError: 'raised after the headers'", pid: pid},
		{uri: "/excinfo", tb: "RuntimeError: reported with exc_info", pid: pid},
		// The head had left: the response is aborted; the record gives
		// the status sent.
		{uri: "/late", status: 200, tb: "KeyError: 'raised after the response started'", pid: pid},
		{uri: "/sleep", status: 504, outcome: "unwound", tb: "RequestTimeout", pid: pid},
		{uri: "/stuck", status: 504, outcome: "killed", pid: pid},
		{uri: "/crash", status: 502},
	}
	ids := map[string]string{}
	for _, w := range cases {
		resp, err := c.Get("http://portico.test" + w.uri)
		if err == nil {
			b, _ := io.ReadAll(resp.Body) // an aborted response ends in an error
			resp.Body.Close()
			if strings.Contains(string(b), "Traceback") || strings.Contains(string(b), "boom") {
				t.Errorf("%s: the response shows the traceback: %q", w.uri, b)
			}
			ids[w.uri] = resp.Header.Get("X-Request-Id")
		}
		// A response aborted after its head leaves the client an error.
		porticotest.WaitFor(t, "the record of "+w.uri, readyTimeout, func() bool {
			data, _ := os.ReadFile(errLog)
			return strings.Contains(string(data), `"uri":"`+w.uri+`"`)
		})
	}
	// After the exit every record is written: count them.
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	recs := jsonRecords(t, errLog)
	for _, w := range cases {
		got := recordsFor(recs, w.uri)
		if len(got) != 1 {
			t.Errorf("%s: %d records, want 1: %v", w.uri, len(got), got)
			continue
		}
		r := got[0]
		if w.status == 0 && (r["status"] == float64(500) || r["status"] == float64(200)) {
			w.status = int(r["status"].(float64))
		}
		if r["level"] != "ERROR" || r["method"] != "GET" || r["status"] != float64(w.status) {
			t.Errorf("%s: record %v, want level ERROR, method GET, status %d", w.uri, r, w.status)
		}
		id, _ := r["request_id"].(string)
		if !hexID.MatchString(id) || (ids[w.uri] != "" && id != ids[w.uri]) {
			t.Errorf("%s: request_id %q, want the response's %q", w.uri, id, ids[w.uri])
		}
		if gotPID := fmt.Sprint(r["pid"]); gotPID == "<nil>" || w.pid != "" && gotPID != w.pid {
			t.Errorf("%s: pid %s, want %s", w.uri, gotPID, w.pid)
		}
		if w.outcome != "" && r["outcome"] != w.outcome {
			t.Errorf("%s: outcome %v, want %s", w.uri, r["outcome"], w.outcome)
		}
		tb, _ := r["traceback"].(string)
		if w.tb != "" && (!strings.Contains(tb, w.tb) || strings.Count(tb, "\n") < 2) {
			t.Errorf("%s: traceback %q, want a multi-line one with %q", w.uri, tb, w.tb)
		}
		if w.status == 500 && !strings.HasPrefix(tb, "Traceback (most recent call last):") {
			t.Errorf("%s: traceback %q does not begin as Python's", w.uri, tb)
		}
	}
	// The rest: the crashed worker's one record, nothing per line.
	died := 0
	for _, r := range recs {
		switch {
		case r["uri"] != nil:
		case r["msg"] == "worker died; replacing it":
			died++
		default:
			t.Errorf("unexpected record: %v", r)
		}
	}
	if died != 1 {
		t.Errorf("%d records of a worker that died, want 1 (the crash; the killed worker's record is its request's)", died)
	}
}
