//go:build linux

// End-to-end tests of `portico check` and `portico serve -c FILE`.

package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	cryptorand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startServe runs `portico serve -c configPath` like startPortico runs
// `portico run`: it waits for msg=ready, records the listener addresses,
// and registers the same cleanup (SIGTERM, exit 0, no process left, no
// data race).
func startServe(t testing.TB, configPath string) *proc {
	t.Helper()
	return startCommand(t, "serve", "-c", configPath)
}

// writeFile writes text to dir/name and returns the path.
func writeFile(t testing.TB, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// runCheck runs `portico check -c file` and returns its output and exit code.
func runCheck(t testing.TB, file string) (string, int) {
	t.Helper()
	out, err := exec.Command(porticoBin, "check", "-c", file).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "app.py", "")
	good := writeFile(t, dir, "good.toml", `
[[listener]]
addr = "127.0.0.1:0"
[app.web]
module = "app.py"
[[site]]
hosts = ["default"]
[[site.route]]
path = "/"
app = "web"
`)
	out, code := runCheck(t, good)
	if code != 0 || out != good+": OK\n" {
		t.Errorf("check of a good config: exit %d, output %q; want 0 and %q", code, out, good+": OK\n")
	}
	bad := writeFile(t, dir, "bad.toml", `
[[listener]]
addr = "127.0.0.1:0"
[app.web]
module = "app.py"
workers = 0
[[site]]
hosts = ["default"]
[[site.route]]
path = "/"
app = "web"
colour = "blue"
`)
	out, code = runCheck(t, bad)
	if code != 1 {
		t.Errorf("check of a bad config: exit %d, want 1", code)
	}
	for _, want := range []string{bad + ":6: app.web.workers: must be at least 1", bad + ":12: site[0].route[0].colour: unknown key"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if _, code := runCheck(t, filepath.Join(dir, "missing.toml")); code != 1 {
		t.Errorf("check of a missing file: exit %d, want 1", code)
	}
}

// TestServeMounted serves two apps and the other handlers from one file,
// and checks SCRIPT_NAME and PATH_INFO from inside the WSGI app mounted at
// /shop.
func TestServeMounted(t *testing.T) {
	python := needPython(t)
	dir := t.TempDir()
	writeFile(t, dir, "static/hello.txt", "hello static\n")
	cfg := writeFile(t, dir, "portico.toml", `
access_log = "off"

[[listener]]
addr = "127.0.0.1:0"

[app.shop]
module = "`+repoPath(t, "internal/worker/testdata/pep3333.py")+`:app"
python = "`+python+`"
workers = 1
env = { PYTHONDONTWRITEBYTECODE = "1" }

[app.hello]
module = "`+repoPath(t, "examples/hello/app.py")+`"
python = "`+python+`"
workers = 1

[[site]]
hosts = ["default"]

[[site.route]]
path = "/shop"
app = "shop"

[[site.route]]
path = "/static"
static = { dir = "static" }
headers_add = { X-Served-By = "static" }

[[site.route]]
path = "=/healthz"
respond = { status = 200, body = "ok\n", headers = { Cache-Control = "no-store" } }

[[site.route]]
path = "/old"
redirect = { to = "/shop$uri", status = 301 }

[[site]]
hosts = ["hello.test"]

[[site.route]]
path = "/"
app = "hello"
`)
	if out, code := runCheck(t, cfg); code != 0 {
		t.Fatalf("check: exit %d\n%s", code, out)
	}
	p := startServe(t, cfg)
	c := newClient(t)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	for _, tc := range []struct{ path, script, info string }{
		{"/shop/env", "/shop", "/env"},
		{"/shop/env/a%20b", "/shop", "/env/a b"},
	} {
		resp, body := get(t, c, p.URL(tc.path))
		wantStatus(t, resp, body, http.StatusOK)
		var env map[string]any
		if err := json.Unmarshal(body, &env); err != nil {
			t.Fatalf("GET %s: %v: %s", tc.path, err, body)
		}
		if env["SCRIPT_NAME"] != tc.script || env["PATH_INFO"] != tc.info {
			t.Errorf("GET %s: SCRIPT_NAME=%q PATH_INFO=%q, want %q and %q", tc.path, env["SCRIPT_NAME"], env["PATH_INFO"], tc.script, tc.info)
		}
	}

	resp, body := get(t, c, p.URL("/static/hello.txt"))
	wantStatus(t, resp, body, http.StatusOK)
	if string(body) != "hello static\n" || resp.Header.Get("X-Served-By") != "static" {
		t.Errorf("static: %q, headers %v", body, resp.Header)
	}
	resp, body = get(t, c, p.URL("/healthz"))
	wantStatus(t, resp, body, http.StatusOK)
	if string(body) != "ok\n" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("respond: %q, headers %v", body, resp.Header)
	}
	resp, body = get(t, c, p.URL("/old/x?y=1"))
	wantStatus(t, resp, body, http.StatusMovedPermanently)
	if loc := resp.Header.Get("Location"); loc != "/shop/old/x?y=1" {
		t.Errorf("redirect Location %q", loc)
	}
	resp, body = get(t, c, p.URL("/nothing"))
	wantStatus(t, resp, body, http.StatusNotFound)

	req, _ := http.NewRequest("GET", p.URL("/any"), nil)
	req.Host = "Hello.Test:80"
	resp, body = do(t, c, req)
	wantStatus(t, resp, body, http.StatusOK)
	if string(body) != "Hello, World!\n" {
		t.Errorf("hello.test: %q", body)
	}
}

