package uwsgi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests send requests through Transport to Debian's uWSGI (packages
// uwsgi and uwsgi-plugin-python3) running the worker suite's PEP 3333 test
// app, internal/worker/testdata/pep3333.py, wrapped in wsgiref's validator
// (any PEP 3333 slip in the environ shows up as a 500).

// interopMissing skips the test because a program it needs is missing, or
// fails it when PORTICO_REQUIRE_INTEROP=1 (as test.sh sets), so that a
// broken setup cannot pass for a green run.
func interopMissing(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("PORTICO_REQUIRE_INTEROP") == "1" {
		t.Fatalf("PORTICO_REQUIRE_INTEROP=1: "+format, args...)
	}
	t.Skipf(format, args...)
}

// startUWSGI runs uWSGI serving pep3333.py on a uwsgi socket (network "tcp"
// or "unix") until the test ends, and returns the address to dial.
func startUWSGI(t *testing.T, network string) string {
	t.Helper()
	bin, err := exec.LookPath("uwsgi")
	if err != nil {
		interopMissing(t, "uwsgi not installed (Debian: uwsgi, uwsgi-plugin-python3)")
	}
	app, err := filepath.Abs("../worker/testdata/pep3333.py")
	if err != nil {
		t.Fatal(err)
	}
	// A short directory: a Unix socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "portico-uwsgi-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	addr := filepath.Join(dir, "u.sock")
	if network == "tcp" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr().String()
		ln.Close()
	}
	logPath := filepath.Join(dir, "uwsgi.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	readLog := func() string { b, _ := os.ReadFile(logPath); return string(b) }

	cmd := exec.Command(bin, "--plugin", "python3", "--socket", addr, "--wsgi-file", app,
		"--master", "--processes", "2", "--need-app", "--die-on-term", "--disable-logging")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The plugin embeds Debian's python3: give it the system's PATH and no
	// virtualenv or PYTHONPATH of the caller's.
	cmd.Env = []string{"PATH=/usr/bin:/bin", "PORTICO_TEST_MARKS=" + dir}
	cmd.Dir = dir
	// Its own process group, so that the master's workers can be killed
	// with it if it does not stop on SIGTERM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM) // --die-on-term: the master stops its workers
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("uwsgi log:\n%s", readLog())
		}
	})

	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			if log := readLog(); strings.Contains(strings.ToLower(log), "unable to load") {
				interopMissing(t, "uwsgi has no python3 plugin (Debian: uwsgi-plugin-python3):\n%s", log)
			}
			t.Fatalf("uwsgi exited:\n%s", readLog())
		case <-time.After(20 * time.Millisecond): // polling a child process: no event to wait on
		}
		if time.Now().After(deadline) {
			t.Fatalf("uwsgi not listening on %s:\n%s", addr, readLog())
		}
	}
	return addr
}

// uwsgiDo sends req through tr with a bound on the whole exchange and
// returns the response and its body.
func uwsgiDo(t *testing.T, tr *Transport, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(req.Context(), 20*time.Second)
	defer cancel()
	req = req.WithContext(ctx)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return resp, body
}

// uwsgiEnv asks the app's /env for its environ.
func uwsgiEnv(t *testing.T, tr *Transport, req *http.Request) map[string]any {
	t.Helper()
	resp, body := uwsgiDo(t, tr, req)
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: %d %s", req.Method, req.URL, resp.StatusCode, body)
	}
	var env map[string]any
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return env
}

func checkEnv(t *testing.T, env map[string]any, want map[string]any, absent ...string) {
	t.Helper()
	for k, v := range want {
		if got := env[k]; fmt.Sprint(got) != fmt.Sprint(v) {
			t.Errorf("%s = %#v, want %#v", k, got, v)
		}
	}
	for _, k := range absent {
		if v, ok := env[k]; ok {
			t.Errorf("%s = %#v, must be absent", k, v)
		}
	}
}

