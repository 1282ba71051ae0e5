package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// HealthCheck configures active health checks: every Interval each
// upstream gets a GET of URI; Rise good answers in a row bring a failing
// upstream back, Fall bad ones in a row take it out. (nginx has them only
// in its commercial edition; HAProxy's rise and fall are the model.)
type HealthCheck struct {
	// URI is the path (and query) requested. Required.
	URI string
	// Interval between two checks of an upstream. Zero: 5s.
	Interval time.Duration
	// Timeout bounds one check, connection included. Zero: 2s.
	Timeout time.Duration
	// Status is the status a healthy upstream answers. Zero: any 2xx.
	Status int
	// Rise is the number of good checks in a row that bring an upstream
	// back. Zero: 2.
	Rise int
	// Fall is the number of bad checks in a row that take it out. Zero: 3.
	Fall int
	// Host is the Host header of the checks. Empty: the upstream's.
	Host string
}

func (h *HealthCheck) setDefaults() {
	if h.Interval <= 0 {
		h.Interval = 5 * time.Second
	}
	if h.Timeout <= 0 {
		h.Timeout = 2 * time.Second
	}
	if h.Rise <= 0 {
		h.Rise = 2
	}
	if h.Fall <= 0 {
		h.Fall = 3
	}
}

// Start begins the active health checks, if any are configured: the first
// round at once, then one every Interval. Stop ends them.
func (p *Pool) Start() {
	if p.opt.Health == nil || p.stop != nil {
		return
	}
	hc := *p.opt.Health
	hc.setDefaults()
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(p.done)
		t := time.NewTicker(hc.Interval)
		defer t.Stop()
		for {
			p.checkAll(&hc)
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
		}
	}()
}

// Stop ends the active health checks and waits for them; the transports'
// idle connections are closed.
func (p *Pool) Stop() {
	if p.stop != nil {
		close(p.stop)
		<-p.done
		p.stop = nil
	}
	for _, u := range p.Upstreams() {
		if c, ok := u.Transport.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
	}
}

// checkAll checks every upstream once, in parallel, and waits.
func (p *Pool) checkAll(hc *HealthCheck) {
	var wg sync.WaitGroup
	for _, u := range p.Upstreams() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := p.check(u, hc)
			cause := ""
			if err != nil {
				cause = err.Error()
			}
			u.checked(err == nil, hc.Rise, hc.Fall, p.log, cause)
		}()
	}
	wg.Wait()
}

// check sends one health check to u.
func (p *Pool) check(u *Upstream, hc *HealthCheck) error {
	ctx, cancel := context.WithTimeout(context.Background(), hc.Timeout)
	defer cancel()
	target := *u.URL
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.Scheme+"://"+target.Host+hc.URI, nil)
	if err != nil {
		return err
	}
	if hc.Host != "" {
		req.Host = hc.Host
	}
	req.Header.Set("User-Agent", "portico-health-check")
	req.RemoteAddr = "127.0.0.1:0"
	resp, err := u.Transport.RoundTrip(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if hc.Status != 0 && resp.StatusCode != hc.Status {
		return fmt.Errorf("status %d, want %d", resp.StatusCode, hc.Status)
	}
	if hc.Status == 0 && (resp.StatusCode < 200 || resp.StatusCode > 299) {
		return fmt.Errorf("status %d, want 2xx", resp.StatusCode)
	}
	return nil
}
