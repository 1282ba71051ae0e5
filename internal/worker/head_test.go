package worker

import (
	"fmt"
	"net/http"
	"reflect"
	"slices"
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
	}
	for _, bad := range []string{"", "20", "abc OK\r\n", "200 OK\r\nno colon here\r\n"} {
		if _, err := parseHead([]byte(bad)); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

// TestParseHeadValuesDoNotAlias: the header values share one array, each
// name's slice capped at its length, so that appending to one name's values
// (as a ModifyResponse hook or http.Header.Add would) reallocates instead
// of writing over the next name's value in the shared array. Each append is
// checked against the same parsed map, in header order, so that the name
// whose slot follows in the array is still there to be overwritten.
func TestParseHeadValuesDoNotAlias(t *testing.T) {
	for _, head := range []string{
		"200 OK\r\nA: 1\r\nB: 2\r\n",
		"200 OK\r\nA: 1\r\nB: 2\r\nC: 3",
		"200 OK\r\nA: 1\r\nConnection: close\r\nB: 2\r\nC: 3\r\n",
	} {
		resp, err := parseHead([]byte(head))
		if err != nil {
			t.Fatalf("%q: %v", head, err)
		}
		want := http.Header{}
		for k, vv := range resp.header {
			want[k] = slices.Clone(vv)
		}
		for _, k := range []string{"A", "B", "C"} {
			if _, ok := resp.header[k]; !ok {
				continue
			}
			resp.header[k] = append(resp.header[k], "x")
			want[k] = append(want[k], "x")
			if !reflect.DeepEqual(resp.header, want) {
				t.Errorf("%q: after appending to %s: %v, want %v", head, k, resp.header, want)
			}
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
