// Package server is Portico's front door: it opens listeners (TCP, Unix
// sockets) and serves an http.Handler on them with nginx-like limits and
// graceful shutdown. It knows nothing of what the handler does; the
// middleware chain and the routes are built elsewhere and handed in.
//
//   - listen.go: [Listen] turns "host:port", ":port" or "unix:/path" into a
//     net.Listener, handling socket-file permissions and stale files;
//   - http.go: [HTTP] with the defaults in [Options]: one lifecycle (accept
//     loop with its backoff, connection tracking, Shutdown, Close) for every
//     protocol it serves: Portico's own HTTP/1.1 front (Serve, h1*.go),
//     the same over TLS and Portico's own HTTP/2 server (ServeTLS,
//     tlsfront.go; h2*.go on x/net's Framer and HPACK decoder), and the
//     uwsgi protocol nginx's uwsgi_pass speaks (ServeUWSGI, uwsgi*.go); one
//     request context (reqctx.go) with its client-gone watch for the
//     HTTP/1.1 front and uwsgi;
//   - proxyproto.go: [ProxyListener] reads the PROXY protocol header (v1
//     and v2) a TCP load balancer sends first, in each connection's own
//     goroutine and without reading past it.
package server
