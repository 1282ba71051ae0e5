package realip

import "strings"

// element is one forwarded-element of a Forwarded header (RFC 7239 4).
type element struct {
	forFound          bool
	forVal            string
	proto, host       string
	hasProto, hasHost bool
}

// parseForwarded reads Forwarded header values (RFC 7239): elements
// separated by commas, each a ';'-separated list of name=value pairs whose
// values are tokens or quoted strings. It walks the elements from the
// right as clientFromXFF walks X-Forwarded-For, and takes proto= and host=
// from the element that named the client (the one the trusted proxy
// closest to the client appended). A malformed header is believed in
// nothing.
func parseForwarded(values []string, m *Matcher) forwarded {
	var elems []element
	for _, v := range values {
		es, ok := parseElements(v)
		if !ok {
			return forwarded{}
		}
		elems = append(elems, es...)
	}
	if len(elems) == 0 {
		return forwarded{}
	}
	pick := func(e element, client string) forwarded {
		return forwarded{client: client, proto: validProto(e.proto), host: validHost(e.host)}
	}
	for i := len(elems) - 1; i >= 0; i-- {
		e := elems[i]
		if !e.forFound {
			// A hop that did not say whom it talked to: the client is
			// unknown from here on.
			return pick(e, "")
		}
		client, ok := forNode(e.forVal)
		if !ok {
			// "unknown", an obfuscated identifier ("_hidden"), or garbage:
			// not an address, so the walk ends here.
			return pick(e, "")
		}
		if !m.Trusted(client) || i == 0 {
			return pick(e, client)
		}
	}
	return forwarded{} // not reached
}

// forNode turns a for= node (RFC 7239 6: an IPv4 address, a bracketed
// IPv6 address, either with an optional :port) into RemoteAddr form. An
// obfuscated port ("_abc") is dropped.
func forNode(s string) (string, bool) {
	if s == "" || strings.EqualFold(s, "unknown") || s[0] == '_' {
		return "", false
	}
	host, port := s, ""
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", false
		}
		host, port = s[:end+1], s[end+1:]
		if port != "" && port[0] != ':' {
			return "", false
		}
	} else if i := strings.IndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i:]
		if strings.IndexByte(port[1:], ':') >= 0 {
			return "", false // an unbracketed IPv6 address: not RFC 7239
		}
	}
	if port != "" {
		port = port[1:]
		if port == "" || port[0] == '_' {
			port = ""
		} else if len(port) > 5 || !allDigits(port) {
			return "", false
		}
	}
	if s[0] == '[' {
		if a, _, ok := parseHostPort(host); !ok || !a.Is6() {
			return "", false
		}
	} else if a, _, ok := parseHostPort(host); !ok || !a.Is4() {
		return "", false
	}
	if port != "" {
		return clientAddr(host + ":" + port)
	}
	return clientAddr(host)
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// parseElements splits one Forwarded header value into its elements.
func parseElements(v string) ([]element, bool) {
	var out []element
	var e element
	empty := true
	i := 0
	for {
		// A pair, or nothing (empty elements are tolerated, as for lists).
		i = skipSpace(v, i)
		if i < len(v) && v[i] != ',' && v[i] != ';' {
			j := i
			for j < len(v) && isTokenChar(v[j]) {
				j++
			}
			if j == i || j >= len(v) || v[j] != '=' {
				return nil, false
			}
			name := strings.ToLower(v[i:j])
			j++
			var val string
			if j < len(v) && v[j] == '"' {
				var ok bool
				val, j, ok = quoted(v, j)
				if !ok {
					return nil, false
				}
			} else {
				k := j
				for k < len(v) && isTokenChar(v[k]) {
					k++
				}
				if k == j {
					return nil, false
				}
				val, j = v[j:k], k
			}
			switch name {
			case "for":
				if e.forFound {
					return nil, false // a parameter twice in one element (RFC 7239 4)
				}
				e.forFound, e.forVal = true, val
			case "proto":
				if e.hasProto {
					return nil, false
				}
				e.hasProto, e.proto = true, val
			case "host":
				if e.hasHost {
					return nil, false
				}
				e.hasHost, e.host = true, val
			}
			empty = false
			i = skipSpace(v, j)
		}
		if i >= len(v) || v[i] == ',' {
			if !empty {
				out = append(out, e)
			}
			e, empty = element{}, true
			if i >= len(v) {
				return out, true
			}
			i++
			continue
		}
		if v[i] != ';' {
			return nil, false
		}
		i++
	}
}

// quoted reads a quoted-string starting at v[i] == '"', undoing
// backslash escapes; it returns the value and the index after it.
func quoted(v string, i int) (string, int, bool) {
	var b strings.Builder
	for j := i + 1; j < len(v); j++ {
		switch c := v[j]; c {
		case '"':
			return b.String(), j + 1, true
		case '\\':
			j++
			if j >= len(v) {
				return "", 0, false
			}
			b.WriteByte(v[j])
		default:
			if c < 0x20 && c != '\t' || c == 0x7f {
				return "", 0, false
			}
			b.WriteByte(c)
		}
	}
	return "", 0, false
}

func skipSpace(v string, i int) int {
	for i < len(v) && (v[i] == ' ' || v[i] == '\t') {
		i++
	}
	return i
}

// isTokenChar reports whether c may appear in an RFC 9110 token.
func isTokenChar(c byte) bool {
	if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
