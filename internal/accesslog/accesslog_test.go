package accesslog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"portico/internal/porticotest"
	"portico/internal/requestid"
)

var (
	zone   = time.FixedZone("", -7*3600)
	t0     = time.Date(2024, 3, 9, 14, 5, 6, 0, zone)
	took   = 12345 * time.Microsecond
	tStamp = "[09/Mar/2024:14:05:06 -0700]"
)

// fixedClock returns start, then start+elapsed, then start again...: the
// two readings the middleware takes per request.
func fixedClock(start time.Time, elapsed time.Duration) func() time.Time {
	var mu sync.Mutex
	calls := 0
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls%2 == 1 {
			return start
		}
		return start.Add(elapsed)
	}
}

// logOne serves r with h behind the middleware and returns the log output.
func logOne(t *testing.T, f Format, h http.Handler, r *http.Request) string {
	t.Helper()
	var buf bytes.Buffer
	mw := newLogger(&buf, Options{Format: f}, fixedClock(t0, took)).middleware(h)
	mw.ServeHTTP(httptest.NewRecorder(), r)
	return buf.String()
}

func respond(status int, body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if status != 0 {
			w.WriteHeader(status)
		}
		if body != "" {
			io.WriteString(w, body)
		}
	})
}

func fullRequest() *http.Request {
	r := httptest.NewRequest("GET", "/a/b?c=d", nil)
	r.SetBasicAuth("alice", "secret")
	r.Header.Set("Referer", "http://example.com/")
	r.Header.Set("User-Agent", "test-agent/1.0")
	r.Header.Set(requestid.Header, "4f1c2b3a-id")
	return r
}

func TestCombined(t *testing.T) {
	tests := []struct {
		name    string
		handler http.Handler
		req     func() *http.Request
		want    string
	}{
		{
			name:    "full",
			handler: respond(201, "hello"),
			req:     fullRequest,
			want:    `192.0.2.1 - alice ` + tStamp + ` "GET /a/b?c=d HTTP/1.1" 201 5 "http://example.com/" "test-agent/1.0" 0.012 "4f1c2b3a-id"`,
		},
		{
			name:    "nothing written",
			handler: respond(0, ""),
			req:     func() *http.Request { return httptest.NewRequest("GET", "/", nil) },
			want:    `192.0.2.1 - - ` + tStamp + ` "GET / HTTP/1.1" 200 0 "-" "-" 0.012 "-"`,
		},
		{
			name:    "implicit 200",
			handler: respond(0, "abc"),
			req:     func() *http.Request { return httptest.NewRequest("POST", "/form", nil) },
			want:    `192.0.2.1 - - ` + tStamp + ` "POST /form HTTP/1.1" 200 3 "-" "-" 0.012 "-"`,
		},
		{
			name:    "HEAD sends no body",
			handler: respond(0, "abc"),
			req:     func() *http.Request { return httptest.NewRequest("HEAD", "/", nil) },
			want:    `192.0.2.1 - - ` + tStamp + ` "HEAD / HTTP/1.1" 200 0 "-" "-" 0.012 "-"`,
		},
		{
			name: "informational status before the final one",
			handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusEarlyHints)
				w.WriteHeader(http.StatusNoContent)
			}),
			req:  func() *http.Request { return httptest.NewRequest("GET", "/", nil) },
			want: `192.0.2.1 - - ` + tStamp + ` "GET / HTTP/1.1" 204 0 "-" "-" 0.012 "-"`,
		},
		{
			name:    "IPv6 peer, HTTP/2",
			handler: respond(404, "nf"),
			req: func() *http.Request {
				r := httptest.NewRequest("GET", "/x", nil)
				r.RemoteAddr = "[2001:db8::1]:443"
				r.Proto = "HTTP/2.0"
				return r
			},
			want: `2001:db8::1 - - ` + tStamp + ` "GET /x HTTP/2.0" 404 2 "-" "-" 0.012 "-"`,
		},
		{
			name:    "no peer address",
			handler: respond(0, ""),
			req: func() *http.Request {
				r := httptest.NewRequest("GET", "/", nil)
				r.RemoteAddr = ""
				return r
			},
			want: `- - - ` + tStamp + ` "GET / HTTP/1.1" 200 0 "-" "-" 0.012 "-"`,
		},
		{
			name:    "Unix socket peer",
			handler: respond(0, ""),
			req: func() *http.Request {
				r := httptest.NewRequest("GET", "/", nil)
				r.RemoteAddr = "@"
				return r
			},
			want: `@ - - ` + tStamp + ` "GET / HTTP/1.1" 200 0 "-" "-" 0.012 "-"`,
		},
		{
			name:    "request built in-process",
			handler: respond(0, ""),
			req: func() *http.Request {
				r, _ := http.NewRequest("GET", "http://h/p%20q?x=1", nil)
				r.RemoteAddr = "10.0.0.1:5"
				return r
			},
			want: `10.0.0.1 - - ` + tStamp + ` "GET /p%20q?x=1 HTTP/1.1" 200 0 "-" "-" 0.012 "-"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := logOne(t, Combined, tt.handler, tt.req()); got != tt.want+"\n" {
				t.Errorf("line:\n got %q\nwant %q", got, tt.want+"\n")
			}
		})
	}
}

func TestCombinedEscaping(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.RequestURI = `/q?"x"\y`
	r.SetBasicAuth(`bo"b`, "pw")
	r.Header.Set("Referer", "a\tb\x00")
	r.Header.Set("User-Agent", "x\ny\x7f\xc3\xa9\" - - [forged")
	got := logOne(t, Combined, respond(0, ""), r)
	want := `192.0.2.1 - bo\x22b ` + tStamp + ` "GET /q?\x22x\x22\x5Cy HTTP/1.1" 200 0 "a\x09b\x00" "x\x0Ay\x7F\xC3\xA9\x22 - - [forged" 0.012 "-"` + "\n"
	if got != want {
		t.Errorf("line:\n got %q\nwant %q", got, want)
	}
	if strings.Count(got, "\n") != 1 {
		t.Errorf("line split in %d", strings.Count(got, "\n"))
	}
}

