package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
)

var (
	errBodyAfterReturn = errors.New("server: request body read after the handler returned")
	errChunkedBody     = errors.New("server: malformed chunked request body")
	errBodyEOF         = io.ErrUnexpectedEOF
)

// maxChunkLine bounds a chunk-size line with its extensions, which the
// server reads and ignores.
const maxChunkLine = 4 << 10

// body is a request body: Content-Length bytes of the connection, or a
// chunked body up to its last chunk and trailers (read and dropped). Its
// methods may be called from other goroutines than the handler's, so they
// take a lock; they fail once the handler has returned.
type body struct {
	c  *conn
	mu sync.Mutex

	chunked bool
	// remaining is what is left of a Content-Length body, or of the
	// current chunk of a chunked one.
	remaining int64
	// chunkState is where a chunked body is: between chunks (reading a
	// size line), in a chunk's data, or done.
	chunkState int
	eof        bool
	err        error // sticky
	closed     bool
	done       bool // the handler returned
}

const (
	chunkSize = iota
	chunkData
)

// Read reads the body, sending "100 Continue" first if the client asked for
// it and nothing of the response has been sent yet.
func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.done:
		return 0, errBodyAfterReturn
	case b.closed:
		return 0, http.ErrBodyReadAfterClose
	case b.err != nil:
		return 0, b.err
	case b.eof:
		return 0, io.EOF
	case len(p) == 0:
		return 0, nil
	}
	c := b.c
	if c.expectContinue {
		c.expectContinue = false
		if err := c.writeContinue(); err != nil {
			b.err = err
			return 0, err
		}
	}
	n, err := b.readLocked(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	if err == io.EOF {
		b.eof = true
		c.bodyDone()
	}
	return n, err
}

func (b *body) readLocked(p []byte) (int, error) {
	if !b.chunked {
		if int64(len(p)) > b.remaining {
			p = p[:b.remaining]
		}
		n, err := b.c.readBody(p)
		b.remaining -= int64(n)
		if b.remaining == 0 {
			return n, io.EOF
		}
		if err == io.EOF {
			err = errBodyEOF
		}
		return n, err
	}
	for {
		switch b.chunkState {
		case chunkSize:
			size, err := b.readChunkSize()
			if err != nil {
				return 0, err
			}
			if size == 0 {
				if err := b.c.skipTrailers(); err != nil {
					return 0, err
				}
				return 0, io.EOF
			}
			b.remaining, b.chunkState = size, chunkData
		case chunkData:
			if int64(len(p)) > b.remaining {
				p = p[:b.remaining]
			}
			n, err := b.c.readBody(p)
			b.remaining -= int64(n)
			if err == io.EOF {
				err = errBodyEOF
			}
			if err != nil {
				return n, err
			}
			if b.remaining == 0 {
				if err := b.c.readCRLF(); err != nil {
					return n, err
				}
				b.chunkState = chunkSize
			}
			return n, nil
		}
	}
}

// readChunkSize reads a chunk-size line: hex digits, then optional
// extensions (ignored), then CRLF.
func (b *body) readChunkSize() (int64, error) {
	line, err := b.c.readLine(maxChunkLine)
	if err != nil {
		return 0, err
	}
	var size int64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			goto end
		}
		if size >= 1<<56 {
			// A 16th significant digit; leading zeros do not count.
			return 0, fmt.Errorf("%w: chunk size too large", errChunkedBody)
		}
		size = size<<4 | int64(d)
	}
end:
	if i == 0 {
		return 0, fmt.Errorf("%w: no chunk size", errChunkedBody)
	}
	if rest := trimOWS(string(line[i:])); rest != "" && rest[0] != ';' {
		return 0, fmt.Errorf("%w: bad chunk size line", errChunkedBody)
	}
	return size, nil
}

// Close makes further reads fail; the server deals with what is unread.
func (b *body) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

// finish marks the handler as returned and reports whether the body was
// read to its end.
func (b *body) finish() (eof bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done = true
	return b.eof
}

// discard reads what is left of the body, up to max bytes; it reports
// whether it reached the end.
func (b *body) discard(max int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.eof {
		return true
	}
	if b.err != nil || !b.chunked && b.remaining > max {
		return false
	}
	buf := b.c.scratch()
	var total int64
	for total <= max {
		n, err := b.readLocked(buf)
		total += int64(n)
		if err == io.EOF {
			b.eof = true
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}
