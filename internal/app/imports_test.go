package app

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportRules enforces STYLE.md's arrows: only app imports config;
// feature packages do not import each other (shared leaves aside); server
// imports no feature package but the uwsgi codec its uwsgi listener
// speaks, and internal/uwsgi, a leaf, imports no portico package. internal/porticotest is for tests only (no
// package's own code imports it) and imports no portico package, so that
// every package's tests may use it.
func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "portico/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	leaves := map[string]bool{"portico/internal/spool": true, "portico/internal/uwsgi": true, "portico/internal/proxy": true, "portico/internal/realip": true, "portico/internal/requestid": true, "portico/internal/negotiate": true, "portico/internal/errpage": true}
	features := map[string]bool{
		"portico/internal/server": true, "portico/internal/static": true, "portico/internal/worker": true,
		"portico/internal/accesslog": true, "portico/internal/uwsgi": true, "portico/internal/spool": true,
		"portico/internal/proxy": true, "portico/internal/realip": true, "portico/internal/fastcgi": true,
		"portico/internal/metrics": true, "portico/internal/requestid": true, "portico/internal/systemd": true,
		"portico/internal/limit":  true,
		"portico/internal/access": true, "portico/internal/waf": true, "portico/internal/ban": true,
		"portico/internal/cache": true, "portico/internal/compress": true, "portico/internal/negotiate": true, "portico/internal/errpage": true,
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, imports := fields[0], fields[1:]
		for _, imp := range imports {
			if !strings.HasPrefix(imp, "portico/") {
				continue
			}
			switch {
			case pkg == "portico/internal/porticotest":
				t.Errorf("porticotest imports %s; it must import no portico package", imp)
			case imp == "portico/internal/porticotest":
				t.Errorf("%s imports porticotest outside its tests", pkg)
			case imp == "portico/internal/config" && pkg != "portico/internal/app":
				t.Errorf("%s imports config; only internal/app may", pkg)
			case features[pkg] && features[imp] && !leaves[imp]:
				t.Errorf("feature package %s imports feature package %s", pkg, imp)
			case pkg == "portico/internal/server" && imp != "portico/internal/config" && imp != "portico/internal/uwsgi":
				t.Errorf("server imports %s", imp)
			case pkg == "portico/internal/uwsgi":
				t.Errorf("uwsgi imports %s; it is a leaf (codec, environ, client transport)", imp)
			case imp == "portico/internal/app" && pkg != "portico/cmd/portico":
				t.Errorf("%s imports app", pkg)
			}
		}
	}
}
