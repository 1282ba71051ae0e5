package porticotest

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Redis is a redis-server (Debian's package) on a free loopback port,
// without persistence, for the tests of Redis-backed stores (the rate
// limiter's, the cache's). StartRedis starts it; a cleanup kills it.
type Redis struct {
	t    testing.TB
	bin  string
	port int
	cmd  *exec.Cmd
}

// StartRedis starts a redis-server, or fails (skips, without
// PORTICO_REQUIRE_INTEROP) when there is none.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin := RequireProgram(t, "redis-server")
	s := &Redis{t: t, bin: bin, port: FreePort(t)}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Addr is its host:port.
func (s *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// URL is its redis:// URL, database 0.
func (s *Redis) URL() string { return "redis://" + s.Addr() + "/0" }

// Start starts it (again) on its port and waits until it answers PING.
func (s *Redis) Start() {
	s.t.Helper()
	s.cmd = exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	var out strings.Builder
	s.cmd.Stdout, s.cmd.Stderr = &out, &out
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	WaitFor(s.t, "redis-server to answer PING", 10*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		fmt.Fprint(c, "PING\r\n")
		b := make([]byte, 7)
		n, _ := c.Read(b)
		return string(b[:n]) == "+PONG\r\n"
	})
}

// Stop kills it (a crash, as far as clients can tell).
func (s *Redis) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}
