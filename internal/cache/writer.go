package cache

import (
	"io"
	"net/http"
	"strconv"
	"time"

	"portico/internal/errpage"
)

// teeWriter is the writer next gets on a miss or a revalidation. next
// writes into its own header map; at WriteHeader the writer decides:
// a 304 to our conditional request, or an error the stale entry may
// replace, is kept from the client (finish answers from the entry);
// anything else goes to the client as it comes (streamed, flushes
// passed on) and, when storable, is copied into the entry up to MaxEntry.
type teeWriter struct {
	c                              *Cache
	w                              http.ResponseWriter
	r                              *http.Request // the client's request
	old                            *entry
	expired                        bool // an entry was there: the answer is EXPIRED
	bg                             bool // background fetch: no client, no count
	conditional, clientConditional bool
	reqTime                        time.Time
	h                              http.Header

	status     int
	mode       writerMode
	capture    bool        // the body is copied into buf
	stored     http.Header // the header to store, when capture
	buf        []byte
	reason     string // why the answer is not storable ("" if it is)
	notModFrom bool   // the client got our 304: the body is only captured
	counted    bool   // the answer's X-Cache is counted
}

type writerMode int

const (
	modeUnset       writerMode = iota
	modePass                   // the answer goes to the client
	modeRevalidated            // the app said 304 to our validators
	modeStale                  // an error the stale entry replaces
	modePassedOn               // an error page went out through the writer below
)

var (
	_ http.Flusher  = (*teeWriter)(nil)
	_ errpage.Pager = (*teeWriter)(nil)
)

func (t *teeWriter) Header() http.Header { return t.h }

// Unwrap lets http.ResponseController reach the client's writer.
func (t *teeWriter) Unwrap() http.ResponseWriter { return t.w }

// isError reports whether an app's answer counts as a failure
// stale-if-error may hide.
func isError(status int) bool {
	switch status {
	case 500, 502, 503, 504:
		return true
	}
	return false
}

func (t *teeWriter) WriteHeader(status int) {
	if t.mode != modeUnset || status < 200 {
		// 1xx informational answers are not relayed through the cache.
		return
	}
	t.status = status
	now := t.c.opt.Now()
	switch {
	case t.conditional && status == http.StatusNotModified:
		t.mode = modeRevalidated
		return
	case isError(status) && t.old.staleUsable(now):
		t.mode = modeStale
		return
	}
	t.mode = modePass
	t.passHeaders()
	if t.r.Method == http.MethodGet {
		t.reason = t.c.storable(t.r, status, t.h)
		if t.reason == "" {
			t.capture = true
			if cl, err := strconv.ParseInt(t.h.Get("Content-Length"), 10, 64); err == nil && cl > t.c.opt.MaxEntry {
				t.capture, t.reason = false, "max-entry"
			} else {
				t.stored = t.c.storedHeader(t.h)
			}
		}
	}
	if t.bg {
		return
	}
	if status == http.StatusOK && t.clientConditional && notModified(t.r, t.h.Get("Etag"), t.h.Get("Last-Modified")) {
		t.notModFrom = true
		t.w.WriteHeader(http.StatusNotModified)
		return
	}
	t.w.WriteHeader(status)
}

// passHeaders copies next's header fields to the client's, with X-Cache.
func (t *teeWriter) passHeaders() {
	if t.bg {
		return
	}
	dst := t.w.Header()
	for k, v := range t.h {
		dst[k] = v
	}
	res := resMiss
	if t.expired {
		res = resExpired
	}
	if t.counted {
		dst["X-Cache"] = xCache[res]
		return
	}
	t.counted = true
	t.c.answered(t.w, res)
}

// ReadFrom keeps sendfile for an answer that goes to the client without
// a copy into the entry (a large file an app's X-Accel-Redirect names).
func (t *teeWriter) ReadFrom(src io.Reader) (int64, error) {
	if t.mode == modeUnset {
		t.WriteHeader(http.StatusOK)
	}
	if rf, ok := t.w.(io.ReaderFrom); ok && t.mode == modePass && !t.capture && !t.bg && !t.notModFrom {
		return rf.ReadFrom(src)
	}
	return io.Copy(writeOnly{t}, src)
}

// writeOnly hides ReadFrom from io.Copy.
type writeOnly struct{ io.Writer }

