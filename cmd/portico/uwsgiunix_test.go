//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"portico/internal/porticotest"
)

// TestNginxUWSGIUnixSocket puts a real nginx in front of --uwsgi-socket on a
// unix socket (the setup the README shows) and checks the worker's
// guarantees through it: a
// request past --timeout is interrupted and nginx gets 504; a worker crash
// gives 502 and a replacement serves the next request; --max-requests
// recycles workers and a SIGHUP reload replaces them, with no failed
// request during either; each request has its access log line.
func TestNginxUWSGIUnixSocket(t *testing.T) {
	python := needPython(t)
	sock := filepath.Join(t.TempDir(), "uwsgi.sock")
	p := startPortico(t, "--uwsgi-socket", "unix:"+sock, "--python", python, "--workers", "2",
		"--timeout", "1s", "--max-requests", "20",
		"--chdir", repoPath(t, "internal/worker/testdata"), "pep3333:raw")
	ngx := porticotest.StartNginx(t, fmt.Sprintf(`
    server {
        listen {{.Addr}};
        location / {
            include /etc/nginx/uwsgi_params;
            uwsgi_pass unix:%s;
        }
    }`, sock))
	base := "http://" + ngx.Addr
	c := newClient(t)

	// pidOf answers the status of a GET /env through nginx and the pid of
	// the worker that served it (0 on an error). Safe off the test goroutine.
	pidOf := func() (int, int) {
		resp, err := c.Get(base + "/env")
		if err != nil {
			return 0, 0
		}
		defer resp.Body.Close()
		var env struct{ Pid int }
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&env) != nil {
			return resp.StatusCode, 0
		}
		return resp.StatusCode, env.Pid
	}

	t.Run("timeout is 504", func(t *testing.T) {
		start := time.Now()
		resp, body := get(t, c, base+"/sleep?s=20&name=interrupted")
		wantStatus(t, resp, body, http.StatusGatewayTimeout)
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("504 after %v, want about the 1s timeout", d)
		}
		p.waitLog(t, "request timed out", 10*time.Second)
	})

	t.Run("access log", func(t *testing.T) {
		resp, body := get(t, c, base+"/status?via=unix")
		wantStatus(t, resp, body, 418)
		p.waitLog(t, `"GET /status?via=unix HTTP/1.1" 418`, 5*time.Second)
	})

	t.Run("crash is 502", func(t *testing.T) {
		resp, body := get(t, c, base+"/crash")
		wantStatus(t, resp, body, http.StatusBadGateway)
		if status, pid := pidOf(); status != 200 || pid == 0 {
			t.Errorf("after the crash: %d", status)
		}
	})

	// Load (4 clients in a loop) while during runs, then until is true of
	// the worker pids seen: every request must succeed.
	load := func(t *testing.T, during func(), until func(pids map[int]bool) bool) {
		t.Helper()
		var (
			mu       sync.Mutex
			pids     = map[int]bool{}
			failures []int
			wg       sync.WaitGroup
		)
		stop := make(chan struct{})
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					status, pid := pidOf()
					mu.Lock()
					if status != 200 {
						failures = append(failures, status)
					} else {
						pids[pid] = true
					}
					mu.Unlock()
				}
			}()
		}
		during()
		porticotest.WaitFor(t, "the workers to change", 30*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return until(pids)
		})
		close(stop)
		wg.Wait()
		if len(failures) > 0 {
			t.Errorf("%d requests failed: %v", len(failures), failures)
		}
	}

	t.Run("max-requests recycles", func(t *testing.T) {
		load(t, func() {}, func(pids map[int]bool) bool {
			return len(pids) >= 3 && strings.Contains(p.Log(), "reason=max-requests")
		})
	})

	t.Run("reload", func(t *testing.T) {
		ready := strings.Count(p.Log(), `msg="workers ready"`)
		load(t, func() {
			if err := p.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		}, func(map[int]bool) bool {
			return strings.Count(p.Log(), `msg="workers ready"`) > ready
		})
	})
}
