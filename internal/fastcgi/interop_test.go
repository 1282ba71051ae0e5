package fastcgi

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"portico/internal/porticotest"
)

// phpFPM is a php-fpm master started for one test, with a TCP pool and a
// Unix socket pool of 2 static workers each, serving testdata/php.
type phpFPM struct {
	tcp, unix string // addresses
	root      string
	errorLog  string
}

func startPHPFPM(t *testing.T) *phpFPM {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("testdata", "php"))
	if err != nil {
		t.Fatal(err)
	}
	f := porticotest.StartPHPFPM(t, 2)
	return &phpFPM{tcp: f.TCP, unix: f.Unix, root: root, errorLog: f.ErrorLog}
}

type phpAnswer struct {
	Server map[string]string `json:"server"`
	Get    map[string]string `json:"get"`
	Post   map[string]string `json:"post"`
	Files  map[string]struct {
		Size  int64  `json:"size"`
		Error int    `json:"error"`
		MD5   string `json:"md5"`
	} `json:"files"`
	PID int `json:"pid"`
}

func roundTripJSON(t *testing.T, tr *Transport, r *http.Request) (*http.Response, phpAnswer) {
	t.Helper()
	resp, err := tr.RoundTrip(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var a phpAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatalf("status %d, body %q: %v", resp.StatusCode, body, err)
	}
	return resp, a
}

func TestPHPFPM(t *testing.T) {
	p := startPHPFPM(t)
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			addr := p.tcp
			if network == "unix" {
				addr = p.unix
			}
			var logs porticotest.Buffer
			tr := &Transport{Network: network, Address: addr, Root: p.root, MaxConns: 2,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			t.Cleanup(tr.CloseIdleConnections)
			testPHPFPM(t, tr, &logs)
		})
	}
}

func testPHPFPM(t *testing.T, tr *Transport, logs *porticotest.Buffer) {
	t.Run("path info and query", func(t *testing.T) {
		r := httptest.NewRequest("GET", "/index.php/x/y?a=1&b=two", nil)
		r.Host = "example.com:8080"
		r.RemoteAddr = "192.0.2.7:5555"
		r.Header.Set("X-Test", "hello")
		resp, a := roundTripJSON(t, tr, r)
		want := map[string]string{
			"SCRIPT_NAME": "/index.php", "PATH_INFO": "/x/y", "REQUEST_URI": "/index.php/x/y?a=1&b=two",
			"SCRIPT_FILENAME": filepath.Join(tr.Root, "index.php"), "QUERY_STRING": "a=1&b=two",
			"HTTP_HOST": "example.com:8080", "REMOTE_ADDR": "192.0.2.7", "SERVER_NAME": "example.com",
			"SERVER_PORT": "8080", "SERVER_SOFTWARE": "portico", "HTTP_X_TEST": "hello",
		}
		for k, v := range want {
			if a.Server[k] != v {
				t.Errorf("%s = %q, want %q", k, a.Server[k], v)
			}
		}
		if resp.StatusCode != 200 || a.Get["b"] != "two" {
			t.Errorf("status %d, $_GET %v", resp.StatusCode, a.Get)
		}
	})
	t.Run("front controller", func(t *testing.T) {
		r := httptest.NewRequest("GET", "/blog/hello?x=1", nil)
		r.URL.Path = "/index.php"
		_, a := roundTripJSON(t, tr, r)
		if a.Server["REQUEST_URI"] != "/blog/hello?x=1" || a.Server["SCRIPT_NAME"] != "/index.php" {
			t.Errorf("server %v", a.Server)
		}
	})
	t.Run("second script", func(t *testing.T) {
		resp, err := tr.RoundTrip(httptest.NewRequest("GET", "/info.php/p", nil))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "info /info.php /p\n" || resp.Header.Get("X-Script") != "info" {
			t.Errorf("got %q, X-Script %q", b, resp.Header.Get("X-Script"))
		}
	})
	t.Run("form post", func(t *testing.T) {
		form := url.Values{"name": {"Zoë"}, "n": {"42"}}.Encode()
		r := httptest.NewRequest("POST", "/index.php", strings.NewReader(form))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		_, a := roundTripJSON(t, tr, r)
		if a.Post["name"] != "Zoë" || a.Post["n"] != "42" || a.Server["REQUEST_METHOD"] != "POST" {
			t.Errorf("$_POST %v, server %v", a.Post, a.Server)
		}
	})
	t.Run("multipart upload", func(t *testing.T) {
		data := make([]byte, 1<<20+123)
		rand.Read(data)
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		fw, _ := mw.CreateFormFile("upload", "data.bin")
		fw.Write(data)
		mw.WriteField("field", "v")
		mw.Close()
		r := httptest.NewRequest("POST", "/index.php", &body)
		r.Header.Set("Content-Type", mw.FormDataContentType())
		_, a := roundTripJSON(t, tr, r)
		sum := md5.Sum(data)
		f := a.Files["upload"]
		if f.Error != 0 || f.Size != int64(len(data)) || f.MD5 != hex.EncodeToString(sum[:]) || a.Post["field"] != "v" {
			t.Errorf("file %+v, post %v; want %d bytes, md5 %x", f, a.Post, len(data), sum)
		}
	})
	t.Run("redirect", func(t *testing.T) {
		resp, _ := roundTripJSON(t, tr, httptest.NewRequest("GET", "/index.php?redirect=/x", nil))
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/x" {
			t.Errorf("status %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
	t.Run("status", func(t *testing.T) {
		resp, _ := roundTripJSON(t, tr, httptest.NewRequest("GET", "/index.php?status=404", nil))
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("status %d", resp.StatusCode)
		}
	})
	t.Run("stderr", func(t *testing.T) {
		roundTripJSON(t, tr, httptest.NewRequest("GET", "/index.php?log=marker-7&warn=1", nil))
		out := logs.String()
		for _, want := range []string{"portico-test: marker-7", "portico_missing_key", filepath.Join(tr.Root, "index.php"), "level=WARN"} {
			if !strings.Contains(out, want) {
				t.Errorf("log lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("keep conn", func(t *testing.T) {
		tr.CloseIdleConnections()
		before := tr.dials.Load()
		pids := map[int]bool{}
		for range 10 {
			_, a := roundTripJSON(t, tr, httptest.NewRequest("GET", "/index.php", nil))
			pids[a.PID] = true
		}
		if d := tr.dials.Load() - before; d != 1 || len(pids) != 1 {
			t.Errorf("%d dials and %d worker pids for 10 sequential requests, want 1 and 1", d, len(pids))
		}
	})
	t.Run("concurrency", func(t *testing.T) {
		var wg sync.WaitGroup
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 50 {
					r := httptest.NewRequest("GET", fmt.Sprintf("/index.php/g%d?i=%d", g, i), nil).WithContext(ctx)
					resp, err := tr.RoundTrip(r)
					if err != nil {
						t.Error(err)
						return
					}
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil || resp.StatusCode != 200 || !bytes.Contains(b, []byte(fmt.Sprintf(`"i":"%d"`, i))) {
						t.Errorf("status %d, %v, body %q", resp.StatusCode, err, b)
						return
					}
				}
			}()
		}
		wg.Wait()
		if d := tr.dials.Load(); d > 10 {
			t.Errorf("%d dials for 400 requests", d)
		}
	})
}
