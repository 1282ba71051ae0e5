package config

import (
	"strings"
	"testing"
	"time"
)

func TestLimitsLoad(t *testing.T) {
	path := writeConfig(t, `
max_connections = 1000

[[listener]]
addr = "127.0.0.1:0"
limit_conn = 10
max_connections = 50

[[listener]]
addr = "127.0.0.1:0"

[app.a]
module = "app.py"

[[site]]
hosts = ["default"]
limit_req = { rate = "30r/m", burst = 5 }
limit_conn = { max = 4 }

[[site.route]]
path = "/api"
app = "a"
limit_req = { rate = "10r/s", burst = 20, key = "header:X-Api-Key", delay = true, store = "redis://127.0.0.1:6379/0", max_keys = 500 }
limit_conn = { key = "route", max = 100 }
`)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if l := c.Listeners[0]; l.LimitConn != 10 || c.ListenerMaxConnections(l) != 50 {
		t.Errorf("listener 0: %+v", l)
	}
	if l := c.Listeners[1]; l.LimitConn != 0 || c.ListenerMaxConnections(l) != 1000 {
		t.Errorf("listener 1: %+v (want the top-level max_connections)", l)
	}
	s := c.Sites[0]
	if *s.LimitReq != (LimitReq{Rate: "30r/m", Burst: 5, Key: "ip", MaxKeys: DefaultLimitKeys}) {
		t.Errorf("site limit_req %+v", *s.LimitReq)
	}
	if *s.LimitConn != (LimitConn{Key: "ip", Max: 4}) {
		t.Errorf("site limit_conn %+v", *s.LimitConn)
	}
	r := s.Routes[0]
	if *r.LimitReq != (LimitReq{Rate: "10r/s", Burst: 20, Key: "header:X-Api-Key", Delay: true, Store: "redis://127.0.0.1:6379/0", MaxKeys: 500}) {
		t.Errorf("route limit_req %+v", *r.LimitReq)
	}
	if *r.LimitConn != (LimitConn{Key: "route", Max: 100}) {
		t.Errorf("route limit_conn %+v", *r.LimitConn)
	}
	if n, per, _ := ParseRate("30r/m"); n != 30 || per != time.Minute {
		t.Errorf("ParseRate: %d/%v", n, per)
	}
}

// TestLimitsErrors: each bad key is reported with its file:line.
func TestLimitsErrors(t *testing.T) {
	path := writeConfig(t, `max_connections = -1

[[listener]]
addr = "127.0.0.1:0"
proxy_protocol = true
limit_conn = 3

[app.a]
module = "app.py"

[[site]]
hosts = ["default"]
limit_req = { rate = "10r/h", burst = -1 }

[[site.route]]
path = "/"
app = "a"
limit_req = { rate = "10r/s", key = "query:x", max_keys = 0, store = "memcached://x", nodelay = true }
limit_conn = { key = "cookie:" }

[[site.route]]
path = "/b"
app = "a"
limit_req = { burst = 1 }
`)
	_, err := Load(path)
	if err == nil {
		t.Fatal("loaded")
	}
	for _, want := range []string{
		":1: max_connections: must not be negative",
		":6: listener[0].limit_conn: cannot count by client address on a proxy_protocol listener",
		`:13: site[0].limit_req.rate: "10r/h" is not a rate like "10r/s" or "30r/m"`,
		":13: site[0].limit_req.burst: must not be negative",
		`:18: site[0].route[0].limit_req.key: "query:x" is not "ip", "header:NAME", "cookie:NAME" or "route"`,
		":18: site[0].route[0].limit_req.max_keys: must be between 1 and",
		`:18: site[0].route[0].limit_req.store: "memcached://x" is not a Redis URL`,
		":18: site[0].route[0].limit_req.nodelay: unknown key (known here: rate, burst, key, delay, store, max_keys)",
		`:19: site[0].route[0].limit_conn.key: "cookie:" is not`,
		":19: site[0].route[0].limit_conn.max: missing",
		":24: site[0].route[1].limit_req.rate: missing",
	} {
		if !strings.Contains(err.Error(), path+want) {
			t.Errorf("missing error %q in:\n%v", want, err)
		}
	}
}

func TestLimitsFlags(t *testing.T) {
	dir := t.TempDir()
	c, err := ParseRun([]string{"--chdir", dir, "--bind", "127.0.0.1:0", "--limit-req", "5r/s", "--limit-burst", "5", "--limit-conn", "3", "--static", "/s=" + dir, "app:app"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lr := c.Sites[0].LimitReq; lr == nil || *lr != (LimitReq{Rate: "5r/s", Burst: 5, Key: "ip", MaxKeys: DefaultLimitKeys}) {
		t.Errorf("limit_req %+v", lr)
	}
	if c.Listeners[0].LimitConn != 3 {
		t.Errorf("listener %+v", c.Listeners[0])
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--limit-req", "5r/x", "app:app"}, `limit-req: "5r/x" is not a rate`},
		{[]string{"--limit-req", "5r/s", "--limit-burst", "-2", "app:app"}, "limit-burst: must not be negative"},
		{[]string{"--limit-burst", "2", "app:app"}, "--limit-burst needs --limit-req"},
		{[]string{"--limit-conn", "-1", "app:app"}, "limit-conn: must not be negative"},
	} {
		_, err := ParseRun(append([]string{"--chdir", dir}, tc.args...), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.args, err, tc.want)
		}
	}
}
