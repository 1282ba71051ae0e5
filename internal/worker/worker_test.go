package worker

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"portico/internal/porticotest"
	"portico/internal/uwsgi"
)

type testPool struct {
	*Pool
	srv   *httptest.Server
	log   *porticotest.LogRecorder
	marks string
}

// python is the interpreter the workers run: the tests skip without one,
// or fail with PORTICO_REQUIRE_INTEROP=1.
func python(t *testing.T) string {
	t.Helper()
	return porticotest.RequireProgram(t, "python3")
}

// newTestPool starts real Python workers running testdata/pep3333.py behind
// an httptest server.
func newTestPool(t *testing.T, opt Options) *testPool {
	t.Helper()
	marks := t.TempDir()
	logs := porticotest.NewLogRecorder()
	if opt.App == "" {
		opt.App = "pep3333:application"
	}
	opt.Python = python(t)
	opt.Dir, _ = filepath.Abs("testdata")
	opt.Env = append(opt.Env, "PORTICO_TEST_MARKS="+marks)
	opt.Logger = logs.Logger()
	if opt.Workers == 0 {
		opt.Workers = 2
	}
	pl, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pl.Start(ctx); err != nil {
		t.Fatalf("starting pool: %v\n%s", err, logs)
	}
	srv := httptest.NewServer(pl)
	tp := &testPool{Pool: pl, srv: srv, log: logs, marks: marks}
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := pl.Stop(ctx); err != nil {
			t.Errorf("stopping pool: %v", err)
		}
		if t.Failed() {
			t.Logf("pool log:\n%s", logs)
		}
	})
	return tp
}

func (tp *testPool) get(t *testing.T, path string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(tp.srv.URL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", path, err)
	}
	return resp, body
}

func (tp *testPool) env(t *testing.T, path string, hdr map[string]string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest("GET", tp.srv.URL+path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var env map[string]any
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		t.Fatal(err)
	}
	return env
}

func (tp *testPool) pid(t *testing.T) float64 {
	return tp.env(t, "/env", nil)["pid"].(float64)
}

// tryPid asks for the serving worker's pid; ok is false on any failure.
func (tp *testPool) tryPid() (pid float64, ok bool) {
	resp, err := http.Get(tp.srv.URL + "/env")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var env map[string]any
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&env) != nil {
		return 0, false
	}
	return env["pid"].(float64), true
}

func (tp *testPool) marked(name string) bool {
	_, err := os.Stat(filepath.Join(tp.marks, name))
	return err == nil
}

// markLines returns the lines of the app's mark file name (see mark in
// testdata/pep3333.py).
func (tp *testPool) markLines(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(tp.marks, name))
	if err != nil {
		t.Fatalf("reading mark %s: %v", name, err)
	}
	return strings.Fields(string(b))
}

// waitMarked waits for the app to create the mark file name: a request
// with ?enter=name is in the app.
func (tp *testPool) waitMarked(t *testing.T, name string) {
	t.Helper()
	porticotest.WaitFor(t, "the app's mark "+name, 10*time.Second, func() bool { return tp.marked(name) })
}

