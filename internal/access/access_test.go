package access

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func mustList(t *testing.T, name string, allow, deny []string) *List {
	t.Helper()
	l, err := ParseList(name, allow, deny)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestParseList(t *testing.T) {
	for _, bad := range []string{"10.0.0.0/33", "example.com", "10.0.0.1/8x", "", "fe80::1%eth0", "all"} {
		if _, err := ParseList("site", []string{bad}, nil); err == nil {
			t.Errorf("allow %q: no error", bad)
		}
		if err := ParseEntry(bad); err == nil {
			t.Errorf("ParseEntry(%q): no error", bad)
		}
	}
	for _, good := range []string{"10.0.0.0/8", "203.0.113.7", "2001:db8::/32", "::1", "unix", "::ffff:10.0.0.0/104", " 10.1.2.3 "} {
		if err := ParseEntry(good); err != nil {
			t.Errorf("ParseEntry(%q): %v", good, err)
		}
	}
}

func TestCheck(t *testing.T) {
	site := mustList(t, "site", []string{"10.0.0.0/8", "203.0.113.7", "2001:db8::/32", "unix"}, []string{"10.9.0.0/16"})
	route := mustList(t, "route", []string{"10.1.0.0/16", "2001:db8:1::/48"}, nil)
	denyOnly := mustList(t, "site", nil, []string{"192.0.2.0/24", "::ffff:198.51.100.0/120"})
	tests := []struct {
		name   string
		rules  *Rules
		remote string
		ok     bool
		rule   string
	}{
		{"allowed v4 with port", New(site), "10.2.3.4:5000", true, ""},
		{"bare address (realip without port)", New(site), "203.0.113.7", true, ""},
		{"not in allow", New(site), "198.51.100.1:1", false, "site: not in allow list"},
		{"deny wins over allow", New(site), "10.9.1.1:1", false, "site: deny 10.9.0.0/16"},
		{"v6 allowed", New(site), "[2001:db8::5]:80", true, ""},
		{"v6 refused", New(site), "[2001:db9::5]:80", false, "site: not in allow list"},
		{"v4-mapped v6 peer matches v4 rule", New(site), "[::ffff:10.2.3.4]:80", true, ""},
		{"unix peer allowed by unix entry", New(site), "@", true, ""},
		{"unix peer by path", New(site), "/run/portico.sock", true, ""},
		{"unix peer refused without unix entry", New(route), "@", false, "route: not in allow list"},
		{"route narrows site", New(site, route), "10.2.3.4:1", false, "route: not in allow list"},
		{"route and site both pass", New(site, route), "10.1.3.4:1", true, ""},
		{"route cannot widen site", New(site, route), "10.9.0.1:1", false, "site: deny 10.9.0.0/16"},
		{"deny only: others pass", New(denyOnly), "10.0.0.1:1", true, ""},
		{"deny only: denied", New(denyOnly), "192.0.2.9:1", false, "site: deny 192.0.2.0/24"},
		{"deny of mapped prefix matches v4", New(denyOnly), "198.51.100.7:1", false, "site: deny ::ffff:198.51.100.0/120"},
		{"deny only: unix passes", New(denyOnly), "", true, ""},
		{"garbage refused by allow", New(site), "garbage", false, "site: not in allow list"},
		{"nil rules", New(), "1.2.3.4:1", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, layer, rule := tt.rules.Check(tt.remote)
			got := ""
			if !ok {
				got = layer + ": " + rule
			}
			if ok != tt.ok || got != tt.rule {
				t.Errorf("Check(%q) = %v %q, want %v %q", tt.remote, ok, got, tt.ok, tt.rule)
			}
		})
	}
}

func TestMiddleware(t *testing.T) {
	var log bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&log, nil))
	rules := New(mustList(t, "route", []string{"10.0.0.0/8"}, nil))
	h := rules.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("in"))
	}), logger)
	for _, tt := range []struct {
		remote string
		status int
	}{{"10.1.1.1:4", 200}, {"11.1.1.1:4", 403}} {
		r := httptest.NewRequest("GET", "/admin/", nil)
		r.RemoteAddr = tt.remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tt.status {
			t.Errorf("%s: status %d, want %d", tt.remote, w.Code, tt.status)
		}
	}
	if n := strings.Count(log.String(), "access refused"); n != 1 {
		t.Fatalf("%d refusal records, want 1:\n%s", n, log.String())
	}
	if !strings.Contains(log.String(), "client=11.1.1.1:4") || !strings.Contains(log.String(), `rule="not in allow list"`) || !strings.Contains(log.String(), "level=INFO") {
		t.Errorf("record does not name the client and rule at info: %s", log.String())
	}
	if _, same := New().Middleware(http.FileServer(nil), nil).(http.HandlerFunc); same {
		t.Error("nil rules wrap the handler")
	}
}
