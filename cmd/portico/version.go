package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// versionText is what `portico version` prints:
//
//	portico v1.2.0 (rev 1a2b3c4d5e6f, 2026-11-30T12:00:00Z, modified)
//	go1.26.8 linux/amd64
//
// The version is main.version when the build set it (-ldflags -X), else
// the module version from the build info (a tagged `go install`); a
// checkout built with `go build` says "dev". The revision (12 hex digits),
// commit time and "modified" (uncommitted changes) come from the build
// info's vcs.* settings, which `go build` records in a git checkout; the
// parentheses are left out when there are none. ok is ReadBuildInfo's.
func versionText(version string, bi *debug.BuildInfo, ok bool) string {
	goVersion := runtime.Version()
	var vcs []string
	if ok && bi != nil {
		if version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			version = bi.Main.Version
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		var rev, at string
		modified := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if rev != "" {
			vcs = append(vcs, "rev "+rev[:min(len(rev), 12)])
		}
		if at != "" {
			vcs = append(vcs, at)
		}
		if modified {
			vcs = append(vcs, "modified")
		}
	}
	line := "portico " + version
	if len(vcs) > 0 {
		line += " (" + strings.Join(vcs, ", ") + ")"
	}
	return fmt.Sprintf("%s\n%s %s/%s\n", line, goVersion, runtime.GOOS, runtime.GOARCH)
}