// mark creates the mark file name, for the app to see (/wait?go=name).
func (tp *testPool) mark(t *testing.T, name string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(tp.marks, name), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitingLen is the number of requests waiting for a slot: in the queue,
// or written ahead on a busy slot.
func (pl *Pool) waitingLen() int {
	return pl.pp.Queued() + pl.aheadLen()
}

// idleLen is the number of idle slots in the pool.
func (pl *Pool) idleLen() int {
	n := 0
	for _, u := range pl.pp.Upstreams() {
		if s := u.Transport.(slotTransport).s; s.state.Load() == slotIdle && u.InFlight() == 0 {
			n++
		}
	}
	return n
}

// idleSlot returns an idle slot of the pool, or nil.
func (pl *Pool) idleSlot() *slot {
	for _, u := range pl.pp.Upstreams() {
		if s := u.Transport.(slotTransport).s; s.state.Load() == slotIdle {
			return s
		}
	}
	return nil
}

// aheadLen is the number of requests written ahead on busy slots.
func (pl *Pool) aheadLen() int {
	n := 0
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for p := range pl.procs {
		for _, s := range p.slots {
			if s.next.Load() != nil {
				n++
			}
		}
	}
	return n
}

func TestEnviron(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 2})
	env := tp.env(t, "/env/caf%C3%A9%20x?a=1&b=%20", map[string]string{
		"X-Custom":     "yes",
		"Proxy":        "http://evil",
		"X_Underscore": "spoof",
		"Content-Type": "text/x-ignored-on-get",
	})
	want := map[string]any{
		"REQUEST_METHOD":    "GET",
		"SCRIPT_NAME":       "",
		"PATH_INFO":         "/env/caf\u00c3\u00a9 x", // UTF-8 bytes as latin-1
		"QUERY_STRING":      "a=1&b=%20",
		"CONTENT_LENGTH":    "0",
		"SERVER_PROTOCOL":   "HTTP/1.1",
		"SERVER_NAME":       "127.0.0.1",
		"REMOTE_ADDR":       "127.0.0.1",
		"HTTP_X_CUSTOM":     "yes",
		"wsgi.url_scheme":   "http",
		"wsgi.multithread":  false,
		"wsgi.multiprocess": true,
		"wsgi.run_once":     false,
		"CONTENT_TYPE":      "text/x-ignored-on-get",
	}
	for k, v := range want {
		if got := env[k]; got != v {
			t.Errorf("%s = %#v, want %#v", k, got, v)
		}
	}
	for _, k := range []string{"HTTP_PROXY", "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH", "HTTP_X_UNDERSCORE"} {
		if _, ok := env[k]; ok {
			t.Errorf("%s present, must not be", k)
		}
	}
	for _, k := range []string{"SERVER_PORT", "REMOTE_PORT", "HTTP_HOST", "wsgi.errors", "wsgi.file_wrapper", "REQUEST_URI"} {
		if _, ok := env[k]; !ok {
			t.Errorf("%s missing", k)
		}
	}
	// A NUL in the path travels in standard uwsgi vars (see compactVars).
	if got := tp.env(t, "/env/a%00b", nil)["PATH_INFO"]; got != "/env/a\x00b" {
		t.Errorf("PATH_INFO with %%00 = %q", got)
	}
	if v, _ := env["wsgi.version"].([]any); len(v) != 2 || v[0] != 1.0 || v[1] != 0.0 {
		t.Errorf("wsgi.version = %v", env["wsgi.version"])
	}
}

func TestMultithreadFlag(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1, Threads: 3})
	env := tp.env(t, "/env", nil)
	if env["wsgi.multithread"] != true || env["wsgi.multiprocess"] != false {
		t.Errorf("multithread=%v multiprocess=%v, want true false", env["wsgi.multithread"], env["wsgi.multiprocess"])
	}
}

func TestRequestBodies(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1, MaxBody: 64 << 20, BodyMemory: 256 << 10})
	for _, size := range []int{0, 1, 1000, 64 << 10, 300 << 10, 3 << 20} {
		for _, chunked := range []bool{false, true} {
			t.Run(fmt.Sprintf("%d-chunked=%v", size, chunked), func(t *testing.T) {
				data := make([]byte, size)
				for i := range data {
					data[i] = byte(rand.IntN(256))
				}
				var body io.Reader = bytes.NewReader(data)
				if chunked {
					body = io.MultiReader(bytes.NewReader(data)) // hides the length: sent chunked
				}
				req, _ := http.NewRequest("POST", tp.srv.URL+"/echo", body)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var got struct {
					Length, Read int
					Sha256       string
					Extra        string
				}
				if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
					t.Fatal(err)
				}
				sum := sha256.Sum256(data)
				if got.Length != size || got.Read != size || got.Sha256 != hex.EncodeToString(sum[:]) || got.Extra != "" {
					t.Errorf("got %+v, want length %d", got, size)
				}
			})
		}
	}
}

