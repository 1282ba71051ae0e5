//go:build unix

package porticotest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// PHPFPM is a php-fpm master started for one test (Debian's php-fpm, run
// with its own configuration): a pool on a loopback TCP port and one on a
// unix socket, each with a fixed number of children.
type PHPFPM struct {
	// TCP is the TCP pool's address (host:port), Unix the socket's path.
	TCP, Unix string
	// ErrorLog is php-fpm's error log (the scripts' STDERR goes to the
	// client, Portico, which logs it).
	ErrorLog string
}

// StartPHPFPM runs php-fpm with two pools of children static workers each
// and returns once both accept connections; a cleanup kills its process
// group. A missing php-fpm is Missing. As root it passes -R and runs the
// children as root, which php-fpm otherwise refuses.
func StartPHPFPM(t testing.TB, children int) *PHPFPM {
	t.Helper()
	matches, _ := filepath.Glob("/usr/sbin/php-fpm*") // the name carries the version: php-fpm8.2
	if len(matches) == 0 {
		Missing(t, "php-fpm not found (/usr/sbin/php-fpm*; apt-get install php-fpm)")
	}
	bin := matches[0]
	// A short directory: a unix socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "pt-fpm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &PHPFPM{TCP: FreeAddr(t), Unix: filepath.Join(dir, "fpm.sock"), ErrorLog: filepath.Join(dir, "error.log")}
	user := ""
	if os.Geteuid() == 0 {
		user = "user = root\ngroup = root\n"
	}
	pool := func(name, listen string) string {
		return fmt.Sprintf(`[%s]
%slisten = %s
pm = static
pm.max_children = %d
clear_env = no
catch_workers_output = yes
php_admin_flag[display_errors] = off
php_admin_flag[log_errors] = on
`, name, user, listen, children)
	}
	conf := fmt.Sprintf("[global]\nerror_log = %s\npid = %s\ndaemonize = no\n", p.ErrorLog, filepath.Join(dir, "fpm.pid")) +
		pool("tcp", p.TCP) + pool("unix", p.Unix)
	confPath := filepath.Join(dir, "php-fpm.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-F", "-n", "-y", confPath, "-p", dir}
	if os.Geteuid() == 0 {
		args = append(args, "-R")
	}
	// Output to a file, not a pipe: a child outliving its master would
	// hold a pipe open and block cmd.Wait.
	out, err := os.Create(filepath.Join(dir, "output.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	dieWithParent(cmd)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true // the cleanup kills the children too
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	for _, a := range [][2]string{{"tcp", p.TCP}, {"unix", p.Unix}} {
		if err := WaitDial(a[0], a[1], 15*time.Second, exited); err != nil {
			output, _ := os.ReadFile(out.Name())
			log, _ := os.ReadFile(p.ErrorLog)
			t.Fatalf("php-fpm on %s: %v\n%s\n%s", a[1], err, output, log)
		}
	}
	return p
}
