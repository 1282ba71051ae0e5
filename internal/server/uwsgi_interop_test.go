package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"portico/internal/porticotest"
	"portico/internal/uwsgi"
)

// These tests check byte compatibility against the real programs when they
// are installed (Debian: nginx, uwsgi-core, uwsgi-plugin-python3), and skip
// otherwise, or fail with PORTICO_REQUIRE_INTEROP=1 (porticotest.Missing).

// uwUwsgiParams is the uwsgi_params file Debian's nginx ships.
const uwUwsgiParams = "/etc/nginx/uwsgi_params"

// uwStartProcess starts cmd, stops it when the test ends, and waits until
// addr accepts connections.
func uwStartProcess(t *testing.T, cmd *exec.Cmd, addr string, logPath string) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logPath)
			t.Fatalf("%s exited: %s", cmd.Path, log)
		case <-time.After(20 * time.Millisecond): // polling a child process: no channel to wait on
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			t.Fatalf("%s not listening on %s: %s", cmd.Path, addr, log)
		}
	}
}

// uwNginxEcho is what the nginx test's handler reports.
type uwNginxEcho struct {
	Method, Path, RawQuery, RequestURI, Host, RemoteAddr, Proto string
	Header                                                      http.Header
	ContentLength                                               int64
	BodyLen                                                     int
	BodyErr                                                     string
	Env                                                         map[string]string
}

// TestUWSGINginxInterop runs nginx's uwsgi_pass to a TCP and to a unix
// socket.
func TestUWSGINginxInterop(t *testing.T) { uwBothNetworks(t, testUWSGINginxInterop) }

