package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// rawStatus sends raw on a new connection to addr and returns the status
// of the answer and whether the server closed the connection after it.
func rawStatus(t *testing.T, addr, raw string) (int, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", raw, err)
	}
	io.Copy(io.Discard, resp.Body)
	_, err = br.ReadByte()
	return resp.StatusCode, err == io.EOF
}

// TestServeMaxHeaderFields: [[listener]] max_header_fields bounds the
// header lines of a request (431 past it, the connection closed), and a
// reload changes it on the listener that stays; the strict front refuses
// an absolute-form target's bad host through the whole binary.
func TestServeMaxHeaderFields(t *testing.T) {
	dir := t.TempDir()
	config := func(n int) string {
		return fmt.Sprintf(`
access_log = "off"
[[listener]]
addr = "127.0.0.1:0"
max_header_fields = %d
[[site]]
hosts = ["default"]
[[site.route]]
path = "/"
respond = { body = "ok" }
`, n)
	}
	cfg := writeFile(t, dir, "portico.toml", config(5))
	p := startServe(t, cfg)
	// Host and five more: six header lines.
	req := "GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nConnection: close\r\n\r\n"
	if code, closed := rawStatus(t, p.HTTPAddr, req); code != http.StatusRequestHeaderFieldsTooLarge || !closed {
		t.Errorf("7 header lines with max_header_fields = 5: %d, closed %v; want 431, closed", code, closed)
	}
	p.waitLog(t, `reason="too many header fields"`, 5*time.Second)

	writeFile(t, dir, "portico.toml", config(10))
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "msg=reloaded", readyTimeout)
	if code, _ := rawStatus(t, p.HTTPAddr, req); code != http.StatusOK {
		t.Errorf("7 header lines after a reload to max_header_fields = 10: %d, want 200", code)
	}

	if code, closed := rawStatus(t, p.HTTPAddr, "GET http://a<b>/ HTTP/1.1\r\nHost: good\r\n\r\n"); code != http.StatusBadRequest || !closed {
		t.Errorf("absolute-form host a<b>: %d, closed %v; want 400, closed", code, closed)
	}
	if code, closed := rawStatus(t, p.HTTPAddr, "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"); code != http.StatusMethodNotAllowed || !closed {
		t.Errorf("CONNECT: %d, closed %v; want 405, closed", code, closed)
	}
	p.waitLog(t, `reason="CONNECT is not served"`, 5*time.Second)
}
