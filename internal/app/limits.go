package app

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"

	"portico/internal/config"
	"portico/internal/limit"
)

// The limits of a route, in the order a request meets them (nginx's
// preaccess phase, where limit_req runs before limit_conn): the site's
// rate limit, the route's, then the site's requests-in-progress limit,
// the route's, then the route's handler. Rate limits come first so that a
// refused request never holds a place counted by limit_conn. The metrics
// middleware (instrument) wraps them all, so refusals are counted and
// timed as the route's requests.

// limitCounter counts one limit's refusals on one route (the metric
// portico_limit_rejected_total{site,route,limit}).
type limitCounter struct {
	limit string // "site.limit_req", "route.limit_conn", ...
	n     *atomic.Int64
}

// siteLimits are the limits of a site, shared by its routes (one budget
// per key across them, as nginx's zone in a server block).
type siteLimits struct {
	site      string // the site's first host, for Redis keys
	req       *limit.Limiter
	reqKey    limit.Key
	conn      *limit.Concurrency
	connKey   limit.Key
	closeFunc func()
}

// newSiteLimits builds the limits of sc; close releases their stores.
func newSiteLimits(sc config.Site, log *slog.Logger) (*siteLimits, error) {
	sl := &siteLimits{site: sc.Hosts[0], closeFunc: func() {}}
	var err error
	if sc.LimitReq != nil {
		sl.req, sl.reqKey, sl.closeFunc, err = newRateLimit(sc.LimitReq, "portico:limit_req:"+sl.site+":", log)
		if err != nil {
			return nil, fmt.Errorf("site %s: limit_req: %w", sl.site, err)
		}
	}
	if sc.LimitConn != nil {
		sl.conn, sl.connKey, err = newConcurrencyLimit(sc.LimitConn)
		if err != nil {
			sl.closeFunc()
			return nil, fmt.Errorf("site %s: limit_conn: %w", sl.site, err)
		}
	}
	return sl, nil
}

func newRateLimit(c *config.LimitReq, prefix string, log *slog.Logger) (*limit.Limiter, limit.Key, func(), error) {
	rate, err := limit.ParseRate(c.Rate)
	if err != nil {
		return nil, limit.Key{}, nil, err
	}
	key, err := limit.ParseKey(c.Key)
	if err != nil {
		return nil, limit.Key{}, nil, err
	}
	opt := limit.Options{Rate: rate, Burst: c.Burst, Delay: c.Delay, MaxKeys: c.MaxKeys}
	closeFunc := func() {}
	if c.Store != "" {
		st, err := limit.NewRedisStore(limit.RedisOptions{URL: c.Store, Prefix: prefix, Logger: log})
		if err != nil {
			return nil, limit.Key{}, nil, err
		}
		opt.Store, closeFunc = st, func() { st.Close() }
	}
	l, err := limit.New(opt)
	if err != nil {
		closeFunc()
		return nil, limit.Key{}, nil, err
	}
	return l, key, closeFunc, nil
}

func newConcurrencyLimit(c *config.LimitConn) (*limit.Concurrency, limit.Key, error) {
	key, err := limit.ParseKey(c.Key)
	if err != nil {
		return nil, limit.Key{}, err
	}
	cl, err := limit.NewConcurrency(c.Max)
	return cl, key, err
}

// wrapLimits puts the limits of its site (sl) and of rc around r's
// handler, in the order above, and records their counters in r.limits.
// The returned func releases the route's own stores.
func wrapLimits(r *route, sl *siteLimits, rc config.Route, log *slog.Logger) (func(), error) {
	var req *limit.Limiter
	var reqKey limit.Key
	closeFunc := func() {}
	if rc.LimitReq != nil {
		var err error
		req, reqKey, closeFunc, err = newRateLimit(rc.LimitReq, "portico:limit_req:"+sl.site+":"+r.label+":", log)
		if err != nil {
			return nil, fmt.Errorf("route %q: limit_req: %w", rc.Path, err)
		}
	}
	var conn *limit.Concurrency
	var connKey limit.Key
	if rc.LimitConn != nil {
		var err error
		if conn, connKey, err = newConcurrencyLimit(rc.LimitConn); err != nil {
			closeFunc()
			return nil, fmt.Errorf("route %q: limit_conn: %w", rc.Path, err)
		}
	}
	wrap := func(name string, key limit.Key, mw func(limit.HTTPOptions) func(http.Handler) http.Handler) {
		c := limitCounter{limit: name, n: new(atomic.Int64)}
		r.limits = append(r.limits, c)
		r.h = mw(limit.HTTPOptions{Key: key, Route: r.label, Name: name, Logger: log, Rejected: c.n})(r.h)
	}
	// Innermost first.
	if conn != nil {
		wrap("route.limit_conn", connKey, conn.Middleware)
	}
	if sl.conn != nil {
		wrap("site.limit_conn", sl.connKey, sl.conn.Middleware)
	}
	if req != nil {
		wrap("route.limit_req", reqKey, req.Middleware)
	}
	if sl.req != nil {
		wrap("site.limit_req", sl.reqKey, sl.req.Middleware)
	}
	return closeFunc, nil
}

// listenerLimits wraps nl, a listener just opened for lc, in the
// connection limits of lc, or returns nil when it has none. The wrapper
// sits on the raw socket, under the PROXY protocol and TLS ones, so that
// a refused connection costs no handshake; its peer is then the immediate
// one, which is why config refuses limit_conn on proxy_protocol and uwsgi
// listeners. A connection of a limited listener is a wrapped one: the
// server serves its static files with a copy, not sendfile.
func listenerLimits(cfg *config.Config, lc config.Listener, nl net.Listener, log *slog.Logger) *limit.Listener {
	max := cfg.ListenerMaxConnections(lc)
	if lc.LimitConn <= 0 && max <= 0 {
		return nil
	}
	return limit.NewListener(nl, limit.ListenerOptions{PerAddr: lc.LimitConn, Max: max, Logger: log})
}

// checkListenerLimits refuses a config that puts connection limits on a
// listener that stays open without them: the limits wrap a listener when
// it opens.
func (e *engine) checkListenerLimits(cfg *config.Config) error {
	for i, key := range listenerKeys(cfg) {
		lc := cfg.Listeners[i]
		if l := e.listeners[key]; l != nil && l.limits == nil && (lc.LimitConn > 0 || cfg.ListenerMaxConnections(lc) > 0) {
			return fmt.Errorf("app: limit_conn or max_connections added to the open listener %s; restart portico to apply it", lc.Addr)
		}
	}
	return nil
}

// setListenerLimits gives the open listeners of cfg their connection
// limits (a reload may change them; zero lifts them).
func (e *engine) setListenerLimits(cfg *config.Config) {
	for i, key := range listenerKeys(cfg) {
		if l := e.listeners[key]; l != nil && l.limits != nil {
			lc := cfg.Listeners[i]
			l.limits.SetLimits(lc.LimitConn, cfg.ListenerMaxConnections(lc))
		}
	}
}
