package server

import "testing"

// browserHead is a request head as a browser sends it: the parse cost every
// request pays.
const browserHead = "GET /articles/2024/some-slug/?page=2 HTTP/1.1\r\n" +
	"Host: www.example.org\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
	"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n" +
	"Accept-Language: en-US,en;q=0.5\r\n" +
	"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
	"Connection: keep-alive\r\n" +
	"Cookie: sessionid=0123456789abcdef0123456789abcdef; csrftoken=abcdefghijklmnopqrstuvwxyz012345\r\n" +
	"Upgrade-Insecure-Requests: 1\r\n" +
	"Sec-Fetch-Dest: document\r\n" +
	"Sec-Fetch-Mode: navigate\r\n" +
	"Sec-Fetch-Site: none\r\n" +
	"Priority: u=0, i\r\n\r\n"

func BenchmarkParseHeadBrowser(b *testing.B) {
	benchParse(b, browserHead)
}

func BenchmarkParseHeadSmall(b *testing.B) {
	benchParse(b, "GET / HTTP/1.1\r\nHost: localhost:8000\r\nUser-Agent: wrk\r\n\r\n")
}

func BenchmarkParseHeadPost(b *testing.B) {
	benchParse(b, "POST /api/items?x=%41 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 0000000000000000000000042\r\n\r\n")
}

func benchParse(b *testing.B, s string) {
	in := []byte(s)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := parseHead(in, DefaultMaxHeaderFields); err != nil && err.status != 400 {
			b.Fatal(err)
		}
	}
}
