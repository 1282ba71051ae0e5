package cache

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"portico/internal/porticotest"
)

// TestReadFrom: an answer copied in with io.Copy (a file an app's
// X-Accel-Redirect names) reaches the client's ReadFrom when it is not
// stored, and is stored through Write when it is.
func TestReadFrom(t *testing.T) {
	body := strings.Repeat("x", 64<<10)
	for _, tc := range []struct {
		cc       string
		readFrom int
		second   string // X-Cache of a second request
	}{
		{"no-store", 1, "MISS"},
		{"max-age=60", 0, "HIT"},
	} {
		c, err := New(Options{})
		if err != nil {
			t.Fatal(err)
		}
		h := c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/pdf")
			w.Header().Set("Cache-Control", tc.cc)
			if _, err := io.Copy(w, struct{ io.Reader }{strings.NewReader(body)}); err != nil {
				t.Error(err)
			}
		}))
		rec := porticotest.NewReadFromRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/f.pdf", nil))
		if rec.ReadFromCalls != tc.readFrom || rec.Body.String() != body {
			t.Errorf("%s: ReadFrom reached the client %d times (want %d), body %d bytes", tc.cc, rec.ReadFromCalls, tc.readFrom, rec.Body.Len())
		}
		rec2 := httptest.NewRecorder()
		h.ServeHTTP(rec2, httptest.NewRequest(http.MethodGet, "/f.pdf", nil))
		if got := rec2.Header().Get("X-Cache"); got != tc.second || rec2.Body.String() != body {
			t.Errorf("%s: second answer X-Cache %q (want %q), body %d bytes", tc.cc, got, tc.second, rec2.Body.Len())
		}
		c.Close()
	}
}
