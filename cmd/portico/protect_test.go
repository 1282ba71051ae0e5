//go:build linux

// End-to-end tests of "who may come in": IP rules on the real client
// address (behind a trusted proxy), the WAF on the hello app and on a
// Django admin session, and bans an app asks for.

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// getWith GETs url with extra headers.
func getWith(t *testing.T, c *http.Client, url string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return do(t, c, req)
}

// postForm POSTs an urlencoded form, with a Referer (Django's CSRF check
// wants one on HTTPS only, browsers send it anyway).
func postForm(t *testing.T, c *http.Client, url string, form url.Values) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Referer", url)
	return do(t, c, req)
}

// TestIPRules: portico run --allow/--deny behind a trusted proxy judges
// the address X-Forwarded-For names, not the proxy's; deny wins over
// allow; an address outside the allow list is refused; each refusal is
// one info record naming the rule.
func TestIPRules(t *testing.T) {
	python := needPython(t)
	p := startPortico(t, "--python", python, "--workers", "1",
		"--forwarded-allow-ips", "127.0.0.1/32",
		"--allow", "198.51.100.0/24", "--allow", "2001:db8::/32",
		"--deny", "198.51.100.66",
		repoPath(t, "examples/hello/app.py"))
	c := newClient(t)
	for _, tt := range []struct {
		xff    string
		status int
		rule   string
	}{
		{"198.51.100.7", 200, ""},
		{"203.0.113.9, 198.51.100.8", 200, ""}, // the rightmost untrusted hop is the client
		{"2001:db8::42", 200, ""},
		{"198.51.100.66", 403, `rule="deny 198.51.100.66"`},
		{"203.0.113.9", 403, `rule="not in allow list"`},
		{"", 403, `client=127.0.0.1:`}, // the proxy itself is not in the allow list
	} {
		h := map[string]string{}
		if tt.xff != "" {
			h["X-Forwarded-For"] = tt.xff
		}
		resp, body := getWith(t, c, p.URL("/"), h)
		wantStatus(t, resp, body, tt.status)
		if tt.rule != "" {
			p.waitLog(t, tt.rule, 5*time.Second)
		}
	}
	if n := strings.Count(p.Log(), "access refused"); n != 3 {
		t.Errorf("%d refusal records, want 3:\n%s", n, p.Log())
	}
	if !strings.Contains(p.Log(), `level=INFO msg="access refused" client=198.51.100.66`) {
		t.Errorf("the refusal record is not at info with the client:\n%s", p.Log())
	}
}

// TestIPRulesLayers: a route's lists apply on top of its site's (the
// admin limited to an office network inside a site open to a wider one),
// and "unix" admits peers on a unix-socket listener.
func TestIPRulesLayers(t *testing.T) {
	python := needPython(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "portico.sock")
	cfg := writeFile(t, dir, "portico.toml", fmt.Sprintf(`
trusted_proxies = ["127.0.0.1"]
[[listener]]
addr = "127.0.0.1:0"
[[listener]]
addr = "unix:%s"
[app.hello]
module = %q
python = %q
workers = 1
[[site]]
hosts = ["default"]
allow = ["10.0.0.0/8", "unix"]
[[site.route]]
path = "/admin"
respond = { status = 200, body = "admin" }
allow = ["10.1.0.0/16"]
[[site.route]]
path = "/"
app = "hello"
`, sock, repoPath(t, "examples/hello/app.py"), python))
	p := startServe(t, cfg)
	c := newClient(t)
	for _, tt := range []struct {
		path, xff string
		status    int
	}{
		{"/", "10.2.0.1", 200},
		{"/admin", "10.2.0.1", 403}, // the route narrows the site
		{"/admin", "10.1.0.1", 200},
		{"/", "192.0.2.1", 403},
		{"/admin", "192.0.2.1", 403}, // and cannot widen it
	} {
		resp, body := getWith(t, c, p.URL(tt.path), map[string]string{"X-Forwarded-For": tt.xff})
		if resp.StatusCode != tt.status {
			t.Errorf("%s from %s: status %d, want %d (%s)", tt.path, tt.xff, resp.StatusCode, tt.status, body)
		}
	}
	uc := unixClient(t, sock)
	resp, body := get(t, uc, "http://localhost/")
	wantStatus(t, resp, body, 200) // "unix" in the site's allow list
	resp, body = get(t, uc, "http://localhost/admin")
	wantStatus(t, resp, body, 403) // not in the route's
	p.waitLog(t, `layer=route rule="not in allow list"`, 5*time.Second)
}