func TestInputLines(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1})
	for _, size := range []int{0, 400 << 10} { // BytesIO and the bounded reader
		pad := strings.Repeat("p", size)
		body := "first line\nabcdef\nthird\n" + pad + "\nlast"
		resp, err := http.Post(tp.srv.URL+"/lines", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			First, Limited string
			Rest           []string
		}
		json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		want := []string{"def\n", "third\n", pad + "\n", "last"}
		if got.First != "first line\n" || got.Limited != "abc" || fmt.Sprint(got.Rest) != fmt.Sprint(want) {
			t.Errorf("size %d: got first=%q limited=%q rest=%d lines", size, got.First, got.Limited, len(got.Rest))
		}
		resp, err = http.Post(tp.srv.URL+"/iterate", "text/plain", strings.NewReader("a\nb\nc"))
		if err != nil {
			t.Fatal(err)
		}
		var it struct{ Lines []string }
		json.NewDecoder(resp.Body).Decode(&it)
		resp.Body.Close()
		if fmt.Sprint(it.Lines) != fmt.Sprint([]string{"a\n", "b\n", "c"}) {
			t.Errorf("iteration gave %q", it.Lines)
		}
	}
}

func TestResponses(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1})
	cases := []struct {
		path   string
		status int
		body   string
	}{
		{"/write", 200, "from write; from iterable"},
		{"/close?name=c1", 200, "ab"},
		{"/generator?n=3", 200, "chunk 0\nchunk 1\nchunk 2\n"},
		{"/status", 418, "teapot"},
		{"/exc-info", 500, "custom error page"},
		{"/error-before", 500, "500 Internal Server Error\n"},
		{"/headers", 200, "ok"},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			resp, body := tp.get(t, c.path)
			if resp.StatusCode != c.status || string(body) != c.body {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, c.status, c.body)
			}
			if c.path == "/headers" {
				if got := resp.Header.Values("Set-Cookie"); len(got) != 2 || resp.Header.Get("X-One") != "1" {
					t.Errorf("headers: %v", resp.Header)
				}
			}
		})
	}
	if !tp.marked("c1") {
		t.Error("close() of the iterable was not called")
	}
	if !strings.Contains(tp.log.String(), "boom before start_response") {
		t.Error("the traceback of the app error is not in the log")
	}
}

func TestAppMisbehaviour(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1, App: "pep3333:raw"})
	for _, path := range []string{"/bad-status", "/no-start"} {
		resp, _ := tp.get(t, path)
		if resp.StatusCode != 500 {
			t.Errorf("%s: status %d, want 500", path, resp.StatusCode)
		}
	}
	// An error after the response started: never a clean 200.
	resp, err := http.Get(tp.srv.URL + "/error-after")
	if err == nil {
		body, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && rerr == nil {
			t.Errorf("error after start gave a clean 200 %q", body)
		}
	}
	// And the worker serves on.
	if resp, _ := tp.get(t, "/status"); resp.StatusCode != 418 {
		t.Errorf("after errors: %d", resp.StatusCode)
	}
}

func TestStreaming(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1})
	start := time.Now()
	resp, err := http.Get(tp.srv.URL + "/generator?n=4&delay=0.3")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	first := time.Since(start)
	if err != nil || line != "chunk 0\n" {
		t.Fatalf("first chunk %q %v", line, err)
	}
	rest, _ := io.ReadAll(br)
	total := time.Since(start)
	if string(rest) != "chunk 1\nchunk 2\nchunk 3\n" {
		t.Errorf("rest %q", rest)
	}
	if first > total-500*time.Millisecond {
		t.Errorf("first chunk after %v of %v: not streamed", first, total)
	}
	if resp.ContentLength != -1 {
		t.Errorf("streamed response has Content-Length %d", resp.ContentLength)
	}
}

