// Package server is Portico's front door: it opens listeners (TCP, Unix
// sockets) and serves an http.Handler on them with nginx-like limits and
// graceful shutdown. It knows nothing of what the handler does; the
// middleware chain and the routes are built elsewhere and handed in.
//
//   - listen.go: [Listen] turns "host:port", ":port" or "unix:/path" into a
//     net.Listener, handling socket-file permissions and stale files;
//   - http.go: [HTTP] wraps http.Server with the defaults in [Options];
//   - proxyproto.go: [ProxyListener] reads the PROXY protocol header (v1
//     and v2) a TCP load balancer sends first, in each connection's own
//     goroutine and without reading past it.
package server
