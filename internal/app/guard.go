package app

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"portico/internal/access"
	"portico/internal/config"
	"portico/internal/waf"
)

// guard wraps a route's handler in its protections, outermost first: the
// IP rules (the site's, then the route's; the cheapest refusal first),
// then the WAF. wafs holds the generation's WAFs by settings, so that
// routes with the same settings share one loaded rule set; a WAF it loads
// gets its Close in closers (run when the generation retires).
func guard(r *route, rc config.Route, siteCfg config.Access, site *access.List, wafs map[string]*waf.WAF, closers *[]func(), log *slog.Logger) error {
	if rc.WAF != nil {
		opt := waf.Options{Mode: rc.WAF.Mode, Paranoia: rc.WAF.Paranoia, AnomalyThreshold: rc.WAF.AnomalyThreshold,
			ExcludeRules: rc.WAF.ExcludeRules, Logger: log}
		key := opt.Key()
		w := wafs[key]
		if w == nil {
			var err error
			if w, err = waf.New(opt); err != nil {
				return err
			}
			wafs[key] = w
			*closers = append(*closers, func() { _ = w.Close() })
			log.Info("waf rules loaded", "mode", opt.Mode, "paranoia", rc.WAF.Paranoia,
				"anomaly_threshold", rc.WAF.AnomalyThreshold, "exclude_rules", rc.WAF.ExcludeRules,
				"load_time", w.LoadTime.Round(time.Millisecond).String())
		}
		// Apps and proxies (and a static route falling through to an app)
		// spool the body: the WAF reads it there. A request with a body
		// that such a route answers without a proxy (a static file of a
		// fallthrough or FastCGI route) runs no code and skips phase 2.
		deferred := rc.App != "" || rc.Proxy != nil || rc.Static != nil && rc.Static.Fallthrough != ""
		r.h = w.Middleware(r.h, deferred)
		r.desc += fmt.Sprintf(" waf=%s/p%d/t%d", rc.WAF.Mode, rc.WAF.Paranoia, rc.WAF.AnomalyThreshold)
		if len(rc.WAF.ExcludeRules) > 0 {
			r.desc += fmt.Sprintf(" exclude=%v", rc.WAF.ExcludeRules)
		}
	}
	routeAccess, err := access.ParseList("route", rc.Allow, rc.Deny)
	if err != nil {
		return err
	}
	if rules := access.New(site, routeAccess); rules != nil {
		r.h = rules.Middleware(r.h, log)
		for _, l := range []struct {
			name string
			a    config.Access
		}{{"site", siteCfg}, {"route", rc.Access}} {
			if len(l.a.Allow) > 0 {
				r.desc += fmt.Sprintf(" %s_allow=[%s]", l.name, strings.Join(l.a.Allow, " "))
			}
			if len(l.a.Deny) > 0 {
				r.desc += fmt.Sprintf(" %s_deny=[%s]", l.name, strings.Join(l.a.Deny, " "))
			}
		}
	}
	return nil
}
