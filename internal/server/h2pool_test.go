package server

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"portico/internal/porticotest"
)

// lockedBuffer is a log destination safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// goroutineID is the number of the calling goroutine, from its stack's
// first line ("goroutine 12 [running]:").
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	f := strings.Fields(string(buf))
	return f[1]
}

//go:noinline
func panickyHandler() { panic("boom from the handler") }

// Over HTTP/2, requests one after the other run on the same pooled
// goroutine; a handler's panic
// resets its stream, is logged with the stack where it happened, and the
// connection serves the next request; http.ErrAbortHandler is not logged;
// a handler's runtime.Goexit resets its stream.
func TestH2HandlerPool(t *testing.T) {
	var logs lockedBuffer
	s := NewHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/panic":
			panickyHandler()
		case "/abort":
			panic(http.ErrAbortHandler)
		case "/goexit":
			runtime.Goexit()
		}
		io.WriteString(w, goroutineID())
	}), Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	addr := serveTLS(t, s)
	c := tlsClient(t, "h2", nil)
	get := func(path string) (string, error) {
		resp, err := c.Get("https://" + addr + path)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("%s: served over %s", path, resp.Proto)
		}
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	first, err := get("/")
	if err != nil {
		t.Fatal(err)
	}
	// The worker goes back to the pool once its response is written.
	porticotest.WaitFor(t, "the worker back in the pool", 10*time.Second, func() bool {
		return idleWorkers(&s.h2pool) == 1
	})
	second, err := get("/")
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Fatalf("handlers ran on goroutines %s and %s: not pooled", first, second)
	}
	if _, err := get("/abort"); err == nil {
		t.Fatal("an aborted handler's stream was not reset")
	}
	if _, err := get("/panic"); err == nil {
		t.Fatal("a panicking handler's stream was not reset")
	}
	if _, err := get("/goexit"); err == nil { // its worker ends, not pooled
		t.Fatal("the stream of a handler that called runtime.Goexit was not reset")
	}
	if _, err := get("/"); err != nil {
		t.Fatalf("after the panics: %v", err)
	}
	// The panic is logged after the stream is reset.
	porticotest.WaitFor(t, "the panic logged", 10*time.Second, func() bool {
		return strings.Contains(logs.String(), "boom from the handler")
	})
	log := logs.String()
	if !strings.Contains(log, "panickyHandler") {
		t.Fatalf("the panic is logged without the stack where it happened:\n%s", log)
	}
	if strings.Contains(log, "abort Handler") {
		t.Fatalf("http.ErrAbortHandler was logged:\n%s", log)
	}
}

// A pool worker idle for poolIdle exits; one that served within poolIdle
// stays. (synctest.Test fails if a worker goroutine is left behind.)
func TestHandlerPoolReap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p handlerPool
		run := func() {
			task := &doneTask{done: make(chan struct{})}
			p.start(task)
			<-task.done
			synctest.Wait() // the worker back in the pool
		}
		run()
		run() // the same worker again
		if n := idleWorkers(&p); n != 1 {
			t.Fatalf("%d idle workers after two requests in turn; want 1", n)
		}
		time.Sleep(poolIdle / 2)
		run()
		time.Sleep(poolIdle/2 + time.Second) // poolIdle after the first, not the last
		synctest.Wait()
		if n := idleWorkers(&p); n != 1 {
			t.Fatalf("%d idle workers %v after the last request; want 1", n, poolIdle/2+time.Second)
		}
		time.Sleep(poolIdle / 2)
		synctest.Wait()
		if n := idleWorkers(&p); n != 0 {
			t.Fatalf("%d idle workers %v after the last request; want 0", n, poolIdle+time.Second)
		}
	})
}

// A doneTask closes done when it runs.
type doneTask struct{ done chan struct{} }

func (d *doneTask) run() { close(d.done) }

func idleWorkers(p *handlerPool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}
