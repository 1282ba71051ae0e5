package cache

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestFreshness: the RFC 9111 table of what is stored and how long it is
// fresh. Each case stores (or not) at t0, asks again after `after`, and
// expects the second answer's X-Cache, and Age on a hit.
func TestFreshness(t *testing.T) {
	hour := time.Hour
	cases := []struct {
		name   string
		opt    Options
		status int
		fields []string // response fields; "now" is the clock's time
		req    []string // request fields of both requests
		after  time.Duration
		want   string // X-Cache of the second answer
		age    string // Age of a hit ("" not checked)
	}{
		{name: "max-age fresh", status: 200, fields: []string{"Cache-Control", "max-age=60"}, after: 59 * time.Second, want: "HIT", age: "59"},
		{name: "max-age stale", status: 200, fields: []string{"Cache-Control", "max-age=60"}, after: 61 * time.Second, want: "EXPIRED"},
		{name: "max-age at the limit is stale", status: 200, fields: []string{"Cache-Control", "max-age=60"}, after: 60 * time.Second, want: "EXPIRED"},
		{name: "max-age at the limit, with a validator", status: 200, fields: []string{"Cache-Control", "max-age=60", "Etag", `"e"`}, after: 60 * time.Second, want: "EXPIRED"},
		{name: "max-age at the limit, with a stale window", status: 200, fields: []string{"Cache-Control", "max-age=60, stale-if-error=60"}, after: 60 * time.Second, want: "EXPIRED"},
		{name: "s-maxage wins over max-age", status: 200, fields: []string{"Cache-Control", "max-age=300, s-maxage=30"}, after: 31 * time.Second, want: "EXPIRED"},
		{name: "s-maxage fresh", status: 200, fields: []string{"Cache-Control", "max-age=1, s-maxage=30"}, after: 29 * time.Second, want: "HIT"},
		{name: "max-age wins over Expires", status: 200, fields: []string{"Cache-Control", "max-age=10", "Date", "now", "Expires", t0.Add(hour).Format(http.TimeFormat)}, after: 11 * time.Second, want: "EXPIRED"},
		{name: "Expires minus Date", status: 200, fields: []string{"Date", "now", "Expires", t0.Add(60 * time.Second).Format(http.TimeFormat)}, after: 59 * time.Second, want: "HIT"},
		{name: "Expires passed", status: 200, fields: []string{"Date", "now", "Expires", t0.Add(60 * time.Second).Format(http.TimeFormat)}, after: 61 * time.Second, want: "EXPIRED"},
		{name: "invalid Expires is stale", status: 200, fields: []string{"Date", "now", "Expires", "0"}, want: "MISS"},
		{name: "Age in counts", status: 200, fields: []string{"Cache-Control", "max-age=60", "Age", "50"}, after: 9 * time.Second, want: "HIT", age: "59"},
		{name: "Age in shortens", status: 200, fields: []string{"Cache-Control", "max-age=60", "Age", "50"}, after: 11 * time.Second, want: "EXPIRED"},
		{name: "old Date: apparent age", status: 200, fields: []string{"Cache-Control", "max-age=60", "Date", t0.Add(-50 * time.Second).Format(http.TimeFormat)}, after: 11 * time.Second, want: "EXPIRED"},
		{name: "no freshness, no DefaultTTL", status: 200, want: "MISS"},
		{name: "DefaultTTL fresh", opt: Options{DefaultTTL: 10 * time.Second}, status: 200, after: 9 * time.Second, want: "HIT"},
		{name: "DefaultTTL stale", opt: Options{DefaultTTL: 10 * time.Second}, status: 200, after: 11 * time.Second, want: "EXPIRED"},
		{name: "DefaultTTL 404", opt: Options{DefaultTTL: 10 * time.Second}, status: 404, want: "HIT"},
		{name: "DefaultTTL not for 302", opt: Options{DefaultTTL: 10 * time.Second}, status: 302, want: "MISS"},
		{name: "DefaultTTL not for 500", opt: Options{DefaultTTL: 10 * time.Second}, status: 500, want: "MISS"},
		{name: "302 with max-age", status: 302, fields: []string{"Cache-Control", "max-age=60", "Location", "/x"}, want: "HIT"},
		{name: "206 never", status: 206, fields: []string{"Cache-Control", "max-age=60", "Content-Range", "bytes 0-0/10"}, want: "MISS"},
		{name: "no-store", status: 200, fields: []string{"Cache-Control", "max-age=60, no-store"}, want: "MISS"},
		{name: "private", status: 200, fields: []string{"Cache-Control", "private, max-age=60"}, want: "MISS"},
		{name: "private with DefaultTTL", opt: Options{DefaultTTL: time.Minute}, status: 200, fields: []string{"Cache-Control", "private"}, want: "MISS"},
		{name: "Vary star", status: 200, fields: []string{"Cache-Control", "max-age=60", "Vary", "*"}, want: "MISS"},
		{name: "Set-Cookie", status: 200, fields: []string{"Cache-Control", "max-age=60", "Set-Cookie", "a=b"}, want: "MISS"},
		{name: "Set-Cookie ignored", opt: Options{IgnoreSetCookie: true}, status: 200, fields: []string{"Cache-Control", "max-age=60", "Set-Cookie", "a=b"}, want: "HIT"},
		{name: "Authorization", status: 200, fields: []string{"Cache-Control", "max-age=60"}, req: []string{"Authorization", "Basic eDp5"}, want: "MISS"},
		{name: "Authorization public", status: 200, fields: []string{"Cache-Control", "public, max-age=60"}, req: []string{"Authorization", "Basic eDp5"}, want: "HIT"},
		{name: "Authorization s-maxage", status: 200, fields: []string{"Cache-Control", "s-maxage=60"}, req: []string{"Authorization", "Basic eDp5"}, want: "HIT"},
		{name: "Authorization must-revalidate", status: 200, fields: []string{"Cache-Control", "max-age=60, must-revalidate"}, req: []string{"Authorization", "Basic eDp5"}, want: "HIT"},
		{name: "no-cache with validator is revalidated", status: 200, fields: []string{"Cache-Control", "no-cache", "Etag", `"v"`}, want: "EXPIRED"},
		{name: "no-cache without validator", status: 200, fields: []string{"Cache-Control", "no-cache"}, want: "MISS"},
		{name: "no-cache with max-age is revalidated", status: 200, fields: []string{"Cache-Control", "no-cache, max-age=60", "Etag", `"v"`}, want: "EXPIRED"},
		{name: "request no-store", status: 200, fields: []string{"Cache-Control", "max-age=60"}, req: []string{"Cache-Control", "no-store"}, want: "BYPASS"},
		{name: "request no-cache", status: 200, fields: []string{"Cache-Control", "max-age=60"}, req: []string{"Cache-Control", "no-cache"}, want: "EXPIRED"},
		{name: "request Pragma no-cache", status: 200, fields: []string{"Cache-Control", "max-age=60"}, req: []string{"Pragma", "no-cache"}, want: "EXPIRED"},
		{name: "request max-age=0", status: 200, fields: []string{"Cache-Control", "max-age=60"}, req: []string{"Cache-Control", "max-age=0"}, want: "EXPIRED"},
		{name: "request max-age older", status: 200, fields: []string{"Cache-Control", "max-age=60"}, req: []string{"Cache-Control", "max-age=5"}, after: 6 * time.Second, want: "EXPIRED"},
		{name: "request min-fresh", status: 200, fields: []string{"Cache-Control", "max-age=60"}, req: []string{"Cache-Control", "min-fresh=30"}, after: 31 * time.Second, want: "EXPIRED"},
		{name: "request Upgrade", status: 200, fields: []string{"Cache-Control", "max-age=60"}, req: []string{"Upgrade", "websocket"}, want: "BYPASS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			o := &origin{respond: fixed(clk, tc.status, "body", tc.fields...)}
			h := newCache(t, tc.opt, clk).Handler(o)
			first := get(h, "GET", "/page", tc.req...)
			if first.Code != tc.status {
				t.Fatalf("first answer %d, want %d", first.Code, tc.status)
			}
			clk.add(tc.after)
			second := get(h, "GET", "/page", tc.req...)
			if got := second.Header().Get("X-Cache"); got != tc.want {
				t.Fatalf("second answer X-Cache %q, want %q (first %q)", got, tc.want, first.Header().Get("X-Cache"))
			}
			if second.Code != tc.status || second.Body.String() != "body" {
				t.Fatalf("second answer %d %q", second.Code, second.Body.String())
			}
			wantCalls := int64(2)
			if tc.want == "HIT" {
				wantCalls = 1
				if tc.age != "" && second.Header().Get("Age") != tc.age {
					t.Errorf("Age %q, want %q", second.Header().Get("Age"), tc.age)
				}
				if len(second.Header()["Set-Cookie"]) > 0 {
					t.Errorf("a hit carries the stored Set-Cookie")
				}
			}
			if n := o.calls.Load(); n != wantCalls {
				t.Fatalf("the app got %d requests, want %d", n, wantCalls)
			}
		})
	}
}

