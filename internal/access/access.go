// Package access decides which clients may reach a route by their address:
// nginx's allow and deny directives, as two lists per site and per route.
//
// The decisions, in the order they are made:
//
//  1. The address judged is the real client's: r.RemoteAddr after the
//     trusted-proxy rules (internal/realip) rewrote it, the address the
//     access log writes. A peer that is not trusted cannot choose it.
//  2. Each layer (the site's lists, then the route's) is checked in turn;
//     a client must pass every layer, so a route narrows its site's rules
//     and never widens them.
//  3. Within a layer, deny wins: an address in the deny list is refused
//     whatever the allow list says. nginx instead runs its allow and deny
//     lines in file order, first match wins; two separate lists have no
//     order, and "deny wins" is the reading that cannot let through
//     someone a line meant to keep out.
//  4. A non-empty allow list refuses every address not in it (nginx's
//     "allow ...; deny all;"). An empty allow list allows everyone the
//     deny list does not name.
//  5. Unix-socket peers (an nginx on the same machine, say) have no
//     address: they match the entry "unix" and no prefix. An address that
//     cannot be parsed matches nothing, so an allow list refuses it.
//
// A refused client gets 403 and one log record at info naming the layer
// and the rule.
package access

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"

	"portico/internal/errpage"
	"portico/internal/requestid"
)

// Unix is the list entry that matches Unix-socket peers.
const Unix = "unix"

// List is one layer: an allow list and a deny list, parsed.
type List struct {
	// Name says where the lists come from in the log ("site", "route").
	Name  string
	allow []entry
	deny  []entry
}

type entry struct {
	prefix netip.Prefix
	unix   bool
	text   string // as configured, for the log
}

// ParseList parses the allow and deny entries of one layer: CIDR prefixes
// ("10.0.0.0/8", "2001:db8::/32"), bare addresses ("203.0.113.7", a /32
// or /128) or Unix. An IPv4-mapped IPv6 address matches as IPv4.
func ParseList(name string, allow, deny []string) (*List, error) {
	l := &List{Name: name}
	var err error
	if l.allow, err = parseEntries(allow); err != nil {
		return nil, fmt.Errorf("allow: %w", err)
	}
	if l.deny, err = parseEntries(deny); err != nil {
		return nil, fmt.Errorf("deny: %w", err)
	}
	return l, nil
}

// ParseEntry checks one entry as ParseList would (for config validation).
func ParseEntry(s string) error {
	_, err := parseEntry(s)
	return err
}

func parseEntries(list []string) ([]entry, error) {
	out := make([]entry, 0, len(list))
	for _, s := range list {
		e, err := parseEntry(s)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func parseEntry(s string) (entry, error) {
	s = strings.TrimSpace(s)
	if s == Unix {
		return entry{unix: true, text: s}, nil
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return entry{}, fmt.Errorf("%q is not a CIDR prefix, an address or %q", s, Unix)
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return entry{prefix: p.Masked(), text: s}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return entry{}, fmt.Errorf("%q is not a CIDR prefix, an address or %q", s, Unix)
	}
	a = a.Unmap()
	return entry{prefix: netip.PrefixFrom(a, a.BitLen()), text: s}, nil
}

// Empty reports whether l has no entry (it allows everyone).
func (l *List) Empty() bool { return l == nil || len(l.allow) == 0 && len(l.deny) == 0 }

// client is a parsed client address.
type client struct {
	addr netip.Addr
	unix bool
	ok   bool // addr or unix is known
}

// parseClient parses an http.Request.RemoteAddr: "ip:port", "[ip]:port",
// a bare "ip" (realip gives that when the forwarding header had no port),
// or a Unix-socket peer ("", "@", a path).
func parseClient(remote string) client {
	if remote == "" || remote[0] == '@' || remote[0] == '/' {
		return client{unix: true, ok: true}
	}
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return client{addr: ap.Addr().Unmap().WithZone(""), ok: true}
	}
	if a, err := netip.ParseAddr(remote); err == nil {
		return client{addr: a.Unmap().WithZone(""), ok: true}
	}
	return client{}
}

func (e entry) match(c client) bool {
	if c.unix {
		return e.unix
	}
	return c.ok && !e.unix && e.prefix.Contains(c.addr)
}

// check returns "" when c may pass l, else the rule that refuses it.
func (l *List) check(c client) string {
	for _, e := range l.deny {
		if e.match(c) {
			return "deny " + e.text
		}
	}
	if len(l.allow) == 0 {
		return ""
	}
	for _, e := range l.allow {
		if e.match(c) {
			return ""
		}
	}
	return "not in allow list"
}

// Rules are the layers that guard one route; the nil *Rules allow
// everyone.
type Rules struct {
	layers []*List
}

// New combines layers (the site's, then the route's); empty ones are
// dropped. It returns nil when none is left.
func New(layers ...*List) *Rules {
	var r Rules
	for _, l := range layers {
		if !l.Empty() {
			r.layers = append(r.layers, l)
		}
	}
	if len(r.layers) == 0 {
		return nil
	}
	return &r
}

// Check reports whether a client at remote (http.Request.RemoteAddr form)
// may pass; when not, layer and rule say why.
func (r *Rules) Check(remote string) (ok bool, layer, rule string) {
	if r == nil {
		return true, "", ""
	}
	c := parseClient(remote)
	for _, l := range r.layers {
		if rule := l.check(c); rule != "" {
			return false, l.Name, rule
		}
	}
	return true, "", ""
}

// Middleware returns next guarded by r: a refused client gets 403 and one
// info record. A nil r returns next unchanged. log nil: slog.Default().
func (r *Rules) Middleware(next http.Handler, log *slog.Logger) http.Handler {
	if r == nil {
		return next
	}
	if log == nil {
		log = slog.Default()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ok, layer, rule := r.Check(req.RemoteAddr)
		if !ok {
			log.Info("access refused", "client", req.RemoteAddr, "layer", layer, "rule", rule,
				"method", req.Method, "uri", req.RequestURI, "request_id", requestid.Of(req))
			if !errpage.Serve(w, http.StatusForbidden) {
				http.Error(w, "403 forbidden", http.StatusForbidden)
			}
			return
		}
		next.ServeHTTP(w, req)
	})
}
