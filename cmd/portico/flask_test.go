//go:build linux

package main

import (
	"bytes"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// TestFlask serves examples/flaskapp and checks its page, JSON, a multipart
// upload, form echoes and a burst of concurrent requests.
func TestFlask(t *testing.T) {
	python := needPython(t, "flask")
	p := startPortico(t,
		"--python", python,
		"--chdir", repoPath(t, "examples/flaskapp"),
		"--workers", "2",
		"--env", "PYTHONDONTWRITEBYTECODE=1", // keep the source tree clean
		"app:app",
	)

	t.Run("page", func(t *testing.T) {
		resp, body := get(t, newClient(t), p.URL("/"))
		wantStatus(t, resp, body, http.StatusOK)
		wantContentType(t, resp, "text/html")
		if !bytes.Contains(body, []byte("<h1>Flask on Portico</h1>")) {
			t.Errorf("page does not contain its heading:\n%s", truncate(body, 2000))
		}
	})

	t.Run("json", func(t *testing.T) {
		resp, body := get(t, newClient(t), p.URL("/json"))
		wantStatus(t, resp, body, http.StatusOK)
		wantContentType(t, resp, "application/json")
		var got map[string]any
		decodeJSON(t, body, &got)
		want := map[string]any{"message": "Hello from Flask", "method": "GET", "path": "/json", "scheme": "http"}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %#v, want %#v", k, got[k], v)
			}
		}
	})

	t.Run("upload", func(t *testing.T) {
		c := newClient(t)
		data, sum := randomData(t, 3<<20)
		buf, contentType := multipartBody(t, []string{"note", "e2e"}, formFile{field: "file", name: "random.bin", data: data})
		req, err := http.NewRequest(http.MethodPost, p.URL("/upload"), buf)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", contentType)
		resp, body := do(t, c, req)
		wantStatus(t, resp, body, http.StatusOK)
		var got struct {
			Name   string `json:"name"`
			Size   int    `json:"size"`
			SHA256 string `json:"sha256"`
		}
		decodeJSON(t, body, &got)
		if got.Name != "random.bin" || got.Size != len(data) || got.SHA256 != sum {
			t.Errorf("upload answer %+v, want name random.bin, size %d, sha256 %s", got, len(data), sum)
		}

		// No file part: the app's own 400.
		buf, contentType = multipartBody(t, []string{"note", "no file"})
		req, err = http.NewRequest(http.MethodPost, p.URL("/upload"), buf)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", contentType)
		resp, body = do(t, c, req)
		wantStatus(t, resp, body, http.StatusBadRequest)
	})

	t.Run("echo", func(t *testing.T) {
		want := map[string][]string{
			"name":    {"Ada", "Grace"},
			"message": {"héllo wörld & more=stuff"},
			"empty":   {""},
		}
		urlencoded := url.Values(want).Encode()
		multi, multiType := multipartBody(t, []string{
			"name", "Ada", "name", "Grace", "message", "héllo wörld & more=stuff", "empty", "",
		})
		for _, tc := range []struct {
			name, contentType, body string
		}{
			{"urlencoded", "application/x-www-form-urlencoded", urlencoded},
			{"multipart", multiType, multi.String()},
		} {
			t.Run(tc.name, func(t *testing.T) {
				req, err := http.NewRequest(http.MethodPost, p.URL("/echo"), strings.NewReader(tc.body))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", tc.contentType)
				resp, body := do(t, newClient(t), req)
				wantStatus(t, resp, body, http.StatusOK)
				wantContentType(t, resp, "application/json")
				var got map[string][]string
				decodeJSON(t, body, &got)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("echo answered %v, want %v", got, want)
				}
			})
		}
	})

	t.Run("method not allowed", func(t *testing.T) {
		resp, body := get(t, newClient(t), p.URL("/echo"))
		wantStatus(t, resp, body, http.StatusMethodNotAllowed)
	})

	t.Run("concurrent", func(t *testing.T) {
		c := newClient(t)
		c.Transport.(*http.Transport).MaxIdleConnsPerHost = 8
		const goroutines, perGoroutine = 8, 8
		errs := make(chan string, goroutines*perGoroutine)
		var wg sync.WaitGroup
		for range goroutines {
			wg.Go(func() {
				for range perGoroutine {
					resp, err := c.Get(p.URL("/json"))
					if err != nil {
						errs <- err.Error()
						continue
					}
					var buf bytes.Buffer
					_, err = buf.ReadFrom(resp.Body)
					resp.Body.Close()
					if err != nil || resp.StatusCode != http.StatusOK || !bytes.Contains(buf.Bytes(), []byte("Hello from Flask")) {
						errs <- resp.Status + " " + truncate(buf.Bytes(), 200)
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Errorf("concurrent GET /json: %s", e)
		}
	})
}
