package server

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// unixPrefix marks a Unix socket address in Listen.
const unixPrefix = "unix:"

// defaultSocketMode is the mode a Unix socket file gets when Listen is given
// mode 0: anyone on the machine may connect, so that a front server running as
// another user (nginx's worker user) can, as with uWSGI's chmod-socket=666.
const defaultSocketMode os.FileMode = 0o666

// staleDialTimeout bounds the dial Listen uses to tell a stale socket file
// from a live one. A dead socket refuses at once; the bound only matters for
// a live server too busy to accept, which then counts as in use.
const staleDialTimeout = time.Second

// Listen opens a listener for addr, one of:
//
//   - "host:port": TCP on that address ("127.0.0.1:8000", "[::1]:8000");
//   - ":port": TCP on all interfaces;
//   - "unix:/path/to.sock": a Unix stream socket. "unix:@name" is a Linux
//     abstract socket, which has no file (mode, stale-file removal and unlink
//     do not apply).
//
// For a Unix socket file, Listen first removes a stale file left by a dead
// process, but only when it is a socket and a dial to it is refused; a socket
// that accepts the dial is live and Listen fails with "server: PATH is in use",
// and anything that is not a socket is never removed. After listening, the
// file gets mode (0 means 0666, so that nginx's worker user can connect, like
// uWSGI's chmod-socket=666; the file is briefly created under the process
// umask before that). The file is removed when the listener is closed.
func Listen(addr string, mode os.FileMode) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, unixPrefix)
	if !ok {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("server: listening on %s: %w", addr, err)
		}
		return l, nil
	}
	if path == "" {
		return nil, fmt.Errorf("server: listening on %q: empty socket path", addr)
	}
	if path[0] == '@' {
		l, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("server: listening on %s: %w", addr, err)
		}
		return l, nil
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("server: listening on %s: %w", addr, err)
	}
	l.SetUnlinkOnClose(true)
	if mode == 0 {
		mode = defaultSocketMode
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("server: setting mode of %s: %w", path, err)
	}
	return l, nil
}

// removeStaleSocket removes the socket file at path if no process accepts on
// it. A missing file is fine; a live socket, or a file that is not a socket,
// is an error and is left alone.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("server: checking %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("server: %s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, staleDialTimeout)
	switch {
	case err == nil:
		c.Close()
		return fmt.Errorf("server: %s is in use", path)
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, syscall.EAGAIN):
		// A live server whose accept backlog is full.
		return fmt.Errorf("server: %s is in use", path)
	case !errors.Is(err, syscall.ECONNREFUSED):
		// A permission error, say: not provably stale, so not ours to remove.
		return fmt.Errorf("server: checking %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("server: removing stale socket %s: %w", path, err)
	}
	return nil
}
