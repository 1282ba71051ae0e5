// Package app is Portico's composition root: it turns a config.Config into
// each feature package's Options, builds the handler chain, and starts and
// stops everything in order.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"portico/internal/accesslog"
	"portico/internal/config"
	"portico/internal/server"
	"portico/internal/static"
	"portico/internal/uwsgi"
	"portico/internal/worker"
)

// Options are what the command gives Run besides the config.
type Options struct {
	// Logger receives Portico's own log. Nil: slog.Default().
	Logger *slog.Logger
	// Reload delivers a value for each reload request (SIGHUP).
	Reload <-chan struct{}
	// Stderr is where "-" access logs go. Nil: os.Stderr.
	Stderr io.Writer
}

// Run serves cfg until ctx ends, then stops gracefully: listeners close,
// in-flight requests finish within cfg.ShutdownTimeout, workers stop.
func Run(ctx context.Context, cfg *config.Config, opt Options) error {
	log := opt.Logger
	if log == nil {
		log = slog.Default()
	}
	stderr := opt.Stderr
	if stderr == nil {
		stderr = os.Stderr
	}

	// Workers first: an app that cannot be imported stops us before any
	// socket is opened.
	pool, err := worker.New(workerOptions(cfg, log))
	if err != nil {
		return err
	}
	if err := pool.Start(ctx); err != nil {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = pool.Stop(stopCtx)
		return err
	}
	stopPool := func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), cfg.App.Timeout+cfg.App.Grace+5*time.Second)
		defer cancel()
		if err := pool.Stop(stopCtx); err != nil {
			log.Warn("stopping workers", "err", err)
		}
	}

	handler, closeChain, err := chain(cfg, pool, log, stderr)
	if err != nil {
		stopPool()
		return err
	}
	defer closeChain()

	// Listeners.
	type running struct {
		serve    func() error
		shutdown func(context.Context) error
		close    func() error
	}
	var servers []running
	var listeners []net.Listener
	closeAll := func() {
		for _, l := range listeners {
			l.Close()
		}
	}
	for _, lc := range cfg.Listeners {
		l, err := server.Listen(lc.Addr, lc.SocketMode)
		if err != nil {
			closeAll()
			stopPool()
			return fmt.Errorf("listening on %s: %w", lc.Addr, err)
		}
		listeners = append(listeners, l)
		addr := l.Addr().String()
		if l.Addr().Network() == "unix" {
			addr = "unix:" + addr
		}
		log.Info("listening", "proto", lc.Protocol, "addr", addr)
		switch lc.Protocol {
		case config.ProtoUWSGI:
			s := &uwsgi.Server{Handler: handler, Logger: log}
			servers = append(servers, running{func() error { return s.Serve(l) }, s.Shutdown, s.Close})
		default:
			s := server.NewHTTP(handler, server.Options{Logger: log})
			servers = append(servers, running{func() error { return s.Serve(l) }, s.Shutdown, s.Close})
		}
	}

	errc := make(chan error, len(servers))
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.serve(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, uwsgi.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	log.Info("ready", "app", cfg.App.Module, "workers", cfg.App.Workers, "threads", cfg.App.Threads)

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping: finishing in-flight requests", "grace", cfg.ShutdownTimeout)
			break loop
		case err := <-errc:
			runErr = fmt.Errorf("serving: %w", err)
			break loop
		case <-opt.Reload:
			log.Info("reloading workers")
			if err := pool.Reload(ctx); err != nil {
				log.Error("reload failed; the old workers keep serving", "err", err)
			}
		}
	}

	// Stop in reverse order of start: listeners and in-flight requests,
	// then workers.
	shutCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	var swg sync.WaitGroup
	for _, s := range servers {
		swg.Add(1)
		go func() {
			defer swg.Done()
			if err := s.shutdown(shutCtx); err != nil {
				log.Warn("in-flight requests did not finish in time; closing their connections", "err", err)
				_ = s.close()
			}
		}()
	}
	swg.Wait()
	wg.Wait()
	stopPool()
	log.Info("stopped")
	return runErr
}

func workerOptions(cfg *config.Config, log *slog.Logger) worker.Options {
	a := &cfg.App
	dir := a.Dir
	if dir != "" {
		if abs, err := filepath.Abs(dir); err == nil {
			dir = abs
		}
	}
	module := a.Module
	return worker.Options{
		App:          module,
		Python:       a.Python,
		Dir:          dir,
		Env:          a.Env,
		Workers:      a.Workers,
		Threads:      a.Threads,
		Timeout:      a.Timeout,
		Grace:        a.Grace,
		MaxRequests:  a.MaxRequests,
		MaxRSS:       a.MaxRSS,
		MaxBody:      a.MaxBody,
		QueueSize:    a.QueueSize,
		QueueTimeout: a.QueueTimeout,
		Watch:        a.Reload,
		Logger:       log,
	}
}

// chain builds the fixed handler chain: access log → router (static routes
// by longest prefix, then the app).
func chain(cfg *config.Config, app http.Handler, log *slog.Logger, stderr io.Writer) (http.Handler, func(), error) {
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	r := &router{fallback: app}
	for _, s := range cfg.Static {
		h, err := static.New(static.Options{Root: s.Dir, Prefix: s.Prefix, Logger: log})
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("static %s: %w", s.Prefix, err)
		}
		closers = append(closers, func() { h.Close() })
		r.add(s.Prefix, h)
	}
	var h http.Handler = r
	switch cfg.AccessLog {
	case "off":
	default:
		var w io.Writer = stderr
		if cfg.AccessLog != "-" {
			f, err := os.OpenFile(cfg.AccessLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
			if err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("opening access log: %w", err)
			}
			closers = append(closers, func() { f.Close() })
			w = f
		}
		format := accesslog.Combined
		if cfg.AccessLogFormat == "json" {
			format = accesslog.JSON
		}
		h = accesslog.New(w, accesslog.Options{Format: format, Logger: log})(h)
	}
	return h, closeAll, nil
}

// ParseRun builds and validates the config of `portico run` from its
// arguments; out receives --help. The command goes through app so that only
// this package imports config.
func ParseRun(args []string, out io.Writer) (*config.Config, error) {
	return config.ParseRun(args, out)
}

// ErrHelp is returned by ParseRun after writing the help text.
var ErrHelp = config.ErrHelp
