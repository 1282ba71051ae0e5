// Command portico serves Python WSGI applications: one binary doing the job
// of nginx + uWSGI. See the README for the commands and flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"

	"portico/internal/app"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `Usage: portico COMMAND [flags]

Commands:
  run [flags] MODULE[:CALLABLE]   serve a WSGI app with supervised Python workers
  serve -c FILE                   serve what a TOML config file describes
  check -c FILE                   validate a config file: print FILE: OK or every error
  version                         print the version, Go version and build info

Run "portico run --help" for the flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		io.WriteString(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return runApp(args[1:], stdout, stderr)
	case "serve":
		return serve(args[1:], stdout, stderr)
	case "check":
		return check(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintf(stdout, "portico %s\n%s %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" || s.Key == "vcs.time" || s.Key == "vcs.modified" {
					fmt.Fprintf(stdout, "%s=%s\n", s.Key, s.Value)
				}
			}
		}
		return 0
	case "help", "-h", "--help":
		io.WriteString(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "portico: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// configFlag parses the -c FILE of serve and check.
func configFlag(name string, args []string, stdout, stderr io.Writer) (string, int) {
	fs := flag.NewFlagSet("portico "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", "portico.toml", "config file")
	fs.Usage = func() { fmt.Fprintf(stdout, "Usage: portico %s -c FILE\n", name) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", 0
		}
		return "", 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "portico %s: unexpected arguments %q\n", name, fs.Args())
		return "", 2
	}
	return *file, -1
}

// check validates a config file, like nginx -t: exit 0 and "FILE: OK", or
// exit 1 and every error, one a line.
func check(args []string, stdout, stderr io.Writer) int {
	file, code := configFlag("check", args, stdout, stderr)
	if code >= 0 {
		return code
	}
	if _, err := app.LoadConfig(file); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: OK\n", file)
	return 0
}

func serve(args []string, stdout, stderr io.Writer) int {
	file, code := configFlag("serve", args, stdout, stderr)
	if code >= 0 {
		return code
	}
	cfg, err := app.LoadConfig(file)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	return start(cfg, func() (*app.Config, error) { return app.LoadConfig(file) }, stderr)
}

func runApp(args []string, stdout, stderr io.Writer) int {
	cfg, err := app.ParseRun(args, stdout)
	if errors.Is(err, app.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "portico run: %v\n", err)
		return 2
	}
	return start(cfg, nil, stderr)
}

// start serves cfg until SIGTERM or SIGINT. SIGHUP calls load and serves
// the config it returns; with load nil, SIGHUP restarts the workers.
// SIGUSR1 reopens the log files (error log, access logs); so does SIGHUP
// (under serve, the reloaded config opens its access logs anew).
func start(cfg *app.Config, load func() (*app.Config, error), stderr io.Writer) int {
	out, err := newLogOutput(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "portico: %v\n", err)
		return 1
	}
	defer out.close()
	log := out.log

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP, syscall.SIGUSR1)
	defer func() { signal.Stop(hup); close(hup) }()
	reload := make(chan struct{}, 1)
	reopen := make(chan struct{}, 1)
	poke := func(c chan struct{}) {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	go func() {
		for sig := range hup {
			out.reopen()
			if sig == syscall.SIGUSR1 || load == nil {
				poke(reopen)
			}
			if sig == syscall.SIGHUP {
				poke(reload)
			}
		}
	}()

	gcCtx, gcCancel := context.WithCancel(ctx)
	waitGC := tuneGC(gcCtx)
	defer func() { gcCancel(); waitGC() }()

	if path := os.Getenv("PORTICO_CPUPROFILE"); path != "" {
		// For profiling the hot path (see BENCHMARKS.md); written at exit.
		if f, err := os.Create(path); err == nil {
			if err := pprof.StartCPUProfile(f); err == nil {
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			}
		}
	}
	if path := os.Getenv("PORTICO_MEMPROFILE"); path != "" {
		// Allocations over the whole run (go tool pprof -sample_index=alloc_space).
		defer func() {
			if f, err := os.Create(path); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	if err := app.Run(ctx, cfg, app.Options{Logger: log, Reload: reload, Reopen: reopen, Load: load, Stderr: stderr}); err != nil {
		// Said once, in the log; an import error as its traceback.
		var ie *app.ImportError
		if errors.As(err, &ie) {
			log.Error("portico stopped: the app cannot be imported", "app", ie.App, "traceback", strings.TrimRight(ie.Traceback, "\n"))
		} else {
			log.Error("portico stopped", "err", err)
		}
		if out.file != nil {
			// The log is in a file: a pointer to it where the operator looks.
			first, _, _ := strings.Cut(err.Error(), "\n")
			fmt.Fprintf(stderr, "portico: %s (see %s)\n", strings.TrimSuffix(first, ":"), out.file.Path())
		}
		return 1
	}
	return 0
}
