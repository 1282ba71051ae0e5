package app

import (
	"io"
	"net/http"
	"strings"
)

// redirectHandler answers with a Location; "$uri" in to becomes the
// request's path and query.
type redirectHandler struct {
	to     string
	status int
}

func (h redirectHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Location", strings.ReplaceAll(h.to, "$uri", r.URL.RequestURI()))
	w.WriteHeader(h.status)
}

// respondHandler answers with a fixed status, headers and body.
type respondHandler struct {
	status  int
	body    string
	headers map[string]string
}

func (h respondHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	if h.body != "" {
		hdr.Set("Content-Type", "text/plain; charset=utf-8")
	}
	for k, v := range h.headers {
		hdr.Set(k, v)
	}
	w.WriteHeader(h.status)
	if r.Method != http.MethodHead {
		io.WriteString(w, h.body)
	}
}

// withHeaders sets add and deletes remove on the response headers of h,
// just before they are sent.
func withHeaders(h http.Handler, add map[string]string, remove []string) http.Handler {
	if len(add) == 0 && len(remove) == 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&headerWriter{ResponseWriter: w, add: add, remove: remove}, r)
	})
}

// headerWriter edits the headers once, at the first WriteHeader or Write.
// It passes ReadFrom through (sendfile) and unwraps for
// http.ResponseController.
type headerWriter struct {
	http.ResponseWriter
	add    map[string]string
	remove []string
	done   bool
}

func (w *headerWriter) apply() {
	if w.done {
		return
	}
	w.done = true
	hdr := w.ResponseWriter.Header()
	for _, k := range w.remove {
		hdr.Del(k)
	}
	for k, v := range w.add {
		hdr.Set(k, v)
	}
}

func (w *headerWriter) WriteHeader(code int) {
	if code >= 100 && code < 200 {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.apply()
	w.ResponseWriter.WriteHeader(code)
}

func (w *headerWriter) Write(b []byte) (int, error) {
	w.apply()
	return w.ResponseWriter.Write(b)
}

func (w *headerWriter) ReadFrom(src io.Reader) (int64, error) {
	w.apply()
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(struct{ io.Writer }{w.ResponseWriter}, src)
}

func (w *headerWriter) Flush() {
	w.apply()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *headerWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
