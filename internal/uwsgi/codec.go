package uwsgi

import (
	"errors"
	"fmt"
	"io"
)

// HeaderSize is the size in bytes of a uwsgi packet header.
const HeaderSize = 4

// MaxVarsSize is the largest vars block one packet can carry, in bytes: the
// header stores the size in 16 bits.
const MaxVarsSize = 65535

// ErrMalformed reports a packet that does not follow the uwsgi encoding:
// a short header, a truncated vars block, a length running past the end of
// the block, or an empty key. Errors returned by this package wrap it with
// the detail (test with errors.Is).
var ErrMalformed = errors.New("uwsgi: malformed packet")

// ErrVarsTooLarge reports a request whose variables do not fit the 16-bit
// datasize of a packet. nginx refuses such a request too ("uwsgi request is
// too big").
var ErrVarsTooLarge = errors.New("uwsgi: vars block larger than 65535 bytes")

// Header is the 4-byte header of a uwsgi packet.
type Header struct {
	// Modifier1 selects the request type. 0 is a WSGI (CGI-like) request,
	// what nginx sends by default; uWSGI uses 30 for "WSGI, strip
	// SCRIPT_NAME from PATH_INFO" and other values for other languages and
	// for its internal protocols.
	Modifier1 uint8
	// Size is the length in bytes of the vars block that follows the header.
	Size uint16
	// Modifier2 is a sub-type for Modifier1; 0 for WSGI requests.
	Modifier2 uint8
}

// Append appends the 4-byte encoding of h to dst and returns the extended
// slice.
func (h Header) Append(dst []byte) []byte {
	return append(dst, h.Modifier1, byte(h.Size), byte(h.Size>>8), h.Modifier2)
}

// ParseHeader decodes the first HeaderSize bytes of b. It fails with
// ErrMalformed when b is shorter than HeaderSize.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: header is %d bytes, want %d", ErrMalformed, len(b), HeaderSize)
	}
	return Header{
		Modifier1: b[0],
		Size:      uint16(b[1]) | uint16(b[2])<<8,
		Modifier2: b[3],
	}, nil
}

// AppendVar appends one variable (keylen, key, vallen, value) to dst and
// returns the extended slice. The caller guarantees that key and value are
// each at most 65535 bytes long; longer ones are encoded with a truncated
// length. Keeping the whole block within MaxVarsSize is the caller's job too.
func AppendVar(dst []byte, key, value string) []byte {
	dst = append(dst, byte(len(key)), byte(len(key)>>8))
	dst = append(dst, key...)
	dst = append(dst, byte(len(value)), byte(len(value)>>8))
	return append(dst, value...)
}

// ParseVars walks the vars block b strictly and calls fn for each variable
// in order. A truncated length, a key or value running past the end of b, or
// an empty key makes it fail with an error wrapping ErrMalformed that names
// the offset; variables before the fault have already been passed to fn.
// An error returned by fn stops the walk and is returned unchanged.
//
// key and value alias b: fn must copy them to keep them past its return,
// and must not modify them.
func ParseVars(b []byte, fn func(key, value []byte) error) error {
	return walkVars(b, fn)
}

// ParseVarsString is ParseVars for a block held in a string, so that the
// listener (internal/server) can take every request string from one
// string conversion: key and value are substrings of block.
func ParseVarsString(block string, fn func(key, value string) error) error {
	return walkVars(block, fn)
}

// walkVars is ParseVars for both []byte and string blocks.
func walkVars[T ~string | ~[]byte](b T, fn func(key, value T) error) error {
	for off := 0; off < len(b); {
		if len(b)-off < 2 {
			return fmt.Errorf("%w: truncated key length at offset %d", ErrMalformed, off)
		}
		n := int(b[off]) | int(b[off+1])<<8
		if n == 0 {
			return fmt.Errorf("%w: empty key at offset %d", ErrMalformed, off)
		}
		off += 2
		if n > len(b)-off {
			return fmt.Errorf("%w: key of %d bytes at offset %d runs past the end of the %d-byte block",
				ErrMalformed, n, off, len(b))
		}
		key := b[off : off+n]
		off += n
		if len(b)-off < 2 {
			return fmt.Errorf("%w: truncated value length at offset %d", ErrMalformed, off)
		}
		m := int(b[off]) | int(b[off+1])<<8
		off += 2
		if m > len(b)-off {
			return fmt.Errorf("%w: value of %d bytes at offset %d runs past the end of the %d-byte block",
				ErrMalformed, m, off, len(b))
		}
		value := b[off : off+m]
		off += m
		if err := fn(key, value); err != nil {
			return err
		}
	}
	return nil
}

// ReadPacket reads one packet header and its vars block from r. The vars
// block is read into buf, which is replaced by a larger slice when its
// capacity is too small; the returned slice holds exactly the vars block
// (len == Header.Size) and aliases buf or its replacement, so a caller can
// reuse it for the next packet. The vars are not parsed: use ParseVars.
//
// It returns io.EOF, unwrapped, when r is at its end before the first byte
// (a peer that connected and closed). A packet cut short by the end of r
// fails with an error wrapping both ErrMalformed and io.ErrUnexpectedEOF;
// any other read error (a deadline, say) is returned wrapped. On error the
// returned slice is buf (or its replacement) emptied.
func ReadPacket(r io.Reader, buf []byte) (Header, []byte, error) {
	if cap(buf) < HeaderSize {
		buf = make([]byte, 0, 4096)
	}
	hb := buf[:HeaderSize]
	if n, err := io.ReadFull(r, hb); err != nil {
		switch {
		case err == io.EOF:
			return Header{}, buf[:0], io.EOF
		case errors.Is(err, io.ErrUnexpectedEOF):
			return Header{}, buf[:0], fmt.Errorf("%w: header cut short after %d bytes: %w", ErrMalformed, n, err)
		}
		return Header{}, buf[:0], fmt.Errorf("uwsgi: reading packet header: %w", err)
	}
	h, _ := ParseHeader(hb) // cannot fail: hb is HeaderSize bytes
	size := int(h.Size)
	if cap(buf) < size {
		buf = make([]byte, 0, (size+4095)&^4095)
	}
	vars := buf[:size]
	if n, err := io.ReadFull(r, vars); err != nil {
		if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
			return h, buf[:0], fmt.Errorf("%w: vars block cut short after %d of %d bytes: %w",
				ErrMalformed, n, size, io.ErrUnexpectedEOF)
		}
		return h, buf[:0], fmt.Errorf("uwsgi: reading packet vars: %w", err)
	}
	return h, vars, nil
}
