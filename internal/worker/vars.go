package worker

import (
	"bytes"
	"encoding/binary"

	"portico/internal/uwsgi"
)

// varsNUL is the modifier2 of a packet whose vars block is
// "KEY\0VALUE\0KEY\0VALUE" rather than standard uwsgi vars (modifier2 0).
const varsNUL = 1

// compactVars rewrites, in place, the vars block of the uwsgi packet at the
// start of pkt into the NUL-separated form and marks it with modifier2 1,
// unless a key or value contains a NUL byte (a %00 in the path), in which
// case the packet stays standard. It returns the packet's new length.
//
// Why: decoding standard uwsgi vars takes a Python loop over every
// variable, about 0.7 µs each on the machines measured, 10 µs or more per
// request; the NUL form decodes with bytes.decode, str.split and dict
// update, all in C, in 2 to 4 µs. Every request pays this in Python.
func compactVars(pkt []byte) int {
	h, err := uwsgi.ParseHeader(pkt)
	if err != nil || len(pkt) < uwsgi.HeaderSize+int(h.Size) {
		return len(pkt)
	}
	end := uwsgi.HeaderSize + int(h.Size)
	vars := pkt[uwsgi.HeaderSize:end]
	// Pass 1: a NUL anywhere in a key or value keeps the standard form.
	for r := 0; r < len(vars); {
		kl := int(binary.LittleEndian.Uint16(vars[r:]))
		key := vars[r+2 : r+2+kl]
		r += 2 + kl
		vl := int(binary.LittleEndian.Uint16(vars[r:]))
		val := vars[r+2 : r+2+vl]
		r += 2 + vl
		if bytes.IndexByte(key, 0) >= 0 || bytes.IndexByte(val, 0) >= 0 {
			return len(pkt)
		}
	}
	// Pass 2: each variable shrinks by two bytes, so writing behind the
	// read position never overtakes it.
	w := 0
	for r := 0; r < len(vars); {
		kl := int(binary.LittleEndian.Uint16(vars[r:]))
		if w > 0 {
			vars[w] = 0
			w++
		}
		w += copy(vars[w:], vars[r+2:r+2+kl])
		r += 2 + kl
		vl := int(binary.LittleEndian.Uint16(vars[r:]))
		vars[w] = 0
		w++
		w += copy(vars[w:], vars[r+2:r+2+vl])
		r += 2 + vl
	}
	body := len(pkt) - end
	copy(pkt[uwsgi.HeaderSize+w:], pkt[end:])
	uwsgi.Header{Modifier1: h.Modifier1, Size: uint16(w), Modifier2: varsNUL}.Append(pkt[:0])
	return uwsgi.HeaderSize + w + body
}
