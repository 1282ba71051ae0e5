package cache

import (
	"encoding/binary"
	"errors"
	"net/http"
	"time"
)

// entry is one stored response: one variant of one URL. It is immutable
// once stored (a refresh stores a new entry), so that hits read it
// without a lock and without copying the body.
type entry struct {
	status  int
	header  http.Header
	body    []byte
	reqTime time.Time     // request_time (RFC 9111 4.2.3)
	resTime time.Time     // response_time
	initAge time.Duration // corrected_initial_age
	policy
}

// age is the entry's current_age at now (RFC 9111 4.2.3).
func (e *entry) age(now time.Time) time.Duration {
	return e.initAge + max(0, now.Sub(e.resTime))
}

// size is what the entry costs the memory store, roughly: its key, the
// header fields and the body.
func (e *entry) size(key string) int64 {
	n := int64(len(key) + len(e.body) + 64)
	for k, v := range e.header {
		n += int64(len(k))
		for _, s := range v {
			n += int64(len(s)) + 16
		}
	}
	return n
}

// hasValidator reports whether the entry can be revalidated.
func (e *entry) hasValidator() bool { return e.etag != "" || e.lastMod != "" }

// newEntry builds an entry from a response the app gave, computing its
// initial age from the Date and Age fields it carries and the times the
// request went out and the response came in (RFC 9111 4.2.3). The header
// is adopted (already a stored copy). A Date is added if there is none;
// the Age is taken out.
func (c *Cache) newEntry(status int, h http.Header, body []byte, reqTime, resTime time.Time) *entry {
	date, err := http.ParseTime(h.Get("Date"))
	if err != nil {
		date = resTime
		h["Date"] = []string{resTime.UTC().Format(http.TimeFormat)}
	}
	apparent := max(0, resTime.Sub(date))
	ageValue := deltaSeconds(h.Get("Age"), 0)
	delete(h, "Age") // every answer from the entry computes its own
	corrected := ageValue + max(0, resTime.Sub(reqTime))
	e := &entry{status: status, header: h, body: body, reqTime: reqTime, resTime: resTime, initAge: max(apparent, corrected)}
	e.policy, _ = c.policyOf(status, h)
	return e
}

// The Redis encoding of an entry: a version byte, then uvarints (status,
// times in Unix nanoseconds, the initial age, the number of fields, and
// for each field its name and values as length-prefixed strings), then
// the body to the end. The policy is derived again on decoding, from the
// fields and the Options of the decoding node.
const encodingVersion = 1

func (e *entry) encode() []byte {
	n := 64 + len(e.body)
	for k, v := range e.header {
		n += len(k) + 8
		for _, s := range v {
			n += len(s) + 4
		}
	}
	b := make([]byte, 0, n)
	b = append(b, encodingVersion)
	b = binary.AppendUvarint(b, uint64(e.status))
	b = binary.AppendVarint(b, e.reqTime.UnixNano())
	b = binary.AppendVarint(b, e.resTime.UnixNano())
	b = binary.AppendVarint(b, int64(e.initAge))
	b = binary.AppendUvarint(b, uint64(len(e.header)))
	for k, v := range e.header {
		b = appendString(b, k)
		b = binary.AppendUvarint(b, uint64(len(v)))
		for _, s := range v {
			b = appendString(b, s)
		}
	}
	return append(b, e.body...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

var errBadEncoding = errors.New("cache: malformed stored entry")

// decode is encode's inverse. The body aliases b.
func (c *Cache) decode(b []byte) (*entry, error) {
	d := decoder{b: b}
	if d.byte() != encodingVersion {
		return nil, errBadEncoding
	}
	status := int(d.uvarint())
	reqTime := time.Unix(0, d.varint())
	resTime := time.Unix(0, d.varint())
	initAge := time.Duration(d.varint())
	nf := d.uvarint()
	if d.err || nf > uint64(len(d.b)) {
		return nil, errBadEncoding
	}
	h := make(http.Header, nf)
	for range nf {
		k := d.string()
		nv := d.uvarint()
		if d.err || nv > uint64(len(d.b)) {
			return nil, errBadEncoding
		}
		v := make([]string, nv)
		for i := range v {
			v[i] = d.string()
		}
		h[k] = v
	}
	if d.err {
		return nil, errBadEncoding
	}
	e := &entry{status: status, header: h, body: d.b, reqTime: reqTime, resTime: resTime, initAge: initAge}
	e.policy, _ = c.policyOf(status, h)
	return e, nil
}

type decoder struct {
	b   []byte
	err bool
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.err = true
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err || n > uint64(len(d.b)) {
		d.err = true
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
