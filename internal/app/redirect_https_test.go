package app

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHTTPSRedirect(t *testing.T) {
	cases := []struct {
		port, method, host, target string
		want                       string
	}{
		{":8443", "GET", "example.com:8080", "/a/b%20c?x=1&y=%2F", "https://example.com:8443/a/b%20c?x=1&y=%2F"},
		{"", "GET", "example.com", "/", "https://example.com/"},
		{"", "POST", "Example.COM:80", "/form?next=/x", "https://Example.COM/form?next=/x"},
		{"", "HEAD", "[::1]:80", "/v6", "https://[::1]/v6"},
		{":444", "GET", "10.0.0.1", "http://10.0.0.1/abs?q", "https://10.0.0.1:444/abs?q"},
	}
	for _, tc := range cases {
		r := httptest.NewRequest(tc.method, tc.target, nil)
		r.Host = tc.host
		w := httptest.NewRecorder()
		(&httpsRedirect{port: tc.port}).ServeHTTP(w, r)
		if w.Code != http.StatusPermanentRedirect || w.Header().Get("Location") != tc.want {
			t.Errorf("%s %s Host %s: %d Location %q; want 308 %q", tc.method, tc.target, tc.host, w.Code, w.Header().Get("Location"), tc.want)
		}
		if tc.method != "GET" && w.Body.Len() != 0 {
			t.Errorf("%s: body %q, want none", tc.method, w.Body.String())
		}
		if tc.method == "GET" && w.Body.Len() > 200 {
			t.Errorf("GET: body of %d bytes, want a short one", w.Body.Len())
		}
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.Host = ""
	w := httptest.NewRecorder()
	(&httpsRedirect{}).ServeHTTP(w, r)
	if w.Code != http.StatusBadRequest {
		t.Errorf("no Host: %d, want 400", w.Code)
	}
}