// TestServeReload reloads the config (SIGHUP) under concurrent load: no
// request fails, the unchanged app keeps its workers, the changed one gets
// new ones, and a reload to an invalid config keeps the old one serving.
func TestServeReload(t *testing.T) {
	python := needPython(t)
	dir := t.TempDir()
	pep := repoPath(t, "internal/worker/testdata/pep3333.py")
	config := func(version, bEnv string) string {
		return `
access_log = "off"
[[listener]]
addr = "127.0.0.1:0"
[app.a]
module = "` + pep + `:app"
python = "` + python + `"
workers = 1
threads = 2
reload_code = false
[app.b]
module = "` + pep + `:app"
python = "` + python + `"
workers = 1
threads = 2
env = { X = "` + bEnv + `" }
[[site]]
hosts = ["default"]
[[site.route]]
path = "/a"
app = "a"
[[site.route]]
path = "/b"
app = "b"
[[site.route]]
path = "=/v"
respond = { body = "` + version + `" }
`
	}
	cfg := writeFile(t, dir, "portico.toml", config("one", "1"))
	p := startServe(t, cfg)
	c := newClient(t)
	envOf := func(path string) map[string]any {
		t.Helper()
		resp, body := get(t, c, p.URL(path))
		wantStatus(t, resp, body, http.StatusOK)
		var env map[string]any
		if err := json.Unmarshal(body, &env); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return env
	}
	version := func() string {
		t.Helper()
		resp, body := get(t, c, p.URL("/v"))
		wantStatus(t, resp, body, http.StatusOK)
		return string(body)
	}
	pidA, pidB := envOf("/a/env")["pid"], envOf("/b/env")["pid"]

	// Load: a few clients in a loop until stop is closed.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var done int
	var failures []string
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lc := newClient(t)
			paths := []string{"/a/env", "/b/env", "/v"}
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := lc.Get(p.URL(paths[n%len(paths)]))
				var msg string
				if err != nil {
					msg = err.Error()
				} else {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						msg = resp.Status
					}
				}
				mu.Lock()
				done++
				if msg != "" {
					failures = append(failures, paths[n%len(paths)]+": "+msg)
				}
				mu.Unlock()
			}
		}()
	}

	writeFile(t, dir, "portico.toml", config("two", "2"))
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "msg=reloaded", readyTimeout)
	if v := version(); v != "two" {
		t.Errorf("after reload /v = %q, want two", v)
	}
	if got := envOf("/a/env"); got["pid"] != pidA {
		t.Errorf("app a did not change (and has reload_code = false) but its worker did: pid %v, was %v", got["pid"], pidA)
	}
	if got := envOf("/b/env"); got["pid"] == pidB {
		t.Errorf("app b changed (env) but kept its worker, pid %v", pidB)
	}

	writeFile(t, dir, "portico.toml", config("three", "2")+"\nbogus = 1\n")
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "reload failed", readyTimeout)
	if !strings.Contains(p.Log(), "bogus: unknown key") {
		t.Errorf("the invalid config's error is not logged")
	}
	if v := version(); v != "two" {
		t.Errorf("after an invalid reload /v = %q, want two (the old config)", v)
	}

	close(stop)
	wg.Wait()
	if done < 10 || len(failures) > 0 {
		t.Errorf("%d requests during the reloads, %d failed: %q", done, len(failures), failures)
	}
}

