package app

import (
	"cmp"
	"net"
	"net/http"
	"strings"

	"portico/internal/config"
)

// httpsRedirect answers every request on a redirect_https listener with
// 308 Permanent Redirect to the same host name over HTTPS (nginx's
// `return 308 https://$host$request_uri;`). 308, not 301: clients keep the
// method and the body, so a POST is not turned into a GET.
type httpsRedirect struct {
	// port is ":PORT" of the HTTPS listener, "" for 443.
	port string
}

func (h *httpsRedirect) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := r.Host // the HTTP/1.1 front checked its syntax
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
		if strings.Contains(host, ":") {
			host = "[" + host + "]" // an IPv6 literal
		}
	}
	if host == "" {
		http.Error(w, "a Host header is needed to redirect to HTTPS", http.StatusBadRequest)
		return
	}
	uri := r.RequestURI // as sent, like nginx's $request_uri
	if !strings.HasPrefix(uri, "/") {
		uri = r.URL.RequestURI() // absolute-form or "*"
	}
	// http.Redirect adds a one-line HTML body for GET and HEAD only.
	http.Redirect(w, r, "https://"+host+h.port+uri, http.StatusPermanentRedirect)
}

// listenerHandler is what an HTTP listener serves: the current routing, or
// the redirect to HTTPS while l has one (set by setRedirects, so that a
// reload can turn it on or off without reopening the socket).
func (e *engine) listenerHandler(l *listener) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rd := l.redirect.Load(); rd != nil {
			rd.ServeHTTP(w, r)
			return
		}
		e.ServeHTTP(w, r)
	})
}

// setRedirects gives the open listeners of cfg with redirect_https their
// redirect, and takes it from the others. The target port is the first
// TLS listener's in cfg (its bound port, so ":0" works), unless 443.
func (e *engine) setRedirects(cfg *config.Config) {
	keys := listenerKeys(cfg)
	port := ""
	for i, lc := range cfg.Listeners {
		if lc.TLS == nil {
			continue
		}
		if l := e.listeners[keys[i]]; l != nil {
			if _, p, err := net.SplitHostPort(l.addr); err == nil && p != "443" {
				port = ":" + p
			}
		}
		break
	}
	for i, lc := range cfg.Listeners {
		l := e.listeners[keys[i]]
		if l == nil {
			continue
		}
		if !lc.RedirectHTTPS {
			if l.redirect.Swap(nil) != nil {
				e.log.Info("no longer redirecting to HTTPS", "addr", l.addr)
			}
			continue
		}
		if old := l.redirect.Swap(&httpsRedirect{port: port}); old == nil || old.port != port {
			e.log.Info("redirecting every request to HTTPS", "addr", l.addr, "https_port", cmp.Or(strings.TrimPrefix(port, ":"), "443"))
		}
	}
}
