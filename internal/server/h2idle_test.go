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

// idleH2 opens n HTTP/2 connections to addr that each make one request
// (with a body of upload bytes if upload > 0), read its response and stay
// open, idle.
func idleH2(t *testing.T, addr string, n, upload int) []*tls.Conn {
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
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: upload == 0, EndHeaders: true})
		for left := upload; left > 0; {
			k := min(left, 16384)
			left -= k
			fr.WriteData(1, left == 0, make([]byte, k))
		}
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
// bounded. Before, each held the reader's pooled 16 KiB buffer (taken for
// the read that began while its stream was open) and an 8 KiB stack, and
// after an upload its Framer's 16 KiB read buffer.
func TestH2IdleMemory(t *testing.T) {
	for _, tc := range []struct {
		name   string
		upload int
		// measured: 25 KiB after a GET (the server's 16 of it), 33.4
		// before; 32 after a POST, 50 with the Framer's buffer kept
		// (crypto/tls's input buffer, grown to a 16 KiB record, is kept
		// on both sides)
		bound float64
	}{
		{"GET", 0, 30},
		{"POST", 19 << 10, 41},
	} {
		t.Run(tc.name, func(t *testing.T) { testH2IdleMemory(t, tc.upload, tc.bound) })
	}
}

func testH2IdleMemory(t *testing.T, upload int, bound float64) {
	s := NewHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}), Options{})
	s.parkAfter = 50 * time.Millisecond
	addr := serveTLS(t, s)
	for _, c := range idleH2(t, addr, 10, upload) { // warm up: pools, handler goroutines
		c.Close()
	}
	porticotest.WaitFor(t, "the warm-up connections gone", 5*time.Second, func() bool { return s.Stats().Open == 0 })
	const n = 200
	before := heapAndStacks()
	conns := idleH2(t, addr, n, upload)
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
	if per > bound {
		t.Errorf("%.1f KiB per idle HTTP/2 connection (server and client); want at most %v", per, bound)
	}
}