// wafRecords returns the WAF records in log.
func wafRecords(log string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "msg=\"waf: ") {
			out = append(out, l)
		}
	}
	return out
}

// TestWAF: portico run --waf block refuses attacks in the query and in an
// urlencoded body (read from the worker route's spool) with 403 and one
// record naming the rules, the matched data and the request ID; benign
// requests reach the app. --waf detect lets the same through and logs.
func TestWAF(t *testing.T) {
	python := needPython(t)
	hello := repoPath(t, "examples/hello/app.py")
	attackQuery := "/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users--"
	attackForm := url.Values{"comment": {"<script>alert(document.cookie)</script>"}}

	t.Run("block", func(t *testing.T) {
		p := startPortico(t, "--python", python, "--workers", "1", "--waf", "block", hello)
		p.waitLog(t, `msg="waf rules loaded" mode=block paranoia=1 anomaly_threshold=5`, 5*time.Second)
		c := newClient(t)
		resp, body := get(t, c, p.URL("/?page=2&q=hello+world"))
		wantStatus(t, resp, body, 200)
		resp, body = postForm(t, c, p.URL("/comment"), url.Values{"comment": {"Nice post, thanks!"}})
		wantStatus(t, resp, body, 200)

		resp, body = get(t, c, p.URL(attackQuery))
		wantStatus(t, resp, body, 403)
		id := resp.Header.Get("X-Request-Id")
		p.waitLog(t, "request_id="+id, 5*time.Second)
		resp, body = postForm(t, c, p.URL("/comment"), attackForm)
		wantStatus(t, resp, body, 403)
		id2 := resp.Header.Get("X-Request-Id")
		p.waitLog(t, "request_id="+id2, 5*time.Second)
		resp, body = getWith(t, c, p.URL("/"), map[string]string{"User-Agent": "sqlmap/1.7.2#stable (https://sqlmap.org)"})
		wantStatus(t, resp, body, 403)
		p.waitLog(t, "request_id="+resp.Header.Get("X-Request-Id"), 5*time.Second)

		recs := wafRecords(p.Log())
		if len(recs) != 3 {
			t.Fatalf("%d WAF records, want 3 (one per refused request):\n%s", len(recs), strings.Join(recs, "\n"))
		}
		for i, want := range []string{"942", "941", "913100"} {
			r := recs[i]
			if !strings.Contains(r, "level=WARN") || !strings.Contains(r, `msg="waf: request refused"`) || !strings.Contains(r, want) || !strings.Contains(r, "949110") || !strings.Contains(r, "matched=") {
				t.Errorf("record %d does not name rule %s, 949110 and the matched data:\n%s", i, want, r)
			}
		}
		if !strings.Contains(recs[1], "ARGS:comment=") {
			t.Errorf("the body's field is not named: %s", recs[1])
		}
	})

	t.Run("detect", func(t *testing.T) {
		p := startPortico(t, "--python", python, "--workers", "1", "--waf", "detect", hello)
		c := newClient(t)
		resp, body := get(t, c, p.URL(attackQuery))
		wantStatus(t, resp, body, 200)
		resp, body = postForm(t, c, p.URL("/comment"), attackForm)
		wantStatus(t, resp, body, 200)
		p.waitLog(t, "request_id="+resp.Header.Get("X-Request-Id"), 5*time.Second)
		recs := wafRecords(p.Log())
		if len(recs) != 2 || !strings.Contains(recs[0], "level=WARN") || !strings.Contains(recs[0], "detect mode") {
			t.Errorf("want 2 warn records in detect mode:\n%s", strings.Join(recs, "\n"))
		}
	})
}

