package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// countingServer is an HTTP server that counts the connections it holds idle.
func countingServer(t *testing.T, h http.Handler) (*httptest.Server, func() int) {
	t.Helper()
	var mu sync.Mutex
	idle := map[net.Conn]bool{}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		if s == http.StateIdle {
			idle[c] = true
		} else {
			delete(idle, c)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(idle)
	}
}

func hello(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("hello\n")) }

func TestOpen(t *testing.T) {
	tests := []struct {
		name       string
		handler    http.HandlerFunc
		n          int
		wantFailed int
	}{
		{name: "keep-alive server", handler: hello, n: 40},
		{name: "server closing every connection", n: 5, wantFailed: 5, handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Connection", "close")
			hello(w, nil)
		}},
		{name: "non-200 answer", n: 3, wantFailed: 3, handler: http.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, idle := countingServer(t, tt.handler)
			cfg := config{
				addr:     srv.Listener.Addr().String(),
				path:     "/",
				sources:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 2)},
				parallel: 8,
				timeout:  5 * time.Second,
			}
			h, failed, firstErr := open(context.Background(), cfg, tt.n, 0)
			defer h.close()
			if failed != tt.wantFailed {
				t.Fatalf("failed = %d (first error %v), want %d", failed, firstErr, tt.wantFailed)
			}
			want := tt.n - tt.wantFailed
			if h.len() != want || h.alive() != want {
				t.Fatalf("held %d, alive %d, want %d", h.len(), h.alive(), want)
			}
			// The server sees them as idle keep-alive connections.
			deadline := time.Now().Add(5 * time.Second)
			for idle() != want && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if got := idle(); got != want {
				t.Fatalf("server holds %d idle connections, want %d", got, want)
			}
		})
	}
}

func TestAliveCountsServerCloses(t *testing.T) {
	srv, _ := countingServer(t, http.HandlerFunc(hello))
	cfg := config{addr: srv.Listener.Addr().String(), path: "/", sources: []net.IP{net.IPv4(127, 0, 0, 1)}, parallel: 4, timeout: 5 * time.Second}
	h, failed, err := open(context.Background(), cfg, 10, 0)
	defer h.close()
	if failed != 0 {
		t.Fatalf("failed = %d: %v", failed, err)
	}
	srv.CloseClientConnections()
	deadline := time.Now().Add(5 * time.Second)
	for h.alive() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := h.alive(); got != 0 {
		t.Fatalf("alive = %d after the server closed every connection, want 0", got)
	}
}

func TestChildReports(t *testing.T) {
	srv, _ := countingServer(t, http.HandlerFunc(hello))
	var stdout, stderr bytes.Buffer
	// An empty stdin is the parent closing it at once: open, report, release.
	code := run([]string{"-child", "-addr", srv.Listener.Addr().String(), "-n", "7", "-sources", "127.0.0.1"},
		strings.NewReader(""), &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "established 7 failed 0 seconds ") || lines[1] != "alive 7" {
		t.Fatalf("stdout = %q, want an established line for 7 and alive 7", stdout.String())
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{}, {"-addr", "x:1", "-n", "0"}, {"-addr", "x:1", "-sources", "nope"}} {
		var out bytes.Buffer
		if code := run(args, strings.NewReader(""), &out, &out); code != 2 {
			t.Errorf("run(%q) = %d, want 2", args, code)
		}
	}
}
