package static

import (
	"fmt"
	"html"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// list writes an HTML listing of the directory name: entries sorted by name
// (byte order), directories with a trailing slash, names HTML-escaped in the
// text and path-escaped in the links (relative, "./" first so that a name
// like "a:b" is not a scheme), dotfiles hidden unless Options.AllowDotfiles.
func (h *Handler) list(w http.ResponseWriter, r *http.Request, name string) error {
	f, err := h.root.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	entries, err := f.ReadDir(-1)
	if err != nil {
		return fmt.Errorf("static: listing %s: %w", name, err)
	}
	slices.SortFunc(entries, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	var b strings.Builder
	title := html.EscapeString(r.URL.Path)
	fmt.Fprintf(&b, "<!doctype html>\n<meta charset=\"utf-8\">\n<title>Index of %s</title>\n<h1>Index of %s</h1>\n<ul>\n", title, title)
	if name != "." {
		b.WriteString("<li><a href=\"../\">../</a></li>\n")
	}
	for _, e := range entries {
		n := e.Name()
		if n[0] == '.' && !h.dotfiles {
			continue
		}
		if e.IsDir() {
			n += "/"
		}
		fmt.Fprintf(&b, "<li><a href=\"./%s\">%s</a></li>\n", html.EscapeString((&url.URL{Path: n}).EscapedPath()), html.EscapeString(n))
	}
	b.WriteString("</ul>\n")
	hdr := w.Header()
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	hdr.Set("X-Content-Type-Options", "nosniff")
	h.addHeaders(hdr)
	hdr.Set("Content-Length", fmt.Sprint(b.Len()))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte(b.String()))
	}
	return nil
}
