package server

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// sockPath returns a socket path in a fresh temporary directory.
func sockPath(t *testing.T) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "s.sock")
}

// acceptOne checks that l accepts a connection dialled to it.
func acceptOne(t *testing.T, l net.Listener) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	c, err := net.Dial(l.Addr().Network(), l.Addr().String())
	if err != nil {
		t.Fatalf("dialling %s: %v", l.Addr(), err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatalf("accepting: %v", err)
	}
}

func TestListenTCP(t *testing.T) {
	tests := []struct {
		addr        string
		unspecified bool
	}{
		{addr: "127.0.0.1:0"},
		{addr: ":0", unspecified: true},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			l, err := Listen(tt.addr, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			a, ok := l.Addr().(*net.TCPAddr)
			if !ok {
				t.Fatalf("Addr() = %T, want *net.TCPAddr", l.Addr())
			}
			if a.Port == 0 {
				t.Error("port 0 after listening")
			}
			if got := a.IP.IsUnspecified(); got != tt.unspecified {
				t.Errorf("IP %v unspecified = %v, want %v", a.IP, got, tt.unspecified)
			}
			c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(a.Port)))
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		})
	}
}

func TestListenErrors(t *testing.T) {
	tests := []struct{ name, addr string }{
		{"empty unix path", "unix:"},
		{"no port", "127.0.0.1"},
		{"bad port", "127.0.0.1:http-nope"},
		{"missing directory", "unix:/nonexistent-portico-dir/s.sock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Listen(tt.addr, 0)
			if err == nil {
				l.Close()
				t.Fatalf("Listen(%q) succeeded, want error", tt.addr)
			}
			if !strings.HasPrefix(err.Error(), "server: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestListenUnixMode(t *testing.T) {
	tests := []struct {
		mode, want os.FileMode
	}{
		{0, 0o666},
		{0o600, 0o600},
		{0o660, 0o660},
	}
	for _, tt := range tests {
		t.Run(tt.want.String(), func(t *testing.T) {
			path := sockPath(t)
			l, err := Listen("unix:"+path, tt.mode)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			fi, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Type() != fs.ModeSocket {
				t.Errorf("%s is %v, want a socket", path, fi.Mode())
			}
			if got := fi.Mode().Perm(); got != tt.want {
				t.Errorf("mode = %v, want %v", got, tt.want)
			}
			acceptOne(t, l)
		})
	}
}

func TestListenUnixUnlinkOnClose(t *testing.T) {
	path := sockPath(t)
	l, err := Listen("unix:"+path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after Close: %v, want it removed", err)
	}
}

func TestListenUnixStale(t *testing.T) {
	path := sockPath(t)
	// A listener that dies without removing its file, like a killed process.
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale file not left behind: %v", err)
	}

	l, err := Listen("unix:"+path, 0)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer l.Close()
	acceptOne(t, l)
}

func TestListenUnixInUse(t *testing.T) {
	path := sockPath(t)
	live, err := Listen("unix:"+path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	// Accept in the background so the stale check's dial completes.
	go func() {
		for {
			c, err := live.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	l, err := Listen("unix:"+path, 0)
	if err == nil {
		l.Close()
		t.Fatal("second Listen on a live socket succeeded")
	}
	if want := "server: " + path + " is in use"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	// The live server's socket is untouched.
	dialUnix(t, path)
}

// dialUnix checks that something accepts on the socket at path.
func dialUnix(t *testing.T, path string) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("live socket no longer reachable: %v", err)
	}
	c.Close()
}

func TestListenUnixNotASocket(t *testing.T) {
	path := sockPath(t)
	if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := Listen("unix:"+path, 0)
	if err == nil {
		l.Close()
		t.Fatal("Listen over a regular file succeeded")
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "precious" {
		t.Errorf("regular file damaged: %q, %v", b, err)
	}
}

func TestListenUnixAbstract(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("abstract sockets are Linux-only")
	}
	name := "@portico-test" + t.TempDir() // unique per test run
	l, err := Listen("unix:"+name, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	acceptOne(t, l)
}