func TestAppendSeconds(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0.000"},
		{999 * time.Microsecond, "0.000"},
		{time.Millisecond, "0.001"},
		{12345 * time.Microsecond, "0.012"},
		{1500 * time.Millisecond, "1.500"},
		{83*time.Second + 7*time.Millisecond, "83.007"},
		{-time.Second, "0.000"}, // a clock step backwards
	}
	for _, tt := range tests {
		if got := string(appendSeconds(nil, tt.d)); got != tt.want {
			t.Errorf("appendSeconds(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestJSON(t *testing.T) {
	got := logOne(t, JSON, respond(201, "hello"), fullRequest())
	want := `{"remote_addr":"192.0.2.1","remote_user":"alice","time":"2024-03-09T14:05:06.012-07:00",` +
		`"method":"GET","uri":"/a/b?c=d","protocol":"HTTP/1.1","status":201,"bytes_sent":5,` +
		`"referer":"http://example.com/","user_agent":"test-agent/1.0","request_time":0.012,"request_id":"4f1c2b3a-id"}` + "\n"
	if got != want {
		t.Errorf("line:\n got %s\nwant %s", got, want)
	}

	got = logOne(t, JSON, respond(0, ""), httptest.NewRequest("GET", "/", nil))
	var m map[string]any
	if err := json.Unmarshal([]byte(got), &m); err != nil {
		t.Fatalf("invalid JSON %q: %v", got, err)
	}
	for _, k := range []string{"remote_user", "referer", "user_agent"} {
		if m[k] != "" {
			t.Errorf("%s = %#v, want \"\"", k, m[k])
		}
	}
}

// decodeString is what a JSON reader gets from encoding s as encoding/json
// does.
func decodeString(t testing.TB, s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

var nasty = []string{
	"",
	"plain",
	`quote " backslash \ slash /`,
	"controls \x00\x01\b\f\n\r\t\x1f\x7f",
	"utf-8 é ✓ 😀",
	"invalid \xff \xc3 \xed\xa0\x80 end",
	"separators \u2028 \u2029",
	"</script><!--",
}

func TestJSONEscaping(t *testing.T) {
	for _, s := range nasty {
		t.Run(s, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("User-Agent", s)
			r.RequestURI = "/" + s
			r.SetBasicAuth(s, "")
			line := logOne(t, JSON, respond(0, ""), r)
			if !strings.HasSuffix(line, "}\n") || strings.Count(line, "\n") != 1 {
				t.Fatalf("not one line: %q", line)
			}
			var got struct {
				RemoteUser string `json:"remote_user"`
				URI        string `json:"uri"`
				UserAgent  string `json:"user_agent"`
			}
			if !json.Valid([]byte(line)) {
				t.Fatalf("invalid JSON: %q", line)
			}
			var all map[string]any
			if err := json.Unmarshal([]byte(line), &all); err != nil {
				t.Fatal(err)
			}
			if len(all) != 12 {
				t.Errorf("%d fields, want 12: %v", len(all), all)
			}
			if err := json.Unmarshal([]byte(line), &got); err != nil {
				t.Fatal(err)
			}
			if want := decodeString(t, s); got.UserAgent != want || got.RemoteUser != want || got.URI != decodeString(t, "/"+s) {
				t.Errorf("decoded %q, %q, %q; want %q", got.UserAgent, got.RemoteUser, got.URI, want)
			}
		})
	}
}

func FuzzJSONString(f *testing.F) {
	for _, s := range nasty {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("appendJSONString(%q) = %s: %v", s, b, err)
		}
		if want := decodeString(t, s); got != want {
			t.Errorf("round trip of %q = %q, want %q", s, got, want)
		}
	})
}

