package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// LimitReq limits the rate of requests, per key (nginx's limit_req_zone
// and limit_req). In a [[site]] it applies to every route of the site,
// one budget per key across them; in a route, to that route; both may
// apply. TOML: limit_req = { rate = "10r/s", burst = 20, key = "ip",
// delay = false }.
type LimitReq struct {
	// Rate is the sustained rate per key: "10r/s" or "30r/m" (nginx's
	// rate=). Required.
	Rate string
	// Burst is how many requests beyond the rate a key may send at once
	// (nginx's burst=): Burst+1 pass at once, then one per 1/rate; past
	// it, 429 with Retry-After. Default 0.
	Burst int
	// Key is what the limit counts by: "ip" (the client address after
	// trusted_proxies; nginx's $binary_remote_addr), "header:NAME",
	// "cookie:NAME" (a request without it is not limited, as in nginx), or
	// "route" (one budget for all clients of the route). Default "ip".
	Key string
	// Delay makes requests beyond the rate but within the burst wait for
	// their turn (nginx's limit_req without nodelay). Default false: they
	// pass at once (nginx's nodelay).
	Delay bool
	// Store is where the limit's state lives: "" (memory, per process) or
	// "redis://host:6379/0" (shared by every node using that Redis; an
	// unreachable Redis lets requests pass, logged once per outage).
	// Default "".
	Store string
	// MaxKeys bounds the keys kept in memory (an LRU; an evicted key
	// starts afresh; nginx bounds by the zone's size). Default 100000.
	MaxKeys int
}

// DefaultLimitKeys is LimitReq.MaxKeys when none is given (the LRU's
// capacity; limit.DefaultMaxKeys).
const DefaultLimitKeys = 100_000

// maxLimitKeys is the largest MaxKeys: positions in the LRU are int32.
const maxLimitKeys = 1 << 30

// LimitConn limits the requests in progress, per key (nginx's limit_conn
// in a server or location, which counts requests being processed). Past
// it, 503 (nginx's default limit_conn_status). TOML: limit_conn =
// { key = "ip", max = 10 }.
type LimitConn struct {
	// Key is what the limit counts by, as LimitReq.Key. Default "ip".
	Key string
	// Max is the requests of one key in progress at once. Required (≥ 1).
	Max int
}

// ParseRate parses a rate: "10r/s" or "30r/m" (nginx's syntax), N a
// positive integer; it returns N and its period.
func ParseRate(s string) (int, time.Duration, error) {
	num, unit, ok := strings.Cut(strings.TrimSpace(s), "r/")
	n, err := strconv.Atoi(num)
	if !ok || err != nil || n <= 0 || (unit != "s" && unit != "m") {
		return 0, 0, fmt.Errorf("%q is not a rate like \"10r/s\" or \"30r/m\"", s)
	}
	if unit == "m" {
		return n, time.Minute, nil
	}
	return n, time.Second, nil
}

// checkLimitKey accepts "ip", "header:NAME", "cookie:NAME" and "route".
func checkLimitKey(s string) error {
	kind, name, _ := strings.Cut(s, ":")
	switch {
	case s == "ip" || s == "route":
		return nil
	case (kind == "header" || kind == "cookie") && name != "":
		return nil
	}
	return fmt.Errorf("%q is not \"ip\", \"header:NAME\", \"cookie:NAME\" or \"route\"", s)
}

const (
	limitReqKeys  = "rate, burst, key, delay, store, max_keys"
	limitConnKeys = "key, max"
)

