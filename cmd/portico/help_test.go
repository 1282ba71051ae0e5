package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestHelp checks that each command's help describes its flags, whichever
// way it is asked for, and that `portico help` alone prints the usage.
func TestHelp(t *testing.T) {
	runFlags := []string{"--bind", "--uwsgi-socket", "--socket-mode", "--forwarded-allow-ips", "--workers", "--threads",
		"--python", "--chdir", "--env", "--reload", "--tls-cert", "--tls-key", "--timeout", "--grace", "--max-requests", "--max-rss", "--max-body",
		"--queue-size", "--queue-timeout", "--sched", "--graceful-timeout", "--static", "--proxy", "--access-log",
		"--access-log-format", "--log-level", "--limit-req", "--limit-burst", "--limit-conn"}
	cases := []struct {
		args  []string
		flags []string
	}{
		{[]string{"help", "run"}, runFlags},
		{[]string{"run", "--help"}, runFlags},
		{[]string{"help", "serve"}, []string{"-c FILE", "--python PATH", "SIGHUP", "reload_code"}},
		{[]string{"serve", "--help"}, []string{"-c FILE", "--python PATH"}},
		{[]string{"serve", "-h"}, []string{"-c FILE", "--python PATH"}},
		{[]string{"help", "check"}, []string{"-c FILE", "--python PATH", "sorted by line"}},
		{[]string{"check", "--help"}, []string{"-c FILE", "--python PATH"}},
		{[]string{"help"}, []string{"run [flags]", "serve -c FILE", "check -c FILE", "version", "portico help COMMAND"}},
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		if code := run(tc.args, &stdout, &stderr); code != 0 {
			t.Errorf("portico %s: exit %d, want 0; stderr:\n%s", strings.Join(tc.args, " "), code, stderr.String())
		}
		if strings.Count(stdout.String(), "\n") < 5 {
			t.Errorf("portico %s: %q is not a description of the flags", strings.Join(tc.args, " "), stdout.String())
		}
		for _, f := range tc.flags {
			if !strings.Contains(stdout.String(), f) {
				t.Errorf("portico %s does not mention %q:\n%s", strings.Join(tc.args, " "), f, stdout.String())
			}
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"help", "nosuch"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), `unknown command "nosuch"`) {
		t.Errorf("portico help nosuch: exit %d, stderr %q; want 2 and an unknown command error", code, stderr.String())
	}
}
