package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// listenFDsStart is the first fd systemd passes (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// Socket is one listening socket systemd passed.
type Socket struct {
	// Name is its LISTEN_FDNAMES entry: the socket unit's
	// FileDescriptorName=, by default the unit's name ("portico.socket").
	// "" when LISTEN_FDNAMES is unset.
	Name string
	// Listener serves it. Closing it closes the socket; a unix socket's
	// file is left for systemd, which created it, to remove.
	Listener net.Listener
}

// Listeners returns the sockets passed by socket activation and unsets
// LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES. It returns none when
// LISTEN_PID is not this process (the variables were meant for another).
// The fds are taken over: they are closed on exec, so that the workers do
// not inherit them. A passed fd that is not a listening stream socket
// (ListenDatagram=, a FIFO) is closed and reported in the error; the
// others are still returned.
func Listeners() ([]Socket, error) {
	pid, nfds, names := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(k)
	}
	if nfds == "" || pid != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	n, err := strconv.Atoi(nfds)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("systemd: LISTEN_FDS=%q is not a count of sockets", nfds)
	}
	var nameList []string
	if names != "" {
		nameList = strings.Split(names, ":")
	}
	var socks []Socket
	var errs []error
	for i := range n {
		fd := listenFDsStart + i
		name := ""
		if i < len(nameList) {
			name = nameList[i]
		}
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), "LISTEN_FD_"+strconv.Itoa(fd))
		if f == nil {
			errs = append(errs, fmt.Errorf("systemd: passed fd %d (%s) is not open", fd, name))
			continue
		}
		l, err := net.FileListener(f) // a dup; f is closed below
		f.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("systemd: passed fd %d (%s) is not a listening stream socket: %w", fd, name, err))
			continue
		}
		socks = append(socks, Socket{Name: name, Listener: l})
	}
	return socks, errors.Join(errs...)
}
