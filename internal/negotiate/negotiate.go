// Package negotiate is the content negotiation Portico's static files and
// its compression of app responses share: the Accept-Encoding parser and
// the media types worth compressing. A leaf: it imports nothing of Portico.
package negotiate

import (
	"slices"
	"strconv"
	"strings"
)

// A Coding is a content coding Portico serves, in order of preference
// at equal q-value: brotli compresses text best, zstd is next, gzip is
// understood by every client.
type Coding int

const (
	Br Coding = iota
	Zstd
	Gzip
	NumCodings
)

// codingInfo names each coding: its Content-Encoding token and the suffix of
// its precompressed sibling.
var codingInfo = [NumCodings]struct{ token, ext string }{
	Br:   {"br", ".br"},
	Zstd: {"zstd", ".zst"},
	Gzip: {"gzip", ".gz"},
}

// AcceptEncoding is a parsed Accept-Encoding: the q-value (0 to 1; 0 means
// refused) of each coding and of identity. Identity is acceptable when the
// field does not mention it (then identity is 1 and explicit false), but it
// then loses to any acceptable coding: "gzip;q=0.5" asks for gzip. Only an
// explicit "identity;q=..." (or "*;q=0") competes on q-value.
type AcceptEncoding struct {
	q        [NumCodings]float64
	identity float64
	explicit bool // identity's q-value was given
}

// ParseAcceptEncoding parses the Accept-Encoding field values of a request
// as RFC 9110 section 12.5.3 says: a list of codings with optional q-values;
// tokens are case-insensitive; "*" stands for every coding not listed;
// "x-gzip" is gzip. Without the field only identity is acceptable. Identity
// is acceptable unless "identity;q=0", or "*;q=0" without an identity entry,
// excludes it. An element with a malformed q-value is ignored. A coding
// listed twice gets its highest q-value.
func ParseAcceptEncoding(values []string) AcceptEncoding {
	var (
		ae             AcceptEncoding
		seen           [NumCodings]bool
		star, identity float64 = -1, -1
	)
	for _, v := range values {
		for elem := range strings.SplitSeq(v, ",") {
			token, params, _ := strings.Cut(elem, ";")
			token = strings.ToLower(strings.TrimSpace(token))
			if token == "" {
				continue
			}
			q, ok := qValue(params)
			if !ok {
				continue
			}
			switch token {
			case "*":
				star = max(star, q)
			case "identity":
				identity = max(identity, q)
			case "x-gzip":
				token = "gzip"
			}
			for c := range NumCodings {
				if codingInfo[c].token == token {
					if !seen[c] || q > ae.q[c] {
						ae.q[c] = q
					}
					seen[c] = true
				}
			}
		}
	}
	for c := range NumCodings {
		if !seen[c] && star >= 0 {
			ae.q[c] = star
		}
	}
	switch {
	case identity >= 0:
		ae.identity, ae.explicit = identity, true
	case star == 0:
		ae.identity, ae.explicit = 0, true
	default:
		ae.identity = 1
	}
	return ae
}

// qValue parses the parameters of one Accept-Encoding element ("q=0.5",
// possibly among others). No q parameter means 1; a malformed one, or one
// outside 0..1 or with more than three decimals, is not ok.
func qValue(params string) (float64, bool) {
	q := 1.0
	for p := range strings.SplitSeq(params, ";") {
		k, v, _ := strings.Cut(p, "=")
		if !strings.EqualFold(strings.TrimSpace(k), "q") {
			continue
		}
		v = strings.TrimSpace(v)
		if v == "" || len(v) > 5 || (v[0] != '0' && v[0] != '1') {
			return 0, false
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 1 {
			return 0, false
		}
		q = f
	}
	return q, true
}

// Order returns the codings worth trying, best first: acceptable (q > 0),
// at least as wanted as an explicit identity (a compressed coding wins a
// tie with it), by q-value, and br > zstd > gzip at equal q.
func (ae AcceptEncoding) Order() []Coding {
	var out []Coding
	for c := range NumCodings {
		if ae.q[c] > 0 && (!ae.explicit || ae.q[c] >= ae.identity) {
			out = append(out, c)
		}
	}
	slices.SortStableFunc(out, func(a, b Coding) int {
		switch {
		case ae.q[a] > ae.q[b]:
			return -1
		case ae.q[a] < ae.q[b]:
			return 1
		}
		return 0
	})
	return out
}

// Compressible reports whether a media type (a Content-Type value, its
// parameters ignored) is worth compressing: text, scripts, JSON, XML and
// SVG, WebAssembly, uncompressed fonts, icons. Images, audio, video,
// archives and woff/woff2 fonts are compressed already.
func Compressible(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	if strings.HasPrefix(mt, "text/") || strings.HasSuffix(mt, "+json") || strings.HasSuffix(mt, "+xml") {
		return true
	}
	switch mt {
	case "application/javascript", "application/x-javascript", "application/ecmascript",
		"application/json", "application/xml", "application/wasm",
		"application/x-font-ttf", "application/vnd.ms-fontobject", "font/ttf", "font/otf",
		"image/x-icon", "image/vnd.microsoft.icon", "image/bmp":
		return true
	}
	return false
}

// Token is c's Content-Encoding token.
func (c Coding) Token() string { return codingInfo[c].token }

// Ext is the file name suffix of a file precompressed with c.
func (c Coding) Ext() string { return codingInfo[c].ext }

// Q is the q-value the request gave c (0: refused).
func (ae AcceptEncoding) Q(c Coding) float64 { return ae.q[c] }

// Identity is the q-value of identity (see AcceptEncoding).
func (ae AcceptEncoding) Identity() float64 { return ae.identity }