func FuzzEscaped(f *testing.F) {
	for _, s := range nasty {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendEscaped(nil, s)
		for i, c := range b {
			if c < 0x20 || c >= 0x7f || c == '"' {
				t.Fatalf("appendEscaped(%q) = %q: byte %#x at %d", s, b, c, i)
			}
			if c == '\\' && (i+1 >= len(b) || b[i+1] != 'x') {
				t.Fatalf("appendEscaped(%q) = %q: bare backslash at %d", s, b, i)
			}
		}
	})
}

func TestRemoteHost(t *testing.T) {
	tests := map[string]string{
		"192.0.2.1:80":     "192.0.2.1",
		"[::1]:8000":       "::1",
		"[fe80::1%eth0]:1": "fe80::1%eth0",
		"@":                "@",
		"/run/x.sock":      "/run/x.sock",
		"::1":              "::1",
		"":                 "",
		"[broken":          "[broken",
	}
	for in, want := range tests {
		if got := remoteHost(in); got != want {
			t.Errorf("remoteHost(%q) = %q, want %q", in, got, want)
		}
	}
}

// server serves h behind the middleware on a loopback socket; the log goes
// to the returned buffer, read after the response ended.
func server(t *testing.T, h http.Handler) (*httptest.Server, *porticotest.Buffer) {
	t.Helper()
	buf := &porticotest.Buffer{}
	srv := httptest.NewServer(New(buf, Options{})(h))
	t.Cleanup(srv.Close)
	return srv, buf
}

func TestFlusher(t *testing.T) {
	release := make(chan struct{})
	srv, logBuf := server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "second")
	}))
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// "first" arrives while the handler is still blocked: the flush went
	// through the wrapper.
	first := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "first" {
		t.Fatalf("read %q, %v before release", first, err)
	}
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second" {
		t.Fatalf("rest = %q, %v", rest, err)
	}
	if line := logBuf.String(); !strings.Contains(line, `"GET / HTTP/1.1" 200 11 `) {
		t.Errorf("line = %q, want status 200 and 11 bytes", line)
	}
}

func TestResponseController(t *testing.T) {
	errs := make(chan error, 4)
	srv, _ := server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		errs <- rc.SetReadDeadline(time.Now().Add(time.Minute))
		errs <- rc.SetWriteDeadline(time.Now().Add(time.Minute))
		errs <- rc.EnableFullDuplex()
		errs <- rc.Flush()
	}))
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("ResponseController through the wrapper: %v", err)
		}
	}
}

// readFromWriter is a ResponseWriter with a ReadFrom, like net/http's.
type readFromWriter struct {
	httptest.ResponseRecorder
	readFroms int
}

func (w *readFromWriter) ReadFrom(src io.Reader) (int64, error) {
	w.readFroms++
	return io.Copy(&w.ResponseRecorder, src)
}

