package main

import (
	"bufio"
	"bytes"
	"encoding/json"
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

// echoSeen is what testdata/upstream/echo.py answers.
type echoSeen struct {
	Name       string `json:"name"`
	PID        int    `json:"pid"`
	Method     string `json:"method"`
	Path       string `json:"path"`
	ScriptName string `json:"script_name"`
	Query      string `json:"query"`
	Host       string `json:"host"`
	RemoteAddr string `json:"remote_addr"`
	XFF        string `json:"xff"`
	XFP        string `json:"xfp"`
	XFH        string `json:"xfh"`
	Connection string `json:"connection"`
	Proxy      string `json:"proxy"`
	BodyLen    int    `json:"body_len"`
	BodyMD5    string `json:"body_sha256"`
}

// gunicorn is one gunicorn server running testdata/upstream/echo.py, in its
// own process group so that a test can kill it whole.
type gunicorn struct {
	cmd  *exec.Cmd
	addr string // host:port, or the socket path
	done chan struct{}
}

// startGunicorn serves echo.py on bind (host:port or unix:/path) with two
// sync workers; env adds to the environment (ECHO_NAME=...).
func startGunicorn(t testing.TB, bind string, env ...string) *gunicorn {
	t.Helper()
	return startGunicornIn(t, "", bind, env...)
}

// startGunicornIn is startGunicorn in network namespace ns ("": this one).
func startGunicornIn(t testing.TB, ns, bind string, env ...string) *gunicorn {
	t.Helper()
	bin := porticotest.RequireProgram(t, "gunicorn")
	g := &gunicorn{done: make(chan struct{})}
	args := []string{bin, "--bind", bind, "--workers", "2", "--chdir", repoPath(t, "cmd/portico/testdata/upstream"),
		"--graceful-timeout", "1", "--log-level", "warning", "echo:app"}
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	g.cmd = exec.Command(args[0], args[1:]...)
	g.cmd.Env = append(os.Environ(), env...)
	var out porticotest.Buffer
	g.cmd.Stdout, g.cmd.Stderr = &out, &out
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := g.cmd.Start(); err != nil {
		t.Fatalf("starting gunicorn: %v", err)
	}
	go func() { _ = g.cmd.Wait(); close(g.done) }()
	t.Cleanup(func() {
		g.kill()
		if t.Failed() {
			t.Logf("gunicorn %s output:\n%s", bind, out.String())
		}
	})
	network, addr := "tcp", bind
	if path, ok := strings.CutPrefix(bind, "unix:"); ok {
		network, addr = "unix", path
	}
	g.addr = addr
	if err := porticotest.WaitDial(network, addr, 30*time.Second, g.done); err != nil {
		t.Fatalf("gunicorn on %s not ready: %v\n%s", bind, err, out.String())
	}
	return g
}

// kill kills the whole gunicorn group and waits for the master.
func (g *gunicorn) kill() {
	_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
	<-g.done
}

func echo(t testing.TB, c *http.Client, req *http.Request) (*http.Response, echoSeen) {
	t.Helper()
	resp, body := do(t, c, req)
	var seen echoSeen
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(body, &seen); err != nil {
			t.Fatalf("%s %s: decoding %q: %v", req.Method, req.URL, body, err)
		}
	}
	return resp, seen
}

