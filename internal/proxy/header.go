package proxy

import (
	"net"
	"net/http"
	"strings"

	"portico/internal/realip"
	"portico/internal/uwsgi"
)

// HopByHop lists the headers that belong to one connection, not to the
// message, and are never forwarded (RFC 9110 §7.6.1: Connection and the
// fields it names; Keep-Alive, Proxy-Connection, TE, Transfer-Encoding and
// Upgrade as RFC 9110 and RFC 7230 §6.1 list them; Trailer, which announces
// fields of this connection's chunked framing). Canonical form.
var HopByHop = []string{
	"Connection",
	"Keep-Alive",
	"Proxy-Connection",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// removeHopByHop deletes the hop-by-hop headers of h, including those the
// Connection header names.
func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				delete(h, http.CanonicalHeaderKey(name))
			}
		}
	}
	for _, k := range HopByHop {
		delete(h, k)
	}
}

// isUpgrade reports whether r asks to switch protocols (a WebSocket).
func isUpgrade(h http.Header) (string, bool) {
	for _, v := range h["Connection"] {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
				up := h.Get("Upgrade")
				return up, up != ""
			}
		}
	}
	return "", false
}

// HeaderOp sets or removes one request header toward the upstream
// (headers_up). Value may hold the placeholders $remote_addr, $host,
// $scheme and $request_uri.
type HeaderOp struct {
	Name   string
	Value  string
	Remove bool
}

// clientIP is the client's address without its port.
func clientIP(r *http.Request) string {
	if o := uwsgi.OriginFrom(r.Context()); o != nil && o.RemoteAddr != "" {
		return o.RemoteAddr
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// expand replaces the placeholders of a headers_up value.
func expand(v string, r *http.Request) string {
	if !strings.Contains(v, "$") {
		return v
	}
	return strings.NewReplacer(
		"$remote_addr", clientIP(r),
		"$host", r.Host,
		"$scheme", realip.Scheme(r),
		"$request_uri", r.RequestURI,
	).Replace(v)
}

// forwardHeaders prepares the outgoing request's headers from the
// client's: hop-by-hop headers and Proxy (httpoxy) dropped, the upgrade
// headers kept for a protocol switch, X-Forwarded-For appended with the
// client, X-Forwarded-Proto and X-Forwarded-Host set, then ops applied.
//
// X-Forwarded-For is appended to, not replaced: Portico's trust boundary
// (internal/realip) has already deleted forwarding headers that came from
// an untrusted peer, so what is left is a chain a trusted proxy vouched
// for, and the immediate peer is appended to it. Without forwarded (a
// gateway protocol, whose variables carry the client), none is added.
func forwardHeaders(out http.Header, r *http.Request, ops []HeaderOp, forwarded bool) {
	up, upgrade := isUpgrade(r.Header)
	removeHopByHop(out)
	delete(out, "Proxy")
	delete(out, "Expect") // the body is sent at once (Portico has it, or streams it)
	if upgrade {
		out.Set("Connection", "Upgrade")
		out.Set("Upgrade", up)
	}
	if forwarded {
		if xff := realip.ForwardedFor(r); xff != "" {
			out.Set("X-Forwarded-For", xff)
		} else {
			delete(out, "X-Forwarded-For")
		}
		out.Set("X-Forwarded-Proto", realip.Scheme(r))
		if r.Host != "" {
			out.Set("X-Forwarded-Host", r.Host)
		}
	}
	if _, ok := out["User-Agent"]; !ok {
		out["User-Agent"] = []string{""} // net/http would add its own
	}
	for _, op := range ops {
		if op.Remove {
			delete(out, op.Name)
			continue
		}
		out.Set(op.Name, expand(op.Value, r))
	}
}
