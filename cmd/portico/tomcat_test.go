//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"portico/internal/porticotest"
)

const (
	// catalinaHome is where Debian's tomcat10 package puts Tomcat:
	// bin/catalina.sh, lib/ and, in etc/, the stock conf/ files (the same
	// as /etc/tomcat10, which only the tomcat group may read).
	catalinaHome = "/usr/share/tomcat10"
	// tomcatReadyTimeout bounds the start of the JVM and Tomcat plus the
	// first request, which compiles index.jsp (Jasper, then the Eclipse
	// compiler): seconds on a quiet machine, much more on a loaded one.
	tomcatReadyTimeout = 120 * time.Second
)

// tomcat is a Tomcat 10 running in the foreground (catalina.sh run) with a
// private CATALINA_BASE, in its own process group.
type tomcat struct {
	addr string // 127.0.0.1:port of its HTTP connector
	cmd  *exec.Cmd
	done chan struct{} // closed when catalina.sh (exec'd into java) has exited
	out  porticotest.Buffer
}

// startTomcat builds a CATALINA_BASE in a temporary directory (conf/ from
// the package, testdata/tomcat/server.xml, webapps/shop/ from testdata),
// starts Tomcat on a free loopback port and waits until GET
// /shop/index.jsp answers 200. A cleanup kills the process group.
//
// Each of extra (a directory) is deployed too, as the webapp of its base
// name.
func startTomcat(t testing.TB, extra ...string) *tomcat {
	t.Helper()
	catalina := filepath.Join(catalinaHome, "bin", "catalina.sh")
	if _, err := os.Stat(catalina); err != nil {
		porticotest.Missing(t, "tomcat10: %v", err)
	}
	porticotest.RequireProgram(t, "java")

	base := t.TempDir()
	copyTree(t, filepath.Join(catalinaHome, "etc"), filepath.Join(base, "conf"), "server.xml")
	tmpl, err := os.ReadFile(filepath.Join("testdata", "tomcat", "server.xml"))
	if err != nil {
		t.Fatal(err)
	}
	port := porticotest.FreePort(t)
	serverXML := bytes.ReplaceAll(tmpl, []byte("@PORT@"), []byte(strconv.Itoa(port)))
	if err := os.WriteFile(filepath.Join(base, "conf", "server.xml"), serverXML, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"logs", "temp", "work", "webapps"} {
		if err := os.MkdirAll(filepath.Join(base, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyTree(t, filepath.Join("testdata", "tomcat", "webapps"), filepath.Join(base, "webapps"))
	for _, dir := range extra {
		copyTree(t, dir, filepath.Join(base, "webapps", filepath.Base(dir)))
	}

	tc := &tomcat{addr: fmt.Sprintf("127.0.0.1:%d", port), done: make(chan struct{})}
	tc.cmd = exec.Command(catalina, "run")
	tc.cmd.Env = append(os.Environ(),
		"CATALINA_HOME="+catalinaHome,
		"CATALINA_BASE="+base,
		"CATALINA_TMPDIR="+filepath.Join(base, "temp"),
		"CATALINA_PID=",
		"CATALINA_OPTS=",
		// A small heap; /dev/urandom so that session ids do not wait for
		// entropy.
		"JAVA_OPTS=-Xmx256m -Djava.security.egd=file:/dev/urandom",
	)
	tc.cmd.Stdout, tc.cmd.Stderr = &tc.out, &tc.out
	tc.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	t.Logf("starting %s run (CATALINA_BASE=%s, port %d)", catalina, base, port)
	if err := tc.cmd.Start(); err != nil {
		t.Fatalf("starting tomcat: %v", err)
	}
	go func() { _ = tc.cmd.Wait(); close(tc.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-tc.cmd.Process.Pid, syscall.SIGKILL)
		<-tc.done
		if t.Failed() {
			t.Logf("tomcat output:\n%s", tc.out.String())
		}
	})

	start := time.Now()
	if err := tc.waitReady(); err != nil {
		t.Fatalf("tomcat on %s not ready: %v\n%s", tc.addr, err, tc.out.String())
	}
	t.Logf("tomcat ready in %v", time.Since(start).Round(time.Millisecond))
	return tc
}

// waitReady polls GET /shop/index.jsp until it answers 200, Tomcat exits,
// or tomcatReadyTimeout passes.
func (tc *tomcat) waitReady() error {
	c := &http.Client{Timeout: tomcatReadyTimeout}
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(tomcatReadyTimeout)
	for {
		resp, err := c.Get("http://" + tc.addr + "/shop/index.jsp")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		select {
		case <-tc.done:
			return errors.New("tomcat exited")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", tomcatReadyTimeout, err)
		}
		time.Sleep(100 * time.Millisecond) // an external program: no readiness signal to wait on
	}
}

// jspSeen parses what testdata/tomcat/webapps/shop/index.jsp prints: one
// key=value per line.
func jspSeen(t testing.TB, body []byte) map[string]string {
	t.Helper()
	seen := make(map[string]string)
	for _, line := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		k, v, ok := strings.Cut(strings.TrimRight(line, "\r"), "=")
		if !ok {
			t.Fatalf("index.jsp printed %q, not key=value; body:\n%s", line, body)
		}
		seen[k] = v
	}
	return seen
}

// wantSeen fails the test for each key of want whose value in seen differs.
func wantSeen(t testing.TB, seen, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if seen[k] != v {
			t.Errorf("index.jsp saw %s=%q, want %q", k, seen[k], v)
		}
	}
}

