package app

import (
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"

	"portico/internal/config"
	"portico/internal/fastcgi"
	"portico/internal/proxy"
	"portico/internal/static"
	"portico/internal/uwsgi"
)

// proxyRoute is one proxy route of a generation, for /upstreams and
// /readyz.
type proxyRoute struct {
	site    string // the site's first host
	path    string // the route's path as configured
	route   string // the route's name or index, for the metrics
	handler *proxy.Handler
}

// buildProxy turns a proxy route's config into its handler. mount is the
// route's prefix ("" for "/" or a non-prefix route): uwsgi upstreams get it
// as SCRIPT_NAME, as an app route's workers do. redirect serves
// X-Accel-Redirect and X-Sendfile answers (nil: relayed as they are);
// head sees each upstream response's header first (the bans; nil: none).
func buildProxy(px *config.Proxy, mount string, redirect func(w http.ResponseWriter, r *http.Request, status int, header http.Header), head func(*http.Request, http.Header), log *slog.Logger) (*proxy.Handler, error) {
	ups := make([]*proxy.Upstream, 0, len(px.Upstreams))
	family := ""
	for _, cu := range px.Upstreams {
		t, err := proxy.ParseTarget(cu.URL)
		if err != nil {
			return nil, err
		}
		family = t.Family
		maxConns := cu.MaxConns
		if family == proxy.FamilyFastCGI && maxConns == 0 {
			maxConns = config.DefaultFastCGIMaxConns
		}
		rt, err := transport(t, px, mount, maxConns, log)
		if err != nil {
			return nil, err
		}
		ups = append(ups, &proxy.Upstream{Name: cu.URL, Transport: rt, URL: t.URL,
			Weight: cu.Weight, MaxConns: maxConns, Backup: cu.Backup})
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
		ResponseHead:     head,
		Logger:           log,
	}
	for _, h := range px.HeadersUp {
		opt.HeadersUp = append(opt.HeadersUp, proxy.HeaderOp{Name: http.CanonicalHeaderKey(h.Name), Value: h.Value, Remove: h.Remove})
	}
	if redirect != nil {
		opt.Intercept = proxy.AccelRedirect(redirect)
	}
	h, err := proxy.New(opt)
	if err != nil {
		return nil, err
	}
	pool.Start()
	return h, nil
}

// transport builds the http.RoundTripper of one upstream.
func transport(t proxy.Target, px *config.Proxy, mount string, maxConns int, log *slog.Logger) (http.RoundTripper, error) {
	switch t.Family {
	case proxy.FamilyHTTP:
		return proxy.NewHTTPTransport(t, px.ConnectTimeout), nil
	case proxy.FamilyUWSGI:
		return &uwsgi.Transport{Network: t.Network, Address: t.Address, ScriptName: mount, DialTimeout: px.ConnectTimeout}, nil
	case proxy.FamilyFastCGI:
		root, err := filepath.Abs(px.Root)
		if err != nil {
			return nil, err
		}
		// php-fpm gives a kept connection one of its children for as long
		// as it is open: never more connections than max_conns, which
		// stands for pm.max_children, or a new one would wait in php-fpm's
		// backlog behind idle ones.
		return &fastcgi.Transport{Network: t.Network, Address: t.Address, Root: root, SplitPath: px.SplitPath,
			Prefix: mount, DialTimeout: px.ConnectTimeout, MaxConns: maxConns, MaxIdleConns: maxConns, Logger: log}, nil
	}
	return nil, fmt.Errorf("proxy: unknown upstream family %q", t.Family)
}

// buildRoute is buildProxy for a route: a FastCGI route also serves the
// static files of its root (phpRoute). The returned func closes what the
// route holds (health checks, the static handler).
func buildRoute(px *config.Proxy, mount string, redirect func(w http.ResponseWriter, r *http.Request, status int, header http.Header), head func(*http.Request, http.Header), log *slog.Logger) (http.Handler, *proxy.Handler, func(), error) {
	h, err := buildProxy(px, mount, redirect, head, log)
	if err != nil {
		return nil, nil, nil, err
	}
	t, _ := proxy.ParseTarget(px.Upstreams[0].URL)
	if t.Family != proxy.FamilyFastCGI {
		return h, h, h.Pool().Stop, nil
	}
	index := px.Index
	if index == nil {
		index = []string{"index.php"}
	}
	files, err := static.New(static.Options{Root: px.Root, Prefix: mount, Index: []string{}, Logger: log})
	if err != nil {
		h.Pool().Stop()
		return nil, nil, nil, err
	}
	closeAll := func() {
		h.Pool().Stop()
		files.Close()
	}
	return &phpRoute{root: px.Root, index: index, split: px.SplitPath, prefix: mount, files: files, php: h}, h, closeAll, nil
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
