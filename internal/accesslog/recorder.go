package accesslog

import (
	"io"
	"net/http"
)

// recorder wraps the handler's ResponseWriter to record the status and the
// body size. It keeps what the wrapped writer can do reachable: Flush,
// WriteString and ReadFrom (sendfile for static files) directly, the rest
// (Hijack, SetReadDeadline, SetWriteDeadline, EnableFullDuplex) through
// http.ResponseController, which follows Unwrap.
type recorder struct {
	rw          http.ResponseWriter
	head        bool // a HEAD request: net/http discards the body
	wroteHeader bool // a final (non-1xx) status was sent
	status      int
	bytes       int64
}

var (
	_ http.ResponseWriter = (*recorder)(nil)
	_ http.Flusher        = (*recorder)(nil)
	_ io.ReaderFrom       = (*recorder)(nil)
	_ io.StringWriter     = (*recorder)(nil)
)

func (r *recorder) Header() http.Header { return r.rw.Header() }

// WriteHeader records the first final status. 1xx statuses other than 101
// Switching Protocols are informational (103 Early Hints): net/http lets a
// final status follow them, so they are passed on but not recorded.
func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader && (code < 100 || code > 199 || code == http.StatusSwitchingProtocols) {
		r.wroteHeader = true
		r.status = code
	}
	r.rw.WriteHeader(code)
}

// implicitHeader records the 200 that net/http sends when the handler writes
// before WriteHeader.
func (r *recorder) implicitHeader() {
	if !r.wroteHeader {
		r.wroteHeader = true
		r.status = http.StatusOK
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	r.implicitHeader()
	n, err := r.rw.Write(p)
	r.count(int64(n))
	return n, err
}

// WriteString keeps io.WriteString from copying s when the wrapped writer
// takes strings, as net/http's does.
func (r *recorder) WriteString(s string) (int, error) {
	r.implicitHeader()
	n, err := io.WriteString(r.rw, s)
	r.count(int64(n))
	return n, err
}

// ReadFrom lets io.Copy (as in http.ServeContent) reach the wrapped
// writer's ReadFrom, which net/http implements with sendfile.
func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	r.implicitHeader()
	var n int64
	var err error
	if rf, ok := r.rw.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(r.rw, src) // r.rw has no ReadFrom: no recursion
	}
	r.count(n)
	return n, err
}

func (r *recorder) count(n int64) {
	if !r.head {
		r.bytes += n
	}
}

// Flush sends buffered data to the client, if the wrapped writer can.
func (r *recorder) Flush() {
	r.FlushError() // http.Flusher has no way to report the error
}

// FlushError is Flush with its error, as http.ResponseController wants it:
// http.ErrNotSupported if the wrapped writer cannot flush.
func (r *recorder) FlushError() error {
	r.implicitHeader()
	return http.NewResponseController(r.rw).Flush()
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (r *recorder) Unwrap() http.ResponseWriter { return r.rw }

// statusCode is the status to log: 200 if the handler sent nothing, as
// net/http then does.
func (r *recorder) statusCode() int {
	if !r.wroteHeader {
		return http.StatusOK
	}
	return r.status
}

// Status is the final status sent so far, 0 if none; Written is the body
// bytes written. A middleware inside the access log (the per-route
// metrics) reads them instead of wrapping the writer a second time.
func (r *recorder) Status() int    { return r.status }
func (r *recorder) Written() int64 { return r.bytes }