// TestAuthorizationEntry: an entry stored without public (from a request
// without Authorization) does not answer a request with Authorization.
func TestAuthorizationEntry(t *testing.T) {
	clk := newClock()
	o := &origin{respond: fixed(clk, 200, "body", "Cache-Control", "max-age=60")}
	h := newCache(t, Options{}, clk).Handler(o)
	expect(t, "anonymous", get(h, "GET", "/p"), "MISS", 200, "body")
	expect(t, "anonymous again", get(h, "GET", "/p"), "HIT", 200, "body")
	expect(t, "with Authorization", get(h, "GET", "/p", "Authorization", "Bearer x"), "MISS", 200, "body")
	must(t, o.calls.Load() == 2, "the app got %d requests, want 2", o.calls.Load())
}

// TestVary: variants by the fields Vary names; Accept-Encoding keyed by
// the set of accepted codings.
func TestVary(t *testing.T) {
	clk := newClock()
	o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Language, accept-encoding")
		w.Write([]byte(r.Header.Get("Accept-Language") + "|" + r.Header.Get("Accept-Encoding")))
	}}
	h := newCache(t, Options{}, clk).Handler(o)
	expect(t, "en gzip,br", get(h, "GET", "/", "Accept-Language", "en", "Accept-Encoding", "gzip, br"), "MISS", 200, "en|gzip, br")
	expect(t, "en, other spelling of the same codings", get(h, "GET", "/", "Accept-Language", "en", "Accept-Encoding", "br;q=1.0,gzip;q=0.8, deflate"), "HIT", 200, "en|gzip, br")
	expect(t, "en identity", get(h, "GET", "/", "Accept-Language", "en"), "MISS", 200, "en|")
	expect(t, "en br;q=0 gzip", get(h, "GET", "/", "Accept-Language", "en", "Accept-Encoding", "gzip, br;q=0"), "MISS", 200, "en|gzip, br;q=0")
	expect(t, "fr", get(h, "GET", "/", "Accept-Language", "fr", "Accept-Encoding", "gzip, br"), "MISS", 200, "fr|gzip, br")
	expect(t, "en again", get(h, "GET", "/", "Accept-Language", "en", "Accept-Encoding", "br, gzip"), "HIT", 200, "en|gzip, br")
	expect(t, "whitespace normalised", get(h, "GET", "/", "Accept-Language", "fr", "Accept-Encoding", "gzip,br"), "HIT", 200, "fr|gzip, br")
	must(t, o.calls.Load() == 4, "the app got %d requests, want 4", o.calls.Load())
	// Other names in another order make the same variant key.
	r1, _ := http.NewRequest("GET", "/", nil)
	r1.Header.Set("X-A", "a   b")
	r2, _ := http.NewRequest("GET", "/", nil)
	r2.Header.Set("X-A", " a b ")
	v, _ := varyNames([]string{"x-a"})
	must(t, variantKey(r1, v) == variantKey(r2, v), "whitespace makes a new variant")
	names, star := varyNames([]string{"b, A", "a"})
	must(t, !star && strings.Join(names, ",") == "a,b", "varyNames: %v", names)
}

