package app

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"portico/internal/config"
	"portico/internal/proxy"
	"portico/internal/uwsgi"
)

// proxyRoute is one proxy route of a generation, for /upstreams and
// /readyz.
type proxyRoute struct {
	site    string // the site's first host
	path    string // the route's path as configured
	handler *proxy.Handler
}

// buildProxy turns a proxy route's config into its handler. mount is the
// route's prefix ("" for "/" or a non-prefix route): uwsgi upstreams get it
// as SCRIPT_NAME, as an app route's workers do. redirect serves
// X-Accel-Redirect and X-Sendfile answers (nil: relayed as they are).
func buildProxy(px *config.Proxy, mount string, redirect func(w http.ResponseWriter, r *http.Request, status int, header http.Header), log *slog.Logger) (*proxy.Handler, error) {
	ups := make([]*proxy.Upstream, 0, len(px.Upstreams))
	family := ""
	for _, cu := range px.Upstreams {
		t, err := proxy.ParseTarget(cu.URL)
		if err != nil {
			return nil, err
		}
		family = t.Family
		rt, err := transport(t, px, mount, log)
		if err != nil {
			return nil, err
		}
		ups = append(ups, &proxy.Upstream{Name: cu.URL, Transport: rt, URL: t.URL,
			Weight: cu.Weight, MaxConns: cu.MaxConns, Backup: cu.Backup})
	}
	sel, err := proxy.NewSelector(px.Policy, px.HashKey, ups)
	if err != nil {
		return nil, err
	}
	popt := proxy.PoolOptions{MaxFails: px.MaxFails, FailTimeout: px.FailTimeout,
		QueueSize: px.QueueSize, QueueTimeout: px.QueueTimeout, Logger: log}
	if h := px.Health; h != nil {
		popt.Health = &proxy.HealthCheck{URI: h.URI, Interval: h.Interval, Timeout: h.Timeout,
			Status: h.Status, Rise: h.Rise, Fall: h.Fall}
	}
	pool := proxy.NewPool(ups, sel, popt)
	opt := proxy.Options{
		Pool:             pool,
		Timeout:          px.Timeout,
		Retries:          px.Retries,
		TryDuration:      px.TryDuration,
		Unbuffered:       !px.Buffering,
		Gateway:          family != proxy.FamilyHTTP,
		PreserveHost:     px.PreserveHost,
		MaxBody:          px.MaxBody,
		WebSocketTimeout: px.WebSocketTimeout,
		Logger:           log,
	}
	for _, h := range px.HeadersUp {
		opt.HeadersUp = append(opt.HeadersUp, proxy.HeaderOp{Name: http.CanonicalHeaderKey(h.Name), Value: h.Value, Remove: h.Remove})
	}
	if redirect != nil {
		opt.Intercept = func(r *http.Request, resp *http.Response) http.HandlerFunc {
			if resp.Header["X-Accel-Redirect"] == nil && resp.Header["X-Sendfile"] == nil {
				return nil
			}
			status, header := resp.StatusCode, resp.Header
			return func(w http.ResponseWriter, r *http.Request) { redirect(w, r, status, header) }
		}
	}
	h, err := proxy.New(opt)
	if err != nil {
		return nil, err
	}
	pool.Start()
	return h, nil
}

// transport builds the http.RoundTripper of one upstream.
func transport(t proxy.Target, px *config.Proxy, mount string, log *slog.Logger) (http.RoundTripper, error) {
	switch t.Family {
	case proxy.FamilyHTTP:
		return proxy.NewHTTPTransport(t, px.ConnectTimeout), nil
	case proxy.FamilyUWSGI:
		return &uwsgi.Transport{Network: t.Network, Address: t.Address, ScriptName: mount, DialTimeout: px.ConnectTimeout}, nil
	}
	return nil, fmt.Errorf("%s upstreams: not in this build", t.Family)
}

// describeProxy is a proxy route's line in the route table.
func describeProxy(px *config.Proxy) string {
	var urls []string
	for _, u := range px.Upstreams {
		s := u.URL
		if u.Weight != 1 {
			s += fmt.Sprintf(" weight=%d", u.Weight)
		}
		if u.MaxConns > 0 {
			s += fmt.Sprintf(" max_conns=%d", u.MaxConns)
		}
		if u.Backup {
			s += " backup"
		}
		urls = append(urls, s)
	}
	d := fmt.Sprintf("proxy %s [%s]", px.Policy, strings.Join(urls, ", "))
	if !px.Buffering {
		d += " unbuffered"
	}
	return d
}