func (t *teeWriter) Write(p []byte) (int, error) {
	if t.mode == modeUnset {
		t.WriteHeader(http.StatusOK)
	}
	if t.mode != modePass {
		return len(p), nil // replaced by the entry, or already answered
	}
	if t.capture {
		if int64(len(t.buf)+len(p)) > t.c.opt.MaxEntry {
			t.capture, t.buf, t.reason = false, nil, "max-entry"
		} else {
			t.buf = append(t.buf, p...)
		}
	}
	if t.bg || t.notModFrom {
		return len(p), nil
	}
	return t.w.Write(p)
}

// Flush sends what the app wrote so far to the client.
func (t *teeWriter) Flush() {
	if t.mode == modeUnset {
		t.WriteHeader(http.StatusOK)
	}
	if t.mode == modePass && !t.bg && !t.notModFrom {
		http.NewResponseController(t.w).Flush()
	}
}

// ServeErrorPage is called by Portico's own error answers (the proxy's
// 502, 503, 504 when the app or upstream fails): within stale-if-error
// the stale entry answers instead; otherwise the call goes on to the
// writers below (a site's error pages), and what they send is not stored.
func (t *teeWriter) ServeErrorPage(status int) bool {
	if t.mode != modeUnset {
		return false
	}
	if status >= 500 && t.old.staleUsable(t.c.opt.Now()) {
		t.status, t.mode = status, modeStale
		return true
	}
	if t.bg {
		return false
	}
	t.passHeaders()
	if errpage.Serve(t.w, status) {
		t.status, t.mode = status, modePassedOn
		return true
	}
	return false
}

// finish completes the answer once next returned: from the entry for a
// revalidation or a replaced error, and stores what may be stored.
func (t *teeWriter) finish(url string) {
	c := t.c
	if t.mode == modeUnset {
		t.WriteHeader(http.StatusOK)
	}
	resTime := c.opt.Now()
	switch t.mode {
	case modeRevalidated:
		e := c.refresh(t.old, t.h, t.reqTime, resTime)
		c.put(t.r, url, e, resTime)
		if !t.bg {
			c.serveEntry(t.w, t.r, e, resTime, resRevalidated)
		}
	case modeStale:
		if !t.bg {
			c.serveEntry(t.w, t.r, t.old, resTime, resStale)
		}
	case modePass:
		if t.r.Method != http.MethodGet {
			return
		}
		key := url + "\x00" + variantKey(t.r, nil)
		if !t.capture {
			if t.reason != "" && t.reason != "max-entry" {
				c.mu.Lock()
				c.pass.put(key, resTime.Add(hitForPass))
				c.mu.Unlock()
			}
			return
		}
		if c.opt.MinUses > 1 {
			c.mu.Lock()
			n, _ := c.uses.get(key)
			n++
			if n < c.opt.MinUses {
				c.uses.put(key, n)
			} else {
				c.uses.remove(key)
			}
			c.mu.Unlock()
			if n < c.opt.MinUses {
				return
			}
		}
		if cl := t.stored["Content-Length"]; len(cl) == 0 {
			if t.status != http.StatusNoContent {
				t.stored["Content-Length"] = []string{strconv.Itoa(len(t.buf))}
			}
		} else if cl[0] != strconv.Itoa(len(t.buf)) {
			return // the app wrote less than it announced: a broken answer
		}
		if _, remote := c.store.(*redisStore); remote && !t.bg {
			// The client should not wait for the store.
			http.NewResponseController(t.w).Flush()
		}
		e := c.newEntry(t.status, t.stored, t.buf, t.reqTime, resTime)
		c.put(t.r, url, e, resTime)
		c.mu.Lock()
		c.pass.remove(key)
		c.mu.Unlock()
	}
}

// discard is the client of a background revalidation.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(int)             {}

// statusWriter records the status of an unsafe request's answer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(status int) {
	if s.status == 0 && status >= 200 {
		s.status = status
	}
	s.ResponseWriter.WriteHeader(status)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusWriter) Flush() { http.NewResponseController(s.ResponseWriter).Flush() }

// ServeErrorPage records the status of an error page served below.
func (s *statusWriter) ServeErrorPage(status int) bool {
	if errpage.Serve(s.ResponseWriter, status) {
		if s.status == 0 {
			s.status = status
		}
		return true
	}
	return false
}
