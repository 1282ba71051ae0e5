package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	cases := map[string]int64{"0": 0, "512": 512, "64KiB": 64 << 10, "10MiB": 10 << 20, "10M": 10 << 20, "1GiB": 1 << 30, "1.5k": 1536, " 2 mb ": 2 << 20}
	for in, want := range cases {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "10XB", "-1", "MiB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

func TestParseDuration(t *testing.T) {
	cases := map[string]time.Duration{"30": 30 * time.Second, "30s": 30 * time.Second, "1m30s": 90 * time.Second, "0.5": 500 * time.Millisecond, "250ms": 250 * time.Millisecond}
	for in, want := range cases {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseDuration("soon"); err == nil {
		t.Error("ParseDuration(soon) accepted")
	}
}

func TestParseRun(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app.py")
	os.WriteFile(app, []byte(""), 0o644)
	c, err := ParseRun([]string{"-b", ":9000", "--bind", "unix:/tmp/x.sock", "--uwsgi-socket", "127.0.0.1:9001",
		"-w", "3", "--threads", "4", "--timeout", "10", "--max-requests", "100", "--max-rss", "300MiB",
		"--max-body", "1MiB", "--env", "A=1", "-e", "B=2", "--static", "/static/=" + dir, "--reload", app + ":create_app()"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Listeners) != 3 || c.Listeners[0].Addr != ":9000" || c.Listeners[2].Protocol != ProtoUWSGI || c.Listeners[0].SocketMode != 0o666 {
		t.Errorf("listeners %+v", c.Listeners)
	}
	a := c.Apps[0]
	if a.Workers != 3 || a.Threads != 4 || a.Timeout != 10*time.Second || a.MaxRequests != 100 || a.MaxRSS != 300<<20 ||
		a.MaxBody != 1<<20 || strings.Join(a.Env, ",") != "A=1,B=2" || !a.Reload || a.Module != app+":create_app()" {
		t.Errorf("app %+v", a)
	}
	if rs := c.Sites[0].Routes; len(rs) != 2 || rs[0].Path != "/static/" || rs[0].Static.Dir != dir || rs[1].Path != "/" || rs[1].App != RunAppName {
		t.Errorf("routes %+v", rs)
	}
	if f, err := ParseRun([]string{"--forwarded-allow-ips", "10.0.0.0/8, ::1,unix", "hello:app"}, nil); err != nil || strings.Join(f.TrustedProxies, " ") != "10.0.0.0/8 ::1 unix" {
		t.Errorf("--forwarded-allow-ips: %q, %v", f.TrustedProxies, err)
	}
	if a, err := ParseRun([]string{"--admin", "127.0.0.1:9100", "hello:app"}, nil); err != nil || a.Admin == nil || a.Admin.Addr != "127.0.0.1:9100" {
		t.Errorf("--admin: %+v, %v", a, err)
	}
	d, err := ParseRun([]string{"hello:app"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.Admin != nil {
		t.Errorf("no --admin, admin %+v", d.Admin)
	}
	if len(d.Listeners) != 1 || d.Listeners[0].Addr != DefaultBind || d.Apps[0].Timeout != DefaultTimeout || d.Apps[0].MaxBody != DefaultMaxBody || d.Apps[0].Threads != 1 {
		t.Errorf("defaults %+v", d)
	}
}

func TestParseRunErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{}, "no app given"},
		{[]string{"--workers", "0", "a:b"}, "workers: must be at least 1"},
		{[]string{"--timeout", "soon", "a:b"}, "not a duration"},
		{[]string{"--max-body", "lots", "a:b"}, "not a size"},
		{[]string{"--bind", "nowhere", "a:b"}, "bind:"},
		{[]string{"--static", "/s", "a:b"}, "not PREFIX=DIR"},
		{[]string{"--static", "/s=/does/not/exist", "a:b"}, "static:"},
		{[]string{"--env", "=x", "a:b"}, "env:"},
		{[]string{"missing_file.py"}, "app:"},
		{[]string{"--chdir", "/does/not/exist", "a:b"}, "chdir:"},
		{[]string{"a:b", "extra"}, "one app expected"},
		{[]string{"--no-such-flag", "a:b"}, "no-such-flag"},
		{[]string{"--forwarded-allow-ips", "10.0.0.1, 300.1.1.1", "a:b"}, "forwarded-allow-ips: \"300.1.1.1\" is not an address"},
		{[]string{"--tls-cert", "cert.pem", "a:b"}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-key", "key.pem", "a:b"}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-cert", "/no/cert.pem", "--tls-key", "/no/key.pem", "a:b"}, "tls-cert: stat /no/cert.pem"},
		{[]string{"--uwsgi-socket", ":9000", "--tls-cert", "c", "--tls-key", "k", "a:b"}, "no --bind listener"},
		{[]string{"--admin", "0.0.0.0:9000", "a:b"}, "admin: \"0.0.0.0:9000\": the admin listener must be"},
	}
	for _, c := range cases {
		_, err := ParseRun(c.args, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseRun(%q) = %v, want an error with %q", c.args, err, c.want)
		}
	}
}

func TestValidateReportsAllErrors(t *testing.T) {
	c := Default()
	a := DefaultApp("web")
	a.Workers = 0
	a.Threads = 0
	c.Apps = []App{a}
	err := c.Validate()
	for _, want := range []string{"listener: no listener", "app.web.module: no MODULE", "app.web.workers:", "app.web.threads:", "site: no site"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want %q among the errors", err, want)
		}
	}
}