// Portico in front of gunicorn over TCP and over a unix socket: the path
// and query go as they came, the forwarding headers are set, hop-by-hop and
// Proxy headers are dropped, bodies arrive whole both ways.
func TestProxyGunicorn(t *testing.T) {
	tcp := startGunicorn(t, porticotest.FreeAddr(t), "ECHO_NAME=tcp")
	sock := filepath.Join(t.TempDir(), "g.sock")
	startGunicorn(t, "unix:"+sock, "ECHO_NAME=unix")
	p := startPortico(t, "--proxy", "/tcp=http://"+tcp.addr, "--proxy", "/unix=http+unix://"+sock)
	c := newClient(t)
	for _, tc := range []struct{ prefix, name, host string }{{"/tcp", "tcp", tcp.addr}, {"/unix", "unix", "localhost"}} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", p.URL(tc.prefix+"/a%20b/c?x=1&y=%2F"), nil)
			req.Header.Set("Connection", "X-Hop")
			req.Header.Set("X-Hop", "1")
			req.Header.Set("Proxy", "http://evil:1")
			resp, seen := echo(t, c, req)
			wantStatus(t, resp, nil, 200)
			if seen.Name != tc.name || seen.Path != tc.prefix+"/a b/c" || seen.Query != "x=1&y=%2F" || seen.Method != "GET" {
				t.Errorf("upstream saw %+v", seen)
			}
			if seen.Host != tc.host || seen.XFH != p.HTTPAddr || seen.XFF != "127.0.0.1" || seen.XFP != "http" || seen.Proxy != "" {
				t.Errorf("forwarding: host %q xfh %q xff %q xfp %q proxy %q", seen.Host, seen.XFH, seen.XFF, seen.XFP, seen.Proxy)
			}
			if got := resp.Header.Values("Set-Cookie"); len(got) != 2 {
				t.Errorf("Set-Cookie %q", got)
			}
			data, sum := randomData(t, 3<<20)
			req, _ = http.NewRequest("POST", p.URL(tc.prefix+"/upload"), bytes.NewReader(data))
			resp, seen = echo(t, c, req)
			wantStatus(t, resp, nil, 200)
			if seen.BodyLen != len(data) || seen.BodyMD5 != sum {
				t.Errorf("upstream got %d bytes (md5 %s), want %d (%s)", seen.BodyLen, seen.BodyMD5, len(data), sum)
			}
		})
	}
	// Nothing listens: 502 at once, logged with the cause.
	dead := startPortico(t, "--proxy", "/=http://127.0.0.1:1")
	resp, body := get(t, c, dead.URL("/"))
	wantStatus(t, resp, body, 502)
	dead.waitLog(t, "connection refused", 5*time.Second)
}

// Three gunicorns behind one Portico; one is killed in the middle of a
// load of GETs: no client request fails, and the dead one leaves rotation
// at its first failure.
func TestProxyFailover(t *testing.T) {
	var gs []*gunicorn
	var ups []string
	for i := range 3 {
		g := startGunicorn(t, porticotest.FreeAddr(t), fmt.Sprintf("ECHO_NAME=g%d", i))
		gs = append(gs, g)
		ups = append(ups, fmt.Sprintf("%q", "http://"+g.addr))
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`access_log = "off"
[[listener]]
addr = "127.0.0.1:0"
[[site]]
hosts = ["default"]
[[site.route]]
path = "/"
proxy = { upstreams = [%s], policy = "round_robin", retries = 2, fail_timeout = "30s" }
`, strings.Join(ups, ", "))
	path := filepath.Join(dir, "portico.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startCommand(t, "serve", "-c", path)
	c := newClient(t)

	const clients, perClient = 8, 150
	var ok, failed atomic.Int64
	var served sync.Map // name → count after the kill
	var killed atomic.Bool
	killAt := make(chan struct{})
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perClient {
				req, _ := http.NewRequest("GET", p.URL("/x"), nil)
				resp, err := c.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					t.Logf("status %d: %s", resp.StatusCode, body)
					continue
				}
				var seen echoSeen
				_ = json.Unmarshal(body, &seen)
				if killed.Load() {
					n, _ := served.LoadOrStore(seen.Name, new(atomic.Int64))
					n.(*atomic.Int64).Add(1)
				}
				if ok.Add(1) == clients*perClient/4 {
					close(killAt)
				}
			}
		}()
	}
	<-killAt
	killStart := time.Now()
	gs[1].kill()
	killed.Store(true)
	p.waitLog(t, "upstream down", 10*time.Second)
	t.Logf("g1 left rotation %v after the kill", time.Since(killStart).Round(time.Millisecond))
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed", failed.Load(), clients*perClient)
	}
	if n, ok := served.Load("g1"); ok && n.(*atomic.Int64).Load() > int64(clients) {
		t.Errorf("the killed upstream answered %d requests after its kill", n.(*atomic.Int64).Load())
	}
	if strings.Count(p.Log(), "upstream down") != 1 {
		t.Errorf("the state change was logged %d times, want once:\n%s", strings.Count(p.Log(), "upstream down"), p.Log())
	}
}

