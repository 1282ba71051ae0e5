//go:build linux

package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"portico/internal/porticotest"
)

// TestRequestID checks the round trip of X-Request-ID: generated for a
// client (32 hex digits), or kept from a trusted peer; seen by the app as
// HTTP_X_REQUEST_ID and by a proxy upstream as X-Request-ID; returned in
// the response; written in the access log and in the error record.
func TestRequestID(t *testing.T) {
	python := needPython(t)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upstream saw %s", r.Header.Get("X-Request-Id"))
	}))
	defer upstream.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // nothing listens there: a proxy route to it fails with 502

	sock := filepath.Join(t.TempDir(), "trusted.sock")
	p := startPortico(t, "--python", python, "--workers", "1", "--bind", "unix:"+sock,
		"--forwarded-allow-ips", "unix", // peers on the unix socket are trusted, loopback TCP ones not
		"--proxy", "/up/="+upstream.URL, "--proxy", "/dead/=http://"+dead, "--uwsgi-socket", "127.0.0.1:0",
		"--env", "PYTHONDONTWRITEBYTECODE=1", repoPath(t, "cmd/portico/testdata/errors_app.py"))
	tcp, trusted := newClient(t), unixClient(t, sock)

	// appSaw sends a request and returns the response's ID and the one
	// the app saw.
	appSaw := func(t *testing.T, c *http.Client, url, id string) (string, string) {
		t.Helper()
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if id != "" {
			req.Header.Set("X-Request-ID", id)
		}
		resp, body := do(t, c, req)
		wantStatus(t, resp, body, http.StatusOK)
		_, saw, _ := strings.Cut(string(body), " ")
		return resp.Header.Get("X-Request-Id"), saw
	}

	t.Run("generated", func(t *testing.T) {
		got, saw := appSaw(t, tcp, p.URL("/generated"), "")
		if !hexID.MatchString(got) || saw != got {
			t.Fatalf("response ID %q, app saw %q; want the same 32 hex digits", got, saw)
		}
		p.waitLog(t, `"GET /generated HTTP/1.1" 200`, 5*time.Second)
		if !strings.Contains(p.Log(), `"GET /generated HTTP/1.1" 200 `) || !strings.Contains(p.Log(), ` "`+got+`"`) {
			t.Errorf("access log lacks the ID %s; log:\n%s", got, p.Log())
		}
		// Two requests, two IDs.
		if again, _ := appSaw(t, tcp, p.URL("/generated"), ""); again == got {
			t.Errorf("two requests got the same ID %s", got)
		}
	})
	t.Run("untrusted peer's ID replaced", func(t *testing.T) {
		got, saw := appSaw(t, tcp, p.URL("/untrusted"), "client-chosen-id")
		if got == "client-chosen-id" || saw != got || !hexID.MatchString(got) {
			t.Errorf("response ID %q, app saw %q; want a new ID for both", got, saw)
		}
	})
	t.Run("trusted peer's ID kept", func(t *testing.T) {
		got, saw := appSaw(t, trusted, "http://portico.test/trusted", "lb-7f3a:42")
		if got != "lb-7f3a:42" || saw != got {
			t.Errorf("response ID %q, app saw %q; want the peer's lb-7f3a:42", got, saw)
		}
		p.waitLog(t, `"GET /trusted HTTP/1.1" 200`, 5*time.Second)
		if !strings.Contains(p.Log(), `"lb-7f3a:42"`) {
			t.Errorf("access log lacks the kept ID; log:\n%s", p.Log())
		}
		// Insane values are replaced even from a trusted peer.
		for _, bad := range []string{strings.Repeat("a", 201), "two words"} {
			if got, saw := appSaw(t, trusted, "http://portico.test/trusted-bad", bad); got == bad || !hexID.MatchString(got) || saw != got {
				t.Errorf("ID %q from a trusted peer: response %q, app saw %q; want a new one", bad, got, saw)
			}
		}
	})
	t.Run("nginx in front of the uwsgi listener", func(t *testing.T) {
		ngx := porticotest.StartNginx(t, fmt.Sprintf(`    server {
        listen {{.Addr}};
        location / {
            include /etc/nginx/uwsgi_params;
            uwsgi_param HTTP_X_REQUEST_ID nginx-$request_id;
            uwsgi_pass %s;
        }
    }`, p.UWSGIAddr))
		got, saw := appSaw(t, tcp, "http://"+ngx.Addr+"/via-nginx", "")
		if !strings.HasPrefix(got, "nginx-") || saw != got {
			t.Errorf("response ID %q, app saw %q; want nginx's ID for both", got, saw)
		}
	})
	t.Run("proxy upstream", func(t *testing.T) {
		resp, body := get(t, tcp, p.URL("/up/x"))
		wantStatus(t, resp, body, http.StatusOK)
		id := resp.Header.Get("X-Request-Id")
		if !hexID.MatchString(id) || string(body) != "upstream saw "+id {
			t.Errorf("response ID %q, upstream said %q", id, body)
		}
	})
	t.Run("proxy upstream failure", func(t *testing.T) {
		resp, body := get(t, tcp, p.URL("/dead/x"))
		wantStatus(t, resp, body, http.StatusBadGateway)
		id := resp.Header.Get("X-Request-Id")
		if !hexID.MatchString(id) {
			t.Errorf("502 without its request ID: %q", id)
		}
		p.waitLog(t, "request_id="+id, 5*time.Second)
		var recs []map[string]string
		for _, line := range strings.Split(p.Log(), "\n") {
			if kv := logfmt(line); kv["uri"] == "/dead/x" {
				recs = append(recs, kv)
			}
		}
		if len(recs) != 1 {
			t.Fatalf("%d records for /dead/x, want 1:\n%s", len(recs), p.Log())
		}
		r := recs[0]
		if r["level"] != "ERROR" || r["status"] != "502" || r["method"] != "GET" || r["request_id"] != id || r["upstream"] == "" || !strings.Contains(r["err"], "refused") {
			t.Errorf("record %v: want level=ERROR status=502 method=GET request_id=%s, the upstream and the cause", r, id)
		}
	})
}