func TestTransportUWSGIInterop(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			addr := startUWSGI(t, network)
			tr := &Transport{Network: network, Address: addr}

			t.Run("environ", func(t *testing.T) {
				req, _ := http.NewRequest("GET", "http://example.com:8080/env/caf%C3%A9%20x?a=1&b=%20", nil)
				req.RemoteAddr = "192.0.2.7:5555"
				req.Header.Set("X-Custom", "yes")
				req.Header.Set("Proxy", "http://evil")
				req.Header.Set("X_Underscore", "spoof")
				req.Header.Set("Content-Type", "text/x-ignored-on-get")
				req.Header.Add("Cookie", "a=1")
				req.Header.Add("Cookie", "b=2")
				env := uwsgiEnv(t, tr, req)
				checkEnv(t, env, map[string]any{
					"REQUEST_METHOD":    "GET",
					"REQUEST_URI":       "/env/caf%C3%A9%20x?a=1&b=%20",
					"SCRIPT_NAME":       "",
					"PATH_INFO":         "/env/caf\u00c3\u00a9 x", // UTF-8 bytes as latin-1
					"QUERY_STRING":      "a=1&b=%20",
					"CONTENT_LENGTH":    "0",
					"CONTENT_TYPE":      "text/x-ignored-on-get",
					"SERVER_PROTOCOL":   "HTTP/1.1",
					"SERVER_NAME":       "example.com",
					"SERVER_PORT":       "8080",
					"REMOTE_ADDR":       "192.0.2.7",
					"REMOTE_PORT":       "5555",
					"HTTP_HOST":         "example.com:8080",
					"HTTP_X_CUSTOM":     "yes",
					"HTTP_COOKIE":       "a=1; b=2",
					"wsgi.url_scheme":   "http",
					"wsgi.version":      []any{1.0, 0.0},
					"wsgi.multithread":  false,
					"wsgi.multiprocess": true,
					"wsgi.run_once":     false,
				}, "HTTP_PROXY", "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH", "HTTP_X_UNDERSCORE", "HTTPS")
				for _, k := range []string{"wsgi.input", "wsgi.errors", "wsgi.file_wrapper"} {
					if _, ok := env[k]; !ok {
						t.Errorf("%s missing", k)
					}
				}
			})

			t.Run("mounted", func(t *testing.T) {
				tr := &Transport{Network: network, Address: addr, ScriptName: "/mount"}
				req, _ := http.NewRequest("GET", "http://example.com/mount/env/x%2Fy?q=1", nil)
				env := uwsgiEnv(t, tr, req)
				checkEnv(t, env, map[string]any{
					"SCRIPT_NAME":  "/mount",
					"PATH_INFO":    "/env/x/y",
					"QUERY_STRING": "q=1",
					"REQUEST_URI":  "/mount/env/x%2Fy?q=1",
				})
			})

			t.Run("origin https", func(t *testing.T) {
				o := &Origin{RemoteAddr: "203.0.113.9", RemotePort: "4000", Scheme: "https", ServerName: "shop.example", ServerPort: "443"}
				req, _ := http.NewRequestWithContext(WithOrigin(context.Background(), o), "GET", "http://internal/env", nil)
				env := uwsgiEnv(t, tr, req)
				checkEnv(t, env, map[string]any{
					"wsgi.url_scheme": "https",
					"HTTPS":           "on",
					"REMOTE_ADDR":     "203.0.113.9",
					"REMOTE_PORT":     "4000",
					"SERVER_NAME":     "shop.example",
					"SERVER_PORT":     "443",
				})
			})

			t.Run("POST environ", func(t *testing.T) {
				req, _ := http.NewRequest("POST", "http://example.com/env", strings.NewReader("a=1&b=2"))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				env := uwsgiEnv(t, tr, req)
				checkEnv(t, env, map[string]any{
					"REQUEST_METHOD": "POST",
					"CONTENT_LENGTH": "7",
					"CONTENT_TYPE":   "application/x-www-form-urlencoded",
				})
			})

			t.Run("request bodies", func(t *testing.T) {
				for _, size := range []int{0, 1, 1000, 64 << 10, 300 << 10, 3 << 20} {
					data := make([]byte, size)
					rand.Read(data)
					req, _ := http.NewRequest("POST", "http://example.com/echo", bytes.NewReader(data))
					resp, body := uwsgiDo(t, tr, req)
					var got struct {
						Length, Read int
						Sha256       string
						Extra        string
					}
					if err := json.Unmarshal(body, &got); err != nil {
						t.Fatalf("size %d: %v: %d %s", size, err, resp.StatusCode, body)
					}
					sum := sha256.Sum256(data)
					if resp.StatusCode != 200 || got.Length != size || got.Read != size || got.Sha256 != hex.EncodeToString(sum[:]) || got.Extra != "" {
						t.Errorf("size %d: %d %+v", size, resp.StatusCode, got)
					}
				}
			})

			// uWSGI's wsgi.input ignores readline's size hint, so /lines
			// (which checks it) is not asked; iteration is.
			t.Run("input iteration", func(t *testing.T) {
				req, _ := http.NewRequest("POST", "http://example.com/iterate", strings.NewReader("a\nb\nc"))
				_, body := uwsgiDo(t, tr, req)
				var got struct{ Lines []string }
				json.Unmarshal(body, &got)
				if fmt.Sprint(got.Lines) != fmt.Sprint([]string{"a\n", "b\n", "c"}) {
					t.Errorf("got %s", body)
				}
			})

			// Not /exc-info: uWSGI 2.0.21 fails start_response with
			// exc_info under wsgiref's validator (a SystemError), whatever
			// the client.
			t.Run("responses", func(t *testing.T) {
				for _, c := range []struct {
					path   string
					status int
					body   string
				}{
					{"/write", 200, "from write; from iterable"},
					{"/generator?n=3", 200, "chunk 0\nchunk 1\nchunk 2\n"},
					{"/status", 418, "teapot"},
					{"/headers", 200, "ok"},
					{"/nowhere", 404, "not found: /nowhere"},
				} {
					req, _ := http.NewRequest("GET", "http://example.com"+c.path, nil)
					resp, body := uwsgiDo(t, tr, req)
					if resp.StatusCode != c.status || string(body) != c.body {
						t.Errorf("%s: got %d %q, want %d %q", c.path, resp.StatusCode, body, c.status, c.body)
					}
					if c.path == "/headers" {
						if got := resp.Header.Values("Set-Cookie"); len(got) != 2 || got[0] != "a=1" || got[1] != "b=2" ||
							resp.Header.Get("X-One") != "1" || resp.Header.Get("Content-Type") != "text/plain" {
							t.Errorf("headers: %v", resp.Header)
						}
					}
					if c.path == "/status" && resp.Status != "418 I'm a teapot" {
						t.Errorf("status line %q", resp.Status)
					}
				}
			})

			t.Run("3MiB response", func(t *testing.T) {
				req, _ := http.NewRequest("GET", fmt.Sprintf("http://example.com/big?size=%d", 3<<20), nil)
				resp, body := uwsgiDo(t, tr, req)
				want := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16)
				if resp.StatusCode != 200 || resp.ContentLength != 3<<20 || !bytes.Equal(body, want) {
					t.Errorf("%d, Content-Length %d, %d bytes", resp.StatusCode, resp.ContentLength, len(body))
				}
			})

			t.Run("cancel a slow response", func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				// Four chunks a second apart: the head comes with the first.
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://example.com/generator?n=4&delay=1", nil)
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				readErr := make(chan error, 1)
				go func() {
					_, err := io.ReadAll(resp.Body)
					readErr <- err
				}()
				cancel()
				select {
				case err := <-readErr:
					if !errors.Is(err, context.Canceled) {
						t.Errorf("reading after cancel: %v, want context.Canceled", err)
					}
				case <-time.After(2 * time.Second):
					t.Error("cancelling did not unblock the body read")
				}
			})
		})
	}
}
