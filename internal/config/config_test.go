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
	a := c.App
	if a.Workers != 3 || a.Threads != 4 || a.Timeout != 10*time.Second || a.MaxRequests != 100 || a.MaxRSS != 300<<20 ||
		a.MaxBody != 1<<20 || strings.Join(a.Env, ",") != "A=1,B=2" || !a.Reload || a.Module != app+":create_app()" {
		t.Errorf("app %+v", a)
	}
	if len(c.Static) != 1 || c.Static[0].Prefix != "/static/" || c.Static[0].Dir != dir {
		t.Errorf("static %+v", c.Static)
	}
	d, err := ParseRun([]string{"hello:app"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Listeners) != 1 || d.Listeners[0].Addr != DefaultBind || d.App.Timeout != DefaultTimeout || d.App.MaxBody != DefaultMaxBody || d.App.Threads != 1 {
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
	c.App.Workers = 0
	c.App.Threads = 0
	err := c.Validate()
	for _, want := range []string{"bind: no listener", "app: no MODULE", "workers:", "threads:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want %q among the errors", err, want)
		}
	}
}
