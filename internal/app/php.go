package app

import (
	"net/http"
	"strings"

	"portico/internal/fastcgi"
	"portico/internal/proxy"
	"portico/internal/static"
)

// phpRoute serves a FastCGI route the way Caddy's php_fastcgi does, over
// the route's document root (see fastcgi.Locate):
//
//   - a path with a script suffix in it (/index.php/x) runs that script,
//     with the rest as PATH_INFO, if it exists; a missing one is 404;
//   - an existing file that is not a script is served as a static file,
//     so a PHP app's CSS and images never reach php-fpm, and a script's
//     source is never served (its path always goes to php-fpm);
//   - a directory without its trailing slash is redirected to it; with it,
//     its index script runs;
//   - anything else runs the front controller (the first index script in
//     the root) with the original REQUEST_URI: the pretty URLs of
//     WordPress, Laravel and Symfony.
type phpRoute struct {
	root   string
	index  []string
	split  []string
	prefix string // the route's prefix, "" for the root
	files  *static.Handler
	php    *proxy.Handler
}

func (p *phpRoute) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rel := r.URL.Path
	if p.prefix != "" {
		rel = strings.TrimPrefix(rel, p.prefix)
		if rel == "" {
			rel = "/"
		}
	}
	loc := fastcgi.Locate(p.root, p.index, p.split, rel)
	switch loc.Kind {
	case fastcgi.File:
		p.files.ServeHTTP(w, r)
	case fastcgi.Redirect:
		to := p.prefix + loc.RedirectTo
		if r.URL.RawQuery != "" {
			to += "?" + r.URL.RawQuery
		}
		http.Redirect(w, r, to, http.StatusMovedPermanently)
	case fastcgi.Script:
		// The script's path goes to php-fpm as the URL path (SCRIPT_NAME,
		// PATH_INFO and SCRIPT_FILENAME come from it); REQUEST_URI stays
		// what the client asked for.
		r2 := new(http.Request)
		*r2 = *r
		u := *r.URL
		u.Path, u.RawPath = p.prefix+loc.ScriptName+loc.PathInfo, ""
		r2.URL = &u
		p.php.ServeHTTP(w, r2)
	default:
		http.NotFound(w, r)
	}
}
