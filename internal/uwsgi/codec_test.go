package uwsgi

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
)

// kv is one variable, in packet order.
type kv struct{ k, v string }

// stockParams are the variables of nginx's stock /etc/nginx/uwsgi_params,
// with values as nginx fills them for a GET of
// http://example.com/hello%20world/caf%C3%A9?x=1&y=two from 203.0.113.7.
func stockParams() []kv {
	return []kv{
		{"QUERY_STRING", "x=1&y=two"},
		{"REQUEST_METHOD", "GET"},
		{"CONTENT_TYPE", ""},
		{"CONTENT_LENGTH", ""},
		{"REQUEST_URI", "/hello%20world/caf%C3%A9?x=1&y=two"},
		{"PATH_INFO", "/hello world/caf\xc3\xa9"},
		{"DOCUMENT_ROOT", "/usr/share/nginx/html"},
		{"SERVER_PROTOCOL", "HTTP/1.1"},
		{"REQUEST_SCHEME", "http"},
		{"REMOTE_ADDR", "203.0.113.7"},
		{"REMOTE_PORT", "51234"},
		{"SERVER_PORT", "80"},
		{"SERVER_NAME", "example.com"},
		{"HTTP_HOST", "example.com"},
		{"HTTP_USER_AGENT", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"},
		{"HTTP_ACCEPT", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
		{"HTTP_ACCEPT_LANGUAGE", "en-US,en;q=0.5"},
		{"HTTP_ACCEPT_ENCODING", "gzip, deflate, br, zstd"},
		{"HTTP_COOKIE", "sessionid=abc123; csrftoken=xyz"},
		{"HTTP_X_FORWARDED_FOR", "198.51.100.1"},
	}
}

// encodeVars encodes vars as a vars block.
func encodeVars(vars []kv) []byte {
	var b []byte
	for _, v := range vars {
		b = AppendVar(b, v.k, v.v)
	}
	return b
}

// packet encodes a whole packet with modifier1 mod1.
func packet(mod1 uint8, vars []kv) []byte {
	block := encodeVars(vars)
	return append(Header{Modifier1: mod1, Size: uint16(len(block))}.Append(nil), block...)
}

// decodeVars parses a vars block into a list.
func decodeVars(t testing.TB, b []byte) []kv {
	t.Helper()
	var out []kv
	if err := ParseVars(b, func(k, v []byte) error {
		out = append(out, kv{string(k), string(v)})
		return nil
	}); err != nil {
		t.Fatalf("ParseVars: %v", err)
	}
	return out
}

func TestHeaderRoundTrip(t *testing.T) {
	tests := []struct {
		h    Header
		wire []byte
	}{
		{Header{}, []byte{0, 0, 0, 0}},
		{Header{Modifier1: 30, Size: 0x1234, Modifier2: 7}, []byte{30, 0x34, 0x12, 7}},
		{Header{Modifier1: 255, Size: MaxVarsSize, Modifier2: 255}, []byte{255, 0xff, 0xff, 255}},
	}
	for _, tt := range tests {
		got := tt.h.Append([]byte("x"))
		if !bytes.Equal(got, append([]byte("x"), tt.wire...)) {
			t.Errorf("%+v.Append = %v, want x+%v", tt.h, got, tt.wire)
		}
		h, err := ParseHeader(tt.wire)
		if err != nil || h != tt.h {
			t.Errorf("ParseHeader(%v) = %+v, %v; want %+v", tt.wire, h, err, tt.h)
		}
	}
}

func TestParseHeaderShort(t *testing.T) {
	for n := 0; n < HeaderSize; n++ {
		if _, err := ParseHeader(make([]byte, n)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseHeader(%d bytes) error = %v, want ErrMalformed", n, err)
		}
	}
}

func TestVarsRoundTrip(t *testing.T) {
	vars := []kv{
		{"REQUEST_METHOD", "GET"},
		{"EMPTY", ""},
		{"BINARY", "\x00\xff\r\n\xe9"},
		{"K", strings.Repeat("v", 300)}, // a length above 255 exercises the high byte
		{"REQUEST_METHOD", "POST"},      // duplicates are the consumer's business
	}
	block := encodeVars(vars)
	if got := decodeVars(t, block); !equalKV(got, vars) {
		t.Fatalf("round trip = %q, want %q", got, vars)
	}
	// The wire form, byte for byte, for one var.
	if got, want := AppendVar(nil, "AB", "xyz"), []byte{2, 0, 'A', 'B', 3, 0, 'x', 'y', 'z'}; !bytes.Equal(got, want) {
		t.Errorf("AppendVar = %v, want %v", got, want)
	}
	if err := ParseVars(nil, func(k, v []byte) error { t.Error("fn called for an empty block"); return nil }); err != nil {
		t.Errorf("ParseVars(empty) = %v", err)
	}
}

func TestParseVarsMalformed(t *testing.T) {
	good := AppendVar(nil, "A", "1")
	tests := []struct {
		name  string
		block []byte
	}{
		{"truncated key length", append(good[:len(good):len(good)], 5)},
		{"empty key", append(good[:len(good):len(good)], 0, 0, 1, 0, 'x')},
		{"key past end", append(good[:len(good):len(good)], 9, 0, 'K')},
		{"truncated value length", append(good[:len(good):len(good)], 1, 0, 'K', 3)},
		{"missing value length", append(good[:len(good):len(good)], 1, 0, 'K')},
		{"value past end", append(good[:len(good):len(good)], 1, 0, 'K', 4, 0, 'a', 'b')},
		{"key length says 65535", append(good[:len(good):len(good)], 0xff, 0xff, 'K')},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seen []string
			err := ParseVars(tt.block, func(k, v []byte) error {
				seen = append(seen, string(k))
				return nil
			})
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error = %v, want ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), "offset") {
				t.Errorf("error %q does not name the offset", err)
			}
			if len(seen) != 1 || seen[0] != "A" {
				t.Errorf("vars before the fault = %q, want [A]", seen)
			}
		})
	}
}

