// Command slowprobe sends plain GET requests to a server at a steady pace,
// each on a new connection, for a while, and reports how many were
// answered and how fast: the probe of bench/slowclients.sh, which runs it
// while slowhttptest holds thousands of slow connections open against the
// same server.
//
//	slowprobe -url http://127.0.0.1:18000/ -duration 20s -every 50ms
//
// Output, one line on stdout:
//
//	probes N answered A failed F p50 X p99 Y max Z
//
// A probe is answered when the server returns 200 within -timeout. The
// exit status is 1 when a probe failed (each failure is also printed on
// stderr, with its cause), 2 on bad flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"
)

func main() {
	url := flag.String("url", "", "URL to GET (required)")
	duration := flag.Duration("duration", 20*time.Second, "how long to probe")
	every := flag.Duration("every", 50*time.Millisecond, "interval between two probes")
	timeout := flag.Duration("timeout", 5*time.Second, "a probe not answered in this time fails")
	flag.Parse()
	if *url == "" || *duration <= 0 || *every <= 0 || *timeout <= 0 {
		fmt.Fprintln(os.Stderr, "slowprobe: -url, and positive -duration, -every and -timeout, are required")
		os.Exit(2)
	}
	client := &http.Client{
		Timeout:   *timeout,
		Transport: &http.Transport{DisableKeepAlives: true}, // a new client each time
	}
	var (
		mu        sync.Mutex
		latencies []time.Duration
		failed    int
		wg        sync.WaitGroup
	)
	probe := func() {
		start := time.Now()
		err := get(client, *url)
		d := time.Since(start)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed++
			fmt.Fprintf(os.Stderr, "slowprobe: probe failed after %v: %v\n", d.Round(time.Millisecond), err)
			return
		}
		latencies = append(latencies, d)
	}
	t := time.NewTicker(*every)
	defer t.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	sent := 0
loop:
	for {
		wg.Go(probe)
		sent++
		select {
		case <-ctx.Done():
			break loop
		case <-t.C:
		}
	}
	wg.Wait()
	slices.Sort(latencies)
	fmt.Printf("probes %d answered %d failed %d p50 %s p99 %s max %s\n", sent, len(latencies), failed,
		quantile(latencies, 0.50), quantile(latencies, 0.99), quantile(latencies, 1))
	if failed > 0 {
		os.Exit(1)
	}
}

func get(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("reading the body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// quantile returns the q-quantile of sorted latencies, rounded to 0.1 ms;
// "-" when there are none.
func quantile(sorted []time.Duration, q float64) string {
	if len(sorted) == 0 {
		return "-"
	}
	i := min(int(q*float64(len(sorted)-1)+0.5), len(sorted)-1)
	return sorted[i].Round(100 * time.Microsecond).String()
}