// cookieNamed returns the cookie called name among cs, or nil.
func cookieNamed(cs []*http.Cookie, name string) *http.Cookie {
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Portico in front of Debian's Tomcat 10 serving JSPs under /shop: what the
// servlet sees of the request, its cookies and session through the proxy,
// a relative sendRedirect resolved to Portico's address, an urlencoded
// POST form, and Tomcat's own 404. /legacy makes its redirects absolute.
func TestTomcat(t *testing.T) {
	tc := startTomcat(t)
	p := startPortico(t, "--proxy", "/shop=http://"+tc.addr, "--proxy", "/legacy=http://"+tc.addr)
	c := newClient(t)
	_, tomcatPort, _ := net.SplitHostPort(tc.addr)

	var sessionID string
	t.Run("page", func(t *testing.T) {
		resp, body := get(t, c, p.URL("/shop/index.jsp?x=1"))
		wantStatus(t, resp, body, http.StatusOK)
		wantContentType(t, resp, "text/plain")
		seen := jspSeen(t, body)
		wantSeen(t, seen, map[string]string{
			"method":      "GET",
			"uri":         "/shop/index.jsp",
			"query":       "x=1",
			"remote_addr": "127.0.0.1",
			"xff":         "127.0.0.1",
			"xfp":         "http",
			"xfh":         p.HTTPAddr,
			// Host is the upstream's (nginx's proxy_set_header Host
			// $proxy_host), so the servlet's server name and port are
			// Tomcat's own.
			"host":        tc.addr,
			"server_name": "127.0.0.1",
			"server_port": tomcatPort,
			"scheme":      "http",
			"visits":      "1",
		})
		cookies := resp.Cookies()
		flavour := cookieNamed(cookies, "flavour")
		if flavour == nil || flavour.Value != "vanilla" || flavour.Path != "/shop" {
			t.Errorf("flavour cookie %v, want vanilla with Path=/shop; Set-Cookie %q", flavour, resp.Header.Values("Set-Cookie"))
		}
		session := cookieNamed(cookies, "JSESSIONID")
		if session == nil || session.Path != "/shop" || !session.HttpOnly {
			t.Fatalf("JSESSIONID cookie %v, want one with Path=/shop and HttpOnly; Set-Cookie %q", session, resp.Header.Values("Set-Cookie"))
		}
		if session.Value != seen["session"] {
			t.Errorf("JSESSIONID %q, but the page's session is %q", session.Value, seen["session"])
		}
		sessionID = seen["session"]
	})

	t.Run("session", func(t *testing.T) {
		if sessionID == "" {
			t.Skip("no session from the first request")
		}
		resp, body := get(t, c, p.URL("/shop/index.jsp")) // the jar sends JSESSIONID and flavour
		wantStatus(t, resp, body, http.StatusOK)
		wantSeen(t, jspSeen(t, body), map[string]string{"session": sessionID, "visits": "2", "query": ""})
		if cookieNamed(resp.Cookies(), "JSESSIONID") != nil {
			t.Errorf("a new JSESSIONID was set for a known session: %q", resp.Header.Values("Set-Cookie"))
		}
	})

	t.Run("redirect", func(t *testing.T) {
		resp, body := get(t, c, p.URL("/shop/go.jsp"))
		wantStatus(t, resp, body, http.StatusFound)
		loc := resp.Header.Get("Location")
		target, err := resp.Request.URL.Parse(loc)
		if err != nil {
			t.Fatalf("Location %q: %v", loc, err)
		}
		if target.Host != p.HTTPAddr || target.Path != "/shop/index.jsp" || target.RawQuery != "from=go" {
			t.Fatalf("Location %q resolves to %s, want http://%s/shop/index.jsp?from=go", loc, target, p.HTTPAddr)
		}
		resp, body = get(t, c, target.String())
		wantStatus(t, resp, body, http.StatusOK)
		wantSeen(t, jspSeen(t, body), map[string]string{"uri": "/shop/index.jsp", "query": "from=go"})
	})

	// The same redirect made absolute by Tomcat from the Host it got, its
	// own address: the client must still be sent to Portico.
	t.Run("absolute redirect", func(t *testing.T) {
		resp, body := get(t, c, p.URL("/legacy/go.jsp"))
		wantStatus(t, resp, body, http.StatusFound)
		loc := resp.Header.Get("Location")
		if strings.Contains(loc, tc.addr) {
			t.Fatalf("Location %q names Tomcat's address (nginx's proxy_redirect default rewrites it)", loc)
		}
		target, err := resp.Request.URL.Parse(loc)
		if err != nil {
			t.Fatalf("Location %q: %v", loc, err)
		}
		if target.Host != p.HTTPAddr || target.Path != "/shop/index.jsp" || target.RawQuery != "from=legacy" {
			t.Fatalf("Location %q resolves to %s, want http://%s/shop/index.jsp?from=legacy", loc, target, p.HTTPAddr)
		}
	})

	t.Run("post form", func(t *testing.T) {
		const value = "crème brûlée & co=2"
		form := url.Values{"p": {value}}.Encode()
		req, err := http.NewRequest(http.MethodPost, p.URL("/shop/index.jsp"), strings.NewReader(form))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, body := do(t, c, req)
		wantStatus(t, resp, body, http.StatusOK)
		wantSeen(t, jspSeen(t, body), map[string]string{"method": "POST", "uri": "/shop/index.jsp", "query": "", "p": value})
	})

	t.Run("not found", func(t *testing.T) {
		resp, body := get(t, c, p.URL("/shop/nothing-here.jsp"))
		wantStatus(t, resp, body, http.StatusNotFound)
		if !bytes.Contains(body, []byte("Apache Tomcat")) {
			t.Errorf("404 body is not Tomcat's:\n%s", truncate(body, 2000))
		}
	})
}