func TestParseVarsCallbackError(t *testing.T) {
	stop := errors.New("stop")
	calls := 0
	err := ParseVars(encodeVars(stockParams()), func(k, v []byte) error {
		calls++
		if string(k) == "REQUEST_METHOD" {
			return stop
		}
		return nil
	})
	if err != stop {
		t.Errorf("error = %v, want the callback's error unchanged", err)
	}
	if calls != 2 {
		t.Errorf("fn called %d times, want 2 (the walk stops)", calls)
	}
}

func TestReadPacket(t *testing.T) {
	pkt := packet(0, stockParams())
	stream := append(pkt[:len(pkt):len(pkt)], "BODY"...)

	t.Run("reads exactly one packet", func(t *testing.T) {
		r := bytes.NewReader(stream)
		buf := make([]byte, 0, 64) // too small: grown
		h, vars, err := ReadPacket(r, buf)
		if err != nil {
			t.Fatal(err)
		}
		if h.Modifier1 != 0 || int(h.Size) != len(pkt)-HeaderSize || len(vars) != int(h.Size) {
			t.Fatalf("header %+v, %d vars bytes; want size %d", h, len(vars), len(pkt)-HeaderSize)
		}
		if !equalKV(decodeVars(t, vars), stockParams()) {
			t.Error("vars differ from what was sent")
		}
		rest, _ := io.ReadAll(r)
		if string(rest) != "BODY" {
			t.Errorf("left in reader = %q, want BODY", rest)
		}
	})

	t.Run("reuses a large enough buffer", func(t *testing.T) {
		buf := make([]byte, 0, 8192)
		_, vars, err := ReadPacket(bytes.NewReader(pkt), buf)
		if err != nil {
			t.Fatal(err)
		}
		if &vars[0] != &buf[:1][0] {
			t.Error("vars does not alias the buffer passed in")
		}
	})

	t.Run("empty vars block", func(t *testing.T) {
		h, vars, err := ReadPacket(bytes.NewReader([]byte{5, 0, 0, 9}), nil)
		if err != nil || len(vars) != 0 || h != (Header{Modifier1: 5, Modifier2: 9}) {
			t.Errorf("= %+v, %d bytes, %v", h, len(vars), err)
		}
	})

	t.Run("EOF before the first byte", func(t *testing.T) {
		if _, _, err := ReadPacket(bytes.NewReader(nil), nil); err != io.EOF {
			t.Errorf("error = %v, want io.EOF unwrapped", err)
		}
	})

	for _, n := range []int{1, 3, HeaderSize, HeaderSize + 10, len(pkt) - 1} {
		t.Run("cut short", func(t *testing.T) {
			_, _, err := ReadPacket(bytes.NewReader(pkt[:n]), nil)
			if !errors.Is(err, ErrMalformed) || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("%d of %d bytes: error = %v, want ErrMalformed and ErrUnexpectedEOF", n, len(pkt), err)
			}
		})
	}

	t.Run("read error is wrapped, not malformed", func(t *testing.T) {
		r := io.MultiReader(bytes.NewReader(pkt[:10]), iotest.ErrReader(os.ErrDeadlineExceeded))
		_, _, err := ReadPacket(r, nil)
		if !errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ErrMalformed) {
			t.Errorf("error = %v, want a wrapped deadline error", err)
		}
	})

	t.Run("one byte at a time", func(t *testing.T) {
		_, vars, err := ReadPacket(iotest.OneByteReader(bytes.NewReader(pkt)), nil)
		if err != nil || !bytes.Equal(vars, pkt[HeaderSize:]) {
			t.Errorf("= %d bytes, %v", len(vars), err)
		}
	})
}