// TestParseCacheControl: the directives and their odd forms.
func TestParseCacheControl(t *testing.T) {
	cc := parseCacheControl([]string{`Max-Age="30", s-maxage=x, no-cache="Set-Cookie"`, "stale-while-revalidate=5,stale-if-error=7"})
	must(t, cc.maxAge == 30*time.Second, "max-age %v", cc.maxAge)
	must(t, cc.sMaxAge == 0, "a malformed s-maxage is stale (0): %v", cc.sMaxAge)
	must(t, cc.noCache, "no-cache with fields")
	must(t, cc.swr == 5*time.Second && cc.sie == 7*time.Second, "windows %v %v", cc.swr, cc.sie)
	cc = parseCacheControl(nil)
	must(t, cc.maxAge == absent && cc.swr == absent, "absent directives: %+v", cc)
	must(t, deltaSeconds("99999999999999999999", absent) == 100*365*24*time.Hour, "huge delta-seconds capped")
}

// TestURLKey: the key is the lower-case host and the request target as
// net/url writes it, the form Purge's targets take.
func TestURLKey(t *testing.T) {
	for _, target := range []string{"/", "/a%20b?x=1&y=%2F", "/caf%C3%A9", "/p?", "/x%2Fy"} {
		r, err := http.NewRequest("GET", "http://Example.COM:8080"+target, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := "example.com:8080" + r.URL.RequestURI()
		must(t, urlKey(r) == want, "urlKey(%q) = %q, want %q", target, urlKey(r), want)
	}
}
