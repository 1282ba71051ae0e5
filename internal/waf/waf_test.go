package waf

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"portico/internal/proxy"
	"portico/internal/requestid"
)

// Loading the CRS takes a while: one WAF per mode for the whole package.
var (
	loadOnce     sync.Once
	blockW, detW *WAF
	logBuf       lockedBuffer
	errLoad      error
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// take returns the records written so far and forgets them.
func (l *lockedBuffer) take() []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err == nil {
			out = append(out, m)
		}
	}
	l.b.Reset()
	return out
}

func wafs(t testing.TB) (block, detect *WAF) {
	t.Helper()
	loadOnce.Do(func() {
		log := slog.New(slog.NewJSONHandler(&logBuf, nil))
		if blockW, errLoad = New(Options{Logger: log}); errLoad != nil {
			return
		}
		detW, errLoad = New(Options{Mode: Detect, Logger: log})
	})
	if errLoad != nil {
		t.Fatal(errLoad)
	}
	return blockW, detW
}

// backend is an upstream that records the bodies it receives, behind a
// real proxy.Handler (which spools, then calls the inspector).
func proxied(t *testing.T) (http.Handler, *[]string) {
	return proxiedB(t)
}

func proxiedB(t testing.TB) (http.Handler, *[]string) {
	t.Helper()
	var mu sync.Mutex
	var bodies []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		io.WriteString(w, "app")
	}))
	t.Cleanup(up.Close)
	tg, err := proxy.ParseTarget(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	ups := []*proxy.Upstream{{Name: up.URL, URL: tg.URL, Transport: proxy.NewHTTPTransport(tg, 0), Weight: 1}}
	sel, err := proxy.NewSelector("round_robin", "", ups)
	if err != nil {
		t.Fatal(err)
	}
	h, err := proxy.New(proxy.Options{Pool: proxy.NewPool(ups, sel, proxy.PoolOptions{}), BodyMemory: 512})
	if err != nil {
		t.Fatal(err)
	}
	return h, &bodies
}

type sample struct {
	name   string
	method string
	target string
	form   url.Values // an urlencoded body
	ua     string
}

func (s sample) request() *http.Request {
	var body io.Reader
	if s.form != nil {
		body = strings.NewReader(s.form.Encode())
	}
	r := httptest.NewRequest(s.method, s.target, body)
	if s.form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	r.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
	r.Header.Set("Accept", "text/html,application/xhtml+xml")
	if s.ua != "" {
		r.Header.Set("User-Agent", s.ua)
	}
	r.RemoteAddr = "192.0.2.10:5555"
	return r
}

var attacks = []sample{
	{name: "sqli in query", method: "GET", target: "/items?id=1%27%20OR%20%271%27%3D%271"},
	{name: "sqli union in query", method: "GET", target: "/items?id=1%20UNION%20SELECT%20username,password%20FROM%20users--"},
	{name: "xss in query", method: "GET", target: "/search?q=%3Cscript%3Ealert(document.cookie)%3C/script%3E"},
	{name: "path traversal in query", method: "GET", target: "/download?file=../../../../etc/passwd"},
	{name: "shell injection in query", method: "GET", target: "/ping?host=127.0.0.1%3Bcat%20/etc/passwd"},
	{name: "scanner user agent sqlmap", method: "GET", target: "/", ua: "sqlmap/1.7.2#stable (https://sqlmap.org)"},
	{name: "scanner user agent nikto", method: "GET", target: "/", ua: "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000001)"},
	{name: "sqli in form body", method: "POST", target: "/login", form: url.Values{"user": {"admin' OR 1=1--"}, "password": {"x"}}},
	{name: "xss in form body", method: "POST", target: "/comment", form: url.Values{"text": {`<img src=x onerror=alert(1)>`}}},
	{name: "path traversal in form body", method: "POST", target: "/open", form: url.Values{"path": {"../../../../etc/shadow"}}},
	{name: "shell injection in form body", method: "POST", target: "/ping", form: url.Values{"host": {"8.8.8.8; /bin/bash -c 'cat /etc/passwd'"}}},
}

var benign = []sample{
	{name: "home page", method: "GET", target: "/"},
	{name: "search with words", method: "GET", target: "/search?q=how+to+select+a+union+rep&page=2"},
	{name: "apostrophe in a name", method: "GET", target: "/people?name=O%27Brien"},
	{name: "static file", method: "GET", target: "/static/css/site.css?v=3"},
	{name: "login form", method: "POST", target: "/login", form: url.Values{"username": {"alice"}, "password": {"correct horse battery staple"}, "next": {"/admin/"}}},
	{name: "comment with punctuation", method: "POST", target: "/comment", form: url.Values{"text": {"Great post! I'd say 2 > 1, and that's fine; see you at 10:30."}}},
}

func TestAttacksBlocked(t *testing.T) {
	block, _ := wafs(t)
	h, bodies := proxied(t)
	guarded := block.Middleware(h, true)
	logBuf.take()
	for _, s := range attacks {
		t.Run(s.name, func(t *testing.T) {
			n := len(*bodies)
			r := s.request()
			r.Header.Set(requestid.Header, "req-"+strings.ReplaceAll(s.name, " ", "-"))
			w := httptest.NewRecorder()
			guarded.ServeHTTP(w, r)
			if w.Code != http.StatusForbidden {
				t.Fatalf("status %d, want 403", w.Code)
			}
			if len(*bodies) != n {
				t.Errorf("the upstream saw the request")
			}
			recs := logBuf.take()
			if len(recs) != 1 {
				t.Fatalf("%d log records, want 1: %v", len(recs), recs)
			}
			rec := recs[0]
			if rec["level"] != "WARN" || rec["msg"] != "waf: request refused" || rec["request_id"] != "req-"+strings.ReplaceAll(s.name, " ", "-") {
				t.Errorf("record: %v", rec)
			}
			if rules, _ := rec["rules"].([]any); len(rules) < 2 { // a detection rule and 949110
				t.Errorf("rules: %v", rec["rules"])
			}
			if m, _ := rec["matched"].([]any); len(m) == 0 {
				t.Errorf("no matched data: %v", rec)
			}
		})
	}
}

