package main

import (
	"fmt"
	"io"
	"log/slog"

	"portico/internal/app"
)

// logOutput is Portico's own log (log/slog): to stderr, or to the
// error_log file, which reopen opens again after logrotate renamed it; as
// text (key=value) or JSON lines.
type logOutput struct {
	log  *slog.Logger
	file *app.LogFile // nil: stderr
}

// newLogOutput sets up the log cfg asks for: error_log, log_format,
// log_level.
func newLogOutput(cfg *app.Config, stderr io.Writer) (*logOutput, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	o := &logOutput{}
	w := stderr
	if cfg.ErrorLog != "" && cfg.ErrorLog != "-" {
		f, err := app.OpenLogFile(cfg.ErrorLog)
		if err != nil {
			return nil, fmt.Errorf("error log: %w", err)
		}
		o.file, w = f, f
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		o.log = slog.New(slog.NewJSONHandler(w, opts))
	} else {
		o.log = slog.New(slog.NewTextHandler(w, opts))
	}
	return o, nil
}

// reopen opens the error log file again (SIGUSR1, SIGHUP); on a failure
// the old file stays, and the log says so once.
func (o *logOutput) reopen() {
	if o.file == nil {
		return
	}
	if err := o.file.Reopen(); err != nil {
		o.log.Error("reopening the error log failed; the old file stays in use", "path", o.file.Path(), "err", err)
	}
}

func (o *logOutput) close() {
	if o.file != nil {
		o.file.Close()
	}
}
