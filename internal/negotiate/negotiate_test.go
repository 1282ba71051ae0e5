package negotiate

import (
	"strings"
	"testing"
)

func TestParseAcceptEncoding(t *testing.T) {
	tests := []struct {
		in   []string // nil: no header
		want []string // codings in order of choice
		id   float64
	}{
		{nil, nil, 1},
		{[]string{""}, nil, 1},
		{[]string{"gzip"}, []string{"gzip"}, 1},
		{[]string{"gzip, deflate, br, zstd"}, []string{"br", "zstd", "gzip"}, 1},
		{[]string{"gzip, br;q=0.5"}, []string{"gzip", "br"}, 1},
		{[]string{"br;q=0, gzip"}, []string{"gzip"}, 1},
		{[]string{"BR;Q=1, GZip;q=0.9"}, []string{"br", "gzip"}, 1},
		{[]string{"*"}, []string{"br", "zstd", "gzip"}, 1},
		{[]string{"*;q=0"}, nil, 0},
		{[]string{"*;q=0, identity"}, nil, 1},
		{[]string{"identity;q=0, gzip;q=0.1"}, []string{"gzip"}, 0},
		{[]string{"gzip;q=0.5, identity"}, nil, 1}, // identity preferred
		{[]string{"gzip;q=0.5, identity;q=0.5"}, []string{"gzip"}, 0.5},
		{[]string{"x-gzip"}, []string{"gzip"}, 1},
		{[]string{"gzip;q=2"}, nil, 1},   // malformed: ignored
		{[]string{"gzip;q=abc"}, nil, 1}, // malformed: ignored
		{[]string{"gzip;q=0.0001"}, nil, 1},
		{[]string{"gzip;q=0.001"}, []string{"gzip"}, 1},
		{[]string{"gzip;q=0.001, identity;q=0.002"}, nil, 0.002},
		{[]string{"gzip", "br"}, []string{"br", "gzip"}, 1},
		{[]string{"gzip;q=0.1, gzip"}, []string{"gzip"}, 1},
		{[]string{"zstd, *;q=0.5"}, []string{"zstd", "br", "gzip"}, 1},
		{[]string{" , ,gzip ; q=1 ,"}, []string{"gzip"}, 1},
		{[]string{"gzip;level=1;q=0.8, br;q=0.8"}, []string{"br", "gzip"}, 1},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.in, "|"), func(t *testing.T) {
			ae := ParseAcceptEncoding(tt.in)
			var got []string
			for _, c := range ae.Order() {
				got = append(got, c.Token())
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("order = %v, want %v", got, tt.want)
			}
			if ae.identity != tt.id {
				t.Errorf("identity q = %v, want %v", ae.identity, tt.id)
			}
		})
	}
}

func TestCompressible(t *testing.T) {
	tests := []struct {
		ct   string
		want bool
	}{
		{"text/css; charset=utf-8", true},
		{"text/javascript; charset=utf-8", true},
		{"application/javascript", true},
		{"application/json", true},
		{"application/ld+json", true},
		{"image/svg+xml", true},
		{"application/wasm", true},
		{"image/png", false},
		{"font/woff2", false},
		{"application/octet-stream", false},
		{"application/pdf", false},
	}
	for _, tt := range tests {
		if got := Compressible(tt.ct); got != tt.want {
			t.Errorf("Compressible(%q) = %v, want %v", tt.ct, got, tt.want)
		}
	}
}