func TestBenignPass(t *testing.T) {
	block, _ := wafs(t)
	h, bodies := proxied(t)
	guarded := block.Middleware(h, true)
	logBuf.take()
	for _, s := range benign {
		t.Run(s.name, func(t *testing.T) {
			n := len(*bodies)
			w := httptest.NewRecorder()
			guarded.ServeHTTP(w, s.request())
			if w.Code != http.StatusOK || w.Body.String() != "app" {
				t.Fatalf("status %d %q, want 200 app; log: %v", w.Code, w.Body, logBuf.take())
			}
			if len(*bodies) != n+1 {
				t.Fatal("the upstream did not see the request")
			}
			if s.form != nil && (*bodies)[n] != s.form.Encode() {
				t.Errorf("upstream got body %q, want %q", (*bodies)[n], s.form.Encode())
			}
		})
	}
	if recs := logBuf.take(); len(recs) != 0 {
		t.Errorf("benign requests logged: %v", recs)
	}
}

// A body larger than the spool's memory (a temporary file) is inspected
// from the file and still reaches the upstream whole.
func TestBodyFromSpoolFile(t *testing.T) {
	block, _ := wafs(t)
	h, bodies := proxied(t)
	guarded := block.Middleware(h, true)
	logBuf.take()
	pad := strings.Repeat("a", 4096)
	for _, tt := range []struct {
		val    string
		status int
	}{{"hello", 200}, {"1' UNION SELECT password FROM auth_user--", 403}} {
		form := url.Values{"pad": {pad}, "q": {tt.val}}
		w := httptest.NewRecorder()
		guarded.ServeHTTP(w, sample{method: "POST", target: "/f", form: form}.request())
		if w.Code != tt.status {
			t.Fatalf("%q: status %d, want %d", tt.val, w.Code, tt.status)
		}
		if tt.status == 200 && (*bodies)[len(*bodies)-1] != form.Encode() {
			t.Error("the upstream's body differs from the client's")
		}
	}
	logBuf.take()
}

func TestNotDeferred(t *testing.T) {
	block, _ := wafs(t)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "file") })
	guarded := block.Middleware(ok, false)
	logBuf.take()
	for _, tt := range []struct {
		s      sample
		status int
	}{{attacks[0], 403}, {benign[3], 200}} {
		w := httptest.NewRecorder()
		guarded.ServeHTTP(w, tt.s.request())
		if w.Code != tt.status {
			t.Errorf("%s: status %d, want %d", tt.s.name, w.Code, tt.status)
		}
	}
	if recs := logBuf.take(); len(recs) != 1 {
		t.Errorf("%d records, want 1", len(recs))
	}
}

func TestDetectLetsThrough(t *testing.T) {
	_, detect := wafs(t)
	h, bodies := proxied(t)
	guarded := detect.Middleware(h, true)
	logBuf.take()
	for _, s := range []sample{attacks[0], attacks[7]} {
		n := len(*bodies)
		w := httptest.NewRecorder()
		guarded.ServeHTTP(w, s.request())
		if w.Code != http.StatusOK || len(*bodies) != n+1 {
			t.Fatalf("%s: status %d, want 200 through to the upstream", s.name, w.Code)
		}
		recs := logBuf.take()
		if len(recs) != 1 || recs[0]["level"] != "WARN" || recs[0]["mode"] != Detect {
			t.Fatalf("%s: want one warn record in detect mode, got %v", s.name, recs)
		}
	}
}

func TestExcludeRules(t *testing.T) {
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	// 913100: scanner user agents. Removed, the sqlmap UA alone scores nothing.
	w, err := New(Options{ExcludeRules: []int{913100}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CRS load time: %v", w.LoadTime)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	rec := httptest.NewRecorder()
	w.Middleware(ok, false).ServeHTTP(rec, attacks[5].request())
	if rec.Code != 200 {
		t.Fatalf("excluded rule still blocks: %d", rec.Code)
	}
	if err := w.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	again, err := New(Options{ExcludeRules: []int{913100}, Logger: log})
	if err != nil {
		t.Fatalf("loading again after Close: %v", err)
	}
	defer again.Close()
	rec = httptest.NewRecorder()
	again.Middleware(ok, false).ServeHTTP(rec, attacks[0].request())
	if rec.Code != 403 {
		t.Errorf("a WAF loaded after another's Close does not block: %d", rec.Code)
	}
	if _, err := New(Options{Mode: "on"}); err == nil {
		t.Error("mode on accepted")
	}
	if (Options{}).Key() != (Options{Mode: Block, Paranoia: 1, AnomalyThreshold: 5}).Key() {
		t.Error("defaults give another key")
	}
	if (Options{ExcludeRules: []int{2, 1}}).Key() != (Options{ExcludeRules: []int{1, 2}}).Key() {
		t.Error("rule order changes the key")
	}
}
