package main

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionText(t *testing.T) {
	platform := " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	vcs := []debug.BuildSetting{
		{Key: "-compiler", Value: "gc"},
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"},
		{Key: "vcs.time", Value: "2026-11-30T12:00:00Z"},
		{Key: "vcs.modified", Value: "true"},
	}
	cases := []struct {
		name    string
		version string
		bi      *debug.BuildInfo
		ok      bool
		want    string
	}{
		{"checkout, modified", "dev", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "portico", Version: "(devel)"}, Settings: vcs}, true,
			"portico dev (rev 1a2b3c4d5e6f, 2026-11-30T12:00:00Z, modified)\ngo1.26.8" + platform},
		{"checkout, clean", "dev", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: append(vcs[:4:4], debug.BuildSetting{Key: "vcs.modified", Value: "false"})}, true,
			"portico dev (rev 1a2b3c4d5e6f, 2026-11-30T12:00:00Z)\ngo1.26.8" + platform},
		{"go install of a tag", "dev", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.0"}}, true,
			"portico v1.2.0\ngo1.26.8" + platform},
		{"-ldflags -X wins", "v1.3.0", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.0"}, Settings: vcs[:3]}, true,
			"portico v1.3.0 (rev 1a2b3c4d5e6f)\ngo1.26.8" + platform},
		{"no build info", "dev", nil, false, "portico dev\n" + runtime.Version() + platform},
	}
	for _, tc := range cases {
		if got := versionText(tc.version, tc.bi, tc.ok); got != tc.want {
			t.Errorf("%s: got\n%s\nwant\n%s", tc.name, got, tc.want)
		}
	}
	// The binary the command runs: two lines, the first naming portico.
	if out := versionText(version, nil, false); !strings.HasPrefix(out, "portico ") || strings.Count(out, "\n") != 2 {
		t.Errorf("versionText = %q", out)
	}
}
