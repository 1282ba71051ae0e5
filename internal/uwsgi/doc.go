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
// The package has four parts, one per file:
//
//   - codec.go: [Header], [AppendVar], [ParseVars], [ReadPacket];
//   - environ.go: [AppendRequest] turns an *http.Request into a request
//     packet whose variables form a PEP 3333 / CGI environ (the hot path of
//     every request sent to a Python worker);
//   - server.go: [Server] accepts what nginx's uwsgi_pass sends and serves
//     it with an http.Handler, so Portico drops in for uWSGI behind nginx.
//     Requests it builds carry an [Origin] (see [OriginFrom]) describing what
//     nginx said about the client, which [AppendRequest] passes on;
//   - client.go: [Transport] is the other end, an http.RoundTripper that
//     sends requests to a uWSGI server as nginx's uwsgi_pass does, so
//     Portico drops in for nginx in front of uWSGI.
package uwsgi