// A WebSocket through Portico's own HTTP/1.1 front and the proxy: the
// upgrade is relayed, then bytes flow both ways.
func TestProxyWebSocket(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || r.Header.Get("Sec-Websocket-Key") == "" {
			http.Error(w, "not a websocket handshake", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", r.Header.Get("Sec-Websocket-Key")+"-ok")
		brw.Flush()
		buf := make([]byte, 1024)
		for {
			n, err := brw.Read(buf)
			if n > 0 {
				conn.Write(append([]byte("echo:"), buf[:n]...))
			}
			if err != nil {
				return
			}
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	// Through the access log's recorder (the default), and through the
	// metrics' writer (an admin listener, no access log): both must keep
	// the connection's Hijack reachable.
	for name, extra := range map[string][]string{
		"access log": nil,
		"metrics":    {"--admin", "unix:" + filepath.Join(t.TempDir(), "admin.sock"), "--access-log", "off"},
	} {
		t.Run(name, func(t *testing.T) {
			p := startPortico(t, append([]string{"--proxy", "/ws=http://" + l.Addr().String()}, extra...)...)
			conn, err := net.Dial("tcp", p.HTTPAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "GET /ws/chat HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n\r\n")
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 101 || resp.Header.Get("Sec-Websocket-Accept") != "abc-ok" || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
				t.Fatalf("handshake answer %d %v", resp.StatusCode, resp.Header)
			}
			for _, msg := range []string{"hello", "again"} {
				io.WriteString(conn, msg)
				want := "echo:" + msg
				buf := make([]byte, len(want))
				conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(br, buf); err != nil || string(buf) != want {
					t.Fatalf("got %q, %v; want %q", buf, err, want)
				}
			}
		})
	}
}

// startUWSGIEcho runs Debian's uWSGI serving echo.py on a uwsgi-protocol
// socket (bind: host:port or a socket path) until the test ends.
func startUWSGIEcho(t testing.TB, bind string) {
	t.Helper()
	bin := porticotest.RequireProgram(t, "uwsgi")
	cmd := exec.Command(bin, "--plugin", "python3", "--socket", bind, "--chdir", repoPath(t, "cmd/portico/testdata/upstream"),
		"--wsgi-file", "echo.py", "--callable", "app", "--master", "--processes", "2", "--need-app", "--die-on-term", "--disable-logging")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "ECHO_NAME=uwsgi"}
	var out porticotest.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		if t.Failed() {
			t.Logf("uwsgi output:\n%s", out.String())
		}
	})
	network := "tcp"
	if strings.HasPrefix(bind, "/") {
		network = "unix"
	}
	if err := porticotest.WaitDial(network, bind, 30*time.Second, done); err != nil {
		t.Fatalf("uwsgi on %s not ready: %v\n%s", bind, err, out.String())
	}
}

