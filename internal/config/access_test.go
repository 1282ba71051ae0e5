package config

import (
	"slices"
	"strings"
	"testing"
)

func TestAccessAndWAFKeys(t *testing.T) {
	path := writeConfig(t, `
[[listener]]
addr = "127.0.0.1:0"

[app.a]
module = "app.py"

[[site]]
hosts = ["default"]
allow = ["10.0.0.0/8", "unix"]
deny = ["10.9.0.0/16"]

[[site.route]]
path = "/admin"
app = "a"
allow = ["10.1.0.0/16"]
waf = { mode = "detect", paranoia = 2, anomaly_threshold = 10, exclude_rules = [942100, 920350] }

[[site.route]]
path = "/"
respond = { status = 204 }
waf = {}
`)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Sites[0]
	if !slices.Equal(s.Allow, []string{"10.0.0.0/8", "unix"}) || !slices.Equal(s.Deny, []string{"10.9.0.0/16"}) {
		t.Errorf("site lists: %+v", s.Access)
	}
	r := s.Routes[0]
	if !slices.Equal(r.Allow, []string{"10.1.0.0/16"}) || r.Deny != nil {
		t.Errorf("route lists: %+v", r.Access)
	}
	if w := r.WAF; w == nil || w.Mode != WAFDetect || w.Paranoia != 2 || w.AnomalyThreshold != 10 || !slices.Equal(w.ExcludeRules, []int{942100, 920350}) {
		t.Errorf("waf: %+v", r.WAF)
	}
	if w, d := s.Routes[1].WAF, DefaultWAF(); w == nil || w.Mode != d.Mode || w.Paranoia != d.Paranoia || w.AnomalyThreshold != d.AnomalyThreshold || len(w.ExcludeRules) != 0 {
		t.Errorf("empty waf table: %+v, want the defaults", w)
	}
}

func TestAccessAndWAFErrors(t *testing.T) {
	path := writeConfig(t, `
[[listener]]
addr = "127.0.0.1:0"

[app.a]
module = "app.py"

[[site]]
hosts = ["default"]
deny = ["10.0.0.0/33"]

[[site.route]]
path = "/"
app = "a"
allow = ["example.com"]
waf = { mode = "on", paranoia = 5, anomaly_threshold = 0, exclude_rules = ["x", 7, 7], level = 1 }
`)
	_, err := Load(path)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`portico.toml:10: site[0].deny[0]: "10.0.0.0/33" is not a CIDR prefix`,
		`portico.toml:15: site[0].route[0].allow[0]: "example.com" is not a CIDR prefix`,
		`site[0].route[0].waf.mode: "on" is not block or detect`,
		`site[0].route[0].waf.paranoia: 5 is not a paranoia level from 1 to 4`,
		`site[0].route[0].waf.anomaly_threshold: 0: must be at least 1`,
		`site[0].route[0].waf.exclude_rules[0]: want a rule ID (an integer), not a string`,
		`7 is given twice`,
		`site[0].route[0].waf.level: unknown key`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func TestRunAccessFlags(t *testing.T) {
	c, err := ParseRun([]string{"--allow", "10.0.0.0/8", "--allow", "::1", "--deny", "10.9.0.0/16", "--waf", "block", "--static", "/s=" + t.TempDir(), "app:application"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range c.Sites[0].Routes {
		if !slices.Equal(r.Allow, []string{"10.0.0.0/8", "::1"}) || !slices.Equal(r.Deny, []string{"10.9.0.0/16"}) || r.WAF == nil || r.WAF.Mode != WAFBlock {
			t.Errorf("route %s: %+v %+v", r.Path, r.Access, r.WAF)
		}
	}
	if _, err := ParseRun([]string{"--deny", "nope", "app"}, nil); err == nil || !strings.Contains(err.Error(), `deny: "nope" is not a CIDR prefix`) {
		t.Errorf("--deny nope: %v", err)
	}
	if _, err := ParseRun([]string{"--waf", "on", "app"}, nil); err == nil || !strings.Contains(err.Error(), `waf: "on" is not block or detect`) {
		t.Errorf("--waf on: %v", err)
	}
}
