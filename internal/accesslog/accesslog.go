// Package accesslog writes one line per HTTP request, in nginx's "combined"
// format or as JSON, from a plain func(http.Handler) http.Handler middleware.
//
// The middleware logs the request as it receives it: put it early in the
// chain, so that every request is logged, but after the middleware that sets
// r.RemoteAddr from a trusted proxy's headers (real IP), if any, so that the
// client's address is logged rather than the proxy's.
//
// The files: accesslog.go (middleware, Options), format.go (the two line
// formats and their escaping), recorder.go (the ResponseWriter wrapper that
// records status and size).
package accesslog

import (
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Format selects the shape of a log line.
type Format int

const (
	// Combined is nginx's "combined" log format followed by the request
	// time and the request ID, the default:
	//
	//	$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_time "$request_id"
	//
	// where $request_time is in seconds with millisecond resolution
	// ("0.012"), as nginx prints it, and $request_id is the ID the
	// internal/requestid middleware gave the request ("-" without one), as
	// nginx users add it. Tools that parse "combined" by position ignore
	// the extra trailing fields. Empty values are "-"; in the quoted
	// and user fields, '"', '\' and bytes below 0x20 or from 0x7f up are
	// written \xHH, as nginx does, so that a line can never be forged or
	// split by what a client sends.
	Combined Format = iota

	// JSON writes one JSON object per line with the fields remote_addr,
	// remote_user, time (RFC 3339 with milliseconds, local time), method,
	// uri, protocol, status, bytes_sent, referer, user_agent, request_time
	// (seconds, a number with millisecond resolution) and request_id. Strings
	// are escaped as JSON requires; invalid UTF-8 becomes U+FFFD. Empty
	// values are empty strings, as with nginx's escape=json.
	JSON
)

// String returns "combined" or "json".
func (f Format) String() string {
	switch f {
	case Combined:
		return "combined"
	case JSON:
		return "json"
	}
	return "Format(" + strconv.Itoa(int(f)) + ")"
}

// Options configure the middleware. The zero value writes Combined lines and
// reports write errors to slog.Default().
type Options struct {
	// Format is the line format. Zero means Combined; a value that is
	// neither Combined nor JSON is treated as Combined.
	Format Format

	// Logger receives write errors on the log writer (a full disk, a closed
	// pipe), at warn level: once when writing starts failing, and once at
	// info level when it works again, so that a failing log does not flood
	// the error log. Lines that failed are lost. Nil means slog.Default().
	Logger *slog.Logger
}

// New returns middleware that writes one line per request to w, after the
// handler returns. It is safe for concurrent use: each line is built apart
// and handed to w in a single Write, under a lock, so w may be any
// io.Writer, an *os.File included (opened with O_APPEND, as nginx does, so
// that lines written by several processes do not overwrite each other).
//
// The status logged is the one the handler sent (200 if it wrote a body or
// nothing at all without calling WriteHeader); the size is the number of
// body bytes the handler wrote (0 for HEAD, whose body net/http discards).
// If the handler panics, http.ErrAbortHandler included, the line is still
// written, with the status sent so far (500 if none was sent: the client
// gets a closed connection), and the panic carries on unchanged to
// net/http's recovery.
func New(w io.Writer, opt Options) func(http.Handler) http.Handler {
	return newLogger(w, opt, time.Now).middleware
}

// logger holds what the middleware shares between requests.
type logger struct {
	format Format
	errLog *slog.Logger
	now    func() time.Time // time.Now, but for tests
	stamps stampCache

	mu      sync.Mutex // serializes Writes on w and guards failing
	w       io.Writer
	failing bool // the last Write failed
}

func newLogger(w io.Writer, opt Options, now func() time.Time) *logger {
	errLog := opt.Logger
	if errLog == nil {
		errLog = slog.Default()
	}
	format := opt.Format
	if format != JSON {
		format = Combined
	}
	return &logger{format: format, errLog: errLog, now: now, w: w}
}

func (l *logger) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := l.now()
		// Not pooled: a handler that wrongly keeps its ResponseWriter after
		// returning must not be able to write into another request.
		rec := &recorder{rw: w, head: r.Method == http.MethodHead}
		completed := false
		defer func() {
			if !completed {
				// The handler panicked (or called runtime.Goexit). The
				// panic goes on by itself: no recover, so net/http logs
				// it with its original stack.
				if !rec.wroteHeader {
					rec.wroteHeader = true
					rec.status = http.StatusInternalServerError
				}
				l.log(r, rec, start)
			}
		}()
		next.ServeHTTP(rec, r)
		completed = true
		l.log(r, rec, start)
	})
}

// bufPool holds line buffers; lines are short, so one rarely grows.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, 512)
	return &b
}}

// maxPooledBuf bounds the buffers kept in bufPool, so that one request with
// huge headers does not pin memory.
const maxPooledBuf = 64 << 10

// log builds the line for a finished request and writes it.
func (l *logger) log(r *http.Request, rec *recorder, start time.Time) {
	end := l.now()
	e := entry{r: r, status: rec.statusCode(), bytes: rec.bytes, end: end, stamp: l.stamps.of(end), elapsed: end.Sub(start)}
	bp := bufPool.Get().(*[]byte)
	b := (*bp)[:0]
	if l.format == JSON {
		b = e.appendJSON(b)
	} else {
		b = e.appendCombined(b)
	}
	l.write(b)
	if cap(b) <= maxPooledBuf {
		*bp = b
		bufPool.Put(bp)
	}
}

// write hands one line to w and reports changes in w's health, once per
// change, outside the lock.
func (l *logger) write(line []byte) {
	changed, err := l.writeLine(line)
	switch {
	case changed && err != nil:
		l.errLog.Warn("accesslog: writing log line failed; lines are lost until it works again", "err", err)
	case changed:
		l.errLog.Info("accesslog: writing log lines works again")
	}
}

// writeLine writes line under the lock and tells whether the writer went
// from working to failing or back.
func (l *logger) writeLine(line []byte) (changed bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock() // even if w panics
	_, err = l.w.Write(line)
	changed = (err != nil) != l.failing
	l.failing = err != nil
	return changed, err
}
