//go:build linux

package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"portico/internal/porticotest"
)

// TestNginxUWSGIPassPEP3333 puts a real nginx with the stock uwsgi_params
// and uwsgi_pass in front of --uwsgi-socket and runs the PEP 3333 checks of
// the worker tests' app through it, side by side with direct HTTP: the
// environ the app sees must be the same either way. It runs with the uwsgi
// socket on TCP and on a unix socket.
func TestNginxUWSGIPassPEP3333(t *testing.T) {
	t.Run("tcp", func(t *testing.T) { testNginxUWSGIPassPEP3333(t, "127.0.0.1:0") })
	t.Run("unix", func(t *testing.T) { testNginxUWSGIPassPEP3333(t, "unix:"+filepath.Join(t.TempDir(), "uwsgi.sock")) })
}

func testNginxUWSGIPassPEP3333(t *testing.T, uwsgiSocket string) {
	python := needPython(t)
	p := startPortico(t, "--uwsgi-socket", uwsgiSocket, "--python", python, "--workers", "2",
		"--chdir", repoPath(t, "internal/worker/testdata"), "--max-body", "64MiB", "pep3333:application")
	if p.UWSGIAddr == "" {
		t.Fatal("no uwsgi listener logged")
	}
	ngx := porticotest.StartNginx(t, fmt.Sprintf(`
    client_max_body_size 64m;
    server {
        listen {{.Addr}};
        server_name localhost;
        location / {
            include /etc/nginx/uwsgi_params;
            uwsgi_pass %s;
        }
    }`, p.UWSGIAddr))

	direct := "http://" + p.HTTPAddr
	viaNginx := "http://" + ngx.Addr
	c := newClient(t)

	envOf := func(base, path string) map[string]any {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("X-Custom", "yes")
		req.Header.Set("Proxy", "http://evil")
		req.Header.Set("Cookie", "a=1")
		resp, body := do(t, c, req)
		wantStatus(t, resp, body, 200)
		var env map[string]any
		if err := json.Unmarshal(body, &env); err != nil {
			t.Fatalf("%s: %v: %s", base, err, body)
		}
		return env
	}
	path := "/env/caf%C3%A9%20x?a=1&b=%20"
	d, n := envOf(direct, path), envOf(viaNginx, path)
	// Keys the app may rely on, with the same values through both doors.
	for _, k := range []string{"REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_LENGTH",
		"SERVER_PROTOCOL", "REMOTE_ADDR", "HTTP_X_CUSTOM", "HTTP_COOKIE", "wsgi.url_scheme", "wsgi.multithread",
		"wsgi.multiprocess", "wsgi.run_once", "REQUEST_URI"} {
		if fmt.Sprint(d[k]) != fmt.Sprint(n[k]) {
			t.Errorf("%s: direct %#v, via nginx %#v", k, d[k], n[k])
		}
	}
	if n["PATH_INFO"] != "/env/caf\u00c3\u00a9 x" {
		t.Errorf("PATH_INFO via nginx = %q", n["PATH_INFO"])
	}
	// The same key set, apart from what differs by nature (ports, nginx's
	// DOCUMENT_ROOT and the like, which uwsgi_params adds).
	for k := range d {
		if _, ok := n[k]; !ok {
			t.Errorf("%s is in the direct environ but not via nginx", k)
		}
	}
	for _, env := range []map[string]any{d, n} {
		for _, k := range []string{"HTTP_PROXY", "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"} {
			if _, ok := env[k]; ok {
				t.Errorf("%s present", k)
			}
		}
	}

	for _, base := range []string{direct, viaNginx} {
		t.Run(strings.TrimPrefix(base, "http://"), func(t *testing.T) {
			// Bodies, sized and chunked, small and large.
			for _, size := range []int{0, 5000, 3 << 20} {
				for _, chunked := range []bool{false, true} {
					data := bytes.Repeat([]byte("portico!"), size/8)
					var body io.Reader = bytes.NewReader(data)
					if chunked {
						body = io.MultiReader(body)
					}
					req, _ := http.NewRequest("POST", base+"/echo", body)
					resp, out := do(t, c, req)
					wantStatus(t, resp, out, 200)
					var got struct {
						Length, Read int
						Sha256       string
					}
					if err := json.Unmarshal(out, &got); err != nil {
						t.Fatalf("echo %d chunked=%v: %v: %s", size, chunked, err, truncate(out, 2000))
					}
					sum := sha256.Sum256(data)
					if got.Length != len(data) || got.Read != len(data) || got.Sha256 != hex.EncodeToString(sum[:]) {
						t.Errorf("echo %d chunked=%v: %s", size, chunked, out)
					}
				}
			}
			cases := []struct {
				path   string
				status int
				body   string
			}{
				{"/write", 200, "from write; from iterable"},
				{"/generator?n=3", 200, "chunk 0\nchunk 1\nchunk 2\n"},
				{"/status", 418, "teapot"},
				{"/exc-info", 500, "custom error page"},
				{"/headers", 200, "ok"},
			}
			for _, tc := range cases {
				resp, body := get(t, c, base+tc.path)
				if resp.StatusCode != tc.status || string(body) != tc.body {
					t.Errorf("%s: %d %q, want %d %q", tc.path, resp.StatusCode, body, tc.status, tc.body)
				}
				if tc.path == "/headers" && len(resp.Header.Values("Set-Cookie")) != 2 {
					t.Errorf("Set-Cookie: %v", resp.Header.Values("Set-Cookie"))
				}
			}
			if resp, _ := get(t, c, base+"/error-before"); resp.StatusCode != 500 {
				t.Errorf("/error-before: %d", resp.StatusCode)
			}
			resp, body := get(t, c, base+"/file?size=300000&skip=100")
			if resp.StatusCode != 200 || len(body) != 300000-100 {
				t.Errorf("/file: %d, %d bytes", resp.StatusCode, len(body))
			}
			req, _ := http.NewRequest("POST", base+"/lines", strings.NewReader("first line\nabcdef\nthird\nlast"))
			if _, body = do(t, c, req); !strings.Contains(string(body), `"limited": "abc"`) {
				t.Errorf("/lines: %s", body)
			}
			// Streaming reaches the client through nginx too (nginx buffers
			// by default, but passes data on as it arrives).
			start := time.Now()
			_, body = get(t, c, base+"/generator?n=2&delay=0.2")
			if string(body) != "chunk 0\nchunk 1\n" || time.Since(start) > 5*time.Second {
				t.Errorf("generator: %q after %v", body, time.Since(start))
			}
		})
	}
}
