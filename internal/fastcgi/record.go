package fastcgi

import (
	"errors"
	"fmt"
	"io"
)

// HeaderSize is the size in bytes of a FastCGI record header.
const HeaderSize = 8

// Version1 is the only FastCGI protocol version, the first byte of every
// record.
const Version1 = 1

// MaxContentSize is the largest content one record can carry, in bytes: the
// header stores the length in 16 bits.
const MaxContentSize = 65535

// RecordType is the type byte of a record header (FastCGI 1.0, section 8).
type RecordType uint8

// The record types. The transport sends BeginRequest, Params, Stdin and
// (never in practice) AbortRequest, and reads Stdout, Stderr and
// EndRequest; the others are listed for completeness and decoded as
// unexpected.
const (
	TypeBeginRequest    RecordType = 1
	TypeAbortRequest    RecordType = 2
	TypeEndRequest      RecordType = 3
	TypeParams          RecordType = 4
	TypeStdin           RecordType = 5
	TypeStdout          RecordType = 6
	TypeStderr          RecordType = 7
	TypeData            RecordType = 8
	TypeGetValues       RecordType = 9
	TypeGetValuesResult RecordType = 10
	TypeUnknownType     RecordType = 11
)

// RoleResponder is the BEGIN_REQUEST role of an ordinary request: the
// application gets the params and stdin and answers on stdout. (The
// Authorizer and Filter roles are not used by php-fpm's users.)
const RoleResponder uint16 = 1

// FlagKeepConn is the BEGIN_REQUEST flag asking the application to keep
// the connection open after END_REQUEST, for the next request. Without it
// the application closes the connection once the request is done.
const FlagKeepConn uint8 = 1

// The END_REQUEST protocol statuses.
const (
	// StatusRequestComplete is a normal end of request.
	StatusRequestComplete uint8 = 0
	// StatusCantMultiplexConn rejects a second concurrent request on a
	// connection (php-fpm handles one request per connection at a time).
	StatusCantMultiplexConn uint8 = 1
	// StatusOverloaded rejects a request for lack of resources.
	StatusOverloaded uint8 = 2
	// StatusUnknownRole rejects a role the application does not play.
	StatusUnknownRole uint8 = 3
)

// ErrMalformed reports bytes that do not follow the FastCGI encoding: a
// wrong version, a record or a name-value pair cut short, a length running
// past the end of its block, an END_REQUEST body of the wrong size, or a
// record the client does not expect. Errors returned by this package wrap
// it with the detail and the offset (test with errors.Is).
var ErrMalformed = errors.New("fastcgi: malformed record")

// Header is the 8-byte header of a FastCGI record.
type Header struct {
	// Version is the protocol version, always Version1.
	Version uint8
	// Type is the record type.
	Type RecordType
	// RequestID names the request the record belongs to; 0 is reserved
	// for management records (GET_VALUES and the like).
	RequestID uint16
	// ContentLength is the number of content bytes that follow the
	// header.
	ContentLength uint16
	// PaddingLength is the number of bytes after the content that the
	// reader skips; senders use it to align records on 8 bytes.
	PaddingLength uint8
}

// Append appends the 8-byte encoding of h to dst and returns the extended
// slice. The reserved byte is 0.
func (h Header) Append(dst []byte) []byte {
	return append(dst, h.Version, byte(h.Type),
		byte(h.RequestID>>8), byte(h.RequestID),
		byte(h.ContentLength>>8), byte(h.ContentLength),
		h.PaddingLength, 0)
}

// ParseHeader decodes the first HeaderSize bytes of b. It fails with
// ErrMalformed when b is shorter than HeaderSize or the version is not
// Version1.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: header is %d bytes, want %d", ErrMalformed, len(b), HeaderSize)
	}
	h := Header{
		Version:       b[0],
		Type:          RecordType(b[1]),
		RequestID:     uint16(b[2])<<8 | uint16(b[3]),
		ContentLength: uint16(b[4])<<8 | uint16(b[5]),
		PaddingLength: b[6],
	}
	if h.Version != Version1 {
		return h, fmt.Errorf("%w: version %d at offset 0, want %d", ErrMalformed, h.Version, Version1)
	}
	return h, nil
}

// padding returns the padding that aligns n content bytes on 8.
func padding(n int) int { return -n & 7 }

// AppendRecord appends one record of type t for request id, holding
// content and padded to a multiple of 8 bytes, and returns the extended
// slice. The caller guarantees len(content) <= MaxContentSize; a longer
// content is encoded with a truncated length. An empty content is the end
// of a PARAMS, STDIN or STDOUT stream.
func AppendRecord[T ~string | ~[]byte](dst []byte, t RecordType, id uint16, content T) []byte {
	pad := padding(len(content))
	dst = Header{Version: Version1, Type: t, RequestID: id,
		ContentLength: uint16(len(content)), PaddingLength: uint8(pad)}.Append(dst)
	dst = append(dst, content...)
	return append(dst, zeros[:pad]...)
}

var zeros [8]byte

// AppendBeginRequest appends a BEGIN_REQUEST record opening request id in
// role (RoleResponder) with flags (0 or FlagKeepConn).
func AppendBeginRequest(dst []byte, id uint16, role uint16, flags uint8) []byte {
	dst = Header{Version: Version1, Type: TypeBeginRequest, RequestID: id, ContentLength: 8}.Append(dst)
	return append(dst, byte(role>>8), byte(role), flags, 0, 0, 0, 0, 0)
}

// AppendAbortRequest appends an ABORT_REQUEST record for request id.
func AppendAbortRequest(dst []byte, id uint16) []byte {
	return Header{Version: Version1, Type: TypeAbortRequest, RequestID: id}.Append(dst)
}

