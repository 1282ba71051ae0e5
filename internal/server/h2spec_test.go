package server

import (
	"encoding/xml"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"portico/internal/porticotest"
)

// h2specResult is one h2spec run: its counts and the failed cases.
type h2specResult struct {
	tests, passed, failed int
	failures              []string // "section: description"
}

// runH2spec runs h2spec (github.com/summerwind/h2spec; test.sh builds it)
// over TLS against addr.
func runH2spec(t *testing.T, bin, addr string) h2specResult {
	t.Helper()
	_, port, _ := strings.Cut(addr, ":")
	report := filepath.Join(t.TempDir(), "report.xml")
	out, _ := exec.Command(bin, "-t", "-k", "-h", "127.0.0.1", "-p", port, "-j", report).CombinedOutput() // exits 1 on a failure
	m := regexp.MustCompile(`(\d+) tests, (\d+) passed, \d+ skipped, (\d+) failed`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("h2spec printed no summary:\n%s", out)
	}
	var r h2specResult
	r.tests, _ = strconv.Atoi(string(m[1]))
	r.passed, _ = strconv.Atoi(string(m[2]))
	r.failed, _ = strconv.Atoi(string(m[3]))
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var suites struct {
		Suites []struct {
			Cases []struct {
				Package string  `xml:"package,attr"`
				Name    string  `xml:"classname,attr"`
				Error   *string `xml:"error"`
				Failure *string `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &suites); err != nil {
		t.Fatalf("parsing the h2spec report: %v", err)
	}
	for _, s := range suites.Suites {
		for _, c := range s.Cases {
			if c.Error != nil || c.Failure != nil {
				r.failures = append(r.failures, c.Package+": "+c.Name)
			}
		}
	}
	slices.Sort(r.failures)
	return r
}

// TestH2Spec runs h2spec against a Portico TLS listener and against Go's
// own net/http server on the same machine and TLS settings: Portico's own
// HTTP/2 server must fail no more cases than net/http's does (measured:
// Portico 145 of 145, net/http 141).
// test.sh runs it with -v to print the counts.
func TestH2Spec(t *testing.T) {
	bin := os.Getenv("H2SPEC")
	if bin == "" {
		bin = porticotest.RequireProgram(t, "h2spec")
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "hello, h2spec")
	})
	porticoAddr := serveTLS(t, NewHTTP(h, Options{}))
	l := tlsListen(t)
	goSrv := &http.Server{Handler: h}
	go goSrv.Serve(l)
	t.Cleanup(func() { goSrv.Close() })

	// Both at once (each run waits out h2spec's 2s timeout on the cases
	// it fails); once more if Portico came out worse, as a few cases
	// (6.9.1) race with the server's own frames and fail now and then on
	// either server.
	var portico, std h2specResult
	for try := 1; try <= 2; try++ {
		var wg sync.WaitGroup
		wg.Go(func() { portico = runH2spec(t, bin, porticoAddr) })
		wg.Go(func() { std = runH2spec(t, bin, l.Addr().String()) })
		wg.Wait()
		for _, r := range []struct {
			name string
			res  h2specResult
		}{{"portico", portico}, {"net/http", std}} {
			t.Logf("h2spec against %s: %d tests, %d passed, %d failed", r.name, r.res.tests, r.res.passed, r.res.failed)
			for _, f := range r.res.failures {
				t.Logf("  %s failed %s", r.name, f)
			}
		}
		if portico.tests > 0 && portico.failed <= std.failed {
			return
		}
	}
	t.Errorf("Portico fails %d of %d h2spec cases, net/http %d of %d", portico.failed, portico.tests, std.failed, std.tests)
}
