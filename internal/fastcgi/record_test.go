package fastcgi

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	h := Header{Version: Version1, Type: TypeStdout, RequestID: 0x1234, ContentLength: 0xabcd, PaddingLength: 3}
	b := h.Append(nil)
	want := []byte{1, 6, 0x12, 0x34, 0xab, 0xcd, 3, 0}
	if !bytes.Equal(b, want) {
		t.Fatalf("Append = %x, want %x", b, want)
	}
	got, err := ParseHeader(b)
	if err != nil || got != h {
		t.Fatalf("ParseHeader = %+v, %v; want %+v", got, err, h)
	}
	if _, err := ParseHeader(b[:7]); !errors.Is(err, ErrMalformed) {
		t.Errorf("short header: %v, want ErrMalformed", err)
	}
	b[0] = 2
	if _, err := ParseHeader(b); !errors.Is(err, ErrMalformed) {
		t.Errorf("version 2: %v, want ErrMalformed", err)
	}
}

func TestAppendRecordPadding(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 65535} {
		rec := AppendRecord(nil, TypeStdin, 1, strings.Repeat("x", n))
		if len(rec)%8 != 0 {
			t.Errorf("%d bytes: record of %d bytes, not aligned on 8", n, len(rec))
		}
		h, content, err := ReadRecord(bytes.NewReader(rec), nil)
		if err != nil || h.Type != TypeStdin || len(content) != n {
			t.Errorf("%d bytes: ReadRecord = %+v, %d bytes, %v", n, h, len(content), err)
		}
	}
}

func TestBeginEndRequest(t *testing.T) {
	b := AppendBeginRequest(nil, 1, RoleResponder, FlagKeepConn)
	want := []byte{1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0}
	if !bytes.Equal(b, want) {
		t.Fatalf("BEGIN_REQUEST = %x, want %x", b, want)
	}
	e := EndRequest{AppStatus: 0x01020304, ProtocolStatus: StatusOverloaded}
	h, content, err := ReadRecord(bytes.NewReader(AppendEndRequest(nil, 7, e)), nil)
	if err != nil || h.Type != TypeEndRequest || h.RequestID != 7 {
		t.Fatalf("ReadRecord = %+v, %v", h, err)
	}
	if got, err := ParseEndRequest(content); err != nil || got != e {
		t.Fatalf("ParseEndRequest = %+v, %v; want %+v", got, err, e)
	}
	if _, err := ParseEndRequest(content[:7]); !errors.Is(err, ErrMalformed) {
		t.Errorf("7-byte END_REQUEST: %v", err)
	}
	if got := AppendAbortRequest(nil, 1); !bytes.Equal(got, []byte{1, 2, 0, 1, 0, 0, 0, 0}) {
		t.Errorf("ABORT_REQUEST = %x", got)
	}
}

func TestPairs(t *testing.T) {
	long := strings.Repeat("v", 200)
	tests := []struct {
		name, value string
		encoded     []byte
	}{
		{"A", "b", []byte{1, 1, 'A', 'b'}},
		{"EMPTY", "", []byte{5, 0, 'E', 'M', 'P', 'T', 'Y'}},
		{"L", long, append([]byte{1, 0x80, 0, 0, 200, 'L'}, long...)},
		{strings.Repeat("n", 127), "x", append(append([]byte{127, 1}, strings.Repeat("n", 127)...), 'x')},
		{strings.Repeat("n", 128), "", append([]byte{0x80, 0, 0, 128, 0}, strings.Repeat("n", 128)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name[:1]+"/"+string(rune('0'+len(tt.value)%10)), func(t *testing.T) {
			b := AppendPair(nil, tt.name, tt.value)
			if !bytes.Equal(b, tt.encoded) {
				t.Fatalf("AppendPair = %x, want %x", b, tt.encoded)
			}
			var got [][2]string
			err := ParsePairs(b, func(n, v []byte) error {
				got = append(got, [2]string{string(n), string(v)})
				return nil
			})
			if err != nil || len(got) != 1 || got[0] != [2]string{tt.name, tt.value} {
				t.Fatalf("ParsePairs = %q, %v", got, err)
			}
		})
	}
}

func TestParsePairsMalformed(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"no value length", []byte{1}, "missing value length at offset 1"},
		{"cut 4-byte length", []byte{0x80, 0}, "name length cut short at offset 0"},
		{"empty name", []byte{0, 0}, "empty name in the pair at offset 0"},
		{"name past end", []byte{5, 0, 'a'}, "pair at offset 0"},
		{"value past end", []byte{1, 1, 'a', 'b', 1, 9, 'c'}, "pair at offset 4"},
		{"huge length", []byte{0xff, 0xff, 0xff, 0xff, 0}, "runs past the end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ParsePairs(tt.b, func(n, v []byte) error { return nil })
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrMalformed with %q", err, tt.want)
			}
		})
	}
}

func TestReadRecordErrors(t *testing.T) {
	rec := AppendRecord(nil, TypeStdout, 1, "hello")
	tests := []struct {
		name     string
		b        []byte
		eof      bool // io.EOF, unwrapped
		unexpEOF bool
	}{
		{"empty", nil, true, false},
		{"cut header", rec[:3], false, true},
		{"cut content", rec[:10], false, true},
		{"cut padding", rec[:14], false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ReadRecord(bytes.NewReader(tt.b), nil)
			if tt.eof && err != io.EOF {
				t.Fatalf("err = %v, want io.EOF", err)
			}
			if tt.unexpEOF && !(errors.Is(err, ErrMalformed) && errors.Is(err, io.ErrUnexpectedEOF)) {
				t.Fatalf("err = %v, want ErrMalformed and io.ErrUnexpectedEOF", err)
			}
		})
	}
}

// FuzzReadRecord feeds arbitrary bytes to the record and pair decoders:
// they must never panic, and a decoded pair block must re-encode to the
// same bytes.
func FuzzReadRecord(f *testing.F) {
	f.Add(AppendRecord(nil, TypeParams, 1, AppendPair(AppendPair(nil, "A", "b"), "LONG", strings.Repeat("v", 300))))
	f.Add(AppendEndRequest(nil, 1, EndRequest{}))
	f.Add(AppendRecord(AppendRecord(nil, TypeStdout, 1, "Status: 200\r\n\r\nhi"), TypeStderr, 1, "warn"))
	f.Add([]byte{1, 4, 0, 1, 0xff, 0xff, 0xff, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		var buf []byte
		for {
			h, content, err := ReadRecord(r, buf)
			if err != nil {
				return
			}
			if len(content) != int(h.ContentLength) {
				t.Fatalf("content %d bytes, header says %d", len(content), h.ContentLength)
			}
			buf = content[:0]
			switch h.Type {
			case TypeEndRequest:
				ParseEndRequest(content)
			default:
				var again []byte
				if err := ParsePairs(content, func(n, v []byte) error {
					again = AppendPair(again, n, v)
					return nil
				}); err == nil && !bytes.Equal(again, content) {
					// A 4-byte length below 128 decodes fine but
					// re-encodes in one byte: compare decoded pairs.
					var a, b [][2]string
					ParsePairs(content, func(n, v []byte) error { a = append(a, [2]string{string(n), string(v)}); return nil })
					ParsePairs(again, func(n, v []byte) error { b = append(b, [2]string{string(n), string(v)}); return nil })
					if len(a) != len(b) {
						t.Fatalf("re-encoding changed the pairs: %q vs %q", a, b)
					}
					for i := range a {
						if a[i] != b[i] {
							t.Fatalf("re-encoding changed pair %d: %q vs %q", i, a[i], b[i])
						}
					}
				}
			}
		}
	})
}
