package server

import (
	"io"
	"net"
	"strings"
	"testing"
)

func FuzzParseHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET http://h/p HTTP/1.0\nConnection: keep-alive\n\n",
		"OPTIONS * HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
		"GET /%zz HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
		"GET http://a<b>/env HTTP/1.1\r\nHost: good\r\n\r\n",
		"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
		"get /env%00x HTTP/1.1\r\nHost: :x\r\nContent-Length:\t0005\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHead(b, DefaultMaxHeaderFields)
		if err != nil {
			if err.status < 400 || err.status > 599 || err.reason == "" {
				t.Fatalf("error %d %q", err.status, err.reason)
			}
			return
		}
		if !isMethod(h.method) || h.method == "CONNECT" {
			t.Fatalf("method %q accepted", h.method)
		}
		if h.minor >= 1 && !strings.Contains(strings.ToLower(string(b)), "\nhost:") {
			t.Fatalf("HTTP/1.1 request without a Host header accepted")
		}
		if (h.minor >= 1 || h.host != "") && !validAuthority(h.host) {
			t.Fatalf("host %q accepted", h.host)
		}
		if strings.IndexByte(h.url.Path, 0) >= 0 {
			t.Fatalf("NUL in the path %q", h.url.Path)
		}
		if n := strings.Count(string(b), "\n") - 2; n > DefaultMaxHeaderFields {
			t.Fatalf("%d header lines accepted", n)
		}
		if h.chunked && h.contentLength != -1 || !h.chunked && h.contentLength < 0 {
			t.Fatalf("framing: chunked %v, length %d", h.chunked, h.contentLength)
		}
		for k, vs := range h.header {
			if !isToken(k) {
				t.Fatalf("header name %q", k)
			}
			for _, v := range vs {
				if strings.ContainsAny(v, "\r\n\x00") {
					t.Fatalf("header %s value %q", k, v)
				}
			}
		}
	})
}

// FuzzChunkedBody feeds arbitrary bytes to the chunked body reader over a
// real connection: it must never panic nor return more bytes than it got.
func FuzzChunkedBody(f *testing.F) {
	for _, s := range []string{
		"5\r\nhello\r\n0\r\n\r\n",
		"3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n",
		"ffffffffffffffff\r\n",
		"5\r\nhelloXX",
		"0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	srv := NewHTTP(nil, Options{})
	f.Fuzz(func(t *testing.T, in []byte) {
		client, server := net.Pipe()
		go func() {
			client.Write(in)
			client.Close()
		}()
		c := newConn(srv, server)
		c.mon = &monitor{} // as during a request
		defer server.Close()
		b := &body{c: c, chunked: true}
		got, _ := io.ReadAll(io.LimitReader(b, 1<<20))
		if len(got) > len(in) {
			t.Fatalf("read %d bytes from %d", len(got), len(in))
		}
	})
}
