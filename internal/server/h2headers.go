package server

import (
	"errors"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2block is a header block being read: a HEADERS frame and its
// CONTINUATIONs, decoded as they come into slices the connection reuses.
// It does what x/net's Framer does with ReadMetaHeaders (the same
// validation and the same bounds: a block past SETTINGS_MAX_HEADER_LIST_SIZE
// is marked truncated and decoding stops emitting; a CONTINUATION past
// that, or a fragment larger than twice what is left, ends the connection,
// so an endless block is cut while it is read, CVE-2024-27316) without a
// MetaHeadersFrame and a grown Fields slice per request.
type h2block struct {
	dec    *hpack.Decoder
	active bool // a block is open (HEADERS read, END_HEADERS not yet)

	stream    uint32
	endStream bool
	priority  bool
	dep       uint32

	pseudo, regular []hpack.HeaderField
	sawRegular      bool
	remain          uint32 // header list bytes still allowed
	truncated       bool
	invalid         error
}

var (
	errPseudoAfterRegular = errors.New("server: pseudo-header field after a regular one")
	errInvalidField       = errors.New("server: invalid header field")
	errBadPseudo          = errors.New("server: invalid or duplicated pseudo-header field")
)

func (b *h2block) init(maxList uint32) {
	b.dec = hpack.NewDecoder(4096, b.emit)
	b.dec.SetMaxStringLength(int(maxList))
	b.remain = maxList
}

func (b *h2block) emit(hf hpack.HeaderField) {
	if !httpguts.ValidHeaderFieldValue(hf.Value) {
		b.invalid = errInvalidField
	}
	if strings.HasPrefix(hf.Name, ":") {
		if b.sawRegular {
			b.invalid = errPseudoAfterRegular
		}
	} else {
		b.sawRegular = true
		if !validWireName(hf.Name) {
			b.invalid = errInvalidField
		}
	}
	if b.invalid != nil {
		b.dec.SetEmitEnabled(false)
		return
	}
	size := hf.Size()
	if size > b.remain {
		b.dec.SetEmitEnabled(false)
		b.truncated = true
		b.remain = 0
		return
	}
	b.remain -= size
	if hf.IsPseudo() {
		b.pseudo = append(b.pseudo, hf)
	} else {
		b.regular = append(b.regular, hf)
	}
}

// validWireName reports whether name is a valid lower-case field name.
func validWireName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !httpguts.IsTokenRune(rune(c)) || 'A' <= c && c <= 'Z' {
			return false
		}
	}
	return true
}

// start opens a block with its HEADERS frame; maxList is the header list
// bound.
func (b *h2block) start(f *http2.HeadersFrame, maxList uint32) {
	b.active = true
	b.stream = f.StreamID
	b.endStream = f.StreamEnded()
	b.priority = f.HasPriority()
	b.dep = f.Priority.StreamDep
	clear(b.pseudo)
	clear(b.regular)
	b.pseudo, b.regular = b.pseudo[:0], b.regular[:0]
	b.sawRegular, b.truncated, b.invalid = false, false, nil
	b.remain = maxList
	b.dec.SetEmitEnabled(true)
}

// fragment decodes a fragment of the block; done when it ends the block.
// The error is a connection error, or a stream error for a malformed block.
func (b *h2block) fragment(frag []byte, end bool) (done bool, err error) {
	if int64(len(frag)) > 2*int64(b.remain) || b.invalid != nil {
		b.active = false
		return true, http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if _, err := b.dec.Write(frag); err != nil {
		b.active = false
		return true, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if !end {
		return false, nil
	}
	b.active = false
	if err := b.dec.Close(); err != nil {
		return true, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if b.invalid != nil {
		return true, http2.StreamError{StreamID: b.stream, Code: http2.ErrCodeProtocol, Cause: b.invalid}
	}
	// Request pseudo-header fields only, each at most once.
	var seen [4]bool
	for _, hf := range b.pseudo {
		i := -1
		switch hf.Name {
		case ":method":
			i = 0
		case ":path":
			i = 1
		case ":scheme":
			i = 2
		case ":authority":
			i = 3
		}
		if i < 0 || seen[i] {
			return true, http2.StreamError{StreamID: b.stream, Code: http2.ErrCodeProtocol, Cause: errBadPseudo}
		}
		seen[i] = true
	}
	return true, nil
}

// onBlockFrame handles a HEADERS or CONTINUATION frame (the Framer has
// checked their order).
func (c *h2conn) onBlockFrame(f http2.Frame) error {
	b := &c.block
	var done bool
	var err error
	switch f := f.(type) {
	case *http2.HeadersFrame:
		max := c.maxHeaderListSize()
		b.start(f, max)
		done, err = b.fragment(f.HeaderBlockFragment(), f.HeadersEnded())
	case *http2.ContinuationFrame:
		if !b.active {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		done, err = b.fragment(f.HeaderBlockFragment(), f.HeadersEnded())
	}
	if err != nil || !done {
		return err
	}
	return c.onHeaders(b)
}
