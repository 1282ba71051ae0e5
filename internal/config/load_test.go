package config

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// writeConfig writes text as portico.toml in a temporary directory that
// also holds an app.py and a static/ directory, and returns its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "app.py"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "static"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "portico.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const goodConfig = `
access_log = "off"
graceful_timeout = "10s"
trusted_proxies = ["10.0.0.0/8", "192.0.2.7", "unix"]

[admin]
addr = "unix:admin.sock"
shutdown_delay = "2s"

[[listener]]
addr = "127.0.0.1:0"
proxy_protocol = true

[[listener]]
addr = "unix:run/app.sock"
protocol = "uwsgi"
socket_mode = "660"

[app.shop]
module = "app.py:application"
workers = 2
threads = 4
timeout = "5s"
max_body = "1MiB"
max_rss = "300MiB"
sched = "normal"
env = { DJANGO_SETTINGS_MODULE = "shop.settings", B = "2" }

[app.blog]
module = "app.py"
queue_timeout = 3

[[site]]
hosts = ["shop.example.com", "*.shop.example.com"]

[[site.route]]
path = "/static/"
static = { dir = "static" }
headers_add = { Cache-Control = "max-age=3600" }

[[site.route]]
path = "/shop"
app = "shop"

[[site.route]]
path = "=/healthz"
methods = ["GET", "HEAD"]
respond = { status = 200, body = "ok\n" }

[[site]]
hosts = ["default"]

[[site.route]]
path = "~^/old/"
redirect = { to = "https://blog.example.com$uri", status = 301 }