// Portico in front of Debian's uWSGI (nginx's uwsgi_pass): the route's
// prefix is the app's SCRIPT_NAME, the client address and bodies arrive.
func TestProxyUWSGI(t *testing.T) {
	tcp := porticotest.FreeAddr(t)
	startUWSGIEcho(t, tcp)
	dir, err := os.MkdirTemp("", "pt-uwsgi-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "u.sock")
	startUWSGIEcho(t, sock)
	p := startPortico(t, "--proxy", "/shop=uwsgi://"+tcp, "--proxy", "/unix=uwsgi+unix://"+sock)
	c := newClient(t)
	for _, prefix := range []string{"/shop", "/unix"} {
		req, _ := http.NewRequest("GET", p.URL(prefix+"/cart/a%20b?x=1"), nil)
		req.Header.Set("X-Forwarded-For", "6.6.6.6") // from an untrusted client: dropped
		resp, seen := echo(t, c, req)
		wantStatus(t, resp, nil, 200)
		if seen.ScriptName != prefix || seen.Path != "/cart/a b" || seen.Query != "x=1" || seen.RemoteAddr != "127.0.0.1" || seen.Host != p.HTTPAddr {
			t.Errorf("%s: uWSGI app saw %+v", prefix, seen)
		}
		if seen.XFF != "" {
			t.Errorf("%s: a spoofed X-Forwarded-For reached the app: %q", prefix, seen.XFF)
		}
		data, sum := randomData(t, 2<<20)
		req, _ = http.NewRequest("POST", p.URL(prefix+"/upload"), bytes.NewReader(data))
		resp, seen = echo(t, c, req)
		wantStatus(t, resp, nil, 200)
		if seen.BodyLen != len(data) || seen.BodyMD5 != sum || seen.Method != "POST" {
			t.Errorf("%s: uWSGI app got %d bytes (%s), want %d (%s)", prefix, seen.BodyLen, seen.BodyMD5, len(data), sum)
		}
		// A chunked request body has no length up front: spooled first.
		req, _ = http.NewRequest("POST", p.URL(prefix+"/upload"), io.MultiReader(bytes.NewReader(data)))
		resp, seen = echo(t, c, req)
		wantStatus(t, resp, nil, 200)
		if seen.BodyLen != len(data) {
			t.Errorf("%s: chunked body: got %d bytes", prefix, seen.BodyLen)
		}
	}
}

// The admin listener shows each proxy route's upstreams (GET /upstreams),
// and /readyz turns 503 naming a route whose every upstream is down.
func TestProxyAdminUpstreams(t *testing.T) {
	g := startGunicorn(t, porticotest.FreeAddr(t), "ECHO_NAME=up")
	dead := porticotest.FreeAddr(t) // nothing listens
	dir := t.TempDir()
	cfg := writeFile(t, dir, "portico.toml", `
access_log = "off"
[admin]
addr = "unix:admin.sock"
[[listener]]
addr = "127.0.0.1:0"
[[site]]
hosts = ["default"]
[[site.route]]
path = "/live"
proxy = { upstreams = ["http://`+g.addr+`"] }
[[site.route]]
path = "/gone"
proxy = { upstreams = ["http://`+dead+`"], fail_timeout = "1m" }
`)
	p := startServe(t, cfg)
	sock := filepath.Join(dir, "admin.sock")
	admin := unixClient(t, sock)
	c := newClient(t)

	resp, body := get(t, admin, "http://admin/readyz")
	wantStatus(t, resp, body, http.StatusOK)
	resp, body = get(t, c, p.URL("/live/x"))
	wantStatus(t, resp, body, http.StatusOK)
	resp, body = get(t, c, p.URL("/gone/x"))
	wantStatus(t, resp, body, http.StatusBadGateway)

	resp, body = get(t, admin, "http://admin/upstreams")
	wantStatus(t, resp, body, http.StatusOK)
	var ups struct {
		Routes []struct {
			Path      string
			Upstreams []struct {
				Name     string
				Healthy  bool
				Requests int64
				Failures int64
			}
		}
	}
	if err := json.Unmarshal(body, &ups); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if len(ups.Routes) != 2 || len(ups.Routes[0].Upstreams) != 1 || len(ups.Routes[1].Upstreams) != 1 {
		t.Fatalf("/upstreams: %s", body)
	}
	live, gone := ups.Routes[0].Upstreams[0], ups.Routes[1].Upstreams[0]
	if !live.Healthy || live.Requests != 1 || live.Failures != 0 {
		t.Errorf("live upstream: %+v", live)
	}
	if gone.Healthy || gone.Failures != 1 || gone.Name != "http://"+dead {
		t.Errorf("dead upstream: %+v", gone)
	}
	resp, body = get(t, admin, "http://admin/readyz")
	wantStatus(t, resp, body, http.StatusServiceUnavailable)
	if !strings.Contains(string(body), "/gone") || strings.Contains(string(body), "/live") {
		t.Errorf("/readyz: %s", body)
	}
}