// TestAdmin checks the admin listener (a unix socket): health, readiness,
// the running config, reload; and that on SIGTERM readiness turns false
// while the listeners still serve, before they close.
func TestAdmin(t *testing.T) {
	python := needPython(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	text := func(body string) string {
		return `
access_log = "off"
[admin]
addr = "unix:admin.sock"
shutdown_delay = "2s"
[[listener]]
addr = "127.0.0.1:0"
[app.hello]
module = "` + repoPath(t, "examples/hello/app.py") + `"
python = "` + python + `"
workers = 1
[[site]]
hosts = ["default"]
[[site.route]]
path = "/"
app = "hello"
[[site.route]]
path = "=/v"
respond = { body = "` + body + `" }
`
	}
	cfg := writeFile(t, dir, "portico.toml", text("one"))
	p := startServe(t, cfg)
	admin := unixClient(t, sock)
	c := newClient(t)

	for path, want := range map[string]string{"/healthz": "ok\n", "/readyz": "ready\n"} {
		resp, body := get(t, admin, "http://admin"+path)
		wantStatus(t, resp, body, http.StatusOK)
		if string(body) != want {
			t.Errorf("GET %s = %q, want %q", path, body, want)
		}
	}
	resp, body := get(t, admin, "http://admin/config")
	wantStatus(t, resp, body, http.StatusOK)
	var running struct {
		Apps []struct{ Name, Module string }
	}
	if err := json.Unmarshal(body, &running); err != nil || len(running.Apps) != 1 || running.Apps[0].Name != "hello" {
		t.Errorf("GET /config: %v %s", err, body)
	}

	writeFile(t, dir, "portico.toml", text("two"))
	req, _ := http.NewRequest("POST", "http://admin/reload", nil)
	resp, body = do(t, admin, req)
	wantStatus(t, resp, body, http.StatusOK)
	if resp, body := get(t, c, p.URL("/v")); string(body) != "two" {
		t.Errorf("after POST /reload, /v = %d %q, want two", resp.StatusCode, body)
	}
	writeFile(t, dir, "portico.toml", text("three")+"[[site.route]]\npath = 7\n")
	req, _ = http.NewRequest("POST", "http://admin/reload", nil)
	resp, body = do(t, admin, req)
	wantStatus(t, resp, body, http.StatusUnprocessableEntity)
	if !strings.Contains(string(body), "path: want a string") {
		t.Errorf("POST /reload of an invalid config: %q", body)
	}
	// A setting that only a restart applies is refused, not ignored.
	writeFile(t, dir, "portico.toml", "log_level = \"debug\"\n"+text("four"))
	req, _ = http.NewRequest("POST", "http://admin/reload", nil)
	resp, body = do(t, admin, req)
	wantStatus(t, resp, body, http.StatusUnprocessableEntity)
	if !strings.Contains(string(body), "log_level changed; restart portico to apply it") {
		t.Errorf("POST /reload of a new log_level: %q", body)
	}
	if resp, body := get(t, c, p.URL("/v")); string(body) != "two" {
		t.Errorf("after a refused reload, /v = %d %q, want two", resp.StatusCode, body)
	}

	// SIGTERM: /readyz turns 503 while the HTTP listener still answers.
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "stopping: not ready", 5*time.Second)
	resp, body = get(t, admin, "http://admin/readyz")
	wantStatus(t, resp, body, http.StatusServiceUnavailable)
	resp, body = get(t, c, p.URL("/v"))
	wantStatus(t, resp, body, http.StatusOK)
	if err := p.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	logText := p.Log()
	if i, j := strings.Index(logText, "stopping: not ready"), strings.Index(logText, "stopping: finishing in-flight"); i < 0 || j < i {
		t.Errorf("readiness did not turn false before the listeners closed")
	}
}