// TestDjangoAdminWAF: a whole Django admin session with the WAF blocking
// at paranoia 1 meets no false positive: login with the CSRF token, the
// change lists, adding and changing a group (change form POSTs), a
// search, a multipart file upload; then an attack on the same site is
// still refused.
func TestDjangoAdminWAF(t *testing.T) {
	python := needPython(t, "django")
	dir := filepath.Join(t.TempDir(), "djangoproject")
	copyTree(t, repoPath(t, "examples/djangoproject"), dir, "db.sqlite3", "staticfiles", "__pycache__")
	manage(t, python, dir, "migrate", "--noinput")
	manage(t, python, dir, "collectstatic", "--noinput")
	manage(t, python, dir, "createsuperuser", "--noinput")
	p := startPortico(t, "--python", python, "--chdir", dir, "--workers", "2", "--env", "DJANGO_DEBUG=0",
		"--static", "/static/="+filepath.Join(dir, "staticfiles"), "--waf", "block", "mysite.wsgi")
	c := newClient(t)
	page := func(path string, want int) []byte {
		t.Helper()
		resp, body := get(t, c, p.URL(path))
		wantStatus(t, resp, body, want)
		return body
	}
	post := func(path string, form url.Values, want int) []byte {
		t.Helper()
		resp, body := postForm(t, c, p.URL(path), form)
		wantStatus(t, resp, body, want)
		return body
	}

	body := page("/admin/login/?next=/admin/", 200)
	post("/admin/login/?next=/admin/", url.Values{"csrfmiddlewaretoken": {csrfToken(t, body)},
		"username": {djangoUser}, "password": {djangoPassword}, "next": {"/admin/"}}, 302)
	if !bytes.Contains(page("/admin/", 200), []byte("Site administration")) {
		t.Fatal("not logged in")
	}
	page("/static/admin/css/base.css", 200)
	if !bytes.Contains(page("/admin/auth/user/", 200), []byte(djangoUser)) {
		t.Error("the user change list does not list the superuser")
	}
	page("/admin/auth/user/?q=adm&is_staff__exact=1&o=1.-2", 200)

	body = page("/admin/auth/group/add/", 200)
	post("/admin/auth/group/add/", url.Values{"csrfmiddlewaretoken": {csrfToken(t, body)},
		"name": {"Editors"}, "_save": {"Save"}}, 302)
	if !bytes.Contains(page("/admin/auth/group/", 200), []byte("Editors")) {
		t.Fatal("the group was not added")
	}
	body = page("/admin/auth/group/1/change/", 200)
	post("/admin/auth/group/1/change/", url.Values{"csrfmiddlewaretoken": {csrfToken(t, body)},
		"name": {"Editors & reviewers (2024)"}, "_continue": {"Save and continue editing"}}, 302)
	if !bytes.Contains(page("/admin/auth/group/", 200), []byte("Editors &amp; reviewers (2024)")) {
		t.Error("the group was not changed")
	}
	body = page("/admin/auth/user/1/change/", 200)
	if !bytes.Contains(body, []byte(`name="username"`)) {
		t.Error("the user change form did not render")
	}

	body = page("/upload", 200)
	data, sum := randomData(t, 1<<20)
	buf, ct := multipartBody(t, []string{"csrfmiddlewaretoken", csrfToken(t, body)}, formFile{field: "file", name: "report-2024.pdf", data: data})
	req, err := http.NewRequest(http.MethodPost, p.URL("/upload"), buf)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Referer", p.URL("/upload"))
	resp, rbody := do(t, c, req)
	wantStatus(t, resp, rbody, 200)
	if !bytes.Contains(rbody, []byte(sum)) {
		t.Errorf("upload answer %s lacks the file's sha256 %s", rbody, sum)
	}

	// The same site, an attack: still refused. Its record, written after
	// any of the session's, tells when the log has them all.
	resp, rbody = get(t, c, p.URL("/admin/auth/user/?q=%27%20OR%201%3D1--"))
	wantStatus(t, resp, rbody, 403)
	p.waitLog(t, "request_id="+resp.Header.Get("X-Request-Id"), 5*time.Second)
	if recs := wafRecords(p.Log()); len(recs) != 1 {
		t.Fatalf("false positives on the admin session (only the attack's record is expected):\n%s", strings.Join(recs, "\n"))
	}
}