[[site.route]]
path = "/"
app = "blog"
headers_remove = ["Server"]
`

func TestLoad(t *testing.T) {
	path := writeConfig(t, goodConfig)
	dir := filepath.Dir(path)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.AccessLog != "off" || c.ShutdownTimeout != 10*time.Second || c.LogLevel != "info" ||
		c.Admin.Addr != "unix:"+filepath.Join(dir, "admin.sock") || c.Admin.ShutdownDelay != 2*time.Second {
		t.Errorf("top level %+v", c)
	}
	if len(c.Listeners) != 2 || c.Listeners[0].Protocol != ProtoHTTP || c.Listeners[0].SocketMode != DefaultSocketMode ||
		c.Listeners[1].Addr != "unix:"+filepath.Join(dir, "run/app.sock") || c.Listeners[1].Protocol != ProtoUWSGI || c.Listeners[1].SocketMode != 0o660 {
		t.Errorf("listeners %+v", c.Listeners)
	}
	if !c.Listeners[0].ProxyProtocol || c.Listeners[1].ProxyProtocol || strings.Join(c.TrustedProxies, ",") != "10.0.0.0/8,192.0.2.7,unix" {
		t.Errorf("trust: listeners %+v, trusted_proxies %q", c.Listeners, c.TrustedProxies)
	}
	if len(c.Apps) != 2 || c.Apps[0].Name != "shop" || c.Apps[1].Name != "blog" {
		t.Fatalf("apps %+v", c.Apps)
	}
	shop := c.App("shop")
	if shop.Workers != 2 || shop.Threads != 4 || shop.Timeout != 5*time.Second || shop.MaxBody != 1<<20 || shop.MaxRSS != 300<<20 ||
		strings.Join(shop.Env, ",") != "DJANGO_SETTINGS_MODULE=shop.settings,B=2" || shop.Dir != dir || shop.Grace != DefaultGrace || shop.Sched != SchedNormal {
		t.Errorf("shop %+v", shop)
	}
	if blog := c.App("blog"); blog.QueueTimeout != 3*time.Second || blog.MaxBody != DefaultMaxBody || blog.Threads != 1 || blog.Sched != SchedBatch {
		t.Errorf("blog %+v", blog)
	}
	if len(c.Sites) != 2 || len(c.Sites[0].Routes) != 3 || len(c.Sites[1].Routes) != 2 {
		t.Fatalf("sites %+v", c.Sites)
	}
	r := c.Sites[0].Routes
	if r[0].Static.Dir != filepath.Join(dir, "static") || r[0].HeadersAdd["Cache-Control"] != "max-age=3600" {
		t.Errorf("static route %+v", r[0])
	}
	if k, p := r[2].PathKind(); k != PathExact || p != "/healthz" || r[2].Respond.Body != "ok\n" || strings.Join(r[2].Methods, ",") != "GET,HEAD" {
		t.Errorf("respond route %+v", r[2])
	}
	if rd := c.Sites[1].Routes[0].Redirect; rd.Status != 301 {
		t.Errorf("redirect %+v", rd)
	}
}

// TestLoadErrors is the table of invalid configs: each names the error
// text and the line it must carry. Every case is a complete file, so a
// case fails when one error hides another.
func TestLoadErrors(t *testing.T) {
	const base = "[[listener]]\naddr = \":0\"\n[app.a]\nmodule = \"app.py\"\n[[site]]\nhosts = [\"default\"]\n[[site.route]]\npath = \"/\"\napp = \"a\"\n"
	// base is lines 1-9; cases append from line 10.
	cases := []struct {
		name  string
		text  string
		wants []string // "LINE: text"
	}{
		{"syntax", "[[listener]\n", []string{"1: "}},
		{"duplicate key", base + "[app.b]\nmodule = \"x:y\"\nmodule = \"x:z\"\n", []string{"12: "}},
		{"unknown top key", "bogus = 1\n" + base + "[[site.route]]\npath = \"/b\"\nrespond = {}\nbogus = 2\n", []string{"1: bogus: unknown key", "14: site[0].route[1].bogus: unknown key"}},
		{"unknown app key", "[app.a]\nmodule = \"app.py\"\nworkerz = 3\n[[listener]]\naddr = \":0\"\n[[site]]\nhosts = [\"default\"]\n[[site.route]]\npath = \"/\"\napp = \"a\"\n",
			[]string{"3: app.a.workerz: unknown key"}},
		{"unknown route key and wrong type", base + "[[site.route]]\npath = \"/x\"\nrespond = {}\nstatuss = 1\n[[site.route]]\npath = 5\nrespond = {}\n",
			[]string{"13: site[0].route[1].statuss: unknown key", "15: site[0].route[2].path: want a string, not an integer"}},
		{"wrong type", "[[listener]]\naddr = \":0\"\n[app.a]\nmodule = \"app.py\"\nworkers = \"two\"\nthreads = 0\n[[site]]\nhosts = [\"default\"]\n[[site.route]]\npath = \"/\"\napp = \"a\"\n",
			[]string{"5: app.a.workers: want an integer, not a string", "6: app.a.threads: must be at least 1"}},
		{"bad sched", "[[listener]]\naddr = \":0\"\n[app.a]\nmodule = \"app.py\"\nsched = \"fifo\"\n[[site]]\nhosts = [\"default\"]\n[[site.route]]\npath = \"/\"\napp = \"a\"\n",
			[]string{"5: app.a.sched: must be \"batch\" or \"normal\", not \"fifo\""}},
		{"bad duration and size", "[[listener]]\naddr = \":0\"\n[app.a]\nmodule = \"app.py\"\ntimeout = \"soon\"\nmax_body = \"lots\"\n[[site]]\nhosts = [\"default\"]\n[[site.route]]\npath = \"/\"\napp = \"a\"\n",
			[]string{"5: app.a.timeout: \"soon\" is not a duration", "6: app.a.max_body: \"lots\" is not a size"}},
		{"bad listener", "[[listener]]\naddr = \"nowhere\"\nprotocol = \"ftp\"\n[app.a]\nmodule = \"app.py\"\n[[site]]\nhosts = [\"default\"]\n[[site.route]]\npath = \"/\"\napp = \"a\"\n",
			[]string{"2: listener[0].addr: ", "3: listener[0].protocol: \"ftp\" is not http or uwsgi"}},
		{"tls files", "[[listener]]\naddr = \":0\"\ntls = { cert = \"missing.pem\", key = \"app.py\" }\n[[listener]]\naddr = \":0\"\nprotocol = \"uwsgi\"\n[listener.tls]\ncert = \"app.py\"\nkey = \"app.py\"\n[app.a]\nmodule = \"app.py\"\n[[site]]\nhosts = [\"default\"]\n[[site.route]]\npath = \"/\"\napp = \"a\"\n",
			[]string{"3: listener[0].tls.cert: ", "no such file", "7: listener[1].tls: TLS is for protocol \"http\"", "7: listener[1].tls: loading the certificate and key"}},
		{"missing files", "[[listener]]\naddr = \":0\"\n[app.a]\nmodule = \"nothere.py\"\nchdir = \"nodir\"\n[[site]]\nhosts = [\"default\"]\n[[site.route]]\npath = \"/s\"\nstatic = { dir = \"nostatic\" }\n[[site.route]]\npath = \"/\"\napp = \"a\"\n",
			[]string{"4: app.a.module: ", "5: app.a.chdir: ", "10: site[0].route[0].static.dir: "}},
		{"same path twice", base + "[[site.route]]\npath = \"/\"\nrespond = {}\n", []string{"11: site[0].route[1].path: \"/\" repeats the path of site[0].route[0]"}},
		{"identical prefix", base + "[[site.route]]\npath = \"/a/\"\nrespond = {}\n[[site.route]]\npath = \"/a\"\nrespond = {}\n", []string{"14: site[0].route[2].path: \"/a\" repeats"}},
		{"two default sites", base + "[[site]]\nhosts = [\"default\"]\n[[site.route]]\npath = \"/\"\nrespond = {}\n", []string{"11: site[1].hosts: a second default site"}},
		{"host twice", base + "[[site]]\nhosts = [\"a.com\"]\n[[site.route]]\npath = \"/\"\nrespond = {}\n[[site]]\nhosts = [\"A.com\"]\n[[site.route]]\npath = \"/\"\nrespond = {}\n",
			[]string{"16: site[2].hosts: host \"A.com\" is claimed by site[1] too"}},
		{"handlers", base + "[[site.route]]\npath = \"/x\"\n[[site.route]]\npath = \"/y\"\napp = \"a\"\nrespond = {}\n[[site.route]]\npath = \"/z\"\napp = \"nope\"\n",
			[]string{"10: site[0].route[1]: no handler", "12: site[0].route[2]: 2 handlers", "18: site[0].route[3].app: no [app.nope] is defined"}},
		{"proxy", base + "[[site.route]]\npath = \"/api\"\nproxy = { upstreams = [\"ftp://x\"] }\n",
			[]string{"12: site[0].route[1].proxy.upstreams[0]: \"ftp://x\": scheme \"ftp\" is not"}},
		{"proxy keys", base + "[[site.route]]\npath = \"/api\"\n[site.route.proxy]\nupstreams = [\n  \"http://a:1\",\n  { url = \"uwsgi://b:2\", weight = 0 },\n  \"http://c\",\n  \"fastcgi://d\",\n]\npolicy = \"fastest\"\nretries = -1\nhealth = { uri = \"healthz\", rise = 0 }\nroot = \"/\"\nheaders_up = { \"Bad Name\" = \"x\" }\nbogus = 1\n",
			[]string{"15: site[0].route[1].proxy.upstreams[1]: \"uwsgi://b:2\" is a uwsgi upstream after http ones", "15: site[0].route[1].proxy.upstreams[1].weight: must be at least 1",
				"17: site[0].route[1].proxy.upstreams[3]: \"fastcgi://d\": no port", "19: site[0].route[1].proxy.policy: \"fastest\" is not least_conn",
				"20: site[0].route[1].proxy.retries: must not be negative", "21: site[0].route[1].proxy.health.uri: \"healthz\" must start with /",
				"21: site[0].route[1].proxy.health.rise: must be at least 1", "22: site[0].route[1].proxy.root: is for fastcgi upstreams only",
				"23: site[0].route[1].proxy.headers_up: \"Bad Name\" is not a header name", "24: site[0].route[1].proxy.bogus: unknown key"}},
		{"proxy hash and fastcgi", base + "[[site.route]]\npath = \"/h\"\nproxy = { upstreams = [\"http://a:1\"], policy = \"hash\" }\n[[site.route]]\npath = \"/php\"\nproxy = { upstreams = [\"fastcgi+unix:///run/php.sock\"], split_path = [\"\"] }\n",
			[]string{"12: site[0].route[1].proxy.hash_key: missing", "15: site[0].route[2].proxy.root: missing", "15: site[0].route[2].proxy.split_path: \"\" is not a suffix"}},
		{"bad path and regex", base + "[[site.route]]\npath = \"x\"\nrespond = {}\n[[site.route]]\npath = \"~(\"\nrespond = {}\n",
			[]string{"11: site[0].route[1].path: \"x\" must start with /", "14: site[0].route[2].path: error parsing regexp"}},
		{"bad values", base + "[[site.route]]\npath = \"/r\"\nredirect = { to = \"/x\", status = 200 }\nmethods = [\"get\"]\n[[site.route]]\npath = \"/q\"\nrespond = { status = 999 }\n",
			[]string{"12: site[0].route[1].redirect.status: 200 is not 301", "13: site[0].route[1].methods: \"get\" is not an upper-case", "16: site[0].route[2].respond.status: 999 is not an HTTP status"}},
		{"unused app and two mounts", base + "[app.b]\nmodule = \"app.py\"\n[[site]]\nhosts = [\"x.com\"]\n[[site.route]]\npath = \"/other\"\napp = \"a\"\n",
			[]string{"10: app.b: no route uses app \"b\"", "16: site[1].route[0].app: app \"a\" is mounted at \"\" and \"/other\""}},
		{"admin not loopback", base + "[admin]\naddr = \"0.0.0.0:9000\"\nshutdown_delay = \"-1s\"\n",
			[]string{"11: admin.addr: \"0.0.0.0:9000\": the admin listener must be", "12: admin.shutdown_delay: must not be negative"}},
		{"trusted proxies and proxy_protocol", "trusted_proxies = [\"10.0.0.0/33\", \"unix\", \"nonsense\", 7]\n" + base + "[[listener]]\naddr = \":0\"\nproxy_protocol = \"yes\"\n",
			[]string{"1: trusted_proxies[0]: \"10.0.0.0/33\" is not a CIDR prefix", "1: trusted_proxies[2]: \"nonsense\" is not an address", "1: trusted_proxies[3]: want a string", "13: listener[1].proxy_protocol: want a boolean"}},
		{"logs", "log_format = \"xml\"\nerror_log = \"off\"\nlog_level = \"loud\"\n" + base,
			[]string{"1: log_format: \"xml\" is not text or json", "2: error_log: cannot be \"off\"", "3: log_level: \"loud\" is not debug"}},
		{"route names", base + "[[site.route]]\npath = \"/a\"\nname = \"api\"\nrespond = {}\n[[site.route]]\npath = \"/b\"\nname = \"api\"\nrespond = {}\n[[site.route]]\npath = \"/c\"\nname = \"12\"\nrespond = {}\n[[site.route]]\npath = \"/d\"\nname = \"a b\"\nrespond = {}\n",
			[]string{"16: site[0].route[2].name: \"api\" names site[0].route[1] too", "20: site[0].route[3].name: \"12\": a name of digits only", "24: site[0].route[4].name: \"a b\": use letters"}},
		{"nothing", "", []string{"listener: no listener", "site: no site"}},
		{"redirect_https", base + "[[listener]]\naddr = \":0\"\nprotocol = \"uwsgi\"\nredirect_https = true\n[[listener]]\naddr = \":0\"\ntls = { cert = \"app.py\", key = \"app.py\" }\nredirect_https = true\n[[listener]]\naddr = \":0\"\nredirect_https = \"yes\"\n",
			[]string{"13: listener[1].redirect_https: is for HTTP listeners", "17: listener[2].redirect_https: is for plain HTTP listeners", "20: listener[3].redirect_https: want a boolean"}},
		{"max_header_fields", base + "[[listener]]\naddr = \":0\"\nmax_header_fields = -1\n[[listener]]\naddr = \":0\"\nprotocol = \"uwsgi\"\nmax_header_fields = 50\n[[listener]]\naddr = \":0\"\nmax_header_fields = \"many\"\n",
			[]string{"12: listener[1].max_header_fields: must not be negative", "16: listener[2].max_header_fields: is for HTTP listeners", "19: listener[3].max_header_fields: want an integer"}},
		{"reload_code and factory", "[[listener]]\naddr = \":0\"\n[app.a]\nmodule = \"app.py:create_app('x'\"\nreload_code = \"no\"\n[[site]]\nhosts = [\"default\"]\n[[site.route]]\npath = \"/\"\napp = \"a\"\n",
			[]string{"4: app.a.module: \"app.py:create_app('x'\": the factory call", "5: app.a.reload_code: want a boolean"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.text)
			_, err := Load(path)
			if err == nil {
				t.Fatalf("Load accepted:\n%s", tc.text)
			}
			msg := err.Error()
			// Sorted by line, whether decoding or validation found them.
			last := 0
			for _, l := range strings.Split(msg, "\n") {
				rest, ok := strings.CutPrefix(l, path+":")
				if !ok {
					continue
				}
				n, err := strconv.Atoi(rest[:strings.IndexByte(rest, ':')])
				if err != nil {
					continue
				}
				if n < last {
					t.Errorf("errors not sorted by line (%d after %d):\n%s", n, last, msg)
				}
				last = n
			}
			for _, want := range tc.wants {
				if !strings.Contains(msg, path+":"+want) && !strings.Contains(msg, want) {
					t.Errorf("error lacks %q:\n%s", want, msg)
				}
				if line, _, ok := strings.Cut(want, ": "); ok && !strings.Contains(msg, path+":"+line+":") && strings.Trim(line, "0123456789") == "" {
					t.Errorf("error lacks line %s (%s:%s:):\n%s", line, path, line, msg)
				}
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.File != path {
				t.Errorf("error is not a *config.Error naming the file: %#v", err)
			}
		})
	}
}

// TestUserGroupPIDFile: the process keys decode (pidfile relative to the
// file), resolve to an Identity, and unknown names are errors at their
// line.
func TestUserGroupPIDFile(t *testing.T) {
	const rest = `
