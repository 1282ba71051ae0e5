// Package uwsgi speaks the uwsgi wire protocol, byte-compatible with nginx's
// ngx_http_uwsgi_module and with uWSGI.
//
// A uwsgi request is one packet: a 4-byte [Header] {modifier1, datasize
// (uint16, little-endian), modifier2} followed by datasize bytes of variables,
// each encoded as keylen (uint16 LE), key, vallen (uint16 LE), value. The
// request body, if any, follows the packet on the same connection; the
// response is a raw HTTP/1.1 response (status line, headers, body) ended by
// closing the connection.
//
// The package is a leaf (it imports no other Portico package) in four parts:
//
//   - codec.go: [Header], [AppendVar], [ParseVars], [ReadPacket];
//   - environ.go: [AppendRequest] turns an *http.Request into a request
//     packet whose variables form a PEP 3333 / CGI environ (the hot path of
//     every request sent to a Python worker);
//   - origin.go: [Origin] (see [OriginFrom]) describes what nginx said about
//     the client of a request it forwarded; the uwsgi listener, which
//     accepts what nginx's uwsgi_pass sends so that Portico drops in for
//     uWSGI behind nginx, lives in internal/server (HTTP.ServeUWSGI, on the
//     same connection lifecycle as the HTTP front) and puts one in each
//     request it builds; [AppendRequest] passes it on;
//   - client.go: [Transport] is the other end, an http.RoundTripper that
//     sends requests to a uWSGI server as nginx's uwsgi_pass does, so
//     Portico drops in for nginx in front of uWSGI.
package uwsgi
