package app

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestLogFileReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	f, err := OpenLogFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	// Writers keep writing while the file is renamed and reopened: every
	// line lands whole in one file or the other.
	const writers, lines = 4, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range lines {
				if _, err := fmt.Fprintf(f, "w%d line %d\n", w, i); err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		})
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := f.Reopen(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	fmt.Fprintf(f, "after\n")
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if !strings.HasSuffix(string(cur), "after\n") || strings.Contains(string(old), "after") {
		t.Errorf("the line written after Reopen is not (only) in the new file")
	}
	all := string(old) + string(cur)
	if n := strings.Count(all, "\n"); n != writers*lines+1 {
		t.Errorf("%d lines in the two files, want %d", n, writers*lines+1)
	}
	for _, l := range strings.Split(strings.TrimSpace(all), "\n") {
		if !strings.HasPrefix(l, "w") && l != "after" {
			t.Errorf("broken line %q", l)
		}
	}

	// A failed reopen keeps the old file in use.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := f.Reopen(); err == nil {
		t.Fatal("Reopen in a removed directory succeeded")
	}
	if _, err := f.Write([]byte("still writing\n")); err != nil {
		t.Errorf("write after a failed Reopen: %v", err)
	}
}
