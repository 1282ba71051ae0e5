package compress

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"portico/internal/porticotest"
)

// TestReadFrom: a body copied in with io.Copy (a file an app's
// X-Accel-Redirect names) reaches the client's ReadFrom when it is not
// compressed, and is compressed through Write when it is.
func TestReadFrom(t *testing.T) {
	body := strings.Repeat("some text that compresses ", 4000)
	for _, tc := range []struct {
		ctype    string
		readFrom int
		coding   string
	}{
		{"application/pdf", 1, ""},
		{"text/plain", 0, "gzip"},
	} {
		h := New(Options{}).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", tc.ctype)
			// struct{io.Reader} hides strings.Reader's WriteTo, as an
			// *os.File's would not be hidden: io.Copy asks w.ReadFrom.
			if _, err := io.Copy(w, struct{ io.Reader }{strings.NewReader(body)}); err != nil {
				t.Error(err)
			}
		}))
		rec := porticotest.NewReadFromRecorder()
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("Accept-Encoding", "gzip")
		h.ServeHTTP(rec, req)
		if rec.ReadFromCalls != tc.readFrom || rec.Header().Get("Content-Encoding") != tc.coding {
			t.Errorf("%s: ReadFrom reached the client %d times (want %d), Content-Encoding %q (want %q)", tc.ctype, rec.ReadFromCalls, tc.readFrom, rec.Header().Get("Content-Encoding"), tc.coding)
		}
		if tc.coding == "" && rec.Body.String() != body {
			t.Errorf("%s: body of %d bytes, want %d", tc.ctype, rec.Body.Len(), len(body))
		}
	}
}
