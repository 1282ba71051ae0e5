package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// runDefaults are the settings a pyproject.toml's [tool.portico] table gives
// `portico run`; flags override them.
type runDefaults struct {
	binds, uwsgiSockets []string
	statics             []string // PREFIX=DIR
	module              string
	mode                string
}

const pyprojectKeys = "app, bind, uwsgi_socket, socket_mode, python, env, workers, threads, timeout, grace, max_requests, max_rss, max_body, queue_size, queue_timeout, reload, sched, static, access_log, access_log_format, log_level, error_log, log_format, graceful_timeout"

// readPyproject applies [tool.portico] from dir/pyproject.toml, if the file
// and the table exist, to c and a. Keys are the `portico run` flag names
// with "_" for "-"; `app` is MODULE:CALLABLE, `static` a table of
// PREFIX = DIR, `env` a table of KEY = VALUE.
func readPyproject(dir string, c *Config, a *App) (runDefaults, error) {
	var rd runDefaults
	path := filepath.Join(dir, "pyproject.toml")
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return rd, nil
	}
	if err != nil {
		return rd, fmt.Errorf("config: reading %s: %w", path, err)
	}
	root, err := parseTree(data)
	if err != nil {
		var le *lineError
		if errors.As(err, &le) {
			return rd, &Error{File: path, Line: le.line, Msg: le.msg}
		}
		return rd, &Error{File: path, Msg: err.Error()}
	}
	tool, ok := root.tab["tool"]
	if !ok || tool.kind != kTable {
		return rd, nil
	}
	t, ok := tool.tab["portico"]
	if !ok {
		return rd, nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return rd, fmt.Errorf("config: resolving %s: %w", dir, err)
	}
	d := &decoder{c: c, dir: abs}
	c.lines = map[string]int{}
	const p = "tool.portico"
	if t.kind != kTable {
		return rd, &Error{File: path, Line: t.line, Key: p, Msg: "want a table"}
	}
	d.str(t, p, "app", &rd.module)
	d.strings(t, p, "bind", &rd.binds)
	d.strings(t, p, "uwsgi_socket", &rd.uwsgiSockets)
	d.str(t, p, "socket_mode", &rd.mode)
	d.str(t, p, "python", &a.Python)
	if strings.Contains(a.Python, "/") && !filepath.IsAbs(a.Python) {
		a.Python = filepath.Join(abs, a.Python)
	}
	d.appSettings(t, p, a)
	keys, statics := d.stringTable(t, p, "static")
	for _, k := range keys {
		dir := statics[k]
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(abs, dir)
		}
		rd.statics = append(rd.statics, k+"="+dir)
	}
	d.str(t, p, "access_log", &c.AccessLog)
	d.str(t, p, "access_log_format", &c.AccessLogFormat)
	d.str(t, p, "log_level", &c.LogLevel)
	d.str(t, p, "error_log", &c.ErrorLog)
	d.str(t, p, "log_format", &c.LogFormat)
	d.duration(t, p, "graceful_timeout", &c.ShutdownTimeout)
	d.unknown(t, p, pyprojectKeys)
	for _, e := range d.errs {
		e.(*Error).File = path
	}
	c.lines = nil
	return rd, errors.Join(d.errs...)
}

// chdirArg returns the value of --chdir in run's arguments, or "".
func chdirArg(args []string) string {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || !strings.HasPrefix(a, "-") {
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name != "chdir" {
			continue
		}
		if hasVal {
			return val
		}
		if i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}
