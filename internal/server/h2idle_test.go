package server

import (
	"bytes"
	"crypto/tls"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"portico/internal/porticotest"
)

// An idleClient is an HTTP/2 client connection of idleH2.
type idleClient struct {
	tc   *tls.Conn
	hb   bytes.Buffer
	enc  *hpack.Encoder
	addr string
	next uint32 // the next stream
}

// idleH2 opens n HTTP/2 connections to addr that each make one request
// (with a body of upload bytes if upload > 0), read its response and stay
// open, idle.
func idleH2(t *testing.T, addr string, n, upload int) []*idleClient {
	t.Helper()
	var conns []*idleClient
	for range n {
		tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		c := &idleClient{tc: tc, addr: addr, next: 1}
		c.enc = hpack.NewEncoder(&c.hb)
		conns = append(conns, c)
		io.WriteString(tc, http2.ClientPreface)
		http2.NewFramer(tc, tc).WriteSettings()
		c.request(t, upload)
	}
	return conns
}

// request makes a request and reads its response.
func (c *idleClient) request(t *testing.T, upload int) {
	t.Helper()
	c.tc.SetDeadline(time.Now().Add(20 * time.Second))
	defer c.tc.SetDeadline(time.Time{})
	// A Framer per request: what the client keeps between requests
	// counts in the test's measurements.
	fr := http2.NewFramer(c.tc, c.tc)
	id := c.next
	c.next += 2
	c.hb.Reset()
	fields := []string{":method", "GET", ":scheme", "https", ":authority", c.addr, ":path", "/",
		"user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
		"accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
	for i := 0; i < len(fields); i += 2 {
		c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hb.Bytes(), EndStream: upload == 0, EndHeaders: true})
	for left := upload; left > 0; {
		k := min(left, 16384)
		left -= k
		fr.WriteData(id, left == 0, make([]byte, k))
	}
	var body []byte
	for done := false; !done; {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the response: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.DataFrame:
			body = append(body, f.Data()...)
			done = f.StreamEnded()
		case *http2.HeadersFrame:
			done = f.StreamEnded()
		case *http2.GoAwayFrame, *http2.RSTStreamFrame:
			t.Fatalf("%v on stream %d", f.Header(), id)
		}
	}
	if want := strconv.Itoa(upload); string(body) != want {
		t.Fatalf("stream %d: body %q, want %q", id, body, want)
	}
}

func heapAndStacks() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// TestH2IdleMemory: the connections left idle after a request wait, once
// parkDelay has passed, in waitReadable's shallow stack, and what each
// costs (server and this test's client together, measured after GC) is
// bounded. Before, each held the reader's pooled 16 KiB buffer (taken for
// the read that began while its stream was open) and an 8 KiB stack, and
// after an upload its Framer's 16 KiB read buffer.
func TestH2IdleMemory(t *testing.T) {
	for _, tc := range []struct {
		name   string
		upload int
		// measured: 29 KiB after a GET (the server's 16 of it), 37
		// before; 36 after a POST, 54 with the Framer's buffer kept, 65
		// before (crypto/tls's input buffer, grown to a 16 KiB record,
		// is kept on both sides)
		bound float64
	}{
		{"GET", 0, 33},
		{"POST", 19 << 10, 45},
	} {
		t.Run(tc.name, func(t *testing.T) { testH2IdleMemory(t, tc.upload, tc.bound) })
	}
}

func testH2IdleMemory(t *testing.T, upload int, bound float64) {
	s := NewHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		io.WriteString(w, strconv.FormatInt(n, 10))
	}), Options{})
	s.parkAfter = 50 * time.Millisecond
	addr := serveTLS(t, s)
	for _, c := range idleH2(t, addr, 10, upload) { // warm up: pools, handler goroutines
		c.tc.Close()
	}
	porticotest.WaitFor(t, "the warm-up connections gone", 5*time.Second, func() bool { return s.Stats().Open == 0 })
	const n = 200
	before := heapAndStacks()
	conns := idleH2(t, addr, n, upload)
	defer func() {
		for _, c := range conns {
			c.tc.Close()
		}
	}()
	buf := make([]byte, 4<<20)
	porticotest.WaitFor(t, "every reader in waitReadable", 10*time.Second, func() bool {
		st := s.Stats()
		return st.Open == n && st.Idle == n &&
			bytes.Count(buf[:runtime.Stack(buf, true)], []byte("(*h2conn).waitReadable(")) == n
	})
	after := heapAndStacks()
	per := float64(after-before) / n / 1024
	t.Logf("%.1f KiB per idle connection, server and client", per)
	if per > bound && !raceEnabled { // the race detector: shadow memory, larger stacks
		t.Errorf("%.1f KiB per idle HTTP/2 connection (server and client); want at most %v", per, bound)
	}
	// Woken from the shallow wait, with a new Framer and header slices,
	// the connections serve their next requests.
	for _, c := range conns[:10] {
		c.request(t, upload)
		c.request(t, 0)
	}
}

// TestH2IdleWake: a connection that went idle past parkDelay serves its
// next request, also one whose header block was open (HEADERS without
// END_HEADERS) while it waited, and one after a PING read by the shallow
// wait.
func TestH2IdleWake(t *testing.T) {
	s := NewHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}), Options{})
	s.parkAfter = 50 * time.Millisecond
	waits := make(chan bool, 10)
	testHookWaitLong = func(blockOpen bool) { waits <- blockOpen }
	t.Cleanup(func() { testHookWaitLong = nil })
	addr := serveTLS(t, s)
	c := dialH2(t, addr)
	wait := func(blockOpen bool) {
		t.Helper()
		select {
		case open := <-waits:
			if open != blockOpen {
				t.Fatalf("waitLong with a header block open: %v, want %v", open, blockOpen)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no waitLong within 10s")
		}
	}
	get := func(id uint32, path string) {
		t.Helper()
		if r := c.response(id, nil); r.status != "200" || string(r.body) != path {
			t.Fatalf("stream %d: %+v, want 200 %s", id, r, path)
		}
	}
	c.headers(1, true, c.block("GET", "/one"))
	get(1, "/one")
	wait(false)
	c.headers(3, true, c.block("GET", "/two"))
	get(3, "/two")

	// A header block split around the wait.
	wait(false)
	block := c.block("GET", "/three", "x-pad", strings.Repeat("p", 100))
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: block[:10], EndStream: true}); err != nil {
		t.Fatal(err)
	}
	wait(true)
	if err := c.fr.WriteContinuation(5, true, block[10:]); err != nil {
		t.Fatal(err)
	}
	get(5, "/three")

	// A PING while idle: answered, and the wait goes on.
	wait(false)
	if err := c.fr.WritePing(false, [8]byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if p, ok := c.read().(*http2.PingFrame); !ok || !p.IsAck() || p.Data != [8]byte{1, 2, 3} {
		t.Fatalf("got %v, want the PING's ACK", p)
	}
	wait(false)
	c.headers(7, true, c.block("GET", "/four"))
	get(7, "/four")
}