// limits decodes a site's or route's limit_req and limit_conn tables.
func (d *decoder) limits(t *value, p string, req **LimitReq, conn **LimitConn) {
	if lt := d.get(t, p, "limit_req", kTable); lt != nil {
		lp := p + ".limit_req"
		l := &LimitReq{Key: "ip", MaxKeys: DefaultLimitKeys}
		d.str(lt, lp, "rate", &l.Rate)
		if _, ok := lt.tab["rate"]; !ok {
			d.bad(lp+".rate", lt.line, `missing: a rate like "10r/s" or "30r/m"`)
		}
		d.integer(lt, lp, "burst", &l.Burst)
		d.str(lt, lp, "key", &l.Key)
		d.boolean(lt, lp, "delay", &l.Delay)
		d.str(lt, lp, "store", &l.Store)
		d.integer(lt, lp, "max_keys", &l.MaxKeys)
		d.unknown(lt, lp, limitReqKeys)
		*req = l
	}
	if ct := d.get(t, p, "limit_conn", kTable); ct != nil {
		cp := p + ".limit_conn"
		l := &LimitConn{Key: "ip"}
		d.str(ct, cp, "key", &l.Key)
		d.integer(ct, cp, "max", &l.Max)
		if _, ok := ct.tab["max"]; !ok {
			d.bad(cp+".max", ct.line, "missing: the requests of one key in progress at once")
		}
		d.unknown(ct, cp, limitConnKeys)
		*conn = l
	}
}

// listenerLimits decodes a [[listener]]'s limit_conn and max_connections.
func (d *decoder) listenerLimits(t *value, p string, l *Listener) {
	d.integer(t, p, "limit_conn", &l.LimitConn)
	d.integer(t, p, "max_connections", &l.MaxConnections)
}

// validateLimits checks every limit of c.
func (c *Config) validateLimits(errs *[]error) {
	bad := func(key, format string, args ...any) {
		*errs = append(*errs, c.errorAt(key, format, args...))
	}
	if c.MaxConnections < 0 {
		bad("max_connections", "must not be negative")
	}
	for i, l := range c.Listeners {
		key := fmt.Sprintf("listener[%d]", i)
		if l.MaxConnections < 0 {
			bad(key+".max_connections", "must not be negative")
		}
		switch {
		case l.LimitConn < 0:
			bad(key+".limit_conn", "must not be negative")
		case l.LimitConn > 0 && l.ProxyProtocol:
			bad(key+".limit_conn", "cannot count by client address on a proxy_protocol listener: the client is known only after the PROXY header (each connection's peer is the load balancer); use a site's limit_conn = { key = \"ip\", max = N }, which sees the real client")
		case l.LimitConn > 0 && l.Protocol == ProtoUWSGI:
			bad(key+".limit_conn", "cannot count by client address on a uwsgi listener (each connection's peer is the nginx in front); use a site's limit_conn = { key = \"ip\", max = N }")
		}
	}
	check := func(key string, req *LimitReq, conn *LimitConn) {
		if req != nil {
			if _, _, err := ParseRate(req.Rate); err != nil {
				bad(key+".limit_req.rate", "%v", err)
			}
			if req.Burst < 0 {
				bad(key+".limit_req.burst", "must not be negative")
			}
			if err := checkLimitKey(req.Key); err != nil {
				bad(key+".limit_req.key", "%v", err)
			}
			if req.MaxKeys < 1 || req.MaxKeys > maxLimitKeys {
				bad(key+".limit_req.max_keys", "must be between 1 and %d, not %d", maxLimitKeys, req.MaxKeys)
			}
			if req.Store != "" && !strings.HasPrefix(req.Store, "redis://") && !strings.HasPrefix(req.Store, "rediss://") && !strings.HasPrefix(req.Store, "unix://") {
				bad(key+".limit_req.store", "%q is not a Redis URL (redis://host:6379/0, rediss://..., unix:///path)", req.Store)
			}
		}
		if conn != nil {
			if err := checkLimitKey(conn.Key); err != nil {
				bad(key+".limit_conn.key", "%v", err)
			}
			if conn.Max < 1 {
				bad(key+".limit_conn.max", "must be at least 1, not %d", conn.Max)
			}
		}
	}
	for i, s := range c.Sites {
		key := fmt.Sprintf("site[%d]", i)
		check(key, s.LimitReq, s.LimitConn)
		for j, r := range s.Routes {
			check(fmt.Sprintf("%s.route[%d]", key, j), r.LimitReq, r.LimitConn)
		}
	}
}

// ListenerMaxConnections is the max_connections of listener l: its own,
// else the top-level default.
func (c *Config) ListenerMaxConnections(l Listener) int {
	if l.MaxConnections > 0 {
		return l.MaxConnections
	}
	return c.MaxConnections
}