// exampleTree copies examples/ to a temporary directory and creates the
// files a deployment creates (collectstatic's output, media, a
// certificate), so that
// the example configs can be checked and served as they are written.
func exampleTree(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	copyTree(t, repoPath(t, "examples"), dst, "__pycache__", "staticfiles", "db.sqlite3")
	for _, d := range []string{"djangoproject/staticfiles", "djangoproject/media"} {
		if err := os.MkdirAll(filepath.Join(dst, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeCert(t, filepath.Join(dst, "configs", "django", "tls"), 1)
	return dst
}

// TestExampleConfigs checks every examples/configs/*/portico.toml.
func TestExampleConfigs(t *testing.T) {
	needPython(t)
	tree := exampleTree(t)
	files, _ := filepath.Glob(filepath.Join(tree, "configs", "*", "portico.toml"))
	if len(files) < 3 {
		t.Fatalf("want at least 3 example configs, found %q", files)
	}
	for _, f := range files {
		t.Run(filepath.Base(filepath.Dir(f)), func(t *testing.T) {
			out, code := runCheck(t, f)
			if code != 0 || out != f+": OK\n" {
				t.Errorf("portico check -c %s: exit %d\n%s", f, code, out)
			}
		})
	}
}

// TestExampleTwoApps serves examples/configs/twoapps: one app per host, a
// 404 for other hosts.
func TestExampleTwoApps(t *testing.T) {
	needPython(t, "flask")
	tree := exampleTree(t)
	cfg := filepath.Join(tree, "configs", "twoapps", "portico.toml")
	text, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	text = []byte(strings.Replace(string(text), `addr = "127.0.0.1:8000"`, `addr = "127.0.0.1:0"`, 1))
	if err := os.WriteFile(cfg, text, 0o644); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, cfg)
	c := newClient(t)
	for _, tc := range []struct {
		host   string
		status int
		want   string
	}{
		{"hello.localhost", 200, "Hello, World!"},
		{"www.hello.localhost:8000", 200, "Hello, World!"},
		{"flask.localhost", 200, "<"},
		{"other.example", 404, "unknown host"},
	} {
		req, _ := http.NewRequest("GET", p.URL("/"), nil)
		req.Host = tc.host
		resp, body := do(t, c, req)
		wantStatus(t, resp, body, tc.status)
		if !strings.Contains(string(body), tc.want) {
			t.Errorf("Host %s: %q, want it to contain %q", tc.host, truncate(body, 200), tc.want)
		}
	}
}

// writeCert writes a self-signed certificate for 127.0.0.1 and localhost
// (cert.pem, key.pem in dir) and returns it.
func writeCert(t *testing.T, dir string, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), cryptorand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "portico test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(cryptorand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "cert.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, dir, "key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestServeTLS serves HTTPS with HTTP/2, checks that the app sees https,
// and that a reload picks up a renewed certificate on the same listener.
func TestServeTLS(t *testing.T) {
	python := needPython(t)
	dir := t.TempDir()
	cert := writeCert(t, dir, 1)
	cfg := writeFile(t, dir, "portico.toml", `
access_log = "off"
[[listener]]
addr = "127.0.0.1:0"
[[listener]]
addr = "127.0.0.1:0"
tls = { cert = "cert.pem", key = "key.pem" }
[app.shop]
module = "`+repoPath(t, "internal/worker/testdata/pep3333.py")+`:app"
python = "`+python+`"
workers = 1
[[site]]
hosts = ["default"]
[[site.route]]
path = "/shop"
app = "shop"
`)
	p := startServe(t, cfg)
	var httpsAddr string
	for _, line := range strings.Split(p.Log(), "\n") {
		if kv := logfmt(line); kv["msg"] == "listening" && kv["proto"] == "https" {
			httpsAddr = kv["addr"]
		}
	}
	if httpsAddr == "" {
		t.Fatal("no msg=listening proto=https line")
	}
	client := func(ca *x509.Certificate) *http.Client {
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 30 * time.Second}
	}
	resp, body := get(t, client(cert), "https://"+httpsAddr+"/shop/env")
	wantStatus(t, resp, body, http.StatusOK)
	if resp.Proto != "HTTP/2.0" {
		t.Errorf("protocol %s, want HTTP/2.0", resp.Proto)
	}
	var env map[string]any
	if err := json.Unmarshal(body, &env); err != nil || env["wsgi.url_scheme"] != "https" || env["SCRIPT_NAME"] != "/shop" {
		t.Errorf("environ over TLS: %v wsgi.url_scheme=%v SCRIPT_NAME=%v", err, env["wsgi.url_scheme"], env["SCRIPT_NAME"])
	}

	renewed := writeCert(t, dir, 2)
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "msg=reloaded", readyTimeout)
	resp, body = get(t, client(renewed), "https://"+httpsAddr+"/shop/env")
	wantStatus(t, resp, body, http.StatusOK)
	if got := resp.TLS.PeerCertificates[0].SerialNumber.Int64(); got != 2 {
		t.Errorf("after reload the certificate has serial %d, want 2 (the renewed one)", got)
	}
}

