package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"

	"portico/internal/app"
)

const topUsage = `Usage: portico top --admin ADDR [--interval 1s] [--once]

Shows what a running portico is doing, from its admin listener's GET /status
(uwsgitop's successor): per app its workers (pid, state, requests served,
memory, the request each runs and for how long) and queue, each route's
requests per second and p50/p99 latency over the last minute, and each proxy
route's upstreams. The screen is redrawn every interval; Ctrl-C quits.

Flags:
`

// top is the `portico top` command.
func top(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("portico top", flag.ContinueOnError)
	fs.SetOutput(stderr)
	admin := fs.String("admin", "", "the admin listener (the [admin] addr): `ADDR` as host:port or unix:/path")
	interval := fs.Duration("interval", time.Second, "redraw every `DURATION`")
	once := fs.Bool("once", false, "print one snapshot as plain text (no terminal escapes) and exit")
	fs.Usage = func() {
		fs.SetOutput(stdout)
		io.WriteString(stdout, topUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "portico top: unexpected arguments %q\n", fs.Args())
		return 2
	case *admin == "":
		fmt.Fprintln(stderr, "portico top: --admin ADDR is required (the [admin] addr of the running portico)")
		return 2
	case *interval <= 0:
		fmt.Fprintf(stderr, "portico top: --interval %v: must be positive\n", *interval)
		return 2
	}
	c := newAdminClient(*admin, min(*interval, 5*time.Second)+time.Second)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *once {
		st, err := c.status(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "portico top: %v\n", err)
			return 1
		}
		var b bytes.Buffer
		renderTop(&b, st)
		stdout.Write(b.Bytes())
		return 0
	}
	t := time.NewTicker(*interval)
	defer t.Stop()
	for {
		var b bytes.Buffer
		b.WriteString("\x1b[H\x1b[2J") // cursor home, clear the screen
		st, err := c.status(ctx)
		switch {
		case ctx.Err() != nil:
			return 0
		case err != nil:
			fmt.Fprintf(&b, "portico top: %v (retrying every %v)\n", err, *interval)
		default:
			renderTop(&b, st)
		}
		stdout.Write(b.Bytes())
		select {
		case <-ctx.Done():
			return 0
		case <-t.C:
		}
	}
}

// adminClient fetches GET /status from an admin listener.
type adminClient struct {
	http *http.Client
	url  string
}

// newAdminClient makes a client for addr: host:port or unix:/path.
func newAdminClient(addr string, timeout time.Duration) *adminClient {
	tr := &http.Transport{}
	base := "http://" + addr
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		base = "http://admin"
	}
	return &adminClient{http: &http.Client{Transport: tr, Timeout: timeout}, url: base + "/status"}
}

func (c *adminClient) status(ctx context.Context) (*app.Status, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching status: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching status: %s answered %s", c.url, resp.Status)
	}
	var st app.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("decoding status from %s: %w", c.url, err)
	}
	return &st, nil
}

// renderTop writes one snapshot as plain text.
func renderTop(w io.Writer, st *app.Status) {
	s := st.Server
	var workers, busy, queued int
	for _, a := range st.Apps {
		workers += len(a.Workers)
		queued += a.Queued
		for _, wk := range a.Workers {
			if wk.State == "busy" {
				busy++
			}
		}
	}
	var rps float64
	for _, r := range st.Routes {
		rps += r.RPS
	}
	version := s.Version
	if version == "" {
		version = "?"
	}
	fmt.Fprintf(w, "portico %s  pid %d  up %s  reloads %d  apps %d  workers %d (%d busy)  queued %d  %.1f req/s  %s",
		version, s.PID, humanSeconds(s.Uptime), s.Reloads, len(st.Apps), workers, busy, queued, rps, s.Now.Local().Format(time.TimeOnly))
	if s.Draining {
		io.WriteString(w, "  STOPPING")
	}
	io.WriteString(w, "\n")

	for _, a := range st.Apps {
		fmt.Fprintf(w, "\napp %s  %s  %d workers x %d threads  timeout %s  queue %d/%d\n",
			printable(a.Name), printable(a.Module), a.ConfiguredWorkers, a.Threads, humanSeconds(a.Timeout), a.Queued, a.QueueSize)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  ID\tPID\tSTATE\tREQUESTS\tRSS MiB\tUPTIME\tELAPSED\tREQUEST")
		for _, wk := range a.Workers {
			rss := "-"
			if wk.RSS > 0 {
				rss = fmt.Sprintf("%.1f", float64(wk.RSS)/(1<<20))
			}
			elapsed, request := "-", "-"
			if len(wk.Current) > 0 {
				elapsed, request = humanSeconds(wk.Current[0].Elapsed), printable(wk.Current[0].Method+" "+wk.Current[0].URI)
			}
			fmt.Fprintf(tw, "  %d\t%d\t%s\t%d\t%s\t%s\t%s\t%s\n", wk.ID, wk.PID, wk.State, wk.Requests, rss, humanSeconds(wk.Uptime), elapsed, request)
			// More threads busy: one line per further request.
			for _, c := range wk.Current[min(1, len(wk.Current)):] {
				fmt.Fprintf(tw, "  \t\t\t\t\t\t%s\t%s\n", humanSeconds(c.Elapsed), printable(c.Method+" "+c.URI))
			}
		}
		tw.Flush()
	}

	io.WriteString(w, "\nroutes (last minute)\n")
	if len(st.Routes) == 0 {
		io.WriteString(w, "  no route traffic recorded\n")
	} else {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  SITE\tROUTE\tREQUESTS\tREQ/S\tP50 MS\tP99 MS")
		for _, r := range st.Routes {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%.2f\t%.2f\t%.2f\n", printable(r.Site), printable(r.Route), r.Requests, r.RPS, r.P50, r.P99)
		}
		tw.Flush()
	}

	for _, p := range st.Proxies {
		fmt.Fprintf(w, "\nupstreams %s %s  queued %d\n", printable(p.Site), printable(p.Route), p.Queued)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  UPSTREAM\tHEALTH\tIN FLIGHT\tREQUESTS\tFAILURES\tRETRIES\tLATENCY MS")
		for _, u := range p.Upstreams {
			health := "down"
			if u.Healthy {
				health = "up"
			}
			name := printable(u.Name)
			if u.Backup {
				name += " (backup)"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\t%d\t%.2f\n", name, health, u.InFlight, u.Requests, u.Failures, u.Retries, u.LatencyMS)
		}
		tw.Flush()
	}
}

// humanSeconds formats a duration in seconds briefly: 4.2s, 3m05s, 2h10m, 3d4h.
func humanSeconds(s float64) string {
	switch {
	case s < 10:
		return strconv.FormatFloat(s, 'f', 1, 64) + "s"
	case s < 60:
		return strconv.Itoa(int(s)) + "s"
	}
	m := int(s) / 60
	switch {
	case m < 60:
		return fmt.Sprintf("%dm%02ds", m, int(s)%60)
	case m < 24*60:
		return fmt.Sprintf("%dh%02dm", m/60, m%60)
	}
	return fmt.Sprintf("%dd%dh", m/(24*60), m/60%24)
}

// printable escapes control characters (a request URI comes from a
// client: it must not move the cursor or recolour the terminal) and tabs
// (they would break the columns).
func printable(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	return q[1 : len(q)-1]
}