func equalKV(a, b []kv) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func FuzzParseVars(f *testing.F) {
	f.Add(encodeVars(stockParams()))
	f.Add([]byte{})
	f.Add([]byte{1, 0, 'K', 0, 0})
	f.Add([]byte{0, 0})
	f.Add([]byte{1, 0, 'K', 0xff, 0xff, 'v'})
	f.Fuzz(func(t *testing.T, b []byte) {
		var again []byte
		err := ParseVars(b, func(k, v []byte) error {
			if len(k) == 0 {
				t.Fatal("empty key passed to fn")
			}
			again = AppendVar(again, string(k), string(v))
			return nil
		})
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n got %q\nwant %q", again, b)
		}
		// The string walker the server uses agrees.
		var n int
		if err := walkVars(string(b), func(k, v string) error { n += 4 + len(k) + len(v); return nil }); err != nil || n != len(b) {
			t.Fatalf("walkVars(string) = %v covering %d of %d bytes", err, n, len(b))
		}
	})
}

func FuzzReadPacket(f *testing.F) {
	f.Add(append(packet(0, stockParams()), "body"...))
	f.Add(packet(30, []kv{{"SCRIPT_NAME", "/app"}, {"PATH_INFO", "/app/x"}}))
	f.Add([]byte{0, 10, 0})
	f.Add([]byte{0, 10, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, vars, err := ReadPacket(bytes.NewReader(b), make([]byte, 0, 8))
		if err != nil {
			if len(b) >= HeaderSize+int(h.Size) && err != io.EOF {
				t.Fatalf("error %v although the input holds the whole packet", err)
			}
			if err == io.EOF && len(b) != 0 {
				t.Fatalf("io.EOF for %d bytes of input", len(b))
			}
			return
		}
		if len(vars) != int(h.Size) {
			t.Fatalf("%d vars bytes for size %d", len(vars), h.Size)
		}
		if got := append(h.Append(nil), vars...); !bytes.Equal(got, b[:len(got)]) {
			t.Fatalf("packet re-encodes to %q, read from %q", got, b)
		}
		_ = ParseVars(vars, func(k, v []byte) error { return nil })
	})
}
