// Package fastcgi is a FastCGI client: an http.RoundTripper (Transport)
// that sends requests to one FastCGI responder such as php-fpm, and the
// pieces it is built from, split by concern as in Caddy's
// reverseproxy/fastcgi:
//
//   - record.go: the record codec (8-byte headers, BEGIN_REQUEST,
//     name-value pairs, END_REQUEST), strict and fuzzed;
//   - params.go: the CGI params of a request, as nginx's fastcgi_params;
//   - transport.go: the keep-conn connection pool and the round trip;
//   - locate.go: Caddy php_fastcgi's routing of a URL path over a document
//     root (static file, script, directory redirect, front controller).
//
// # Contract with the proxy
//
// The proxy creates one Transport per upstream address. RoundTrip:
//
//   - returns a dial failure wrapped with %w, so that errors.As(err,
//     &opErr) with a *net.OpError whose Op is "dial" still matches: the
//     request was never sent and may be retried on another upstream;
//   - retries once, itself, on a fresh connection a request whose write
//     failed on a reused idle connection (the server had closed it; it
//     never saw the request), whatever the method; and a request without a
//     body whose method is idempotent when a reused connection ends before
//     the first byte of the answer, as net/http does;
//   - returns any other failure, including a response cut before the end
//     of its CGI header block, as an error the proxy answers with 502;
//   - refuses (ErrUnknownLength) a body of unknown length: the proxy
//     spools bodies, so it always knows the length;
//   - ends the exchange when r.Context() is done: the connection is
//     closed, which unblocks every read and write;
//   - sets no timeout of its own beyond DialTimeout: time limits come
//     from the request's context.
//
// php-fpm serves one request at a time per connection and pins a worker
// process to each connection kept open (FCGI_KEEP_CONN) until it closes:
// keep Transport.MaxConns at or below the pool's pm.max_children, or a
// new connection may wait in php-fpm's listen backlog while kept ones sit
// idle.
package fastcgi