// TestExampleDjango serves examples/configs/django over HTTPS: Django pages,
// collectstatic's files and the health check without Python.
func TestExampleDjango(t *testing.T) {
	python := needPython(t, "django")
	tree := exampleTree(t)
	manage(t, python, filepath.Join(tree, "djangoproject"), "collectstatic", "--noinput")
	cfg := filepath.Join(tree, "configs", "django", "portico.toml")
	data, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(data), `addr = "127.0.0.1:8443"`, `addr = "127.0.0.1:0"`, 1)
	text = strings.Replace(text, "[app.django]\n", "[app.django]\npython = \""+python+"\"\n", 1)
	// startServe needs a plain HTTP listener to report; the example has TLS only.
	text += "\n[[listener]]\naddr = \"127.0.0.1:0\"\n"
	writeFile(t, filepath.Dir(cfg), "portico.toml", text)
	p := startServe(t, cfg)
	var httpsAddr string
	for _, line := range strings.Split(p.Log(), "\n") {
		if kv := logfmt(line); kv["msg"] == "listening" && kv["proto"] == "https" {
			httpsAddr = kv["addr"]
		}
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	base := "https://" + httpsAddr

	resp, body := get(t, c, base+"/env")
	wantStatus(t, resp, body, http.StatusOK)
	if !strings.Contains(string(body), `"https"`) || resp.Proto != "HTTP/2.0" {
		t.Errorf("GET /env over %s: %s", resp.Proto, truncate(body, 300))
	}
	resp, body = get(t, c, base+"/static/demo/style.css")
	wantStatus(t, resp, body, http.StatusOK)
	if resp.Header.Get("Cache-Control") != "public, max-age=86400" {
		t.Errorf("static Cache-Control %q", resp.Header.Get("Cache-Control"))
	}
	resp, body = get(t, c, base+"/healthz")
	wantStatus(t, resp, body, http.StatusOK)
	if string(body) != "ok\n" {
		t.Errorf("/healthz: %q", body)
	}
}

// TestExampleNginxUWSGI serves examples/configs/nginx-uwsgi, the config
// that replaces an nginx.conf + uwsgi.ini pair, and checks what each of its
// nginx locations did.
func TestExampleNginxUWSGI(t *testing.T) {
	python := needPython(t, "django")
	tree := exampleTree(t)
	writeFile(t, tree, "djangoproject/staticfiles/site.css", "body{}\n")
	cfg := filepath.Join(tree, "configs", "nginx-uwsgi", "portico.toml")
	text, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(text), `addr = ":8000"`, `addr = "127.0.0.1:0"`, 1)
	s = strings.Replace(s, "[app.mysite]\n", "[app.mysite]\npython = \""+python+"\"\n", 1)
	s = strings.Replace(s, "workers = 4 ", "workers = 1 ", 1)
	if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, cfg)
	c := newClient(t)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, tc := range []struct {
		host, path string
		status     int
		want       string
	}{
		{"www.example.com", "/healthz", 200, "ok\n"},
		{"www.example.com", "/static/site.css", 200, "body{}\n"},
		{"www.example.com", "/static/missing.css", 404, ""},
		{"www.example.com", "/index.php", 404, ""},
		{"www.example.com", "/api/hello", 200, "{"},
		{"other.example.org", "/x?y=1", 301, ""},
	} {
		req, _ := http.NewRequest("GET", p.URL(tc.path), nil)
		req.Host = tc.host
		resp, body := do(t, c, req)
		if resp.StatusCode != tc.status || !strings.HasPrefix(string(body), tc.want) {
			t.Errorf("%s%s: %d %q, want %d %q", tc.host, tc.path, resp.StatusCode, truncate(body, 80), tc.status, tc.want)
		}
		switch tc.path {
		case "/static/site.css":
			if resp.Header.Get("Cache-Control") != "public, max-age=86400" {
				t.Errorf("static Cache-Control %q", resp.Header.Get("Cache-Control"))
			}
		case "/x?y=1":
			if loc := resp.Header.Get("Location"); loc != "http://www.example.com/x?y=1" {
				t.Errorf("redirect to %q", loc)
			}
		}
	}
}
