package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"portico/internal/porticotest"
)

// scrape is one parse of GET /metrics: each metric's series.
type scrape map[string][]sample

// sample is one series: its labels and its value (a histogram's count).
type sample struct {
	labels map[string]string
	value  float64
}

// scrapeMetrics fetches the admin listener's /metrics and parses it with
// Prometheus' own text parser.
func scrapeMetrics(t testing.TB, c *http.Client, admin string) scrape {
	t.Helper()
	resp, err := c.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	out := scrape{}
	for name, f := range fams {
		for _, m := range f.Metric {
			smp := sample{labels: map[string]string{}}
			for _, lp := range m.Label {
				smp.labels[lp.GetName()] = lp.GetValue()
			}
			switch {
			case m.Counter != nil:
				smp.value = m.Counter.GetValue()
			case m.Gauge != nil:
				smp.value = m.Gauge.GetValue()
			case m.Histogram != nil:
				smp.value = float64(m.Histogram.GetSampleCount())
			}
			out[name] = append(out[name], smp)
		}
	}
	return out
}

// matching returns the series of name whose labels include want (label,
// value pairs).
func (s scrape) matching(name string, want ...string) []sample {
	var out []sample
	for _, smp := range s[name] {
		ok := true
		for i := 0; i+1 < len(want); i += 2 {
			if smp.labels[want[i]] != want[i+1] {
				ok = false
			}
		}
		if ok {
			out = append(out, smp)
		}
	}
	return out
}

// value is the value of the one series of name whose labels include want;
// 0 when there is none.
func (s scrape) value(t testing.TB, name string, want ...string) float64 {
	t.Helper()
	found := s.matching(name, want...)
	switch len(found) {
	case 0:
		return 0
	case 1:
		return found[0].value
	}
	t.Fatalf("%s%v matches %d series", name, want, len(found))
	return 0
}

// has reports whether name has a series with the labels.
func (s scrape) has(name string, want ...string) bool { return len(s.matching(name, want...)) > 0 }

