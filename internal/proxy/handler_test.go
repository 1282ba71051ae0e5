package proxy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"portico/internal/porticotest"
)

// backend is an httptest upstream and its Upstream.
type backend struct {
	srv *httptest.Server
	u   *Upstream
}

func newBackend(t *testing.T, h http.HandlerFunc) *backend {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &backend{srv: srv, u: upstreamFor(t, srv.URL)}
}

func upstreamFor(t *testing.T, raw string) *Upstream {
	t.Helper()
	tg, err := ParseTarget(raw)
	if err != nil {
		t.Fatal(err)
	}
	tr := NewHTTPTransport(tg, time.Second)
	t.Cleanup(tr.(interface{ CloseIdleConnections() }).CloseIdleConnections)
	return &Upstream{Name: raw, URL: tg.URL, Transport: tr}
}

// front serves a Handler over the given upstreams with net/http.
func front(t *testing.T, opt Options, popt PoolOptions, ups ...*Upstream) (*httptest.Server, *Handler) {
	t.Helper()
	sel, err := NewSelector(PolicyRoundRobin, "", ups)
	if err != nil {
		t.Fatal(err)
	}
	if popt.Logger == nil {
		popt.Logger = slog.New(slog.DiscardHandler)
	}
	opt.Pool = NewPool(ups, sel, popt)
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	h, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, h
}

func get(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestProxyBasics(t *testing.T) {
	var seen http.Header
	var seenHost, seenURI string
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		seen, seenHost, seenURI = r.Header.Clone(), r.Host, r.RequestURI
		w.Header().Set("X-Up", "1")
		w.Header().Set("Connection", "X-Secret")
		w.Header().Set("X-Secret", "hop")
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		w.WriteHeader(201)
		io.WriteString(w, "hello "+r.Method)
	})
	srv, _ := front(t, Options{}, PoolOptions{}, b.u)
	req, _ := http.NewRequest("GET", srv.URL+"/a%2Fb/c?q=1&r=%20", nil)
	req.Host = "client.example"
	req.Header.Set("Connection", "X-Private, keep-alive")
	req.Header.Set("X-Private", "secret")
	req.Header.Set("Proxy", "http://evil")
	req.Header.Set("Te", "trailers")
	req.Header.Set("Accept-Encoding", "gzip")
	resp, body := get(t, nil, req)
	if resp.StatusCode != 201 || body != "hello GET" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Up") != "1" || resp.Header.Get("X-Secret") != "" {
		t.Errorf("response headers: %v", resp.Header)
	}
	if got := resp.Header.Values("Set-Cookie"); len(got) != 2 {
		t.Errorf("Set-Cookie: %v", got)
	}
	if seenURI != "/a%2Fb/c?q=1&r=%20" {
		t.Errorf("upstream saw URI %q", seenURI)
	}
	if seenHost != b.srv.Listener.Addr().String() {
		t.Errorf("upstream saw Host %q, want the upstream's", seenHost)
	}
	for _, k := range []string{"X-Private", "Proxy", "Te"} {
		if v := seen.Get(k); v != "" {
			t.Errorf("upstream saw %s: %q", k, v)
		}
	}
	if got := seen.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q", got)
	}
	if seen.Get("X-Forwarded-Proto") != "http" || seen.Get("X-Forwarded-Host") != "client.example" {
		t.Errorf("X-Forwarded-*: %v", seen)
	}
	if seen.Get("Accept-Encoding") != "gzip" {
		t.Errorf("Accept-Encoding %q", seen.Get("Accept-Encoding"))
	}
}

