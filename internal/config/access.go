package config

import (
	"fmt"
	"slices"

	"portico/internal/access"
)

// Access are the allow and deny lists of a site or a route (nginx's allow
// and deny). Entries are CIDR prefixes ("10.0.0.0/8", "2001:db8::/32"),
// bare addresses ("203.0.113.7") or "unix" (peers on Unix-socket
// listeners). They judge the real client address, after trusted_proxies.
//
// Order: deny wins (an address in Deny is refused whatever Allow says); a
// non-empty Allow refuses every address not in it; empty lists allow
// everyone. A route's lists apply on top of its site's: a client must pass
// both. nginx runs its allow/deny lines in order, first match wins: its
// "allow 10.0.0.0/8; deny all;" is allow = ["10.0.0.0/8"] here.
type Access struct {
	// Allow: when not empty, only these clients. Default empty (everyone).
	Allow []string
	// Deny: these clients are refused (403). Default empty (nobody).
	Deny []string
}

// WAF modes.
const (
	WAFBlock  = "block"
	WAFDetect = "detect"
)

// Defaults of a [site.route.waf] table.
const (
	DefaultWAFParanoia         = 1
	DefaultWAFAnomalyThreshold = 5
)

// WAF configures a route's web application firewall: Coraza with the
// OWASP Core Rule Set (CRS 4), anomaly scoring. nginx has no WAF of its
// own; this is ModSecurity-nginx with the CRS (modsecurity on;
// modsecurity_rules_file ...).
type WAF struct {
	// Mode is "block" (a request whose anomaly score reaches the
	// threshold gets 403; SecRuleEngine On) or "detect" (it is logged at
	// warn and let through; SecRuleEngine DetectionOnly). Default block.
	Mode string
	// Paranoia is the CRS paranoia level, 1 to 4 (tx.blocking_paranoia_level):
	// higher catches more and refuses more legitimate requests. Default 1.
	Paranoia int
	// AnomalyThreshold is the inbound anomaly score that blocks
	// (tx.inbound_anomaly_score_threshold): a critical rule scores 5, an
	// error 4, a warning 3. Default 5: one critical match.
	AnomalyThreshold int
	// ExcludeRules are CRS rule IDs removed for this route
	// (SecRuleRemoveById), for a false positive the app cannot avoid.
	// Default none.
	ExcludeRules []int
}

// DefaultWAF is a [site.route.waf] table with every key at its default.
func DefaultWAF() *WAF {
	return &WAF{Mode: WAFBlock, Paranoia: DefaultWAFParanoia, AnomalyThreshold: DefaultWAFAnomalyThreshold}
}

const wafKeys = "mode, paranoia, anomaly_threshold, exclude_rules"

// access decodes the allow and deny keys of a site or route table.
func (d *decoder) access(t *value, p string, a *Access) {
	d.strings(t, p, "allow", &a.Allow)
	d.strings(t, p, "deny", &a.Deny)
}

// waf decodes a route's waf table.
func (d *decoder) waf(t *value, p string) *WAF {
	v := d.get(t, p, "waf", kTable)
	if v == nil {
		return nil
	}
	wp := p + ".waf"
	w := DefaultWAF()
	d.str(v, wp, "mode", &w.Mode)
	d.integer(v, wp, "paranoia", &w.Paranoia)
	d.integer(v, wp, "anomaly_threshold", &w.AnomalyThreshold)
	if ev := d.get(v, wp, "exclude_rules", kArray); ev != nil {
		w.ExcludeRules = []int{}
		for i, e := range ev.arr {
			if e.kind != kInt {
				d.bad(fmt.Sprintf("%s.exclude_rules[%d]", wp, i), e.line, "want a rule ID (an integer), not %s", e.kind)
				continue
			}
			w.ExcludeRules = append(w.ExcludeRules, int(e.i))
		}
	}
	d.unknown(v, wp, wafKeys)
	return w
}

// validateAccess checks the allow and deny entries under key.
func (c *Config) validateAccess(errs *[]error, key string, a Access) {
	for i, s := range a.Allow {
		if err := access.ParseEntry(s); err != nil {
			*errs = append(*errs, c.errorAt(fmt.Sprintf("%s.allow[%d]", key, i), "%v", err))
		}
	}
	for i, s := range a.Deny {
		if err := access.ParseEntry(s); err != nil {
			*errs = append(*errs, c.errorAt(fmt.Sprintf("%s.deny[%d]", key, i), "%v", err))
		}
	}
}

// validateWAF checks a route's waf table.
func (c *Config) validateWAF(errs *[]error, key string, w *WAF) {
	if w == nil {
		return
	}
	bad := func(k, format string, args ...any) {
		*errs = append(*errs, c.errorAt(key+".waf."+k, format, args...))
	}
	if w.Mode != WAFBlock && w.Mode != WAFDetect {
		bad("mode", "%q is not block or detect", w.Mode)
	}
	if w.Paranoia < 1 || w.Paranoia > 4 {
		bad("paranoia", "%d is not a paranoia level from 1 to 4", w.Paranoia)
	}
	if w.AnomalyThreshold < 1 {
		bad("anomaly_threshold", "%d: must be at least 1", w.AnomalyThreshold)
	}
	for i, id := range w.ExcludeRules {
		if id < 1 {
			bad(fmt.Sprintf("exclude_rules[%d]", i), "%d is not a rule ID", id)
		}
		if slices.Index(w.ExcludeRules, id) < i {
			bad(fmt.Sprintf("exclude_rules[%d]", i), "%d is given twice", id)
		}
	}
}
