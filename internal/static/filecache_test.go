package static

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for the file cache's revalidation.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestFileCache(t *testing.T) {
	small := strings.Repeat("s", 1024)
	large := strings.Repeat("L", 100<<10)
	root := writeFiles(t, map[string]string{"small.txt": small, "large.bin": large, "docs/index.html": "docs"})
	h := newWith(t, Options{Root: root})
	clock := &fakeClock{t: time.Now()}
	h.now = clock.now
	addr := server(t, h)
	get := func(target string, want int, body string) {
		t.Helper()
		resp := raw(t, addr, "GET", target)
		if resp.status != want || (body != "" && resp.body != body) {
			t.Fatalf("GET %s = %d %.20q, want %d %.20q", target, resp.status, resp.body, want, body)
		}
	}

	t.Run("a small file is opened once", func(t *testing.T) {
		before := h.opens.Load()
		for range 5 {
			get("/small.txt", 200, small)
		}
		get("/docs/", 200, "docs")
		get("/docs/", 200, "docs")
		if n := h.opens.Load() - before; n != 2 {
			t.Errorf("opens for 5 requests of one file and 2 of an index = %d, want 2", n)
		}
	})
	t.Run("a large file is opened per request", func(t *testing.T) {
		before := h.opens.Load()
		for range 3 {
			get("/large.bin", 200, large)
		}
		if n := h.opens.Load() - before; n != 3 {
			t.Errorf("opens = %d, want 3", n)
		}
	})
	p := filepath.Join(root, "small.txt")
	t.Run("a change is seen after the interval", func(t *testing.T) {
		v2 := strings.Repeat("2", 2000)
		if err := os.WriteFile(p, []byte(v2), 0o644); err != nil {
			t.Fatal(err)
		}
		get("/small.txt", 200, small) // within the interval: the cached copy
		clock.advance(time.Second)
		get("/small.txt", 200, v2)
		// Same size, a new mtime.
		v3 := strings.Repeat("3", 2000)
		if err := os.WriteFile(p, []byte(v3), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, time.Time{}, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		clock.advance(time.Second)
		get("/small.txt", 200, v3)
	})
	t.Run("revalidation of an unchanged file does not read it", func(t *testing.T) {
		before := h.opens.Load()
		clock.advance(time.Second)
		get("/small.txt", 200, "")
		if n := h.opens.Load() - before; n != 0 {
			t.Errorf("opens = %d, want 0", n)
		}
	})
	t.Run("a deleted file is 404 after the interval", func(t *testing.T) {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		clock.advance(time.Second)
		get("/small.txt", 404, "")
		n, _ := h.files.size()
		for range 3 {
			get("/small.txt", 404, "")
		}
		if n2, _ := h.files.size(); n2 != n {
			t.Errorf("misses grew the cache: %d → %d entries", n, n2)
		}
	})
}

func TestFileCacheBudget(t *testing.T) {
	files := map[string]string{}
	for i := range 20 {
		files[string(rune('a'+i))+".txt"] = strings.Repeat("x", 1000)
	}
	root := writeFiles(t, files)
	h := newWith(t, Options{Root: root, FileCache: 5000})
	addr := server(t, h)
	for name := range files {
		raw(t, addr, "GET", "/"+name)
	}
	n, cost := h.files.size()
	if cost > 5000 || n == 0 || n > 4 {
		t.Errorf("cache holds %d entries costing %d, want 1..4 within 5000", n, cost)
	}
}

func TestLRU(t *testing.T) {
	c := newLRU[string, int](10)
	c.add("a", 1, 4)
	c.add("b", 2, 4)
	if _, ok := c.get("a"); !ok { // a is now the most recent
		t.Fatal("a missing")
	}
	c.add("c", 3, 4) // evicts b
	if _, ok := c.get("b"); ok {
		t.Error("b kept past the budget")
	}
	for _, k := range []string{"a", "c"} {
		if _, ok := c.get(k); !ok {
			t.Errorf("%s evicted", k)
		}
	}
	c.add("a", 5, 2) // replace
	if v, _ := c.get("a"); v != 5 {
		t.Errorf("a = %d, want 5", v)
	}
	if n, cost := c.size(); n != 2 || cost != 6 {
		t.Errorf("size = %d, %d; want 2, 6", n, cost)
	}
	c.add("huge", 0, 11)
	if _, ok := c.get("huge"); ok {
		t.Error("an entry above the budget was kept")
	}
	c.remove("a")
	if n, cost := c.size(); n != 1 || cost != 4 {
		t.Errorf("after remove: size = %d, %d; want 1, 4", n, cost)
	}
}

// CacheStats counts the lookups of requested paths in the file cache and
// of compressed forms in the compression cache.
func TestCacheStats(t *testing.T) {
	css := strings.Repeat("body { color: red }\n", 100)
	root := writeFiles(t, map[string]string{"site.css": css})
	h := newWith(t, Options{Root: root})
	addr := server(t, h)
	for range 3 {
		if resp := raw(t, addr, "GET", "/site.css"); resp.status != 200 {
			t.Fatalf("GET: %d", resp.status)
		}
	}
	for range 2 {
		if resp := raw(t, addr, "GET", "/site.css", "Accept-Encoding: gzip"); resp.status != 200 || resp.header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("GET gzip: %d %q", resp.status, resp.header.Get("Content-Encoding"))
		}
	}
	want := CacheStats{MemoryHits: 4, MemoryMisses: 1, CompressionHits: 1, CompressionMisses: 1}
	if st := h.CacheStats(); st != want {
		t.Errorf("CacheStats %+v, want %+v", st, want)
	}
}
