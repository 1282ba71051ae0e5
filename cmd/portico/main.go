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
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"

	"portico/internal/app"
	"portico/internal/systemd"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `Usage: portico COMMAND [flags]

Commands:
  run [flags] MODULE[:CALLABLE]   serve a WSGI app with supervised Python workers
  serve -c FILE                   serve what a TOML config file describes
  check -c FILE                   validate a config file: print FILE: OK or every error
  top --admin ADDR                show the workers, queue, routes and upstreams of a running portico
  version                         print the version, Go version and build info

Run "portico help COMMAND" (or "portico COMMAND --help") for a command's flags.
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
	case "top":
		return top(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		bi, ok := debug.ReadBuildInfo()
		io.WriteString(stdout, versionText(version, bi, ok))
		return 0
	case "help", "-h", "--help":
		return help(args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "portico: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// help prints the usage, or with a command name that command's help.
func help(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		io.WriteString(stdout, usage)
		return 0
	}
	switch args[0] {
	case "run":
		io.WriteString(stdout, app.RunUsage)
	case "serve":
		io.WriteString(stdout, serveUsage)
	case "check":
		io.WriteString(stdout, checkUsage)
	case "top":
		io.WriteString(stdout, topUsage)
	case "version":
		io.WriteString(stdout, "Usage: portico version\n\nPrint the version, the VCS revision and time it was built from, and the Go version.\n")
	default:
		fmt.Fprintf(stderr, "portico help: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	return 0
}

// configFlag parses the flags of serve and check: -c FILE and --python
// PATH; text is the command's help.
func configFlag(name, text string, args []string, stdout, stderr io.Writer, python *string) (string, int) {
	fs := flag.NewFlagSet("portico "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", "portico.toml", "config file")
	fs.StringVar(python, "python", "", "interpreter for every app's workers")
	fs.Usage = func() { io.WriteString(stdout, text) }
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
	var python string
	file, code := configFlag("check", checkUsage, args, stdout, stderr, &python)
	if code >= 0 {
		return code
	}
	if _, err := app.LoadConfigPython(file, python); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: OK\n", file)
	return 0
}

func serve(args []string, stdout, stderr io.Writer) int {
	var python string
	file, code := configFlag("serve", serveUsage, args, stdout, stderr, &python)
	if code >= 0 {
		return code
	}
	load := func() (*app.Config, error) { return app.LoadConfigPython(file, python) }
	cfg, err := load()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	return start(cfg, load, stderr)
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
	// systemd: Type=notify readiness and socket activation. Both read
	// their variables and unset them, so the workers see neither.
	notify, err := systemd.NotifierFromEnv()
	if err != nil {
		log.Warn("not notifying systemd", "err", err)
	}
	inherited, err := systemd.Listeners()
	if err != nil {
		log.Warn("ignoring a socket systemd passed", "err", err)
	}
	if err := app.Run(ctx, cfg, app.Options{Logger: log, Reload: reload, Reopen: reopen, Load: load, Stderr: stderr, Version: version, Notify: notify, Inherited: inherited, OnIdleDrop: releaseIdleMemory}); err != nil {
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
