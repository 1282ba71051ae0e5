package static

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// fileState is what a lookup learns about a name: its kind, size and
// modification time and, for a small regular file held by the file cache,
// its whole content.
type fileState struct {
	mode    fs.FileMode
	size    int64
	modTime time.Time
	data    []byte        // the content, when cached in memory; nil otherwise
	fixed   *fixedHeaders // with data: its header values, formatted once
}

func stateOf(fi fs.FileInfo) fileState {
	return fileState{mode: fi.Mode(), size: fi.Size(), modTime: fi.ModTime()}
}

// same reports whether st and fi describe the same version of a file, by
// the fields the ETag is made of plus the kind.
func (st fileState) same(fi fs.FileInfo) bool {
	return st.mode == fi.Mode() && st.size == fi.Size() && st.modTime.Equal(fi.ModTime())
}

// cachedFile is one entry of the file cache. Entries are immutable: a
// revalidation stores a new one.
type cachedFile struct {
	state   fileState
	missing bool      // a negative entry (only for precompressed siblings)
	checked time.Time // when the file system was last asked
}

// entryOverhead is the cost charged for an entry besides its name and
// data, so that a budget bounds the number of entries too.
const entryOverhead = 256

// errChanged marks a file that changed between its stat and its read.
var errChanged = errors.New("static: file changed while being read")

// stat looks name up, through the file cache when there is one: a cached
// entry younger than the revalidation interval is used without any system
// call; an older one costs one stat and is kept (with its content) if the
// file's size, mtime and kind are unchanged. A small regular file is read
// into the cache when first seen or changed. sibling marks the lookup of a
// precompressed sibling, whose absence is cached too (the names are derived
// from existing files, so they are bounded; request paths are not, and
// their misses are never cached).
func (h *Handler) stat(name string, sibling bool) (fileState, error) {
	if h.files == nil {
		fi, err := h.root.Stat(name)
		if err != nil {
			return fileState{}, err
		}
		return stateOf(fi), nil
	}
	now := h.now()
	old, cached := h.files.get(name)
	if cached && now.Sub(old.checked) < h.fileValid {
		if old.missing {
			return fileState{}, fs.ErrNotExist
		}
		h.countLookup(sibling, true)
		return old.state, nil
	}
	hit := false
	defer func() { h.countLookup(sibling, hit) }()
	fi, err := h.root.Stat(name)
	if err != nil {
		if sibling && errors.Is(err, fs.ErrNotExist) {
			h.files.add(name, &cachedFile{missing: true, checked: now}, entryOverhead+int64(len(name)))
		} else if cached {
			h.files.remove(name)
		}
		return fileState{}, err
	}
	cost := entryOverhead + int64(len(name))
	if cached && !old.missing && old.state.same(fi) {
		h.files.add(name, &cachedFile{state: old.state, checked: now}, cost+int64(len(old.state.data)))
		hit = true
		return old.state, nil
	}
	st := stateOf(fi)
	switch {
	case fi.IsDir():
	case fi.Mode().IsRegular() && fi.Size() <= h.fileMax:
		data, fi2, err := h.readFile(name, fi.Size())
		if err != nil {
			h.files.remove(name)
			return fileState{}, err
		}
		st = stateOf(fi2)
		st.data = data
		st.fixed = newFixedHeaders(st.modTime, st.size)
		cost += int64(len(data))
	default: // large files are opened per request: nothing worth keeping
		h.files.remove(name)
		return st, nil
	}
	h.files.add(name, &cachedFile{state: st, checked: now}, cost)
	return st, nil
}

// readFile reads the whole regular file name, expected to be at most max
// bytes, and returns it with the stat of the open file.
func (h *Handler) readFile(name string, max int64) ([]byte, fs.FileInfo, error) {
	f, err := h.open(name)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("static: checking %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, errNotRegular
	}
	if fi.Size() > max {
		return nil, nil, errChanged
	}
	data := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		// Shorter than its stat said: truncated meanwhile.
		return nil, nil, fmt.Errorf("static: reading %s: %w", name, errChanged)
	}
	return data, fi, nil
}

// open opens name for reading, counting the opens for tests. Callers have
// checked that name is a regular file (opening a FIFO would block), and
// check the open file again.
func (h *Handler) open(name string) (*os.File, error) {
	h.opens.Add(1)
	return h.root.Open(name)
}

// countLookup counts a lookup of a requested path (not of a precompressed
// sibling) in the file cache: a hit is answered from the cache, without
// reading the file (a revalidation's stat aside).
func (h *Handler) countLookup(sibling, hit bool) {
	switch {
	case sibling:
	case hit:
		h.memHits.Add(1)
	default:
		h.memMisses.Add(1)
	}
}

// CacheStats counts the lookups in the handler's caches since it was
// created.
type CacheStats struct {
	// MemoryHits and MemoryMisses: lookups of requested paths in the file
	// cache (metadata, and the contents of small files); none without it.
	MemoryHits, MemoryMisses int64
	// CompressionHits and CompressionMisses: requests for an on-the-fly compressed
	// form found in the compression cache, or compressed (or waited for
	// while another request compressed it).
	CompressionHits, CompressionMisses int64
}

// CacheStats returns the cache counters.
func (h *Handler) CacheStats() CacheStats {
	st := CacheStats{MemoryHits: h.memHits.Load(), MemoryMisses: h.memMisses.Load()}
	if h.compress != nil {
		st.CompressionHits, st.CompressionMisses = h.compress.hits.Load(), h.compress.misses.Load()
	}
	return st
}
