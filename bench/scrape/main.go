// Command scrape measures what a Prometheus scrape of portico's /metrics
// costs while portico serves a steady request rate (issue 11's closing
// note: "what a scrape of /metrics costs at 1,000 requests per second").
//
//	scrape -pid PID -target http://127.0.0.1:8000/ -metrics http://127.0.0.1:9000/metrics
//
// It sends -rate requests per second to -target for two phases of
// -phase each: without scrapes, then with -scrapes-per-second scrapes of
// -metrics (gzip, as Prometheus asks). Portico's CPU time (utime+stime of
// -pid from /proc; its workers are other processes, and a scrape never
// reaches them) is read around each phase; the difference between the
// phases divided by the number of scrapes is the CPU of one scrape. It
// also prints the scrape's duration (p50, p90, max) and size.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	pid := flag.Int("pid", 0, "portico's pid")
	target := flag.String("target", "", "URL the load goes to")
	metricsURL := flag.String("metrics", "", "URL of /metrics")
	rate := flag.Int("rate", 1000, "requests per second")
	phase := flag.Duration("phase", 20*time.Second, "length of each phase")
	sps := flag.Int("scrapes-per-second", 10, "scrapes per second in the second phase")
	flag.Parse()
	if *pid == 0 || *target == "" || *metricsURL == "" {
		flag.Usage()
		os.Exit(2)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
	// The load: every 10 ms, rate/100 requests, each in its own goroutine,
	// so that a slow answer does not lower the rate (a ticker of 1 ms drops
	// ticks: it gave 870 requests a second for 1,000).
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for range *rate / 100 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := client.Get(*target)
					if err != nil {
						failed.Add(1)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						failed.Add(1)
					}
					sent.Add(1)
				}()
			}
		}
	}()

	time.Sleep(2 * time.Second) // warm up: connections, worker caches
	c0 := cpu(*pid)
	n0 := sent.Load()
	time.Sleep(*phase)
	c1 := cpu(*pid)
	n1 := sent.Load()

	var durs []time.Duration
	var size, gzSize int
	// Compression is asked for by hand, so that the size is the gzipped one.
	scraper := &http.Transport{DisableCompression: true}
	tick := time.NewTicker(time.Second / time.Duration(*sps))
	end := time.Now().Add(*phase)
	for time.Now().Before(end) {
		<-tick.C
		req, _ := http.NewRequest("GET", *metricsURL, nil)
		req.Header.Set("Accept-Encoding", "gzip")
		start := time.Now()
		resp, err := scraper.RoundTrip(req)
		if err != nil {
			fmt.Fprintln(os.Stderr, "scrape:", err)
			os.Exit(1)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		durs = append(durs, time.Since(start))
		gzSize = len(b)
	}
	tick.Stop()
	c2 := cpu(*pid)
	n2 := sent.Load()
	if resp, err := http.Get(*metricsURL); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		size = len(b)
	}
	cancel()
	wg.Wait()

	base := c1 - c0
	with := c2 - c1
	slices.Sort(durs)
	q := func(p float64) time.Duration { return durs[int(p*float64(len(durs)-1))] }
	fmt.Printf("load: %.0f req/s without scrapes, %.0f req/s with; %d failed\n",
		float64(n1-n0)/phase.Seconds(), float64(n2-n1)/phase.Seconds(), failed.Load())
	fmt.Printf("portico CPU: %.1f%% of a core without scrapes, %.1f%% with %d scrapes/s\n",
		100*base.Seconds()/phase.Seconds(), 100*with.Seconds()/phase.Seconds(), *sps)
	fmt.Printf("one scrape: %.2f ms of CPU (over %d scrapes); duration p50 %v, p90 %v, max %v; %d bytes (%d gzipped)\n",
		float64(with-base)/float64(time.Millisecond)/float64(len(durs)), len(durs),
		q(0.5).Round(10*time.Microsecond), q(0.9).Round(10*time.Microsecond), durs[len(durs)-1].Round(10*time.Microsecond), size, gzSize)
}

// cpu returns the user+system time of pid, from /proc/PID/stat.
func cpu(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}