func testUWSGINginxInterop(t *testing.T, network string) {
	porticotest.RequireProgram(t, "nginx")
	if _, err := os.Stat(uwUwsgiParams); err != nil {
		porticotest.Missing(t, "nginx's uwsgi_params: %v", err)
	}

	release := make(chan struct{})
	waiting := make(chan struct{}, 1)
	cancelled := make(chan struct{}, 1)
	srv := &uwServer{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stream":
			io.WriteString(w, "first\n")
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
			io.WriteString(w, "second\n")
			return
		case "/wait":
			waiting <- struct{}{}
			<-r.Context().Done()
			cancelled <- struct{}{}
			return
		}
		e := uwNginxEcho{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, RequestURI: r.RequestURI,
			Host: r.Host, RemoteAddr: r.RemoteAddr, Proto: r.Proto, Header: r.Header, ContentLength: r.ContentLength}
		n, err := io.Copy(io.Discard, r.Body)
		e.BodyLen = int(n)
		if err != nil {
			e.BodyErr = err.Error()
		}
		if pkt, err := uwsgi.AppendRequest(nil, r, uwsgi.EnvironOptions{ContentLength: n}); err == nil {
			e.Env = make(map[string]string)
			uwsgi.ParseVars(pkt[uwsgi.HeaderSize:], func(k, v []byte) error { e.Env[string(k)] = string(v); return nil })
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", "portico")
		json.NewEncoder(w).Encode(e)
	})}
	upstream, logs := uwTestServer(t, network, srv)
	if network == "unix" {
		upstream = "unix:" + upstream
	}

	ngx := porticotest.StartNginx(t, fmt.Sprintf(`
    client_max_body_size 8m;
    server {
        listen {{.Addr}};
        server_name localhost;
        location / {
            include %[2]s;
            uwsgi_param CUSTOM_PARAM custom-value;
            uwsgi_pass %[1]s;
        }
        location /mounted/ {
            include %[2]s;
            uwsgi_param SCRIPT_NAME /mounted;
            uwsgi_modifier1 30;
            uwsgi_pass %[1]s;
        }
        location /stream {
            include %[2]s;
            uwsgi_buffering off;
            uwsgi_pass %[1]s;
        }
    }`, upstream, uwUwsgiParams))
	dir, front := ngx.Prefix, ngx.Addr
	base := "http://" + front
	client := &http.Client{Timeout: 10 * time.Second}

	get := func(t *testing.T, req *http.Request) uwNginxEcho {
		t.Helper()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "portico" {
			t.Fatalf("%d %v %s\nlog: %s", resp.StatusCode, resp.Header, body, logs)
		}
		var e uwNginxEcho
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		return e
	}

	t.Run("GET", func(t *testing.T) {
		req, _ := http.NewRequest("GET", base+"/hello%20world/caf%C3%A9?x=1&y=%20", nil)
		req.Header.Set("X-Custom", "yes")
		req.Header.Set("X_Underscored", "dropped by nginx")
		req.Header.Add("Cookie", "a=1")
		e := get(t, req)
		checks := []struct{ name, got, want string }{
			{"Method", e.Method, "GET"},
			{"Path", e.Path, "/hello world/caf\xc3\xa9"},
			{"RawQuery", e.RawQuery, "x=1&y=%20"},
			{"RequestURI", e.RequestURI, "/hello%20world/caf%C3%A9?x=1&y=%20"},
			{"Proto", e.Proto, "HTTP/1.1"},
			{"X-Custom", e.Header.Get("X-Custom"), "yes"},
			{"Cookie", e.Header.Get("Cookie"), "a=1"},
			{"env PATH_INFO", e.Env["PATH_INFO"], "/hello world/caf\xc3\xa9"},
			{"env REMOTE_ADDR", e.Env["REMOTE_ADDR"], "127.0.0.1"},
			{"env SERVER_PORT", e.Env["SERVER_PORT"], front[strings.LastIndexByte(front, ':')+1:]},
			{"env CUSTOM_PARAM", e.Env["CUSTOM_PARAM"], "custom-value"},
			{"env DOCUMENT_ROOT", e.Env["DOCUMENT_ROOT"], filepath.Join(dir, "html")},
			{"env CONTENT_LENGTH", e.Env["CONTENT_LENGTH"], "0"},
			{"env wsgi.url_scheme", e.Env["wsgi.url_scheme"], "http"},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
			}
		}
		// Debian's uwsgi_params sends HTTP_HOST as $host (no port); the
		// stock one passes the client's Host header.
		if e.Host != "127.0.0.1" && e.Host != front {
			t.Errorf("Host = %q, want 127.0.0.1 or %s", e.Host, front)
		}
		if host, _, err := net.SplitHostPort(e.RemoteAddr); err != nil || host != "127.0.0.1" {
			t.Errorf("RemoteAddr %q", e.RemoteAddr)
		}
		if _, ok := e.Env["HTTP_X_UNDERSCORED"]; ok {
			t.Error("underscored header reached the environ")
		}
	})

	t.Run("bodies", func(t *testing.T) {
		for _, size := range []int{1, 100 << 10, 3 << 20} {
			for _, chunked := range []bool{false, true} {
				data := bytes.Repeat([]byte("x"), size)
				var body io.Reader = bytes.NewReader(data)
				if chunked {
					body = io.MultiReader(body) // unknown length: sent chunked, nginx buffers it
				}
				req, _ := http.NewRequest("POST", base+"/upload", body)
				req.Header.Set("Content-Type", "application/octet-stream")
				e := get(t, req)
				if e.BodyLen != size || e.ContentLength != int64(size) || e.BodyErr != "" ||
					e.Header.Get("Content-Type") != "application/octet-stream" || e.Env["CONTENT_LENGTH"] != strconv.Itoa(size) {
					t.Errorf("size %d chunked=%v: read %d (%s), ContentLength %d, type %q, env %q",
						size, chunked, e.BodyLen, e.BodyErr, e.ContentLength, e.Header.Get("Content-Type"), e.Env["CONTENT_LENGTH"])
				}
			}
		}
	})

	t.Run("modifier1 30 mount", func(t *testing.T) {
		req, _ := http.NewRequest("GET", base+"/mounted/page?q=1", nil)
		e := get(t, req)
		if e.Path != "/page" || e.Env["SCRIPT_NAME"] != "/mounted" || e.Env["PATH_INFO"] != "/page" || e.RequestURI != "/mounted/page?q=1" {
			t.Errorf("Path %q, SCRIPT_NAME %q, PATH_INFO %q, RequestURI %q", e.Path, e.Env["SCRIPT_NAME"], e.Env["PATH_INFO"], e.RequestURI)
		}
	})

	t.Run("HEAD", func(t *testing.T) {
		req, _ := http.NewRequest("HEAD", base+"/x", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "portico" {
			t.Errorf("HEAD: %d %v", resp.StatusCode, resp.Header)
		}
	})

	t.Run("streaming", func(t *testing.T) {
		resp, err := client.Get(base + "/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		if line, err := br.ReadString('\n'); line != "first\n" {
			t.Fatalf("first line %q, %v", line, err)
		}
		close(release)
		if rest, err := io.ReadAll(br); string(rest) != "second\n" {
			t.Errorf("rest %q, %v", rest, err)
		}
	})

	t.Run("client abort cancels the request", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/wait", nil)
		errc := make(chan error, 1)
		go func() {
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		select {
		case <-waiting:
		case <-time.After(5 * time.Second):
			t.Fatal("the request did not reach the handler")
		}
		cancel() // the client goes away; nginx closes its upstream connection
		<-errc
		select {
		case <-cancelled:
		case <-time.After(5 * time.Second):
			t.Error("the handler's context was not cancelled when nginx closed the connection")
		}
	})

	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("warnings while serving nginx:\n%s", logs)
	}
}

