package worker

import (
	"fmt"
	"testing"
)

// TestParseHead: the head frame's status and headers, values in order,
// names canonical, hop-by-hop headers dropped, the last line's CRLF
// optional.
func TestParseHead(t *testing.T) {
	for _, tc := range []struct {
		head   string
		status int
		want   string
	}{
		{"200 OK\r\n", 200, "map[]"},
		{"404 Not Found\r\nContent-Type: text/plain\r\n", 404, "map[Content-Type:[text/plain]]"},
		{"200 OK\r\nset-cookie: a=1\r\nX-One: 1\r\nSet-Cookie: b=2\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n", 200,
			"map[Set-Cookie:[a=1 b=2] X-One:[1]]"},
		{"201 Created\r\nA: 1\r\nB: 2\r\nA: 3", 201, "map[A:[1 3] B:[2]]"},
		{"200 OK\r\nA: 1\r\nB: 2", 200, "map[A:[1] B:[2]]"},
	} {
		resp, err := parseHead([]byte(tc.head))
		if err != nil {
			t.Errorf("%q: %v", tc.head, err)
			continue
		}
		if resp.status != tc.status || fmt.Sprint(resp.header) != tc.want {
			t.Errorf("%q: %d %v, want %d %s", tc.head, resp.status, resp.header, tc.status, tc.want)
		}
		// The values share one array: appending to one must not touch another.
		for k := range resp.header {
			resp.header[k] = append(resp.header[k], "x")
		}
		if resp2, _ := parseHead([]byte(tc.head)); fmt.Sprint(resp2.header) != tc.want {
			t.Errorf("%q reparsed: %v", tc.head, resp2.header)
		}
	}
	for _, bad := range []string{"", "20", "abc OK\r\n", "200 OK\r\nno colon here\r\n"} {
		if _, err := parseHead([]byte(bad)); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

func FuzzParseHead(f *testing.F) {
	f.Add([]byte("200 OK\r\nA: 1\r\nB: 2\r\nA: 3"))
	f.Add([]byte("200 OK\r\n\r\n: \r\n"))
	f.Fuzz(func(t *testing.T, head []byte) {
		resp, err := parseHead(head)
		if err == nil && (resp.status < 100 || resp.status > 999) {
			t.Fatalf("status %d accepted", resp.status)
		}
	})
}