func TestLargeBodies(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1, MaxBody: 64 << 20})
	const size = 50 << 20
	resp, err := http.Get(fmt.Sprintf("%s/big?size=%d", tp.srv.URL, size))
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != size {
		t.Errorf("download: %d bytes, %v", n, err)
	}
	data := bytes.Repeat([]byte("0123456789"), size/10)
	resp, err = http.Post(tp.srv.URL+"/echo", "application/octet-stream", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ Read int }
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if got.Read != len(data) {
		t.Errorf("upload: app read %d of %d", got.Read, len(data))
	}
	// Past max-body: 413, and the server serves on.
	resp, err = http.Post(tp.srv.URL+"/echo", "application/octet-stream", bytes.NewReader(make([]byte, 65<<20)))
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Errorf("oversized body: %d, want 413", resp.StatusCode)
		}
	}
	req, _ := http.NewRequest("POST", tp.srv.URL+"/echo", io.MultiReader(bytes.NewReader(make([]byte, 65<<20))))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Errorf("oversized chunked body: %d, want 413", resp.StatusCode)
		}
	}
	if resp, _ := tp.get(t, "/status"); resp.StatusCode != 418 {
		t.Errorf("after 413: %d", resp.StatusCode)
	}
}

func TestFileWrapper(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1})
	resp, body := tp.get(t, "/file?size=300000&skip=100")
	want := append(bytes.Repeat(func() []byte {
		b := make([]byte, 256)
		for i := range b {
			b[i] = byte(i)
		}
		return b
	}(), 300000/256), bytes.Repeat([]byte("x"), 300000%256)...)[100:]
	if resp.StatusCode != 200 || !bytes.Equal(body, want) {
		t.Errorf("file: %d, %d bytes, want %d", resp.StatusCode, len(body), len(want))
	}
}

func TestCrashGives502AndReplacement(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1, App: "pep3333:raw"})
	before := tp.pid(t)
	resp, _ := tp.get(t, "/crash")
	if resp.StatusCode != 502 {
		t.Errorf("crash: %d, want 502", resp.StatusCode)
	}
	porticotest.WaitFor(t, "a replacement worker", 10*time.Second, func() bool { return tp.Ready() })
	var after float64
	porticotest.WaitFor(t, "a request to succeed after the crash", 10*time.Second, func() bool {
		var ok bool
		after, ok = tp.tryPid()
		return ok
	})
	if after == before {
		t.Error("same pid after a crash")
	}
	if !strings.Contains(tp.log.String(), "worker died") {
		t.Error("no log line about the crash")
	}
}

func TestCrashLoopBacksOff(t *testing.T) {
	if got := []time.Duration{backoff(1), backoff(2), backoff(3), backoff(4), backoff(30)}; got[0] != 0 || got[1] != 100*time.Millisecond || got[2] != 200*time.Millisecond || got[3] != 400*time.Millisecond || got[4] != 10*time.Second {
		t.Errorf("backoff = %v", got)
	}
}

func TestTimeoutInterruptsAndKeepsWorker(t *testing.T) {
	for _, threads := range []int{1, 2} {
		t.Run(fmt.Sprintf("threads=%d", threads), func(t *testing.T) {
			tp := newTestPool(t, Options{Workers: 1, Threads: threads, Timeout: time.Second, Grace: 3 * time.Second})
			before := tp.pid(t)
			path := "/sleep?s=30&name=finally"
			if threads > 1 {
				// A thread other than the main one is interrupted between
				// bytecodes (a busy loop); the main one even inside sleep().
				path = "/spin?s=30&name=finally"
			}
			start := time.Now()
			var wg sync.WaitGroup
			for range threads {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, _ := tp.get(t, path)
					if resp.StatusCode != 504 {
						t.Errorf("status %d, want 504", resp.StatusCode)
					}
				}()
			}
			wg.Wait()
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("504 after %v, want about 1s", d)
			}
			porticotest.WaitFor(t, "the finally block to run", 5*time.Second, func() bool { return tp.marked("finally") })
			porticotest.WaitFor(t, "the slot back", 5*time.Second, func() bool { return tp.idleLen() == threads })
			if after := tp.pid(t); after != before {
				t.Errorf("worker replaced (pid %v -> %v); it should live on", before, after)
			}
			// One record per request, once it unwound, with where it was.
			porticotest.WaitFor(t, "the timeouts' records", 5*time.Second, func() bool {
				return strings.Count(tp.log.String(), "outcome=unwound") == threads
			})
			for _, line := range strings.Split(tp.log.String(), "\n") {
				if strings.Contains(line, "outcome=unwound") && (!strings.Contains(line, "level=ERROR") || !strings.Contains(line, "status=504") || !strings.Contains(line, `RequestTimeout"`) || !strings.Contains(line, "pep3333.py")) {
					t.Errorf("timeout record without its level, status or traceback: %s", line)
				}
			}
		})
	}
}