[[listener]]
addr = "127.0.0.1:0"
[[site]]
hosts = ["default"]
[[site.route]]
path = "/"
respond = { body = "x" }
`
	path := writeConfig(t, "user = \"nobody\"\npidfile = \"run/portico.pid\"\n"+rest)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.User != "nobody" || c.PIDFile != filepath.Join(filepath.Dir(path), "run", "portico.pid") {
		t.Errorf("user %q pidfile %q", c.User, c.PIDFile)
	}
	id, err := c.Identity()
	if err != nil {
		t.Fatal(err)
	}
	if id.UID != 65534 || id.GID != 65534 || len(id.Groups) == 0 || id.Groups[0] != 65534 {
		t.Errorf("Identity() = %+v, want nobody's uid and gid 65534", id)
	}
	c.Group = "0"
	if id, err := c.Identity(); err != nil || id.GID != 0 || len(id.Groups) != 1 || id.Groups[0] != 0 {
		t.Errorf("with group 0: Identity() = %+v, %v; want gid 0 and just that group", id, err)
	}

	path = writeConfig(t, "user = \"no-such-user-portico\"\ngroup = \"no-such-group-portico\"\n"+rest)
	_, err = Load(path)
	for _, want := range []string{
		path + `:1: user: unknown user "no-such-user-portico"`,
		path + `:2: group: unknown group "no-such-group-portico"`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load: %v; want %q", err, want)
		}
	}
}