// adminAddr is the admin listener's address from the log.
func (p *proc) adminAddr(t testing.TB) string {
	t.Helper()
	for _, line := range p.log.snapshot() {
		if kv := logfmt(line); kv["msg"] == "listening" && kv["proto"] == "admin" {
			return kv["addr"]
		}
	}
	t.Fatal("no msg=listening proto=admin line")
	return ""
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestMetricsCounters: /metrics counts what the test sent. N requests to
// the app route add exactly N to their series; with one worker held by the
// app (a mark the test controls), the worker shows busy, the next request
// waits in the queue (queue_length 1) and the one after it, past
// --queue-size 1, is shed with 503 and counted once; a worker that calls
// os._exit is counted once as a crash; a proxy route whose upstream is
// down counts the failure and reports the upstream down.
func TestMetricsCounters(t *testing.T) {
	marks := t.TempDir()
	down := closedPort(t)
	p := pep3333raw(t, "--workers", "1", "--threads", "1", "--queue-size", "1", "--admin", "127.0.0.1:0",
		"--proxy", "/down=http://"+down, "--env", "PORTICO_TEST_MARKS="+marks)
	admin := p.adminAddr(t)
	c := newClient(t)
	app := []string{"site", "default", "route", "1"} // route 0 is the proxy

	before := scrapeMetrics(t, c, admin)
	const n = 25
	for range n {
		resp, body := get(t, c, p.URL("/threads"))
		wantStatus(t, resp, body, 200)
	}
	after := scrapeMetrics(t, c, admin)
	ok2xx := append(app, "method", "GET", "code", "2xx")
	if d := after.value(t, "portico_http_requests_total", ok2xx...) - before.value(t, "portico_http_requests_total", ok2xx...); d != n {
		t.Errorf("portico_http_requests_total%v grew by %v, want %d", ok2xx, d, n)
	}
	if d := after.value(t, "portico_http_request_duration_seconds", app...) - before.value(t, "portico_http_request_duration_seconds", app...); d != n {
		t.Errorf("duration histogram count grew by %v, want %d", d, n)
	}
	if after.value(t, "portico_http_response_bytes_total", app...) <= before.value(t, "portico_http_response_bytes_total", app...) {
		t.Error("portico_http_response_bytes_total did not grow")
	}
	if got := after.value(t, "portico_listener_accepted_total"); got < 1 {
		t.Errorf("portico_listener_accepted_total = %v", got)
	}

	// A slow request first: the workers' service time then forbids
	// write-ahead, so that the next requests wait in the queue.
	resp, body := get(t, c, p.URL("/sleep?s=0.05"))
	wantStatus(t, resp, body, 200)

	held := make(chan int, 1)
	go func() {
		resp, err := c.Get(p.URL("/wait?go=go&enter=held"))
		if err != nil {
			held <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		held <- resp.StatusCode
	}()
	porticotest.WaitFor(t, "the request in the app", 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(marks, "held"))
		return err == nil
	})
	s := scrapeMetrics(t, c, admin)
	if busy, idle := s.value(t, "portico_app_workers", "app", "app", "state", "busy"), s.value(t, "portico_app_workers", "app", "app", "state", "idle"); busy != 1 || idle != 0 {
		t.Errorf("workers busy=%v idle=%v with one request held, want 1 and 0", busy, idle)
	}
	queued := make(chan int, 1)
	go func() {
		resp, err := c.Get(p.URL("/threads"))
		if err != nil {
			queued <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		queued <- resp.StatusCode
	}()
	porticotest.WaitFor(t, "queue_length 1", 10*time.Second, func() bool {
		return scrapeMetrics(t, c, admin).value(t, "portico_app_queue_length", "app", "app") == 1
	})
	resp, body = get(t, c, p.URL("/threads"))
	wantStatus(t, resp, body, 503)
	s = scrapeMetrics(t, c, admin)
	if got := s.value(t, "portico_app_shed_total", "app", "app"); got != 1 {
		t.Errorf("portico_app_shed_total = %v after one 503, want 1", got)
	}
	if got := s.value(t, "portico_http_requests_total", append(app, "method", "GET", "code", "5xx")...); got != 1 {
		t.Errorf("5xx requests = %v, want 1", got)
	}
	if err := os.WriteFile(filepath.Join(marks, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if st := <-held; st != 200 {
		t.Errorf("held request: %d", st)
	}
	if st := <-queued; st != 200 {
		t.Errorf("queued request: %d", st)
	}
	s = scrapeMetrics(t, c, admin)
	if got := s.value(t, "portico_app_queue_wait_seconds", "app", "app"); got < n+3 {
		t.Errorf("queue-wait observations = %v, want at least %d", got, n+3)
	}
	if s.value(t, "portico_app_queue_length", "app", "app") != 0 {
		t.Error("queue not empty after the requests ended")
	}

	// A crash: counted once, once the worker's death is seen.
	resp, body = get(t, c, p.URL("/crash"))
	wantStatus(t, resp, body, 502)
	porticotest.WaitFor(t, "crashes_total 1", 10*time.Second, func() bool {
		return scrapeMetrics(t, c, admin).value(t, "portico_app_crashes_total", "app", "app") == 1
	})
	porticotest.WaitFor(t, "a replacement worker", 30*time.Second, func() bool {
		return scrapeMetrics(t, c, admin).value(t, "portico_app_workers", "app", "app", "state", "idle") == 1
	})
	s = scrapeMetrics(t, c, admin)
	if got := s.value(t, "portico_app_crashes_total", "app", "app"); got != 1 {
		t.Errorf("portico_app_crashes_total = %v, want 1", got)
	}
	if got := s.value(t, "portico_http_requests_total", append(app, "method", "GET", "code", "5xx")...); got != 2 {
		t.Errorf("5xx requests = %v after a 503 and a 502, want 2", got)
	}
	if got := s.value(t, "portico_app_timeouts_total", "app", "app", "outcome", "killed"); got != 0 {
		t.Errorf("timeouts killed = %v, want 0", got)
	}

	// The proxy route: its upstream exists in the metrics, and a request
	// to it while it is down counts one failure and takes it out.
	up := []string{"site", "default", "route", "0", "upstream", "http://" + down}
	if !s.has("portico_upstream_up", up...) || s.value(t, "portico_upstream_up", up...) != 1 {
		t.Errorf("portico_upstream_up%v missing or not 1 before any request", up)
	}
	resp, body = get(t, c, p.URL("/down/x"))
	wantStatus(t, resp, body, 502)
	s = scrapeMetrics(t, c, admin)
	if got := s.value(t, "portico_upstream_failures_total", up...); got != 1 {
		t.Errorf("portico_upstream_failures_total = %v, want 1", got)
	}
	if got := s.value(t, "portico_upstream_up", up...); got != 0 {
		t.Errorf("portico_upstream_up = %v after the failure (max_fails 1), want 0", got)
	}
	if got := s.value(t, "portico_http_requests_total", "site", "default", "route", "0", "method", "GET", "code", "5xx"); got != 1 {
		t.Errorf("proxy route 5xx = %v, want 1", got)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "portico_listener_connections"} {
		if s[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
}

// TestMetricsTimeouts: a request past --timeout whose app code unwinds
// after its interrupt, and one whose code ignores it (the worker is
// killed), are each counted once under their outcome; the killed worker is
// not counted as a crash.
func TestMetricsTimeouts(t *testing.T) {
	p := pep3333raw(t, "--workers", "1", "--timeout", "1s", "--grace", "1s", "--admin", "127.0.0.1:0")
	admin := p.adminAddr(t)
	c := newClient(t)
	resp, body := get(t, c, p.URL("/sleep?s=30"))
	wantStatus(t, resp, body, 504)
	porticotest.WaitFor(t, "timeouts unwound 1", 10*time.Second, func() bool {
		return scrapeMetrics(t, c, admin).value(t, "portico_app_timeouts_total", "app", "app", "outcome", "unwound") == 1
	})
	resp, body = get(t, c, p.URL("/hang"))
	wantStatus(t, resp, body, 504)
	porticotest.WaitFor(t, "timeouts killed 1", 10*time.Second, func() bool {
		return scrapeMetrics(t, c, admin).value(t, "portico_app_timeouts_total", "app", "app", "outcome", "killed") == 1
	})
	porticotest.WaitFor(t, "a replacement worker", 30*time.Second, func() bool {
		s := scrapeMetrics(t, c, admin)
		return s.value(t, "portico_app_workers", "app", "app", "state", "idle") == 1 && s.value(t, "portico_app_workers", "app", "app", "state", "busy") == 0
	})
	resp, body = get(t, c, p.URL("/threads"))
	wantStatus(t, resp, body, 200)
	s := scrapeMetrics(t, c, admin)
	for _, tc := range []struct {
		outcome string
		want    float64
	}{{"unwound", 1}, {"killed", 1}} {
		if got := s.value(t, "portico_app_timeouts_total", "app", "app", "outcome", tc.outcome); got != tc.want {
			t.Errorf("timeouts %s = %v, want %v", tc.outcome, got, tc.want)
		}
	}
	if got := s.value(t, "portico_app_crashes_total", "app", "app"); got != 0 {
		t.Errorf("crashes = %v: a worker killed at its timeout is not a crash", got)
	}
	if got := s.value(t, "portico_http_requests_total", "site", "default", "route", "0", "method", "GET", "code", "5xx"); got != 2 {
		t.Errorf("5xx = %v, want 2", got)
	}
}

// pep3333raw runs the pep3333 test app without its PEP 3333 validator
// (pep3333:raw), which adds /crash and /hang.
func pep3333raw(t *testing.T, args ...string) *proc {
	t.Helper()
	python := needPython(t)
	return startPortico(t, append([]string{"--python", python, "--chdir", repoPath(t, "internal/worker/testdata")}, append(args, "pep3333:raw")...)...)
}

// TestMetricsAcrossReload: a reload that replaces an app's pool (its
// settings changed) keeps the route's and the app's counters going: they
// never go backwards, and count every request once.
func TestMetricsAcrossReload(t *testing.T) {
	python := needPython(t)
	dir := t.TempDir()
	text := func(workers int) string {
		return fmt.Sprintf(`
access_log = "off"
[admin]
addr = "127.0.0.1:0"
[[listener]]
addr = "127.0.0.1:0"
[app.hello]
module = %q
python = %q
workers = %d
[[site]]
hosts = ["default"]
[[site.route]]
path = "/"
name = "web"
app = "hello"
`, repoPath(t, "examples/hello/app.py"), python, workers)
	}
	cfg := writeFile(t, dir, "portico.toml", text(1))
	p := startServe(t, cfg)
	admin := p.adminAddr(t)
	c := newClient(t)
	route := []string{"site", "default", "route", "web", "method", "GET", "code", "2xx"}
	sent := 0
	send := func(n int) {
		t.Helper()
		for range n {
			resp, body := get(t, c, p.URL("/"))
			wantStatus(t, resp, body, 200)
			sent++
		}
	}
	check := func(when string) {
		t.Helper()
		s := scrapeMetrics(t, c, admin)
		if got := s.value(t, "portico_http_requests_total", route...); got != float64(sent) {
			t.Errorf("%s: requests %v, want %d", when, got, sent)
		}
		if got := s.value(t, "portico_app_queue_wait_seconds", "app", "hello"); got != float64(sent) {
			t.Errorf("%s: queue-wait observations %v, want %d", when, got, sent)
		}
	}
	send(10)
	check("before the reload")
	for i, workers := range []int{2, 1, 2} {
		writeFile(t, dir, "portico.toml", text(workers))
		req, _ := http.NewRequest("POST", "http://"+admin+"/reload", nil)
		resp, body := do(t, c, req)
		wantStatus(t, resp, body, 200)
		check(fmt.Sprintf("right after reload %d", i+1))
		send(5)
		check(fmt.Sprintf("after reload %d", i+1))
	}
	// Once the old generations are gone their counts are carried.
	porticotest.WaitFor(t, "the old workers to exit", 30*time.Second, func() bool {
		return len(liveChildren(p.cmd.Process.Pid)) == 2
	})
	check("at the end")
	send(5)
	check("at the very end")
}