func TestTimeoutKillsStuckWorker(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1, App: "pep3333:raw", Timeout: 500 * time.Millisecond, Grace: 500 * time.Millisecond})
	before := tp.pid(t)
	resp, _ := tp.get(t, "/hang")
	if resp.StatusCode != 504 {
		t.Errorf("status %d, want 504", resp.StatusCode)
	}
	porticotest.WaitFor(t, "a replacement", 10*time.Second, func() bool {
		after, ok := tp.tryPid()
		return ok && after != before
	})
	if !tp.marked("hang-interrupted") {
		t.Error("the interrupt was not raised in the app")
	}
	if !strings.Contains(tp.log.String(), "did not unwind") {
		t.Error("no log line about killing the worker")
	}
}

func TestMaxRequestsRecyclesWithoutFailures(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 2, MaxRequests: 5})
	pids := map[float64]bool{}
	// Replacements start in the background while the old workers serve on
	// (no request waits for a recycle), so keep asking until they show up;
	// tp.pid fails the test on any non-200.
	porticotest.WaitFor(t, "four distinct workers", 20*time.Second, func() bool {
		pids[tp.pid(t)] = true
		return len(pids) >= 4
	})
	if !strings.Contains(tp.log.String(), "max-requests") {
		t.Error("no recycle logged")
	}
}

func TestMaxRSSRecycles(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1, MaxRSS: 80 << 20})
	resp, body := tp.get(t, "/memory?mb=120")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var m struct{ Pid float64 }
	if err := json.Unmarshal(body, &m); err != nil || m.Pid == 0 {
		t.Fatalf("/memory: %v: %s", err, body)
	}
	porticotest.WaitFor(t, "the worker to be recycled", 15*time.Second, func() bool { return tp.pid(t) != m.Pid })
}

func TestReloadUnderLoadNoFailures(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 2, Threads: 2})
	before := tp.pid(t)
	var failures, total atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Get(tp.srv.URL + "/sleep?s=0.05")
				total.Add(1)
				if err != nil {
					failures.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failures.Add(1)
				}
			}
		}()
	}
	// Each reload starts and ends under load: a few more requests sent
	// before and after it.
	loaded := func() {
		t.Helper()
		n := total.Load() + 16
		porticotest.WaitFor(t, "16 more requests", 20*time.Second, func() bool { return total.Load() >= n })
	}
	for range 3 {
		loaded()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if err := tp.Reload(ctx); err != nil {
			t.Errorf("reload: %v", err)
		}
		cancel()
	}
	loaded()
	close(stop)
	wg.Wait()
	if failures.Load() != 0 {
		t.Errorf("%d of %d requests failed during reloads", failures.Load(), total.Load())
	}
	if tp.pid(t) == before {
		t.Error("same worker after reloads")
	}
}

