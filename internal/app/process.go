package app

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"portico/internal/config"
	"portico/internal/server"
)

// This file holds what Run does for the process as a whole, as a service
// manager sees it: inherited sockets (systemd socket activation), the pid
// file and the switch to an unprivileged user.

// listen opens addr, or takes the socket systemd passed for it (see
// takeInherited). inherited says which.
func (e *engine) listen(addr string, mode os.FileMode) (l net.Listener, inherited bool, err error) {
	if l := e.takeInherited(addr); l != nil {
		return l, true, nil
	}
	l, err = server.Listen(addr, mode)
	return l, false, err
}

// takeInherited returns the inherited socket for addr, removed from those
// left, or nil. A socket belongs to addr when its LISTEN_FDNAMES name is
// addr, or when it is bound to addr: the same unix path (or @name), or a
// TCP socket on the same port and IP (":port", 0.0.0.0 and [::] all match
// a wildcard socket, as systemd's ListenStream=80 binds [::]:80 for both
// families; a host name matches a socket on one of its addresses). Port 0
// matches by name only.
func (e *engine) takeInherited(addr string) net.Listener {
	for _, byName := range []bool{true, false} {
		for i, s := range e.inherited {
			if (byName && s.Name == addr) || (!byName && boundTo(s.Listener.Addr(), addr)) {
				e.inherited = append(e.inherited[:i], e.inherited[i+1:]...)
				return s.Listener
			}
		}
	}
	return nil
}

// boundTo reports whether a socket with local address la serves addr, a
// listener address of the config.
func boundTo(la net.Addr, addr string) bool {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		ua, ok := la.(*net.UnixAddr)
		return ok && path != "" && ua.Name == path
	}
	ta, ok := la.(*net.TCPAddr)
	if !ok {
		return false
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	port, err := net.LookupPort("tcp", portStr)
	if err != nil || port == 0 || port != ta.Port {
		return false
	}
	if host == "" {
		return ta.IP.IsUnspecified()
	}
	ips := []net.IP{net.ParseIP(host)}
	if ips[0] == nil {
		if ips, err = net.LookupIP(host); err != nil {
			return false
		}
	}
	for _, ip := range ips {
		if ip.Equal(ta.IP) || (ip.IsUnspecified() && ta.IP.IsUnspecified()) {
			return true
		}
	}
	return false
}

// closeUnclaimed closes the inherited sockets no listener took, one
// warning each: a socket unit that listens where the config does not.
func (e *engine) closeUnclaimed() {
	for _, s := range e.inherited {
		e.log.Warn("closing a socket systemd passed: no listener of the config has its address or name",
			"addr", sockAddr(s.Listener.Addr()), "name", s.Name)
		s.Listener.Close()
	}
	e.inherited = nil
}

// sockAddr formats a listener address the way the config writes it.
func sockAddr(a net.Addr) string {
	if a.Network() == "unix" {
		return "unix:" + a.String()
	}
	return a.String()
}

// writePIDFile writes this process's pid to path, as nginx and uWSGI do.
func writePIDFile(path string) error {
	if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("app: writing pidfile: %w", err)
	}
	return nil
}

// removePIDFile removes path if it still holds this process's pid: a
// pidfile another portico has since written is left to it.
func removePIDFile(path string, log *slog.Logger) {
	b, err := os.ReadFile(path)
	if err != nil {
		log.Warn("reading the pidfile to remove it", "err", err)
		return
	}
	if strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		log.Warn("leaving the pidfile: it holds another process's pid", "pidfile", path, "pid", strings.TrimSpace(string(b)))
		return
	}
	if err := os.Remove(path); err != nil {
		// After a switch to an unprivileged user, its directory may be
		// root's (/run): the next start overwrites the file.
		log.Warn("removing the pidfile", "err", err)
	}
}

// dropPrivileges switches the process to id (supplementary groups, group,
// then user: the order in which each step is still allowed). On Linux the
// set*id calls apply to every thread (Go 1.16+). Not root: a no-op when id
// is already who we are, else an error.
func dropPrivileges(id *config.Identity) error {
	uid := os.Getuid()
	if uid != 0 {
		if (id.UID < 0 || id.UID == uid) && id.GID == os.Getgid() {
			return nil
		}
		return fmt.Errorf("app: user/group are set but portico runs as uid %d, not root: only root can switch users (start it as root, or leave user and group out)", uid)
	}
	if err := syscall.Setgroups(id.Groups); err != nil {
		return fmt.Errorf("app: setting supplementary groups %v: %w", id.Groups, err)
	}
	if err := syscall.Setgid(id.GID); err != nil {
		return fmt.Errorf("app: setting group %d: %w", id.GID, err)
	}
	if id.UID >= 0 {
		if err := syscall.Setuid(id.UID); err != nil {
			return fmt.Errorf("app: setting user %d: %w", id.UID, err)
		}
	}
	return nil
}

// logFiles are the files Run opens as root before it switches user and
// reopens as the user on each reload.
func logFiles(cfg *config.Config) []string {
	var paths []string
	if cfg.AccessLog != "" && cfg.AccessLog != "-" && cfg.AccessLog != "off" {
		paths = append(paths, cfg.AccessLog)
	}
	if cfg.ErrorLog != "" && cfg.ErrorLog != "-" {
		paths = append(paths, cfg.ErrorLog)
	}
	return paths
}

// handOver gives the files at paths, created or opened as root, to the
// user Run switches to (the owner only; group and mode stay), as nginx
// does with its log files: each reload reopens them as that user. A file
// that is not root's is left as it is.
func handOver(paths []string, uid int, log *slog.Logger) {
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			continue // opened by the chain already: reported there
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid != 0 || !fi.Mode().IsRegular() {
			continue
		}
		if err := os.Chown(p, uid, -1); err != nil {
			log.Warn("handing a log file to the user; a reload will not reopen it", "file", p, "err", err)
		}
	}
}

// privilegeHint adds to a permission error, once the process has switched
// user, why a reload cannot do what the start did.
func (e *engine) privilegeHint(err error) error {
	if e.identity == nil || !errors.Is(err, os.ErrPermission) {
		return err
	}
	return fmt.Errorf("%w (portico switched from root to user %q at start: a port below 1024 and files only root may write, such as root-owned logs, need a restart)", err, e.identity.User)
}

// notifyErr logs a failed systemd notification; serving goes on.
func (e *engine) notifyErr(err error) {
	if err != nil {
		e.log.Warn("notifying systemd", "err", err)
	}
}
