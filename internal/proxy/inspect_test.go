package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// An Inspector in the request's context sees the spooled body (from memory
// or from the temporary file) before any upstream; a refusal answers
// instead of the upstream; an Unbuffered handler spools such a request.
func TestInspector(t *testing.T) {
	var upstreamHits atomic.Int32
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		upstreamHits.Add(1)
		body, _ := io.ReadAll(r.Body)
		io.WriteString(w, "upstream got "+string(body))
	})
	for _, unbuffered := range []bool{false, true} {
		sel, _ := NewSelector(PolicyRoundRobin, "", []*Upstream{b.u})
		h, err := New(Options{Pool: NewPool([]*Upstream{b.u}, sel, PoolOptions{}), BodyMemory: 8, Unbuffered: unbuffered})
		if err != nil {
			t.Fatal(err)
		}
		var seen []string
		inspect := Inspector(func(r *http.Request, body io.Reader, n int64) http.HandlerFunc {
			data, err := io.ReadAll(body)
			if err != nil || int64(len(data)) != n {
				t.Errorf("inspector read %d bytes (%v), length %d", len(data), err, n)
			}
			seen = append(seen, string(data))
			if strings.Contains(string(data), "evil") {
				return func(w http.ResponseWriter, r *http.Request) { http.Error(w, "refused", http.StatusForbidden) }
			}
			return nil
		})
		for _, tt := range []struct {
			body   string
			status int
			answer string
		}{
			{"a body longer than eight bytes, in a temporary file", 200, "upstream got a body longer than eight bytes, in a temporary file"},
			{"short", 200, "upstream got short"},
			{"an evil body", 403, "refused\n"},
			{"", 200, "upstream got "},
		} {
			hits := upstreamHits.Load()
			var rd io.Reader
			if tt.body != "" {
				rd = strings.NewReader(tt.body)
			}
			r := httptest.NewRequest("POST", "/", rd)
			r = r.WithContext(WithInspector(r.Context(), inspect))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.status || w.Body.String() != tt.answer {
				t.Errorf("unbuffered=%v %q: %d %q, want %d %q", unbuffered, tt.body, w.Code, w.Body, tt.status, tt.answer)
			}
			if refused := tt.status == 403; refused != (upstreamHits.Load() == hits) {
				t.Errorf("unbuffered=%v %q: upstream reached = %v", unbuffered, tt.body, !refused)
			}
		}
		if len(seen) != 4 || seen[0] != "a body longer than eight bytes, in a temporary file" || seen[3] != "" {
			t.Errorf("unbuffered=%v: the inspector saw %q", unbuffered, seen)
		}
	}
}
