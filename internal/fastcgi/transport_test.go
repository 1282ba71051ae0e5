package fastcgi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/fcgi"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"portico/internal/porticotest"
)

// countingListener counts and remembers the connections it accepts.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *countingListener) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
}

// startFCGI serves h with net/http/fcgi on network ("tcp" or "unix") and
// returns a Transport for it. Everything stops in t.Cleanup.
func startFCGI(t *testing.T, network string, h http.Handler) (*Transport, *countingListener) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "fcgi.sock")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fcgi.Serve(cl, h)
	}()
	tr := &Transport{Network: network, Address: ln.Addr().String(), Root: "/srv/www"}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		cl.Close()
		<-done
		cl.closeAll()
	})
	return tr, cl
}

func get(t *testing.T, tr *Transport, target string) (*http.Response, string) {
	t.Helper()
	resp, err := tr.RoundTrip(httptest.NewRequest("GET", target, nil))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func envHandler(w http.ResponseWriter, r *http.Request) {
	env := fcgi.ProcessEnv(r)
	env["method"] = r.Method
	env["uri"] = r.URL.RequestURI()
	env["host"] = r.Host
	env["remote"] = r.RemoteAddr
	env["x-test"] = r.Header.Get("X-Test")
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(env)
}

func TestTransportEnv(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			tr, _ := startFCGI(t, network, http.HandlerFunc(envHandler))
			r := httptest.NewRequest("GET", "/blog/post?id=7", nil)
			r.Host = "example.com"
			r.URL.Path = "/index.php" // as the front controller route does
			r.RemoteAddr = "192.0.2.5:4321"
			r.Header.Set("X-Test", "yes")
			resp, err := tr.RoundTrip(r)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var env map[string]string
			if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{
				"SCRIPT_FILENAME": "/srv/www/index.php", "DOCUMENT_ROOT": "/srv/www", "DOCUMENT_URI": "/index.php",
				"SERVER_SOFTWARE": "portico", "REDIRECT_STATUS": "200", "GATEWAY_INTERFACE": "CGI/1.1",
				"SERVER_NAME": "example.com", "SERVER_PORT": "80", "REQUEST_SCHEME": "http",
				"method": "GET", "uri": "/blog/post?id=7", "host": "example.com",
				"remote": "192.0.2.5:4321", "x-test": "yes",
			}
			for k, v := range want {
				if env[k] != v {
					t.Errorf("%s = %q, want %q", k, env[k], v)
				}
			}
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || resp.Request != r {
				t.Errorf("status %d, Content-Type %q, Request %p", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Request)
			}
		})
	}
}

func TestTransportStatusAndHeaders(t *testing.T) {
	tr, _ := startFCGI(t, "tcp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "a", Value: "1"})
		http.SetCookie(w, &http.Cookie{Name: "b", Value: "2"})
		w.Header().Set("Content-Length", "9")
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "short and")
	}))
	resp, body := get(t, tr, "/x.php")
	if resp.StatusCode != http.StatusTeapot || body != "short and" || resp.ContentLength != 9 {
		t.Errorf("got %d %q length %d", resp.StatusCode, body, resp.ContentLength)
	}
	if c := resp.Header.Values("Set-Cookie"); len(c) != 2 {
		t.Errorf("Set-Cookie = %q, want two", c)
	}
	if resp.Header.Get("Status") != "" {
		t.Errorf("Status header kept")
	}
}

// TestTransportLargeBodies sends 3 MiB and gets them echoed back while
// the upload is still going: a sequential writer would deadlock here.
func TestTransportLargeBodies(t *testing.T) {
	tr, _ := startFCGI(t, "tcp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		io.Copy(w, r.Body)
	}))
	payload := make([]byte, 3<<20)
	rand.Read(payload)
	r := httptest.NewRequest("POST", "/echo.php", bytes.NewReader(payload))
	resp, err := tr.RoundTrip(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("echoed %d bytes, not the %d sent", len(got), len(payload))
	}
	if resp.ContentLength != -1 {
		t.Errorf("ContentLength = %d, want -1", resp.ContentLength)
	}
}

func TestTransportStreams(t *testing.T) {
	next := make(chan struct{})
	tr, _ := startFCGI(t, "tcp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first;")
		w.(http.Flusher).Flush()
		<-next
		io.WriteString(w, "second")
	}))
	resp, err := tr.RoundTrip(httptest.NewRequest("GET", "/s.php", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 6)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first;" {
		t.Fatalf("first read %q, %v", buf, err)
	}
	close(next) // the handler goes on only once the first part arrived
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second" {
		t.Fatalf("rest %q, %v", rest, err)
	}
}

