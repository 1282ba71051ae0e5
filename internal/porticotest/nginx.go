package porticotest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"
)

// Nginx is an nginx started by StartNginx.
type Nginx struct {
	// Addr is the loopback address ("127.0.0.1:port") StartNginx chose for
	// the configuration's listen directive.
	Addr string
	// Prefix is nginx's prefix directory (-p): it holds the configuration,
	// the pid file and the temporary files, and relative paths in the
	// configuration resolve under it (the default root is Prefix/html).
	Prefix string
}

// Nginx's timeouts: to accept connections after its start, and to exit
// after SIGQUIT (graceful) before it is killed.
const (
	nginxStartTimeout = 10 * time.Second
	nginxStopTimeout  = 10 * time.Second
)

// StartNginx runs nginx in the foreground for the length of the test, with
// httpConf as the body of its http block (server blocks, directives).
// httpConf is a text/template executed with the *Nginx: it writes its
// listener as "listen {{.Addr}};", and may name {{.Prefix}}. The rest of the
// configuration (one worker, no master, the pid and temporary files under
// Prefix, errors to stderr, no access log) is StartNginx's. It returns once
// nginx accepts connections on Addr; a cleanup stops it, and logs nginx's
// output if the test failed. It needs the nginx program (RequireProgram).
func StartNginx(t testing.TB, httpConf string) *Nginx {
	t.Helper()
	bin := RequireProgram(t, "nginx")
	n := &Nginx{Addr: FreeAddr(t), Prefix: t.TempDir()}
	tmpl, err := template.New("nginx").Parse(httpConf)
	if err != nil {
		t.Fatalf("StartNginx: parsing the configuration template: %v", err)
	}
	var body strings.Builder
	if err := tmpl.Execute(&body, n); err != nil {
		t.Fatalf("StartNginx: executing the configuration template: %v", err)
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;\n" // its workers need the test's 0700 temporary directories
	}
	conf := fmt.Sprintf(`%sdaemon off;
master_process off;
worker_processes 1;
pid %[2]s/nginx.pid;
error_log stderr warn;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path %[2]s/client_body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
%[3]s
}
`, user, n.Prefix, body.String())
	confPath := filepath.Join(n.Prefix, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatalf("StartNginx: writing nginx.conf: %v", err)
	}

	out := &Buffer{}
	cmd := exec.Command(bin, "-p", n.Prefix, "-e", "stderr", "-c", confPath)
	cmd.Stdout, cmd.Stderr = out, out
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("StartNginx: starting nginx: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		stopProcess(cmd, exited, nginxStopTimeout)
		if t.Failed() {
			t.Logf("nginx output:\n%s", out)
		}
	})
	if err := WaitDial("tcp", n.Addr, nginxStartTimeout, exited); err != nil {
		t.Fatalf("StartNginx: waiting for nginx on %s: %v\nconfiguration:\n%s\nnginx output:\n%s", n.Addr, err, conf, out)
	}
	return n
}

// FreeAddr returns a loopback TCP address that was free a moment ago, for a
// program (nginx, uwsgi) that cannot report the port it got for :0.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// WaitDial waits until addr (on network "tcp" or "unix") accepts
// connections, or fails when exited is closed (the program died) or
// timeout passes. An external program gives no readiness signal, hence the
// polling.
func WaitDial(network, addr string, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			return c.Close()
		}
		select {
		case <-exited:
			return errors.New("the process exited")
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dialing %s: %w", addr, err)
		}
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(FreeAddr(t))
	n, _ := strconv.Atoi(port)
	return n
}

// Buffer collects a child program's output: safe for its two streams and
// for a test reading it while the program runs.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
