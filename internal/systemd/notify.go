// Package systemd speaks the two systemd protocols a service needs, in a
// few lines of the standard library (no go-systemd dependency):
//
//   - notify.go: [Notifier] sends sd_notify(3) state changes (READY=1,
//     RELOADING=1, STOPPING=1, STATUS=, WATCHDOG=1) to $NOTIFY_SOCKET, a
//     unixgram socket, so that Type=notify and Type=notify-reload units
//     know when Portico serves;
//   - activation.go: [Listeners] takes the sockets systemd passes to a
//     socket-activated service (sd_listen_fds(3): $LISTEN_PID,
//     $LISTEN_FDS, $LISTEN_FDNAMES, fds from 3 on).
//
// Both read their environment once and unset it, so that the Python
// workers Portico starts neither notify systemd nor claim its sockets.
package systemd

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// Notifier sends state changes to the service manager. A nil *Notifier
// (no $NOTIFY_SOCKET: not run by systemd, or not Type=notify) does nothing,
// so callers never check.
type Notifier struct {
	addr     *net.UnixAddr
	watchdog time.Duration // 0: no watchdog
}

// NotifierFromEnv returns a Notifier for $NOTIFY_SOCKET (a path, or "@name"
// for an abstract socket) and $WATCHDOG_USEC, and unsets both (and
// $WATCHDOG_PID). It returns nil when $NOTIFY_SOCKET is unset, and an error
// when it is not a unix socket address.
func NotifierFromEnv() (*Notifier, error) {
	sock := os.Getenv("NOTIFY_SOCKET")
	wdUsec, wdPID := os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID")
	for _, k := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} {
		os.Unsetenv(k)
	}
	if sock == "" {
		return nil, nil
	}
	if sock[0] != '/' && sock[0] != '@' {
		// systemd also allows vsock:CID:PORT (for VMs); Portico runs on
		// the host it serves.
		return nil, fmt.Errorf("systemd: NOTIFY_SOCKET=%q is not a unix socket path or @name", sock)
	}
	n := &Notifier{addr: &net.UnixAddr{Name: sock, Net: "unixgram"}}
	if wdUsec != "" && (wdPID == "" || wdPID == strconv.Itoa(os.Getpid())) {
		us, err := strconv.ParseInt(wdUsec, 10, 64)
		if err != nil || us <= 0 {
			return nil, fmt.Errorf("systemd: WATCHDOG_USEC=%q is not a positive number of microseconds", wdUsec)
		}
		n.watchdog = time.Duration(us) * time.Microsecond
	}
	return n, nil
}

// Send sends one notification: newline-separated VAR=VALUE assignments, as
// sd_notify(3). Each call dials anew: a datagram socket costs nothing to
// open, and a restarted systemd (daemon-reexec) is found again.
func (n *Notifier) Send(state ...string) error {
	if n == nil {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("systemd: connecting to NOTIFY_SOCKET %s: %w", n.addr.Name, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Join(state, "\n") + "\n")); err != nil {
		return fmt.Errorf("systemd: notifying %s: %w", n.addr.Name, err)
	}
	return nil
}

// Ready tells systemd the service is up (READY=1), with a status line.
func (n *Notifier) Ready(status string) error {
	return n.Send("READY=1", "STATUS="+status)
}

// Reloading tells systemd a reload has begun. MONOTONIC_USEC, the time of
// the request on CLOCK_MONOTONIC, is what Type=notify-reload matches to its
// own reload request; a Ready ends the reload.
func (n *Notifier) Reloading(status string) error {
	return n.Send("RELOADING=1", "STATUS="+status, "MONOTONIC_USEC="+strconv.FormatInt(monotonicUsec(), 10))
}

// Stopping tells systemd a graceful stop has begun (STOPPING=1).
func (n *Notifier) Stopping(status string) error {
	return n.Send("STOPPING=1", "STATUS="+status)
}

// WatchdogInterval is $WATCHDOG_USEC: a service that does not send
// WATCHDOG=1 within it is killed (WatchdogSec=). 0: no watchdog.
func (n *Notifier) WatchdogInterval() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog
}

// Watchdog sends WATCHDOG=1 every half WatchdogInterval until ctx ends
// (sd_watchdog_enabled(3) advises pinging at half the interval). It returns
// at once when there is no watchdog. Send errors are passed to report.
func (n *Notifier) Watchdog(ctx context.Context, report func(error)) {
	every := n.WatchdogInterval() / 2
	if every <= 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := n.Send("WATCHDOG=1"); err != nil && report != nil {
			report(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// monotonicUsec reads CLOCK_MONOTONIC in microseconds, the clock systemd
// compares MONOTONIC_USEC with. (Go's monotonic clock is not exported.)
func monotonicUsec() int64 {
	var ts syscall.Timespec
	const clockMonotonic = 1
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0
	}
	return ts.Sec*1_000_000 + ts.Nsec/1_000
}
