package systemd

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listenNotify opens a fake NOTIFY_SOCKET at name (a path, or @name).
func listenNotify(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func read(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("reading a notification: %v", err)
	}
	return string(buf[:n])
}

func TestNotifierAbsent(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n, err := NotifierFromEnv()
	if n != nil || err != nil {
		t.Fatalf("NotifierFromEnv() = %v, %v; want nil, nil", n, err)
	}
	// A nil Notifier does nothing.
	if err := n.Ready("x"); err != nil {
		t.Errorf("nil Notifier: Ready: %v", err)
	}
	if n.WatchdogInterval() != 0 {
		t.Error("nil Notifier has a watchdog")
	}
}

func TestNotifierBadSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "vsock:2:1234")
	if _, err := NotifierFromEnv(); err == nil || !strings.Contains(err.Error(), "vsock:2:1234") {
		t.Errorf("NotifierFromEnv() error = %v, want one naming the address", err)
	}
}

func TestNotifier(t *testing.T) {
	for _, name := range []string{
		filepath.Join(t.TempDir(), "notify"),
		"@portico-test-" + strconv.Itoa(os.Getpid()), // abstract
	} {
		t.Run(name, func(t *testing.T) {
			c := listenNotify(t, name)
			t.Setenv("NOTIFY_SOCKET", name)
			n, err := NotifierFromEnv()
			if err != nil || n == nil {
				t.Fatalf("NotifierFromEnv() = %v, %v", n, err)
			}
			if _, ok := os.LookupEnv("NOTIFY_SOCKET"); ok {
				t.Error("NOTIFY_SOCKET still set: the workers would see it")
			}
			if err := n.Ready("serving"); err != nil {
				t.Fatal(err)
			}
			if got := read(t, c); got != "READY=1\nSTATUS=serving\n" {
				t.Errorf("Ready sent %q", got)
			}
			if err := n.Reloading("reloading"); err != nil {
				t.Fatal(err)
			}
			got := read(t, c)
			if !strings.HasPrefix(got, "RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=") {
				t.Errorf("Reloading sent %q", got)
			}
			if err := n.Stopping("stopping"); err != nil {
				t.Fatal(err)
			}
			if got := read(t, c); got != "STOPPING=1\nSTATUS=stopping\n" {
				t.Errorf("Stopping sent %q", got)
			}
		})
	}
}

func TestWatchdog(t *testing.T) {
	name := filepath.Join(t.TempDir(), "notify")
	c := listenNotify(t, name)
	t.Setenv("NOTIFY_SOCKET", name)
	t.Setenv("WATCHDOG_USEC", "20000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n, err := NotifierFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if n.WatchdogInterval() != 20*time.Millisecond {
		t.Fatalf("WatchdogInterval() = %v, want 20ms", n.WatchdogInterval())
	}
	ctx := t.Context()
	done := make(chan struct{})
	go func() { defer close(done); n.Watchdog(ctx, func(err error) { t.Error(err) }) }()
	for range 3 {
		if got := read(t, c); got != "WATCHDOG=1\n" {
			t.Errorf("watchdog sent %q", got)
		}
	}
	t.Cleanup(func() { <-done }) // t.Context ends before cleanups run
}

func TestWatchdogOtherPID(t *testing.T) {
	name := filepath.Join(t.TempDir(), "notify")
	listenNotify(t, name)
	t.Setenv("NOTIFY_SOCKET", name)
	t.Setenv("WATCHDOG_USEC", "20000")
	t.Setenv("WATCHDOG_PID", "1")
	n, err := NotifierFromEnv()
	if err != nil || n.WatchdogInterval() != 0 {
		t.Errorf("WATCHDOG_PID of another process: interval %v, err %v; want no watchdog", n.WatchdogInterval(), err)
	}
}

func TestListenersNotOurs(t *testing.T) {
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDS", "2")
	t.Setenv("LISTEN_FDNAMES", "a:b")
	socks, err := Listeners()
	if socks != nil || err != nil {
		t.Errorf("Listeners() = %v, %v for another process's LISTEN_PID; want none", socks, err)
	}
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if _, ok := os.LookupEnv(k); ok {
			t.Errorf("%s still set", k)
		}
	}
}

func TestListenersBadCount(t *testing.T) {
	t.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	t.Setenv("LISTEN_FDS", "two")
	if _, err := Listeners(); err == nil || !strings.Contains(err.Error(), `LISTEN_FDS="two"`) {
		t.Errorf("Listeners() error = %v, want one naming LISTEN_FDS", err)
	}
}
