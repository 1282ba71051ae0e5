// Package proxy is Portico's one upstream core: it sends requests to a set
// of upstream servers and relays their answers.
//
// The parts, in the order a request meets them:
//
//   - Handler (an http.Handler) spools the request body (memory, then a
//     temporary file) so that a slow upload never holds an upstream and a
//     retry can replay it; builds the outgoing request (hop-by-hop headers
//     dropped, X-Forwarded-* set); asks the Pool for a Lease; sends the
//     request through the leased Upstream's Transport; retries what may be
//     retried; relays the response through a spool so that a slow client
//     never holds an upstream either; maps every failure to one HTTP answer
//     in one place (errors.go).
//   - Pool holds the Upstreams, a Selector (the balancing policy) and a
//     first-come, first-served queue for requests that find every usable
//     upstream at its max_conns. A claim on an upstream's capacity is taken
//     exactly (compare-and-swap on its in-flight count) before the request
//     is sent, never counted after the fact, so max_conns is a hard bound.
//   - Upstream is one server: its address, weight, capacity, and its
//     in-flight count, health and latency average as atomics, apart from
//     configuration.
//   - A Transport is any http.RoundTripper, one per upstream: net/http's
//     for HTTP (with its own keep-alive pool), uwsgi.Transport for uWSGI,
//     fastcgi.Transport for php-fpm.
//
// Health is passive (MaxFails failures within FailTimeout take an upstream
// out for FailTimeout, as nginx's max_fails and fail_timeout) and, when
// configured, active (a GET of a health URI every interval, with rise and
// fall counts). A change of state is logged once, never per request.
//
// Transports tell the Handler that a request never reached the upstream by
// returning an error that wraps a *net.OpError whose Op is "dial": such a
// request is tried on another upstream whatever its method. Other failures
// are retried only for idempotent methods.
package proxy
