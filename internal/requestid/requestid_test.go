package requestid

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

var hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestNew(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := New()
		if !hex32.MatchString(id) {
			t.Fatalf("New() = %q, want 32 lowercase hex digits", id)
		}
		if seen[id] {
			t.Fatalf("New() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestValid(t *testing.T) {
	for s, want := range map[string]bool{
		"":                        false,
		"abc":                     true,
		"lb-7f3a:42/x=y":          true,
		strings.Repeat("a", 200):  true,
		strings.Repeat("a", 201):  false,
		"two words":               false,
		"tab\there":               false,
		"nl\nforged":              false,
		"del\x7f":                 false,
		"caf\xc3\xa9":             false,
		`quote"and\backslash`:     true, // printable; the access log escapes them
		"4f1c2b3a4f1c2b3a4f1c2b3": true,
	} {
		if got := Valid(s); got != want {
			t.Errorf("Valid(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestMiddleware(t *testing.T) {
	var sawHeader, sawCtx string
	h := Middleware(Options{Trusted: func(r *http.Request) bool { return r.RemoteAddr == "10.0.0.1:1" }})(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sawHeader, sawCtx = r.Header.Get(Header), Of(r)
		}))
	for _, tt := range []struct {
		name, peer string
		in         []string
		keep       bool
	}{
		{"none", "10.0.0.2:1", nil, false},
		{"untrusted", "10.0.0.2:1", []string{"client"}, false},
		{"trusted", "10.0.0.1:1", []string{"proxy-id"}, true},
		{"trusted insane", "10.0.0.1:1", []string{"a b"}, false},
		{"trusted twice", "10.0.0.1:1", []string{"x", "y"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tt.peer
			if tt.in != nil {
				r.Header[Header] = tt.in
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			got := w.Header().Get(Header)
			if tt.keep && got != tt.in[0] || !tt.keep && !hex32.MatchString(got) {
				t.Errorf("response ID %q (in %q, keep %v)", got, tt.in, tt.keep)
			}
			if sawHeader != got || sawCtx != got {
				t.Errorf("handler saw header %q, context %q; response %q", sawHeader, sawCtx, got)
			}
		})
	}
}

func BenchmarkNew(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = New()
	}
}

func BenchmarkMiddleware(b *testing.B) {
	h := Middleware(Options{})(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	r := httptest.NewRequest("GET", "/", nil)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}