func TestReloadWithBrokenAppKeepsOld(t *testing.T) {
	dir := t.TempDir()
	src := "def application(e, s):\n    s('200 OK', [('Content-Type', 'text/plain')])\n    return [b'v1']\n"
	os.WriteFile(filepath.Join(dir, "reloadme.py"), []byte(src), 0o644)
	pl, err := New(Options{App: "reloadme", Python: python(t), Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := pl.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer pl.Stop(ctx)
	srv := httptest.NewServer(pl)
	defer srv.Close()
	os.WriteFile(filepath.Join(dir, "reloadme.py"), []byte("import nonexistent_module_xyz\n"), 0o644)
	err = pl.Reload(ctx)
	var ie *ImportError
	if !errors.As(err, &ie) || !strings.Contains(ie.Traceback, "nonexistent_module_xyz") {
		t.Fatalf("reload of a broken app: %v", err)
	}
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "v1" {
		t.Errorf("after a failed reload: %q", body)
	}
}

func TestImportErrorStopsStart(t *testing.T) {
	pl, err := New(Options{App: "no_such_module_abc:app", Python: python(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = pl.Start(context.Background())
	defer pl.Stop(context.Background())
	var ie *ImportError
	if !errors.As(err, &ie) || !strings.Contains(ie.Traceback, "ModuleNotFoundError") {
		t.Fatalf("Start = %v, want an ImportError with the traceback", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestOverloadSheds503(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1, QueueSize: 2, QueueTimeout: 300 * time.Millisecond})
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[int]int{}
	retryAfter := true
	start := time.Now()
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(tp.srv.URL + "/sleep?s=0.5")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			mu.Lock()
			counts[resp.StatusCode]++
			if resp.StatusCode == 503 && resp.Header.Get("Retry-After") == "" {
				retryAfter = false
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if counts[200] < 1 || counts[503] < 5 || counts[200]+counts[503] != 10 {
		t.Errorf("statuses %v: want a few 200 and the rest 503", counts)
	}
	if !retryAfter {
		t.Error("503 without Retry-After")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("overload took %v: requests waited unbounded", d)
	}
}

func TestSlowClientDoesNotHoldWorker(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1})
	// A client that asks for 20 MiB and reads none of it.
	conn, err := net.Dial("tcp", tp.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /big?size=%d HTTP/1.1\r\nHost: x\r\n\r\n", 20<<20)
	// The only worker must be free again soon.
	porticotest.WaitFor(t, "the worker to be free", 10*time.Second, func() bool { return tp.idleLen() == 1 })
	resp, _ := tp.get(t, "/status")
	if resp.StatusCode != 418 {
		t.Errorf("%d", resp.StatusCode)
	}
}

// TestSlowUploadDoesNotHoldWorker: a request whose body is still coming
// holds no worker: with the only worker's queue bounded, a request sent
// once the server has begun reading the slow body is served at once.
func TestSlowUploadDoesNotHoldWorker(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1, QueueTimeout: 5 * time.Second})
	bodyStarted := make(chan struct{})
	var once sync.Once
	// The pool behind a handler that marks the upload's first body read.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/echo" {
			r.Body = readHook{r.Body, func() { once.Do(func() { close(bodyStarted) }) }}
		}
		tp.ServeHTTP(w, r)
	}))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\npartial")
	select {
	case <-bodyStarted:
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not start reading the upload")
	}
	// Held by the upload, the worker would leave this one queued until
	// QueueTimeout, then 503.
	resp, err := http.Get(srv.URL + "/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 418 {
		t.Errorf("GET /status during a slow upload: %d, want 418", resp.StatusCode)
	}
}

// readHook calls read after each Read of its reader that returned data.
type readHook struct {
	io.ReadCloser
	read func()
}

func (h readHook) Read(p []byte) (int, error) {
	n, err := h.ReadCloser.Read(p)
	if n > 0 {
		h.read()
	}
	return n, err
}

func TestWSGIErrorsLogged(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1})
	tp.get(t, "/stderr")
	porticotest.WaitFor(t, "the wsgi.errors line in the log", 5*time.Second, func() bool {
		return strings.Contains(tp.log.String(), "hello from wsgi.errors")
	})
	for _, line := range strings.Split(tp.log.String(), "\n") {
		if strings.Contains(line, "hello from wsgi.errors") && (!strings.Contains(line, "worker=") || !strings.Contains(line, "stream=stderr")) {
			t.Errorf("line not attributed to its worker: %s", line)
		}
	}
}