func TestProxyPreserveHostAndHeadersUp(t *testing.T) {
	var seen http.Header
	var host string
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) { seen, host = r.Header.Clone(), r.Host })
	srv, _ := front(t, Options{PreserveHost: true, HeadersUp: []HeaderOp{
		{Name: "X-Real-Ip", Value: "$remote_addr"}, {Name: "X-Drop", Remove: true}, {Name: "X-Uri", Value: "$scheme://$host$request_uri"},
	}}, PoolOptions{}, b.u)
	req, _ := http.NewRequest("GET", srv.URL+"/p?x", nil)
	req.Host = "shop.example:8443"
	req.Header.Set("X-Drop", "1")
	get(t, nil, req)
	if host != "shop.example:8443" {
		t.Errorf("Host %q", host)
	}
	if seen.Get("X-Real-Ip") != "127.0.0.1" || seen.Get("X-Drop") != "" || seen.Get("X-Uri") != "http://shop.example:8443/p?x" {
		t.Errorf("headers: %v", seen)
	}
}

func TestProxyBodies(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Len", fmt.Sprint(len(data), " ", r.ContentLength))
		w.Write(bytes.Repeat(data, 2))
	})
	for _, unbuffered := range []bool{false, true} {
		srv, _ := front(t, Options{Unbuffered: unbuffered, BodyMemory: 64 << 10}, PoolOptions{}, b.u)
		for _, n := range []int{0, 1, 5000, 40 << 10, 3 << 20} {
			t.Run(fmt.Sprintf("unbuffered=%v/%d", unbuffered, n), func(t *testing.T) {
				data := make([]byte, n)
				rand.Read(data)
				resp, body := get(t, nil, must(http.NewRequest("POST", srv.URL+"/", bytes.NewReader(data))))
				if resp.StatusCode != 200 || body != string(data)+string(data) {
					t.Fatalf("status %d, body %d bytes, want %d", resp.StatusCode, len(body), 2*n)
				}
				if want := fmt.Sprint(n, " ", n); resp.Header.Get("X-Len") != want {
					t.Errorf("upstream saw %q, want %q", resp.Header.Get("X-Len"), want)
				}
			})
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestProxyBodyTooLarge(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) { t.Error("the upstream got a request") })
	srv, _ := front(t, Options{MaxBody: 1000}, PoolOptions{}, b.u)
	for _, chunked := range []bool{false, true} {
		var body io.Reader = bytes.NewReader(make([]byte, 1001))
		if chunked {
			body = io.MultiReader(body) // unknown length
		}
		resp, _ := get(t, nil, must(http.NewRequest("POST", srv.URL+"/", body)))
		if resp.StatusCode != 413 {
			t.Errorf("chunked=%v: status %d, want 413", chunked, resp.StatusCode)
		}
	}
}

// A refused connection is a request the upstream never saw: it goes to
// another upstream whatever its method.
func TestProxyRetryUnsent(t *testing.T) {
	var hits atomic.Int64
	good := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := l.Addr().String()
	l.Close()
	dead := upstreamFor(t, "http://"+deadAddr)
	srv, h := front(t, Options{Retries: 2}, PoolOptions{MaxFails: 1, FailTimeout: time.Minute}, dead, good.u)
	for i := range 4 {
		resp, body := get(t, nil, must(http.NewRequest("POST", srv.URL+"/", strings.NewReader("x"))))
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if hits.Load() != 4 {
		t.Errorf("good upstream got %d requests", hits.Load())
	}
	st := h.Pool().Status()
	if st[0].Healthy || st[0].Failures != 1 {
		t.Errorf("dead upstream status %+v: want down after one failure (and not tried again)", st[0])
	}
}

// A POST that reached an upstream which then died is answered 502 and not
// sent again; a GET in the same case is retried.
func TestProxyNoReplayOfSentPost(t *testing.T) {
	var goodHits atomic.Int64
	good := newBackend(t, func(w http.ResponseWriter, r *http.Request) { goodHits.Add(1); io.WriteString(w, "ok") })
	var dyingHits atomic.Int64
	dying := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		dyingHits.Add(1)
		io.Copy(io.Discard, r.Body)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close() // dies after reading the request
		}
	})
	srv, _ := front(t, Options{Retries: 2}, PoolOptions{}, dying.u, good.u)
	// Round robin starts with dying.
	resp, _ := get(t, nil, must(http.NewRequest("POST", srv.URL+"/", strings.NewReader("pay"))))
	if resp.StatusCode != 502 {
		t.Errorf("POST: status %d, want 502", resp.StatusCode)
	}
	if dyingHits.Load() != 1 || goodHits.Load() != 0 {
		t.Errorf("POST sent %d+%d times, want once", dyingHits.Load(), goodHits.Load())
	}
	// Next round robin turn is good; then dying again for the GET.
	get(t, nil, must(http.NewRequest("GET", srv.URL+"/", nil)))
	resp, body := get(t, nil, must(http.NewRequest("GET", srv.URL+"/", nil)))
	if resp.StatusCode != 200 || body != "ok" || dyingHits.Load() != 2 {
		t.Errorf("GET: %d %q, dying hit %d times", resp.StatusCode, body, dyingHits.Load())
	}
}

func TestProxyTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	slow := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	srv, _ := front(t, Options{Timeout: 200 * time.Millisecond}, PoolOptions{}, slow.u)
	start := time.Now()
	resp, _ := get(t, nil, must(http.NewRequest("POST", srv.URL+"/", strings.NewReader("x"))))
	if resp.StatusCode != 504 {
		t.Errorf("status %d, want 504", resp.StatusCode)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 5*time.Second {
		t.Errorf("answered after %v, want about the 200ms timeout", d)
	}
}

// A body that stalls longer than Timeout between two reads aborts the
// response (the client sees a truncated body, never a second status); a
// small response read whole before the client gets a byte is a 504.
func TestProxyBodyStallAborts(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	slow := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", r.URL.Query().Get("len"))
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	srv, _ := front(t, Options{Timeout: 200 * time.Millisecond}, PoolOptions{}, slow.u)
	resp, body := get(t, nil, must(http.NewRequest("GET", srv.URL+"/?len=100", nil)))
	if resp.StatusCode != 504 {
		t.Errorf("small stalled response: %d %q, want 504", resp.StatusCode, body)
	}
	resp, err := http.Get(srv.URL + "/?len=1000000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil || string(b) != "partial" {
		t.Errorf("got %q, %v; want the partial body and an error", b, err)
	}
}

func TestProxyRetryBadStatus(t *testing.T) {
	var badHits atomic.Int64
	bad := newBackend(t, func(w http.ResponseWriter, r *http.Request) { badHits.Add(1); w.WriteHeader(503) })
	good := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	srv, _ := front(t, Options{Retries: 1}, PoolOptions{}, bad.u, good.u)
	resp, body := get(t, nil, must(http.NewRequest("GET", srv.URL+"/", nil)))
	if resp.StatusCode != 200 || body != "ok" || badHits.Load() != 1 {
		t.Errorf("GET: %d %q after %d bad", resp.StatusCode, body, badHits.Load())
	}
	// A POST is not retried on a 503: the upstream's answer goes out.
	get(t, nil, must(http.NewRequest("GET", srv.URL+"/", nil))) // round robin: good
	resp, _ = get(t, nil, must(http.NewRequest("POST", srv.URL+"/", strings.NewReader("x"))))
	if resp.StatusCode != 503 {
		t.Errorf("POST: %d, want the upstream's 503", resp.StatusCode)
	}
}

func TestProxyStreamsUnbuffered(t *testing.T) {
	next := make(chan struct{})
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			<-next
		}
	})
	for _, unbuffered := range []bool{false, true} {
		srv, _ := front(t, Options{Unbuffered: unbuffered}, PoolOptions{}, b.u)
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		for i := range 3 {
			line, err := br.ReadString('\n')
			if err != nil || line != fmt.Sprintf("data: %d\n", i) {
				t.Fatalf("unbuffered=%v event %d: %q %v", unbuffered, i, line, err)
			}
			br.ReadString('\n')
			next <- struct{}{}
		}
		resp.Body.Close()
	}
}