func TestParseRunPyproject(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "app.py"), nil, 0o644)
	os.Mkdir(filepath.Join(dir, "static"), 0o755)
	os.WriteFile(filepath.Join(dir, "pyproject.toml"), []byte(`
[project]
name = "demo"

[tool.portico]
app = "app.py:application"
bind = ["127.0.0.1:9001"]
workers = 3
timeout = "10s"
max_body = "1MiB"
env = { A = "1" }
static = { "/static/" = "static" }
`), 0o644)
	c, err := ParseRun([]string{"--chdir", dir, "--workers", "5", "-e", "B=2"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Apps[0]
	if a.Module != "app.py:application" || a.Workers != 5 || a.Timeout != 10*time.Second || a.MaxBody != 1<<20 ||
		strings.Join(a.Env, ",") != "A=1,B=2" {
		t.Errorf("app %+v", a)
	}
	if len(c.Listeners) != 1 || c.Listeners[0].Addr != "127.0.0.1:9001" {
		t.Errorf("listeners %+v", c.Listeners)
	}
	if r := c.Sites[0].Routes; len(r) != 2 || r[0].Static.Dir != filepath.Join(dir, "static") {
		t.Errorf("routes %+v", r)
	}
	// Flags win over the file; a bad key names file:line.
	c, err = ParseRun([]string{"--chdir", dir, "--bind", ":0", "other.py"}, nil)
	if err == nil || !strings.Contains(err.Error(), "app:") {
		t.Errorf("ParseRun with a missing app file = %v, %v", c, err)
	}
	os.WriteFile(filepath.Join(dir, "pyproject.toml"), []byte("[tool.portico]\nworkers = \"many\"\ncolour = 1\n"), 0o644)
	_, err = ParseRun([]string{"--chdir", dir, "app.py"}, nil)
	pp := filepath.Join(dir, "pyproject.toml")
	for _, want := range []string{pp + ":2: tool.portico.workers: want an integer", pp + ":3: tool.portico.colour: unknown key"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRun = %v, want %q", err, want)
		}
	}
}

func TestCheckCallable(t *testing.T) {
	for _, ok := range []string{
		"app.py", "hello", "hello:app", "pkg.mod:application", "app.py:create_app()",
		"app.py:create_app('testing')", `pkg.mod:create_app(env="prod", debug=False)`,
		"m:create_app('http://example.com:8000/x')", "m:factories.make_app( 1, (2, 3) )", "dir/app.py", "m:",
	} {
		if err := checkCallable(ok); err != nil {
			t.Errorf("checkCallable(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"m:create_app(", "m:1app", "m:create-app", "m:a..b", "m:create_app('x') + 1"} {
		if err := checkCallable(bad); err == nil {
			t.Errorf("checkCallable(%q) accepted", bad)
		}
	}
	c, err := ParseRun([]string{`hello:create_app(env="prod", debug=False)`}, nil)
	if err != nil || c.Apps[0].Module != `hello:create_app(env="prod", debug=False)` {
		t.Errorf("ParseRun with factory arguments: %v", err)
	}
	if _, err := ParseRun([]string{"hello:create_app('x'"}, nil); err == nil || !strings.Contains(err.Error(), `does not end with ")"`) {
		t.Errorf("ParseRun with an unclosed factory call: %v", err)
	}
}

func TestParseRunTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, []byte("not a certificate"), 0o644)
	os.WriteFile(key, []byte("not a key"), 0o644)
	_, err := ParseRun([]string{"-b", ":0", "-b", ":0", "--uwsgi-socket", ":0", "--tls-cert", cert, "--tls-key", key, "a:b"}, nil)
	if err == nil || !strings.Contains(err.Error(), "tls-cert: loading the certificate and key") {
		t.Errorf("ParseRun with a bad certificate: %v", err)
	}
}
