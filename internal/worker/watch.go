package worker

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// watcher polls the .py files under a directory for changes (development
// reload). Polling needs no dependency and no inotify limits; once a second
// over a project's files costs little.
type watcher struct {
	dir  string
	last map[string]time.Time
}

// maxWatched bounds the files a scan looks at, so that a virtualenv inside
// the project cannot make each poll expensive.
const maxWatched = 20000

func newWatcher(dir string) *watcher {
	if dir == "" {
		dir, _ = os.Getwd()
	}
	w := &watcher{dir: dir}
	w.last = w.scan()
	return w
}

func (w *watcher) scan() map[string]time.Time {
	seen := make(map[string]time.Time)
	_ = filepath.WalkDir(w.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		name := d.Name()
		if d.IsDir() {
			if path != w.dir && (strings.HasPrefix(name, ".") || name == "__pycache__" || name == "node_modules" || name == "venv") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".py") {
			return nil
		}
		if len(seen) >= maxWatched {
			return filepath.SkipAll
		}
		if info, err := d.Info(); err == nil {
			seen[path] = info.ModTime()
		}
		return nil
	})
	return seen
}

// changed reports whether a .py file was added, removed or modified since
// the last call.
func (w *watcher) changed() bool {
	now := w.scan()
	diff := len(now) != len(w.last)
	if !diff {
		for p, t := range now {
			if old, ok := w.last[p]; !ok || !old.Equal(t) {
				diff = true
				break
			}
		}
	}
	w.last = now
	return diff
}