func TestTransportReusesConnection(t *testing.T) {
	tr, ln := startFCGI(t, "tcp", http.HandlerFunc(envHandler))
	for i := range 5 {
		if resp, _ := get(t, tr, fmt.Sprintf("/r.php?i=%d", i)); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if n := ln.accepted.Load(); n != 1 {
		t.Errorf("%d connections for 5 sequential requests, want 1", n)
	}
}

func TestTransportNoKeepWhenIdleDisabled(t *testing.T) {
	tr, ln := startFCGI(t, "tcp", http.HandlerFunc(envHandler))
	tr.MaxIdleConns = -1
	for range 3 {
		get(t, tr, "/r.php")
	}
	if n := ln.accepted.Load(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
}

func TestTransportEarlyCloseDropsConnection(t *testing.T) {
	tr, ln := startFCGI(t, "tcp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("x"), 1<<20))
	}))
	resp, err := tr.RoundTrip(httptest.NewRequest("GET", "/big.php", nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, err := resp.Body.Read(make([]byte, 1)); err == nil {
		t.Error("Read after Close succeeded")
	}
	get(t, tr, "/big.php")
	if n := ln.accepted.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the closed body's connection is not reused)", n)
	}
}

func TestTransportRetriesClosedIdleConnection(t *testing.T) {
	tr, ln := startFCGI(t, "tcp", http.HandlerFunc(envHandler))
	get(t, tr, "/a.php")
	ln.closeAll() // the server drops the kept connection
	for _, method := range []string{"GET", "POST"} {
		r := httptest.NewRequest(method, "/a.php", strings.NewReader("body"))
		if method == "GET" {
			r = httptest.NewRequest(method, "/a.php", nil)
		}
		resp, err := tr.RoundTrip(r)
		if err != nil {
			t.Fatalf("%s after the server closed the idle connection: %v", method, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		ln.closeAll()
	}
	if tr.dials.Load() != 3 {
		t.Errorf("%d dials, want 3", tr.dials.Load())
	}

	// Without the liveness check, the stale connection is written to and
	// the GET is retried after the read finds it closed.
	aliveCheck = func(net.Conn) bool { return true }
	defer func() { aliveCheck = alive }()
	get(t, tr, "/a.php")
	if tr.dials.Load() != 4 {
		t.Errorf("%d dials, want 4", tr.dials.Load())
	}
}

func TestTransportContextCancel(t *testing.T) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	tr, _ := startFCGI(t, "tcp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("mid") != "" {
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
		}
		started <- struct{}{}
		<-release
	}))

	t.Run("before the header", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			r := httptest.NewRequest("GET", "/slow.php", nil).WithContext(ctx)
			_, err := tr.RoundTrip(r)
			errc <- err
		}()
		<-started
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
	t.Run("during the body", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		resp, err := tr.RoundTrip(httptest.NewRequest("GET", "/slow.php?mid=1", nil).WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		<-started
		buf := make([]byte, 7)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatal(err)
		}
		cancel()
		if _, err := io.ReadAll(resp.Body); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		resp.Body.Close()
	})
}

func TestTransportDialError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	tr := &Transport{Address: addr, Root: "/srv"}
	_, err = tr.RoundTrip(httptest.NewRequest("GET", "/", nil))
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("err = %v, want a *net.OpError with Op dial", err)
	}
}

func TestTransportConfigErrors(t *testing.T) {
	tr := &Transport{Address: "127.0.0.1:1", Root: "relative"}
	if _, err := tr.RoundTrip(httptest.NewRequest("GET", "/", nil)); !errors.Is(err, ErrNoRoot) {
		t.Errorf("relative root: %v", err)
	}
	tr.Root = "/srv"
	r := httptest.NewRequest("POST", "/", strings.NewReader("x"))
	r.ContentLength = -1
	if _, err := tr.RoundTrip(r); !errors.Is(err, ErrUnknownLength) {
		t.Errorf("unknown length: %v", err)
	}
}

// fakeServer answers every request on its connections with reply, raw
// records written with the codec, after reading the request up to the
// empty STDIN record.
func fakeServer(t *testing.T, reply []byte, keep bool) *Transport {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				for {
					var buf []byte
					for {
						h, content, err := ReadRecord(c, buf)
						if err != nil {
							return
						}
						if h.Type == TypeStdin && len(content) == 0 {
							break
						}
					}
					if _, err := c.Write(reply); err != nil || !keep {
						return
					}
				}
			}()
		}
	}()
	tr := &Transport{Address: ln.Addr().String(), Root: "/srv/www"}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return tr
}

