// Package config holds Portico's configuration: the structs every other
// path (the `portico run` flags now, the TOML file later) fills, the defaults
// in one place, and Validate.
//
// Only internal/app imports this package; it turns a Config into each
// feature package's own Options.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Defaults, in one place. The README's tables quote these.
const (
	DefaultBind            = "127.0.0.1:8000"
	DefaultTimeout         = 30 * time.Second
	DefaultGrace           = 5 * time.Second
	DefaultMaxBody         = 10 << 20
	DefaultQueueSize       = 1024
	DefaultQueueTimeout    = 30 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
	DefaultSocketMode      = 0o666
)

// Config is everything one Portico process serves.
type Config struct {
	// Listeners: HTTP and uwsgi-protocol sockets.
	Listeners []Listener
	// App is the WSGI application.
	App App
	// Static routes, matched before the app by longest prefix.
	Static []Static
	// AccessLog is "-" (stderr), "off", or a file path. Default "-".
	AccessLog string
	// AccessLogFormat is "combined" (nginx's) or "json". Default "combined".
	AccessLogFormat string
	// ShutdownTimeout bounds the graceful stop: in-flight requests get this
	// long to finish after the listeners close. Default 30s.
	ShutdownTimeout time.Duration
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string
}

// Listener protocols.
const (
	ProtoHTTP  = "http"
	ProtoUWSGI = "uwsgi"
)

// Listener is one socket.
type Listener struct {
	// Addr is host:port, :port, or unix:/path.
	Addr string
	// Protocol is ProtoHTTP or ProtoUWSGI.
	Protocol string
	// SocketMode is the file mode of a unix socket. Default 0666, so that
	// nginx's worker user can connect.
	SocketMode os.FileMode
}

// App is one WSGI application and its workers.
type App struct {
	// Module is MODULE:CALLABLE, MODULE dotted or a path to a .py file.
	Module string
	// Python is the interpreter: $VIRTUAL_ENV/bin/python, else python3.
	Python string
	// Dir is the directory the app is imported from. Default: current dir.
	Dir string
	// Env is extra KEY=VALUE environment for the workers.
	Env []string
	// Workers is the number of processes. Default: number of CPUs.
	Workers int
	// Threads is concurrent requests per process. Default 1.
	Threads int
	// Timeout bounds a request in the app (504 past it). Default 30s.
	Timeout time.Duration
	// Grace is how long an interrupted request may take to unwind before
	// its worker is killed. Default 5s.
	Grace time.Duration
	// MaxRequests recycles a worker after N requests (+ up to 10% jitter).
	// 0: off.
	MaxRequests int
	// MaxRSS recycles a worker whose memory passes this many bytes. 0: off.
	MaxRSS int64
	// MaxBody is the largest request body in bytes (413 past it). Default 10 MiB.
	MaxBody int64
	// QueueSize bounds requests waiting for a worker (503 past it). Default 1024.
	QueueSize int
	// QueueTimeout bounds a request's wait for a worker (503 past it). Default 30s.
	QueueTimeout time.Duration
	// Reload restarts the workers when a .py file changes (development).
	Reload bool
}

// Static serves a directory under a URL prefix.
type Static struct {
	Prefix string
	Dir    string
}

// Default returns a Config with every default set and no app.
func Default() *Config {
	return &Config{
		AccessLog:       "-",
		AccessLogFormat: "combined",
		ShutdownTimeout: DefaultShutdownTimeout,
		LogLevel:        "info",
		App: App{
			Python:       defaultPython(),
			Workers:      runtime.NumCPU(),
			Threads:      1,
			Timeout:      DefaultTimeout,
			Grace:        DefaultGrace,
			MaxBody:      DefaultMaxBody,
			QueueSize:    DefaultQueueSize,
			QueueTimeout: DefaultQueueTimeout,
		},
	}
}

func defaultPython() string {
	if venv := os.Getenv("VIRTUAL_ENV"); venv != "" {
		return filepath.Join(venv, "bin", "python")
	}
	return "python3"
}

