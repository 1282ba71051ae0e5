package accesslog

import (
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"portico/internal/requestid"
)

// Time layouts: nginx's $time_local, and RFC 3339 with milliseconds in
// pieces (the milliseconds go between the two).
const (
	combinedTime = "02/Jan/2006:15:04:05 -0700"
	jsonSecond   = "2006-01-02T15:04:05"
	jsonZone     = "Z07:00"
)

// stamp is the formatted time of one second in one location. Formatting a
// time costs more than the rest of a line, and it only changes once a
// second: nginx caches it the same way (ngx_cached_http_log_time).
type stamp struct {
	sec      int64
	loc      *time.Location
	combined []byte
	jsonSec  []byte
	jsonZone []byte
}

// stampCache holds the stamp of the last second logged.
type stampCache struct {
	last atomic.Pointer[stamp]
}

// of returns the stamp for t's second, formatting it on the first use.
func (c *stampCache) of(t time.Time) *stamp {
	sec, loc := t.Unix(), t.Location()
	if s := c.last.Load(); s != nil && s.sec == sec && s.loc == loc {
		return s
	}
	s := &stamp{
		sec:      sec,
		loc:      loc,
		combined: t.AppendFormat(nil, combinedTime),
		jsonSec:  t.AppendFormat(nil, jsonSecond),
		jsonZone: t.AppendFormat(nil, jsonZone),
	}
	c.last.Store(s)
	return s
}

// entry is what one line says about one request.
type entry struct {
	r       *http.Request
	status  int
	bytes   int64
	end     time.Time // when the handler returned: the line's time, as in nginx
	stamp   *stamp    // end, formatted
	elapsed time.Duration
}

// appendCombined appends e in Combined format, newline included.
func (e *entry) appendCombined(b []byte) []byte {
	r := e.r
	b = appendField(b, remoteHost(r.RemoteAddr))
	b = append(b, " - "...)
	b = appendField(b, remoteUser(r))
	b = append(b, " ["...)
	b = append(b, e.stamp.combined...)
	b = append(b, `] "`...)
	b = appendEscaped(b, r.Method)
	b = append(b, ' ')
	b = appendEscaped(b, requestURI(r))
	b = append(b, ' ')
	b = appendEscaped(b, r.Proto)
	b = append(b, `" `...)
	b = strconv.AppendInt(b, int64(e.status), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.bytes, 10)
	b = append(b, ` "`...)
	b = appendField(b, header(r, "Referer"))
	b = append(b, `" "`...)
	b = appendField(b, header(r, "User-Agent"))
	b = append(b, `" `...)
	b = appendSeconds(b, e.elapsed)
	b = append(b, ` "`...)
	b = appendField(b, requestid.Of(r))
	return append(b, "\"\n"...)
}

// appendJSON appends e as one JSON object, newline included.
func (e *entry) appendJSON(b []byte) []byte {
	r := e.r
	b = append(b, `{"remote_addr":`...)
	b = appendJSONString(b, remoteHost(r.RemoteAddr))
	b = append(b, `,"remote_user":`...)
	b = appendJSONString(b, remoteUser(r))
	b = append(b, `,"time":"`...)
	b = append(b, e.stamp.jsonSec...)
	ms := e.end.Nanosecond() / int(time.Millisecond)
	b = append(b, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	b = append(b, e.stamp.jsonZone...)
	b = append(b, `","method":`...)
	b = appendJSONString(b, r.Method)
	b = append(b, `,"uri":`...)
	b = appendJSONString(b, requestURI(r))
	b = append(b, `,"protocol":`...)
	b = appendJSONString(b, r.Proto)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.status), 10)
	b = append(b, `,"bytes_sent":`...)
	b = strconv.AppendInt(b, e.bytes, 10)
	b = append(b, `,"referer":`...)
	b = appendJSONString(b, header(r, "Referer"))
	b = append(b, `,"user_agent":`...)
	b = appendJSONString(b, header(r, "User-Agent"))
	b = append(b, `,"request_time":`...)
	b = appendSeconds(b, e.elapsed)
	b = append(b, `,"request_id":`...)
	b = appendJSONString(b, requestid.Of(r))
	return append(b, "}\n"...)
}

// remoteHost is the host part of a "host:port" or "[host]:port" address;
// an address without a port (a Unix socket peer) is returned whole.
func remoteHost(addr string) string {
	if strings.HasPrefix(addr, "[") {
		if i := strings.IndexByte(addr, ']'); i > 0 {
			return addr[1:i]
		}
		return addr
	}
	if i := strings.LastIndexByte(addr, ':'); i >= 0 && strings.IndexByte(addr[:i], ':') < 0 {
		return addr[:i]
	}
	return addr
}

// remoteUser is the user name of Basic authentication, as nginx's
// $remote_user, or "".
func remoteUser(r *http.Request) string {
	if len(r.Header["Authorization"]) == 0 {
		return "" // the common case, without BasicAuth's header lookup
	}
	user, _, ok := r.BasicAuth()
	if !ok {
		return ""
	}
	return user
}

// requestURI is the request target as the client sent it ($request_uri).
func requestURI(r *http.Request) string {
	if r.RequestURI != "" || r.URL == nil {
		return r.RequestURI
	}
	return r.URL.RequestURI() // a request built in-process, not read off the wire
}

// header returns the first value of a header. key is in canonical form, so
// a map lookup does, without Header.Get's canonicalization.
func header(r *http.Request, key string) string {
	if v := r.Header[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// appendSeconds appends d in seconds with millisecond resolution, "0.012",
// as nginx's $request_time.
func appendSeconds(b []byte, d time.Duration) []byte {
	ms := max(d.Milliseconds(), 0)
	b = strconv.AppendInt(b, ms/1000, 10)
	frac := ms % 1000
	return append(b, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
}

// appendField appends s escaped for Combined, or "-" if s is empty.
func appendField(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	return appendEscaped(b, s)
}

const upperHex = "0123456789ABCDEF"

// mustEscape tells which bytes appendEscaped writes as \xHH.
var mustEscape = func() (t [256]bool) {
	for c := range t {
		t[c] = c < 0x20 || c >= 0x7f || c == '"' || c == '\\'
	}
	return t
}()

// appendEscaped appends s with '"', '\' and bytes below 0x20 or from 0x7f up
// written as \xHH, as nginx's default log escaping does.
func appendEscaped(b []byte, s string) []byte {
	start := 0 // s[start:i] is pending, needing no escape
	for i := 0; i < len(s); i++ {
		if c := s[i]; mustEscape[c] {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'x', upperHex[c>>4], upperHex[c&0xf])
			start = i + 1
		}
	}
	return append(b, s[start:]...)
}

const lowerHex = "0123456789abcdef"

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced by U+FFFD, and U+2028
// and U+2029 escaped so the line is also valid JavaScript (as encoding/json
// does).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0 // s[start:i] is pending, needing no escape
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', lowerHex[c>>4], lowerHex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', lowerHex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