// stdout cuts s into STDOUT records of at most n bytes.
func stdout(s string, n int) []byte {
	var b []byte
	for len(s) > 0 {
		k := min(n, len(s))
		b = AppendRecord(b, TypeStdout, 1, s[:k])
		s = s[k:]
	}
	return AppendRecord(b, TypeStdout, 1, "")
}

func TestTransportResponses(t *testing.T) {
	end := AppendEndRequest(nil, 1, EndRequest{})
	tests := []struct {
		name    string
		reply   []byte
		status  int
		header  map[string]string
		body    string
		err     error
		bodyErr error
		log     string
	}{{
		name:   "location without status is 302",
		reply:  append(stdout("Location: /x\r\n\r\n", 100), end...),
		status: 302, header: map[string]string{"Location": "/x"},
	}, {
		name:   "no status is 200, LF endings, header across records",
		reply:  append(stdout("Content-Type: text/plain\nX-A: 1\n\nbody text", 3), end...),
		status: 200, header: map[string]string{"Content-Type": "text/plain", "X-A": "1"}, body: "body text",
	}, {
		name:   "status with reason",
		reply:  append(stdout("Status: 404 Not Found\r\nContent-Length: 2\r\n\r\nno", 1000), end...),
		status: 404, body: "no",
	}, {
		name: "stderr is logged",
		reply: append(append(AppendRecord(AppendRecord(nil, TypeStderr, 1, "PHP Warning: x"), TypeStderr, 1, " in y\n"),
			stdout("\r\n\r\nok", 100)...), end...),
		status: 200, body: "ok", log: "PHP Warning: x in y",
	}, {
		name:  "cut before the end of the header",
		reply: append(stdout("Content-Type: text/plain\r\n", 100), end...),
		err:   ErrHeaderCut,
	}, {
		name:  "closed before the end of the header",
		reply: AppendRecord(nil, TypeStdout, 1, "Content-Type: text/plain\r\n"),
		err:   io.ErrUnexpectedEOF,
	}, {
		name:  "refused",
		reply: AppendEndRequest(nil, 1, EndRequest{ProtocolStatus: StatusOverloaded}),
		err:   ErrRefused,
	}, {
		name:  "wrong request id",
		reply: AppendRecord(nil, TypeStdout, 2, "x"),
		err:   ErrMalformed,
	}, {
		name:   "refused after the header",
		reply:  append(stdout("\r\n\r\nhalf", 100), AppendEndRequest(nil, 1, EndRequest{ProtocolStatus: StatusCantMultiplexConn})...),
		status: 200, body: "half", bodyErr: ErrRefused,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := fakeServer(t, tt.reply, false)
			var logs porticotest.Buffer
			tr.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			resp, err := tr.RoundTrip(httptest.NewRequest("GET", "/f.php", nil))
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if (tt.bodyErr == nil && err != nil) || (tt.bodyErr != nil && !errors.Is(err, tt.bodyErr)) {
				t.Fatalf("body err = %v, want %v", err, tt.bodyErr)
			}
			if resp.StatusCode != tt.status || string(body) != tt.body {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tt.status, tt.body)
			}
			for k, v := range tt.header {
				if resp.Header.Get(k) != v {
					t.Errorf("%s = %q, want %q", k, resp.Header.Get(k), v)
				}
			}
			if tt.log != "" && (!strings.Contains(logs.String(), tt.log) || !strings.Contains(logs.String(), "/srv/www/f.php")) {
				t.Errorf("log %q, want %q and the script", logs.String(), tt.log)
			}
		})
	}
}

// TestTransportMaxConns runs more concurrent requests than MaxConns
// against a keep-conn server; none may dial past the bound.
func TestTransportMaxConns(t *testing.T) {
	reply := append(stdout("\r\n\r\nok", 100), AppendEndRequest(nil, 1, EndRequest{})...)
	tr := fakeServer(t, reply, true)
	tr.MaxConns = 2
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				resp, err := tr.RoundTrip(httptest.NewRequest("GET", "/f.php", nil))
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	if n := tr.dials.Load(); n > 2 {
		t.Errorf("%d dials, want at most MaxConns 2", n)
	}
}