func TestReadFromPassthrough(t *testing.T) {
	var buf bytes.Buffer
	mw := newLogger(&buf, Options{}, fixedClock(t0, took)).middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A reader without WriteTo, so io.Copy uses the writer's ReadFrom.
		io.Copy(w, io.LimitReader(strings.NewReader("sendfile me"), 1<<20))
	}))
	w := &readFromWriter{ResponseRecorder: *httptest.NewRecorder()}
	mw.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if w.readFroms != 1 {
		t.Errorf("wrapped ReadFrom called %d times, want 1", w.readFroms)
	}
	if w.Body.String() != "sendfile me" {
		t.Errorf("body = %q", w.Body.String())
	}
	if !strings.Contains(buf.String(), `" 200 11 "`) {
		t.Errorf("line = %q, want 200 and 11 bytes", buf.String())
	}
}

func TestPanicStillLogged(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		value   any
		want    string
	}{
		{
			name: "abort mid-body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(206)
				io.WriteString(w, "partial")
				panic(http.ErrAbortHandler)
			},
			value: http.ErrAbortHandler,
			want:  `"GET / HTTP/1.1" 206 7 `,
		},
		{
			name: "abort after an implicit 200",
			handler: func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "abc")
				panic(http.ErrAbortHandler)
			},
			value: http.ErrAbortHandler,
			want:  `"GET / HTTP/1.1" 200 3 `,
		},
		{
			name:    "panic before anything was sent",
			handler: func(w http.ResponseWriter, r *http.Request) { panic("boom") },
			value:   "boom",
			want:    `"GET / HTTP/1.1" 500 0 `,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			mw := newLogger(&buf, Options{}, fixedClock(t0, took)).middleware(tt.handler)
			func() {
				defer func() {
					if v := recover(); v != tt.value {
						t.Errorf("panic value = %v, want %v carried on", v, tt.value)
					}
				}()
				mw.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
			}()
			if !strings.Contains(buf.String(), tt.want) || strings.Count(buf.String(), "\n") != 1 {
				t.Errorf("log = %q, want one line with %q", buf.String(), tt.want)
			}
		})
	}
}