// EndRequest is the body of an END_REQUEST record.
type EndRequest struct {
	// AppStatus is the application's exit status (PHP's exit code).
	AppStatus uint32
	// ProtocolStatus is StatusRequestComplete or the reason the request
	// was refused.
	ProtocolStatus uint8
}

// AppendEndRequest appends an END_REQUEST record for request id; test
// servers use it.
func AppendEndRequest(dst []byte, id uint16, e EndRequest) []byte {
	dst = Header{Version: Version1, Type: TypeEndRequest, RequestID: id, ContentLength: 8}.Append(dst)
	s := e.AppStatus
	return append(dst, byte(s>>24), byte(s>>16), byte(s>>8), byte(s), e.ProtocolStatus, 0, 0, 0)
}

// ParseEndRequest decodes the content of an END_REQUEST record, which must
// be exactly 8 bytes long.
func ParseEndRequest(b []byte) (EndRequest, error) {
	if len(b) != 8 {
		return EndRequest{}, fmt.Errorf("%w: END_REQUEST body is %d bytes, want 8", ErrMalformed, len(b))
	}
	return EndRequest{
		AppStatus:      uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]),
		ProtocolStatus: b[4],
	}, nil
}

// appendLength appends a name-value pair length: one byte below 128, else
// four bytes, big-endian, with the top bit set.
func appendLength(dst []byte, n int) []byte {
	if n < 128 {
		return append(dst, byte(n))
	}
	return append(dst, byte(n>>24)|0x80, byte(n>>16), byte(n>>8), byte(n))
}

// lengthSize is the encoded size of a pair length n.
func lengthSize(n int) int {
	if n < 128 {
		return 1
	}
	return 4
}

// AppendPair appends one name-value pair (nameLength, valueLength, name,
// value; each length in one byte below 128, else four) to dst and returns
// the extended slice. It allocates nothing beyond growing dst.
func AppendPair[N, V ~string | ~[]byte](dst []byte, name N, value V) []byte {
	dst = appendLength(dst, len(name))
	dst = appendLength(dst, len(value))
	dst = append(dst, name...)
	return append(dst, value...)
}

// ParsePairs walks the name-value pairs of b (the concatenated content of
// a PARAMS stream) strictly and calls fn for each in order. A length cut
// short, a name or value running past the end of b, or an empty name makes
// it fail with an error wrapping ErrMalformed that names the offset; pairs
// before the fault have already been passed to fn. An error returned by fn
// stops the walk and is returned unchanged.
//
// name and value alias b: fn must copy them to keep them past its return,
// and must not modify them.
func ParsePairs(b []byte, fn func(name, value []byte) error) error {
	for off := 0; off < len(b); {
		start := off
		n, next, err := parseLength(b, off, "name")
		if err != nil {
			return err
		}
		m, next, err := parseLength(b, next, "value")
		if err != nil {
			return err
		}
		off = next
		if n == 0 {
			return fmt.Errorf("%w: empty name in the pair at offset %d", ErrMalformed, start)
		}
		if n > len(b)-off || m > len(b)-off-n {
			return fmt.Errorf("%w: pair at offset %d (name %d bytes, value %d bytes) runs past the end of the %d-byte block",
				ErrMalformed, start, n, m, len(b))
		}
		name, value := b[off:off+n], b[off+n:off+n+m]
		off += n + m
		if err := fn(name, value); err != nil {
			return err
		}
	}
	return nil
}

// parseLength decodes the pair length at b[off:], returning it and the
// offset after it.
func parseLength(b []byte, off int, what string) (int, int, error) {
	if off >= len(b) {
		return 0, 0, fmt.Errorf("%w: missing %s length at offset %d", ErrMalformed, what, off)
	}
	if b[off] < 0x80 {
		return int(b[off]), off + 1, nil
	}
	if len(b)-off < 4 {
		return 0, 0, fmt.Errorf("%w: %s length cut short at offset %d", ErrMalformed, what, off)
	}
	n := int(b[off]&0x7f)<<24 | int(b[off+1])<<16 | int(b[off+2])<<8 | int(b[off+3])
	return n, off + 4, nil
}

// ReadRecord reads one record from r: its header, then its content into
// buf and its padding. buf is replaced by a larger slice when its capacity
// is too small (MaxContentSize+255 always suffices); the returned content
// aliases buf or its replacement, so a caller can reuse it for the next
// record.
//
// It returns io.EOF, unwrapped, when r is at its end before the first byte.
// A record cut short by the end of r fails with an error wrapping both
// ErrMalformed and io.ErrUnexpectedEOF, a wrong version with ErrMalformed;
// any other read error (a deadline, a closed connection) is returned
// wrapped. Offsets in errors count from the start of the record.
func ReadRecord(r io.Reader, buf []byte) (Header, []byte, error) {
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
		return Header{}, buf[:0], fmt.Errorf("fastcgi: reading record header: %w", err)
	}
	h, err := ParseHeader(hb)
	if err != nil {
		return h, buf[:0], err
	}
	size := int(h.ContentLength) + int(h.PaddingLength)
	if cap(buf) < size {
		buf = make([]byte, 0, (size+4095)&^4095)
	}
	b := buf[:size]
	if n, err := io.ReadFull(r, b); err != nil {
		if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
			return h, buf[:0], fmt.Errorf("%w: record body cut short at offset %d, after %d of %d bytes: %w",
				ErrMalformed, HeaderSize+n, n, size, io.ErrUnexpectedEOF)
		}
		return h, buf[:0], fmt.Errorf("fastcgi: reading record body: %w", err)
	}
	return h, b[:h.ContentLength], nil
}