func TestThreadsRunConcurrently(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1, Threads: 4})
	start := time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, _ := tp.get(t, "/sleep?s=0.5"); resp.StatusCode != 200 {
				t.Errorf("%d", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("4 requests of 0.5s on 4 threads took %v", d)
	}
}

// TestStopFinishesInFlight: Pool.Stop lets the request a worker holds
// finish (200 and its whole body), then the worker exits before Stop
// returns.
func TestStopFinishesInFlight(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1})
	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Get(tp.srv.URL + "/wait?go=go&enter=inflight")
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{resp.StatusCode, string(b), err}
	}()
	tp.waitMarked(t, "inflight") // the request is in the app, until "go"
	pid, err := strconv.Atoi(tp.markLines(t, "inflight")[0])
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		stopped <- tp.Stop(ctx)
	}()
	// Stop has retired the worker (the pool is no longer ready) while the
	// request still runs; only then may the request end.
	porticotest.WaitFor(t, "Stop to retire the worker", 10*time.Second, func() bool { return !tp.Ready() })
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a request was in flight", err)
	default:
	}
	tp.mark(t, "go")
	if r := <-done; r.err != nil || r.status != 200 || r.body != "went" {
		t.Errorf("in-flight request across Stop: %d %q %v, want 200 \"went\"", r.status, r.body, r.err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Stop: %v", err)
	}
	// The worker is gone: reaped, and no process of the pool left.
	if proc, err := os.FindProcess(pid); err == nil {
		if err := proc.Signal(syscall.Signal(0)); err == nil {
			t.Errorf("worker %d still running after Stop", pid)
		}
	}
	tp.mu.Lock()
	left := len(tp.procs)
	tp.mu.Unlock()
	if left != 0 {
		t.Errorf("%d worker processes left after Stop", left)
	}
}

func TestEnvPassedToWorkers(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1, Env: []string{"PORTICO_TEST_VALUE=hello=world"}})
	if _, body := tp.get(t, "/osenv?k=PORTICO_TEST_VALUE"); string(body) != "hello=world" {
		t.Errorf("env: %q", body)
	}
}