// Validate checks the whole config and returns every problem at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if len(c.Listeners) == 0 {
		bad("bind", "no listener")
	}
	seen := map[string]bool{}
	for _, l := range c.Listeners {
		key := "bind"
		if l.Protocol == ProtoUWSGI {
			key = "uwsgi-socket"
		}
		if seen[l.Addr] && !strings.HasSuffix(l.Addr, ":0") { // port 0: each gets its own
			bad(key, "%q is given twice", l.Addr)
		}
		seen[l.Addr] = true
		if err := checkAddr(l.Addr); err != nil {
			bad(key, "%v", err)
		}
	}
	a := &c.App
	if a.Module == "" {
		bad("app", "no MODULE:CALLABLE given")
	} else if strings.HasSuffix(strings.SplitN(a.Module, ":", 2)[0], ".py") {
		path := strings.SplitN(a.Module, ":", 2)[0]
		if !filepath.IsAbs(path) && a.Dir != "" {
			path = filepath.Join(a.Dir, path)
		}
		if _, err := os.Stat(path); err != nil {
			bad("app", "%v", err)
		}
	}
	if a.Dir != "" {
		if st, err := os.Stat(a.Dir); err != nil {
			bad("chdir", "%v", err)
		} else if !st.IsDir() {
			bad("chdir", "%s is not a directory", a.Dir)
		}
	}
	if a.Workers < 1 {
		bad("workers", "must be at least 1, not %d", a.Workers)
	}
	if a.Threads < 1 {
		bad("threads", "must be at least 1, not %d", a.Threads)
	}
	if a.Timeout <= 0 {
		bad("timeout", "must be positive")
	}
	if a.MaxRequests < 0 {
		bad("max-requests", "must not be negative")
	}
	if a.MaxRSS < 0 {
		bad("max-rss", "must not be negative")
	}
	if a.MaxBody <= 0 {
		bad("max-body", "must be positive")
	}
	if a.QueueSize < 0 {
		bad("queue-size", "must not be negative")
	}
	for _, kv := range a.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			bad("env", "%q is not KEY=VALUE", kv)
		}
	}
	for _, s := range c.Static {
		if !strings.HasPrefix(s.Prefix, "/") {
			bad("static", "prefix %q must start with /", s.Prefix)
		}
		if st, err := os.Stat(s.Dir); err != nil {
			bad("static", "%v", err)
		} else if !st.IsDir() {
			bad("static", "%s is not a directory", s.Dir)
		}
	}
	switch c.AccessLogFormat {
	case "combined", "json":
	default:
		bad("access-log-format", "%q is not combined or json", c.AccessLogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log-level", "%q is not debug, info, warn or error", c.LogLevel)
	}
	return errors.Join(errs...)
}

func checkAddr(addr string) error {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if path == "" {
			return fmt.Errorf("%q: empty socket path", addr)
		}
		return nil
	}
	host, port, err := splitHostPort(addr)
	if err != nil {
		return err
	}
	_ = host
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: bad port %q", addr, port)
	}
	return nil
}

func splitHostPort(addr string) (string, string, error) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return "", "", fmt.Errorf("%q: want host:port, :port or unix:/path", addr)
	}
	return strings.Trim(addr[:i], "[]"), addr[i+1:], nil
}

// ParseSize parses a size: a number of bytes, or a number with a unit:
// K/KB/KiB, M/MB/MiB, G/GB/GiB (all powers of 1024, as nginx reads them).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') {
		i--
	}
	num, unit := strings.TrimSpace(t[:i]), strings.ToLower(strings.TrimSpace(t[i:]))
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (like 512, 64KiB, 10MiB, 1GiB)", s)
	}
	mult := float64(1)
	switch unit {
	case "", "b":
	case "k", "kb", "kib":
		mult = 1 << 10
	case "m", "mb", "mib":
		mult = 1 << 20
	case "g", "gb", "gib":
		mult = 1 << 30
	default:
		return 0, fmt.Errorf("%q: unknown size unit %q", s, unit)
	}
	return int64(n * mult), nil
}

// ParseDuration parses a duration like "30s", "1m30s", "500ms", or a bare
// number of seconds ("30", as gunicorn and uWSGI take it).
func ParseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if n, err := strconv.ParseFloat(t, 64); err == nil {
		return time.Duration(n * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (like 30s, 2m, 500ms)", s)
	}
	return d, nil
}
