package porticotest

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// Record is one log record as a LogRecorder kept it.
type Record struct {
	Time    time.Time
	Level   slog.Level
	Message string
	// Attrs holds every attribute, the logger's own (With) included, keyed
	// by name, qualified by its groups ("group.name"); values are
	// slog.Value.String().
	Attrs map[string]string
	// Text is the record as slog's TextHandler writes it, without its
	// newline.
	Text string
}

// LogRecorder is an slog.Handler that keeps every record it gets, at every
// level, for a test to read or wait for. Make one with NewLogRecorder; its
// WithAttrs and WithGroup views share the records.
type LogRecorder struct {
	s      *logStore
	text   slog.Handler      // formats Record.Text into s.line
	attrs  map[string]string // from WithAttrs, flattened as in Record.Attrs
	prefix string            // the open groups, "a.b."
}

type logStore struct {
	mu      sync.Mutex
	line    bytes.Buffer // the text handler's output for the record being handled
	records []Record
	changed chan struct{} // closed (and replaced) when a record is added
}

var _ slog.Handler = (*LogRecorder)(nil)

// NewLogRecorder returns an empty recorder.
func NewLogRecorder() *LogRecorder {
	s := &logStore{changed: make(chan struct{})}
	return &LogRecorder{s: s, text: slog.NewTextHandler(&s.line, &slog.HandlerOptions{Level: slog.LevelDebug})}
}

// Logger returns a logger that writes to r.
func (r *LogRecorder) Logger() *slog.Logger { return slog.New(r) }

// Enabled is true at every level.
func (r *LogRecorder) Enabled(context.Context, slog.Level) bool { return true }

// Handle keeps rec.
func (r *LogRecorder) Handle(ctx context.Context, rec slog.Record) error {
	kept := Record{Time: rec.Time, Level: rec.Level, Message: rec.Message, Attrs: make(map[string]string)}
	for k, v := range r.attrs {
		kept.Attrs[k] = v
	}
	rec.Attrs(func(a slog.Attr) bool {
		addAttr(kept.Attrs, r.prefix, a)
		return true
	})
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	r.s.line.Reset()
	_ = r.text.Handle(ctx, rec) // writes into a bytes.Buffer: cannot fail
	kept.Text = strings.TrimSuffix(r.s.line.String(), "\n")
	r.s.records = append(r.s.records, kept)
	close(r.s.changed)
	r.s.changed = make(chan struct{})
	return nil
}

// addAttr flattens a into m, groups into dotted keys.
func addAttr(m map[string]string, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, ga := range v.Group() {
			addAttr(m, p, ga)
		}
		return
	}
	if a.Key == "" {
		return // slog ignores empty attributes
	}
	m[prefix+a.Key] = v.String()
}

// WithAttrs returns a view of r that adds attrs to every record.
func (r *LogRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *r
	c.text = r.text.WithAttrs(attrs)
	c.attrs = make(map[string]string, len(r.attrs)+len(attrs))
	for k, v := range r.attrs {
		c.attrs[k] = v
	}
	for _, a := range attrs {
		addAttr(c.attrs, r.prefix, a)
	}
	return &c
}

// WithGroup returns a view of r that qualifies the attributes that follow
// with name.
func (r *LogRecorder) WithGroup(name string) slog.Handler {
	if name == "" {
		return r
	}
	c := *r
	c.text = r.text.WithGroup(name)
	c.prefix = r.prefix + name + "."
	return &c
}

// Records returns a copy of the records kept so far, oldest first.
func (r *LogRecorder) Records() []Record {
	recs, _ := r.s.since(0)
	return recs
}

// String returns the records' Text, one a line.
func (r *LogRecorder) String() string {
	var b strings.Builder
	for _, rec := range r.Records() {
		b.WriteString(rec.Text)
		b.WriteByte('\n')
	}
	return b.String()
}

// Wait waits for a record (kept already or to come) for which match is
// true and returns it; the test fails, naming what and listing the
// records, when none comes within timeout.
func (r *LogRecorder) Wait(t testing.TB, what string, timeout time.Duration, match func(Record) bool) Record {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	seen := 0
	for {
		recs, changed := r.s.since(seen)
		for _, rec := range recs {
			if match(rec) {
				return rec
			}
		}
		seen += len(recs)
		select {
		case <-changed:
		case <-timer.C:
			t.Fatalf("timed out after %v waiting for a log record: %s; the log:\n%s", timeout, what, r)
		}
	}
}

// since returns the records after the first n and a channel closed when
// another is added.
func (s *logStore) since(n int) ([]Record, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Record(nil), s.records[n:]...), s.changed
}