// uwUwsgiApp is a WSGI app for uWSGI that answers the environ's strings (and
// the body length) as JSON.
const uwUwsgiApp = `
import json
def application(environ, start_response):
    body = environ["wsgi.input"].read()
    env = {k: v for k, v in environ.items() if isinstance(v, str)}
    env["_body_len"] = str(len(body))
    out = json.dumps(env).encode("utf-8")
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]
`

func TestUWSGIBehindUWSGIInterop(t *testing.T) {
	bin := porticotest.RequireProgram(t, "uwsgi")
	dir := t.TempDir()
	app := filepath.Join(dir, "app.py")
	if err := os.WriteFile(app, []byte(uwUwsgiApp), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := porticotest.FreeAddr(t)
	logPath := filepath.Join(dir, "uwsgi.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "--plugin", "python3", "--socket", addr, "--wsgi-file", app,
		"--processes", "1", "--disable-logging", "--need-app")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = []string{"PATH=/usr/bin:/bin"} // the system Python the plugin was built for
	cmd.Dir = dir
	uwStartProcess(t, cmd, addr, logPath)
	if out, _ := os.ReadFile(logPath); bytes.Contains(out, []byte("unable to load")) {
		porticotest.Missing(t, "uwsgi has no python3 plugin (Debian: uwsgi-plugin-python3): %s", out)
	}

	ask := func(t *testing.T, r *http.Request, opt uwsgi.EnvironOptions, body string) map[string]string {
		t.Helper()
		pkt, err := uwsgi.AppendRequest(nil, r, opt)
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(append(pkt, body...)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), r)
		if err != nil {
			log, _ := os.ReadFile(logPath)
			t.Fatalf("reading uWSGI's response: %v\n%s", err, log)
		}
		defer resp.Body.Close()
		var env map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
			t.Fatal(err)
		}
		return env
	}

	r, _ := http.NewRequest("POST", "http://example.com:8080/app/caf%C3%A9/x?a=1&b=%20", nil)
	r.RequestURI = "/app/caf%C3%A9/x?a=1&b=%20"
	r.RemoteAddr = "[2001:db8::5]:40000"
	r.Header.Set("Content-Type", "text/plain; charset=utf-8")
	r.Header.Set("X-Custom", "yes")
	r.Header.Add("Cookie", "a=1")
	r.Header.Add("Cookie", "b=2")
	body := "hello uwsgi"
	env := ask(t, r, uwsgi.EnvironOptions{ScriptName: "/app", ContentLength: int64(len(body))}, body)
	want := map[string]string{
		"REQUEST_METHOD":  "POST",
		"REQUEST_URI":     "/app/caf%C3%A9/x?a=1&b=%20",
		"QUERY_STRING":    "a=1&b=%20",
		"SCRIPT_NAME":     "/app",
		"PATH_INFO":       "/caf\u00c3\u00a9/x", // UTF-8 bytes, decoded as latin-1 by PEP 3333
		"CONTENT_LENGTH":  strconv.Itoa(len(body)),
		"CONTENT_TYPE":    "text/plain; charset=utf-8",
		"SERVER_NAME":     "example.com",
		"SERVER_PORT":     "8080",
		"SERVER_PROTOCOL": "HTTP/1.1",
		"REMOTE_ADDR":     "2001:db8::5",
		"REMOTE_PORT":     "40000",
		"HTTP_HOST":       "example.com:8080",
		"HTTP_X_CUSTOM":   "yes",
		"HTTP_COOKIE":     "a=1; b=2",
		"wsgi.url_scheme": "http",
		"_body_len":       strconv.Itoa(len(body)),
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("uWSGI's %s = %q, want %q", k, env[k], v)
		}
	}
}
