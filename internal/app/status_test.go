//go:build linux

package app

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"portico/internal/config"
	"portico/internal/porticotest"
)

// TestStatusJSON builds an engine with one app of two real Python workers
// (internal/worker/testdata/pep3333.py) and a proxy route, holds one worker
// with a request the test lets go, and checks GET /status: the server's
// fields, each worker's pid and state, the held request in the busy one
// with an elapsed time that grows, the route figures from routeStats, the
// proxy route's upstream; and that GET / is the page.
func TestStatusJSON(t *testing.T) {
	python := porticotest.RequireProgram(t, "python3")
	dir, marks := t.TempDir(), t.TempDir()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") }))
	t.Cleanup(upstream.Close)
	testdata, err := filepath.Abs("../worker/testdata")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "portico.toml")
	text := `
access_log = "off"
[[listener]]
addr = "127.0.0.1:0"
[app.pep]
module = "pep3333:application"
python = "` + python + `"
chdir = "` + testdata + `"
env = { PORTICO_TEST_MARKS = "` + marks + `" }
workers = 2
timeout = "40s"
[[site]]
hosts = ["example.test"]
[[site.route]]
path = "/up"
proxy = { upstreams = ["` + upstream.URL + `"] }
[[site.route]]
path = "/"
app = "pep"
`
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	e := &engine{log: slog.New(slog.DiscardHandler), stderr: io.Discard, version: "v-test", started: time.Now()}
	g, err := e.build(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.cur.Store(g)
	t.Cleanup(func() { e.stopGeneration(g, nil) })
	e.routeStats = func(now time.Time) []RouteStatus {
		return []RouteStatus{{Site: "example.test", Route: "/", Requests: 120, RPS: 2, P50: 1.5, P99: 40}}
	}
	admin := httptest.NewServer(e.adminHandler())
	t.Cleanup(admin.Close)
	front := httptest.NewServer(e)
	t.Cleanup(front.Close)

	status := func() (Status, string) {
		t.Helper()
		resp, err := http.Get(admin.URL + "/status")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("GET /status: %s %q\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
		}
		var st Status
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatalf("GET /status: %v\n%s", err, body)
		}
		return st, string(body)
	}

	// Hold one worker: the request waits in the app for the "go" mark.
	const uri = "/wait?go=go&enter=inflight"
	done := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest("GET", front.URL+uri, nil)
		req.Host = "example.test"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- string(b)
	}()
	porticotest.WaitFor(t, "the request in the app", 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(marks, "inflight"))
		return err == nil
	})
	pidMark, err := os.ReadFile(filepath.Join(marks, "inflight"))
	if err != nil {
		t.Fatal(err)
	}
	heldPID := strings.TrimSpace(string(pidMark))

	st, body := status()
	for _, field := range []string{`"version"`, `"uptime"`, `"pid"`, `"reloads"`, `"configured_workers"`, `"threads"`, `"timeout"`, `"queued"`, `"queue_size"`,
		`"generation"`, `"requests"`, `"rss"`, `"current"`, `"elapsed"`, `"since"`, `"p50_ms"`, `"p99_ms"`, `"rps"`, `"upstreams"`, `"in_flight"`} {
		if !strings.Contains(body, field) {
			t.Errorf("GET /status has no %s field:\n%s", field, body)
		}
	}
	if st.Server.Version != "v-test" || st.Server.PID != os.Getpid() || st.Server.Uptime <= 0 || st.Server.Now.IsZero() {
		t.Errorf("server: %+v", st.Server)
	}
	if len(st.Apps) != 1 {
		t.Fatalf("apps: %+v", st.Apps)
	}
	a := st.Apps[0]
	if a.Name != "pep" || a.Module != "pep3333:application" || a.ConfiguredWorkers != 2 || a.Threads != 1 || a.Timeout != 40 || a.QueueSize != 1024 || a.Queued != 0 {
		t.Errorf("app: %+v", a)
	}
	if len(a.Workers) != 2 {
		t.Fatalf("workers: %+v", a.Workers)
	}
	var held float64
	for _, w := range a.Workers {
		if w.PID <= 0 || w.RSS <= 0 || w.Generation != 1 || w.Uptime <= 0 {
			t.Errorf("worker: %+v", w)
		}
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(w.PID))); err != nil {
			t.Errorf("worker pid %d is not a running process: %v", w.PID, err)
		}
		switch strconv.Itoa(w.PID) {
		case heldPID:
			if w.State != "busy" || len(w.Current) != 1 || w.Current[0].URI != uri || w.Current[0].Method != "GET" || w.Current[0].Elapsed <= 0 {
				t.Errorf("the worker holding the request: %+v", w)
			} else {
				held = w.Current[0].Elapsed
			}
		default:
			if w.State != "idle" || len(w.Current) != 0 {
				t.Errorf("the other worker: %+v", w)
			}
		}
	}
	if len(st.Routes) != 1 || st.Routes[0] != (RouteStatus{Site: "example.test", Route: "/", Requests: 120, RPS: 2, P50: 1.5, P99: 40}) {
		t.Errorf("routes: %+v", st.Routes)
	}
	if len(st.Proxies) != 1 || st.Proxies[0].Site != "example.test" || st.Proxies[0].Route != "/up" ||
		len(st.Proxies[0].Upstreams) != 1 || !st.Proxies[0].Upstreams[0].Healthy {
		t.Errorf("proxies: %+v", st.Proxies)
	}

	// The elapsed time grows while the request runs: wait until a later
	// snapshot shows more, without sleeping.
	porticotest.WaitFor(t, "elapsed to grow", 10*time.Second, func() bool {
		st, _ := status()
		for _, w := range st.Apps[0].Workers {
			if strconv.Itoa(w.PID) == heldPID && len(w.Current) == 1 && w.Current[0].Elapsed > held {
				return true
			}
		}
		return false
	})

	if err := os.WriteFile(filepath.Join(marks, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := <-done; got != "went" {
		t.Fatalf("held request: %q", got)
	}
	porticotest.WaitFor(t, "both workers idle, one request served", 10*time.Second, func() bool {
		st, _ := status()
		var served int64
		for _, w := range st.Apps[0].Workers {
			if w.State != "idle" || len(w.Current) != 0 {
				return false
			}
			served += w.Requests
		}
		return served == 1
	})

	// Without route figures the list is empty, not null.
	e.routeStats = nil
	if _, body := status(); !strings.Contains(body, `"routes": []`) {
		t.Errorf("GET /status without route stats:\n%s", body)
	}

	resp, err := http.Get(admin.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(page), `fetch("status"`) {
		t.Errorf("GET /: %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	if resp, err := http.Get(admin.URL + "/nothing"); err != nil || resp.StatusCode != 404 {
		t.Errorf("GET /nothing: %v %v, want 404", resp, err)
	}
}
