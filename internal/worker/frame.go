package worker

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// Response frames sent by worker.py on a slot connection: a type byte, a
// little-endian uint32 payload length, the payload.
const (
	frameHead  = 'H' // "200 OK\r\nName: value\r\n..." (latin-1)
	frameBody  = 'B' // body bytes
	frameEnd   = 'E' // response complete; the slot is free
	frameError = 'X' // request failed (payload: a one-line reason, a newline, the Python traceback); the slot is free

	frameHeaderSize = 5
	// maxHeadFrame bounds the status line and headers an app may send.
	maxHeadFrame = 1 << 20
)

// frameReader reads frames and survives a read deadline in the middle of a
// frame: the state (header bytes seen, payload left) lives here, so that a
// timed-out exchange can be drained to its end frame and the connection reused.
type frameReader struct {
	br   *bufio.Reader
	hdr  [frameHeaderSize]byte
	hn   int  // header bytes read so far
	typ  byte // type of the current frame
	left int  // payload bytes of the current frame not read yet
}

// next finishes the current frame's payload (discarding it) and reads the
// next frame header.
func (f *frameReader) next() (typ byte, n int, err error) {
	if err := f.skip(); err != nil {
		return 0, 0, err
	}
	for f.hn < frameHeaderSize {
		m, err := f.br.Read(f.hdr[f.hn:])
		f.hn += m
		if err != nil {
			if err == io.EOF && f.hn > 0 {
				err = io.ErrUnexpectedEOF
			}
			return 0, 0, err
		}
	}
	f.hn = 0
	f.typ = f.hdr[0]
	size := binary.LittleEndian.Uint32(f.hdr[1:])
	switch f.typ {
	case frameHead:
		if size > maxHeadFrame {
			return 0, 0, fmt.Errorf("%w: %d-byte header frame", errProtocol, size)
		}
	case frameError:
		if size > maxHeadFrame {
			return 0, 0, fmt.Errorf("%w: %d-byte error frame", errProtocol, size)
		}
	case frameBody:
	case frameEnd:
		if size != 0 {
			return 0, 0, fmt.Errorf("%w: end frame with a payload", errProtocol)
		}
	default:
		return 0, 0, fmt.Errorf("%w: unknown frame type %q", errProtocol, f.typ)
	}
	f.left = int(size)
	return f.typ, f.left, nil
}

// appendPayload appends the rest of the current frame's payload to dst.
// On error, what was read is in the returned slice and f stays consistent.
func (f *frameReader) appendPayload(dst []byte) ([]byte, error) {
	for f.left > 0 {
		if cap(dst)-len(dst) < f.left {
			dst = append(dst, make([]byte, f.left)...)[:len(dst)]
		}
		m, err := f.br.Read(dst[len(dst) : len(dst)+f.left])
		dst = dst[:len(dst)+m]
		f.left -= m
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return dst, err
		}
	}
	return dst, nil
}

// read reads up to len(p) bytes of the current frame's payload.
func (f *frameReader) read(p []byte) (int, error) {
	if f.left == 0 {
		return 0, io.EOF
	}
	if len(p) > f.left {
		p = p[:f.left]
	}
	m, err := f.br.Read(p)
	f.left -= m
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return m, err
}

// skip discards the rest of the current frame's payload.
func (f *frameReader) skip() error {
	for f.left > 0 {
		m, err := f.br.Discard(f.left)
		f.left -= m
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}
