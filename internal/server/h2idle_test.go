package server

import (
	"bytes"
	"crypto/tls"
	"io"
	"net/http"
	"runtime"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"portico/internal/porticotest"
)

// idleH2 opens n HTTP/2 connections to addr that each make one request,
// read its response and stay open, idle.
func idleH2(t *testing.T, addr string, n int) []*tls.Conn {
	t.Helper()
	var conns []*tls.Conn
	for range n {
		tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, tc)
		tc.SetDeadline(time.Now().Add(20 * time.Second))
		fr := http2.NewFramer(tc, tc)
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		fields := []string{":method", "GET", ":scheme", "https", ":authority", addr, ":path", "/",
			"user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
			"accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
		for i := 0; i < len(fields); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		io.WriteString(tc, http2.ClientPreface)
		fr.WriteSettings()
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
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
				done = f.StreamEnded()
			case *http2.HeadersFrame:
				done = f.StreamEnded()
			}
		}
		tc.SetDeadline(time.Time{})
	}
	return conns
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
// bounded: before, each held the reader's pooled 16 KiB buffer (taken for
// the read that began while its stream was open) and an 8 KiB stack.
func TestH2IdleMemory(t *testing.T) {
	s := NewHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}), Options{})
	s.parkAfter = 50 * time.Millisecond
	addr := serveTLS(t, s)
	for _, c := range idleH2(t, addr, 10) { // warm up: pools, handler goroutines
		c.Close()
	}
	porticotest.WaitFor(t, "the warm-up connections gone", 5*time.Second, func() bool { return s.Stats().Open == 0 })
	const n = 200
	before := heapAndStacks()
	conns := idleH2(t, addr, n)
	defer func() {
		for _, c := range conns {
			c.Close()
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
	if raceEnabled {
		return // the race detector's shadow memory and larger stacks
	}
	// 25.5 KiB measured (the server's 16 of it); 33.4 before, when most
	// readers held a pooled 16 KiB buffer and each an 8 KiB stack.
	if per > 30 {
		t.Errorf("%.1f KiB per idle HTTP/2 connection (server and client); want at most 30", per)
	}
}