func TestWatchReloadsOnChange(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "watched.py")
	write := func(v string) {
		src := "def application(e, s):\n    s('200 OK', [('Content-Type', 'text/plain')])\n    return [b'" + v + "']\n"
		if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("v1")
	pl, err := New(Options{App: "watched", Python: python(t), Dir: dir, Watch: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := pl.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer pl.Stop(ctx)
	srv := httptest.NewServer(pl)
	defer srv.Close()
	body := func() string {
		resp, err := http.Get(srv.URL)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := body(); got != "v1" {
		t.Fatalf("before: %q", got)
	}
	time.Sleep(1100 * time.Millisecond) // a distinct mtime
	write("v2")
	porticotest.WaitFor(t, "the workers to pick up the change", 15*time.Second, func() bool { return body() == "v2" })
}

func TestCompactVars(t *testing.T) {
	pkt, err := uwsgi.AppendRequest(nil, httptest.NewRequest("GET", "/a%20b?x=1", nil), uwsgi.EnvironOptions{ContentLength: 3})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	h, _ := uwsgi.ParseHeader(pkt)
	uwsgi.ParseVars(pkt[4:4+int(h.Size)], func(k, v []byte) error {
		want = append(want, string(k), string(v))
		return nil
	})
	pkt = append(pkt, "abc"...)
	pkt = pkt[:compactVars(pkt)]
	h, _ = uwsgi.ParseHeader(pkt)
	got := strings.Split(string(pkt[4:4+int(h.Size)]), "\x00")
	if h.Modifier2 != varsNUL || strings.Join(got, "|") != strings.Join(want, "|") || string(pkt[4+int(h.Size):]) != "abc" {
		t.Errorf("compact form: modifier2 %d, %q, body %q; want %q", h.Modifier2, got, pkt[4+int(h.Size):], want)
	}
	// A NUL in a value (a %00 in the path) keeps the standard form.
	nul, _ := uwsgi.AppendRequest(nil, httptest.NewRequest("GET", "/a%00b", nil), uwsgi.EnvironOptions{})
	orig := append([]byte(nil), nul...)
	if n := compactVars(nul); n != len(orig) || !bytes.Equal(nul, orig) {
		t.Error("a packet with a NUL in a value was rewritten")
	}
}

func TestInternalRedirectFreesWorker(t *testing.T) {
	type call struct {
		status int
		target string
		other  string
	}
	calls := make(chan call, 1)
	tp := newTestPool(t, Options{Workers: 1, InternalRedirect: func(w http.ResponseWriter, r *http.Request, status int, h http.Header) {
		calls <- call{status, h.Get("X-Accel-Redirect"), h.Get("X-Other")}
		w.WriteHeader(299)
	}})
	resp, _ := tp.get(t, "/accel?to=/protected/a.pdf")
	if resp.StatusCode != 299 {
		t.Errorf("status %d, want the redirect handler's 299", resp.StatusCode)
	}
	if c := <-calls; c.status != 200 || c.target != "/protected/a.pdf" || c.other != "kept" {
		t.Errorf("redirect got %+v", c)
	}
	if tp.idleLen() != 1 {
		t.Error("the slot was not freed")
	}
}

func TestErrorMidStreamWithUnreadBody(t *testing.T) {
	tp := newTestPool(t, Options{Workers: 1, App: "pep3333:raw"})
	for range 2 {
		resp, err := http.Post(tp.srv.URL+"/error-later", "application/octet-stream", bytes.NewReader(make([]byte, 1<<20)))
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil {
				t.Errorf("an error mid-stream gave a complete response: %d %q", resp.StatusCode, body)
			}
		}
		// The slot must be in step: the next request on the only worker works.
		if resp, body := tp.get(t, "/status"); resp.StatusCode != 418 || string(body) != "teapot" {
			t.Fatalf("after the error: %d %q", resp.StatusCode, body)
		}
	}
}

// schedPolicies reads the scheduling policy (field 41 of /proc/PID/task/TID/stat)
// of every thread of pid.
func schedPolicies(t *testing.T, pid int) []int {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, task := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			continue // the thread exited
		}
		s := string(data)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // fields[0] is field 3
		policy, err := strconv.Atoi(fields[41-3])
		if err != nil {
			t.Fatalf("stat of %d/%s: %v", pid, task.Name(), err)
		}
		out = append(out, policy)
	}
	return out
}

// TestWorkerSchedPolicy: workers run under SCHED_BATCH (3), every thread of
// them (threads inherit it from the main thread, set before the import),
// unless NormalSched keeps SCHED_OTHER (0).
func TestWorkerSchedPolicy(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("scheduling policies are Linux's")
	}
	for _, tc := range []struct {
		normal bool
		want   int
	}{{false, 3}, {true, 0}} {
		t.Run(fmt.Sprintf("normal=%v", tc.normal), func(t *testing.T) {
			tp := newTestPool(t, Options{Workers: 1, Threads: 3, NormalSched: tc.normal})
			pid := int(tp.pid(t))
			// worker.py starts its request threads after it says ready.
			var got []int
			porticotest.WaitFor(t, "the worker's 3 request threads", 5*time.Second, func() bool {
				got = schedPolicies(t, pid)
				return len(got) >= 3
			})
			for _, p := range got {
				if p != tc.want {
					t.Fatalf("thread policies %v, want all %d", got, tc.want)
				}
			}
			if got := schedPolicies(t, os.Getpid()); got[0] != 0 {
				t.Errorf("portico's own policy is %d, want 0 (only the workers change)", got[0])
			}
		})
	}
}