// banApp asks Portico to ban the client on /login?fail=1.
const banApp = `def application(environ, start_response):
    headers = [("Content-Type", "text/plain")]
    if environ.get("PATH_INFO") == "/login" and "fail=1" in environ.get("QUERY_STRING", ""):
        headers.append(("X-Portico-Block", "60"))
    start_response("200 OK", headers)
    return [b"app"]
`

// TestBans: X-Portico-Block from the app (a worker) or a proxy upstream
// bans the client's real address on every route; the header never
// reaches the client; the admin listener lists and lifts bans.
func TestBans(t *testing.T) {
	python := needPython(t)
	app := writeFile(t, t.TempDir(), "banapp.py", banApp)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/ban" {
			w.Header().Set("X-Portico-Block", "30")
		}
		io.WriteString(w, "upstream")
	}))
	defer up.Close()
	p := startPortico(t, "--python", python, "--workers", "1", "--forwarded-allow-ips", "127.0.0.1/32",
		"--admin", "127.0.0.1:0", "--proxy", "/api="+up.URL, app)
	admin := "http://" + p.adminAddr(t)
	c := newClient(t)
	from := func(addr, path string) (*http.Response, []byte) {
		t.Helper()
		return getWith(t, c, p.URL(path), map[string]string{"X-Forwarded-For": addr})
	}
	const a, b = "198.51.100.1", "2001:db8::2"

	resp, body := from(a, "/login?fail=1")
	wantStatus(t, resp, body, 200)
	if v := resp.Header.Values("X-Portico-Block"); len(v) != 0 {
		t.Errorf("the client saw X-Portico-Block: %q", v)
	}
	p.waitLog(t, `msg="client banned" client=198.51.100.1 seconds=60`, 5*time.Second)
	for _, path := range []string{"/", "/login", "/api/x"} {
		resp, body = from(a, path)
		wantStatus(t, resp, body, 403)
	}
	resp, body = from(b, "/api/x")
	wantStatus(t, resp, body, 200)
	resp, body = from(b, "/api/ban")
	wantStatus(t, resp, body, 200)
	if v := resp.Header.Values("X-Portico-Block"); len(v) != 0 {
		t.Errorf("the client saw the upstream's X-Portico-Block: %q", v)
	}
	resp, body = from(b, "/")
	wantStatus(t, resp, body, 403)

	resp, body = get(t, c, admin+"/bans")
	wantStatus(t, resp, body, 200)
	var list struct {
		Bans []struct {
			Addr      string  `json:"addr"`
			Remaining float64 `json:"remaining_seconds"`
		} `json:"bans"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if len(list.Bans) != 2 || list.Bans[0].Addr != b || list.Bans[1].Addr != a ||
		list.Bans[0].Remaining > 30 || list.Bans[0].Remaining < 20 || list.Bans[1].Remaining > 60 || list.Bans[1].Remaining < 50 {
		t.Errorf("GET /bans: %s", body)
	}

	lift := func(addr string, want int) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodDelete, admin+"/bans/"+addr, nil)
		resp, body := do(t, c, req)
		wantStatus(t, resp, body, want)
	}
	lift(a, 200)
	lift(a, 404)
	lift("not-an-address", 400)
	resp, body = from(a, "/")
	wantStatus(t, resp, body, 200)
	resp, body = from(b, "/")
	wantStatus(t, resp, body, 403)
}