func TestProxyIntercept(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Accel-Redirect", "/protected/file")
		io.WriteString(w, strings.Repeat("ignored", 1000))
	})
	ups := []*Upstream{b.u}
	var once sync.Once
	srv, h := front(t, Options{Intercept: func(r *http.Request, resp *http.Response) http.HandlerFunc {
		to := resp.Header.Get("X-Accel-Redirect")
		if to == "" {
			return nil
		}
		return func(w http.ResponseWriter, r *http.Request) {
			once.Do(func() {
				if n := ups[0].InFlight(); n != 0 {
					t.Errorf("in flight %d when the intercept runs: the lease must be released first", n)
				}
			})
			io.WriteString(w, "file for "+to)
		}
	}}, PoolOptions{}, ups...)
	_ = h
	_, body := get(t, nil, must(http.NewRequest("GET", srv.URL+"/", nil)))
	if body != "file for /protected/file" {
		t.Errorf("body %q", body)
	}
}

func TestProxyWebSocketEcho(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw) // echo
	})
	srv, _ := front(t, Options{WebSocketTimeout: time.Minute}, PoolOptions{}, b.u)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Sec-Websocket-Accept") != "x" {
		t.Fatalf("status %d headers %v", resp.StatusCode, resp.Header)
	}
	for _, msg := range []string{"hello", "world"} {
		io.WriteString(conn, msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q: %q %v", msg, buf, err)
		}
	}
}

func TestProxyQueueBoundsInFlight(t *testing.T) {
	var cur, peak atomic.Int64
	release := make(chan struct{})
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		cur.Add(-1)
	})
	b.u.MaxConns = 2
	srv, h := front(t, Options{}, PoolOptions{QueueSize: 3, QueueTimeout: 10 * time.Second}, b.u)
	var wg sync.WaitGroup
	codes := make(chan int, 6)
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(srv.URL)
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	// Two in the upstream, three queued: the sixth is refused at once.
	porticotest.WaitFor(t, "2 requests in the upstream and 3 queued", 5*time.Second, func() bool {
		return cur.Load() == 2 && h.Pool().Queued() == 3
	})
	resp, _ := get(t, nil, must(http.NewRequest("GET", srv.URL, nil)))
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("over the queue: %d %v", resp.StatusCode, resp.Header)
	}
	close(release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("queued request got %d", c)
		}
	}
	if peak.Load() != 2 {
		t.Errorf("peak in flight %d, want max_conns 2", peak.Load())
	}
}

var _ = errors.New

func TestRewriteLocation(t *testing.T) {
	up := mustURL("http://10.0.0.5:8080")
	for _, tc := range []struct{ k, in, want string }{
		{"Location", "http://10.0.0.5:8080/shop/x?y=1", "/shop/x?y=1"},
		{"Location", "HTTP://10.0.0.5:8080", "/"},
		{"Location", "http://10.0.0.5:8080?q", "/?q"},
		{"Location", "http://10.0.0.5:80801/x", "http://10.0.0.5:80801/x"},
		{"Location", "https://example.com/x", "https://example.com/x"},
		{"Location", "/relative", "/relative"},
		{"Refresh", "5; url=http://10.0.0.5:8080/next", "5; url=/next"},
	} {
		h := http.Header{tc.k: {tc.in}}
		rewriteLocation(h, up)
		if got := h.Get(tc.k); got != tc.want {
			t.Errorf("%s %q: %q, want %q", tc.k, tc.in, got, tc.want)
		}
	}
}

// With nowhere else to go, an upstream's own 503 page is relayed, not
// replaced by a 502.
func TestProxyBadStatusSingleUpstream(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(503)
		io.WriteString(w, "maintenance")
	})
	srv, _ := front(t, Options{Retries: 2}, PoolOptions{}, b.u)
	resp, body := get(t, nil, must(http.NewRequest("GET", srv.URL+"/", nil)))
	if resp.StatusCode != 503 || body != "maintenance" || resp.Header.Get("Retry-After") != "7" {
		t.Errorf("got %d %q %v", resp.StatusCode, body, resp.Header)
	}
}