func TestAbortOverTheWire(t *testing.T) {
	srv, logBuf := server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/abort" {
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		io.WriteString(w, "fine")
	}))
	resp, err := srv.Client().Get(srv.URL + "/abort")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("aborted body read without error")
	}
	resp.Body.Close()
	resp, err = srv.Client().Get(srv.URL + "/ok")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	lines := strings.Split(strings.TrimSuffix(logBuf.String(), "\n"), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"GET /abort HTTP/1.1" 200 7 `) || !strings.Contains(lines[1], `"GET /ok HTTP/1.1" 200 4 `) {
		t.Errorf("log:\n%s", logBuf.String())
	}
}

// writeRecorder keeps each Write call apart.
type writeRecorder struct {
	mu     sync.Mutex
	writes []string
}

func (w *writeRecorder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

var combinedRE = regexp.MustCompile(`^192\.0\.2\.1 - - \[[^\]]+\] "GET /g\d+/r\d+ HTTP/1\.1" 200 5 "-" "-" \d+\.\d{3} "-"\n$`)

func TestConcurrentLines(t *testing.T) {
	const goroutines, requests = 16, 50
	w := &writeRecorder{}
	mw := New(w, Options{})(respond(0, "hello"))
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range requests {
				r := httptest.NewRequest("GET", "/g"+strconv.Itoa(g)+"/r"+strconv.Itoa(i), nil)
				mw.ServeHTTP(httptest.NewRecorder(), r)
			}
		})
	}
	wg.Wait()
	if len(w.writes) != goroutines*requests {
		t.Fatalf("%d writes, want %d", len(w.writes), goroutines*requests)
	}
	for _, s := range w.writes {
		if !combinedRE.MatchString(s) {
			t.Fatalf("write is not exactly one line: %q", s)
		}
	}
}

// flakyWriter fails while fail is set.
type flakyWriter struct{ fail bool }

func (w *flakyWriter) Write(p []byte) (int, error) {
	if w.fail {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

func TestWriteErrorsReportedOnce(t *testing.T) {
	var errLog bytes.Buffer
	fw := &flakyWriter{fail: true}
	mw := New(fw, Options{Logger: slog.New(slog.NewTextHandler(&errLog, nil))})(respond(0, ""))
	serve := func(n int) {
		for range n {
			mw.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
		}
	}
	serve(3)
	fw.fail = false
	serve(2)
	fw.fail = true
	serve(1)

	out := errLog.String()
	var levels []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		for _, f := range strings.Fields(sc.Text()) {
			if lv, ok := strings.CutPrefix(f, "level="); ok {
				levels = append(levels, lv)
			}
		}
	}
	if got := strings.Join(levels, ","); got != "WARN,INFO,WARN" {
		t.Errorf("error log levels = %s, want WARN,INFO,WARN:\n%s", got, out)
	}
	if !strings.Contains(out, "disk full") {
		t.Errorf("error log lacks the cause:\n%s", out)
	}
}

func TestFormat(t *testing.T) {
	if Format(0) != Combined {
		t.Error("zero Format is not Combined")
	}
	for f, want := range map[Format]string{Combined: "combined", JSON: "json", 7: "Format(7)"} {
		if got := f.String(); got != want {
			t.Errorf("Format(%d).String() = %q, want %q", int(f), got, want)
		}
	}
	// An unknown Format logs Combined.
	got := logOne(t, Format(7), respond(0, ""), httptest.NewRequest("GET", "/", nil))
	if !strings.HasPrefix(got, "192.0.2.1 - - [") {
		t.Errorf("unknown format wrote %q, want Combined", got)
	}
}

// discardWriter is a ResponseWriter that costs nothing.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header               { return w.h }
func (w *discardWriter) Write(p []byte) (int, error)       { return len(p), nil }
func (w *discardWriter) WriteHeader(int)                   {}
func (w *discardWriter) WriteString(s string) (int, error) { return len(s), nil }

func BenchmarkMiddleware(b *testing.B) {
	for _, f := range []Format{Combined, JSON} {
		b.Run(f.String(), func(b *testing.B) {
			mw := New(io.Discard, Options{Format: f})(respond(0, "hello"))
			r := httptest.NewRequest("GET", "/static/app.css?v=3", nil)
			r.Header.Set("Referer", "https://example.com/page")
			r.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				mw.ServeHTTP(w, r)
			}
		})
	}
}

func TestStampCache(t *testing.T) {
	ends := []time.Time{
		t0,
		t0.Add(999 * time.Millisecond), // same second: from the cache
		t0.Add(time.Second),            // next second
		t0.Add(time.Second).UTC(),      // same instant, another zone
		t0.Add(time.Second).UTC(),
	}
	wantCombined := []string{
		"[09/Mar/2024:14:05:06 -0700]",
		"[09/Mar/2024:14:05:06 -0700]",
		"[09/Mar/2024:14:05:07 -0700]",
		"[09/Mar/2024:21:05:07 +0000]",
		"[09/Mar/2024:21:05:07 +0000]",
	}
	wantJSON := []string{
		`"time":"2024-03-09T14:05:06.000-07:00"`,
		`"time":"2024-03-09T14:05:06.999-07:00"`,
		`"time":"2024-03-09T14:05:07.000-07:00"`,
		`"time":"2024-03-09T21:05:07.000Z"`,
		`"time":"2024-03-09T21:05:07.000Z"`,
	}
	for _, f := range []Format{Combined, JSON} {
		t.Run(f.String(), func(t *testing.T) {
			var buf bytes.Buffer
			calls := 0
			now := func() time.Time {
				calls++
				if calls%2 == 1 {
					return t0 // start
				}
				return ends[calls/2-1]
			}
			mw := newLogger(&buf, Options{Format: f}, now).middleware(respond(0, ""))
			for range ends {
				mw.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
			}
			lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
			want := wantCombined
			if f == JSON {
				want = wantJSON
			}
			if len(lines) != len(want) {
				t.Fatalf("%d lines, want %d", len(lines), len(want))
			}
			for i, line := range lines {
				if !strings.Contains(line, want[i]) {
					t.Errorf("line %d = %q, want %s in it", i, line, want[i])
				}
			}
		})
	}
}
