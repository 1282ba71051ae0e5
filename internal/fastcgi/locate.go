package fastcgi

import (
	"io/fs"
	"os"
	"strings"
)

// Kind is what Locate decided for a URL path.
type Kind int

const (
	// NotFound: nothing to serve; the handler answers 404.
	NotFound Kind = iota
	// File: a regular file to serve statically (Location.File).
	File
	// Script: a request for the FastCGI server (Location.ScriptName and
	// PathInfo).
	Script
	// Redirect: a directory named without its trailing slash; the handler
	// redirects to Location.RedirectTo, adding the query.
	Redirect
)

// Location is Locate's answer.
type Location struct {
	Kind Kind
	// File is, for File, the slash-separated path of the file relative to
	// the root (no leading "/"), for an os.Root or fs.FS.
	File string
	// ScriptName and PathInfo are, for Script, the script's URL path
	// ("/index.php") and the path after it. The handler sets r.URL.Path to
	// ScriptName + PathInfo and keeps r.RequestURI, so that the Transport
	// sends the original REQUEST_URI.
	ScriptName, PathInfo string
	// RedirectTo is, for Redirect, the URL path to redirect to.
	RedirectTo string
}

// Locate routes urlPath (decoded, as r.URL.Path) over the document root as
// Caddy's php_fastcgi does, in this order:
//
//  1. A path with a split suffix (SplitScript; splitPath nil means
//     [".php"], matched case-insensitively) is a Script when its script
//     part is a regular file, else NotFound: a missing script is a 404,
//     never the front controller, and no path that names a script, in any
//     case (".PHP"), is ever served as a File.
//  2. A regular file is a File.
//  3. A directory without a trailing slash is a Redirect to urlPath + "/";
//     with it, its first index file (index nil means ["index.php"]) is a
//     Script when its name has a split suffix, else a File; with none,
//     rule 4.
//  4. Anything else goes to the front controller: the first index file in
//     the root, as a Script "/index.php" with an empty PathInfo (or a File
//     when it is not a script); NotFound when there is none.
//
// Names are looked up through os.Root, so that neither ".." nor a symbolic
// link can reach outside root: such a path, one with a ".." segment or a
// NUL byte, is NotFound. Dotfiles get no special treatment (that is the
// static handler's decision). Locate opens root on each call; it does no
// caching.
func Locate(root string, index, splitPath []string, urlPath string) Location {
	if index == nil {
		index = []string{"index.php"}
	}
	if urlPath == "" {
		urlPath = "/"
	}
	if urlPath[0] != '/' || strings.IndexByte(urlPath, 0) >= 0 || hasDotDot(urlPath) {
		return Location{Kind: NotFound}
	}
	rt, err := os.OpenRoot(root)
	if err != nil {
		return Location{Kind: NotFound}
	}
	defer rt.Close()
	stat := func(p string) fs.FileInfo {
		name := strings.Trim(p, "/")
		if name == "" {
			name = "."
		}
		fi, err := rt.Stat(name)
		if err != nil {
			return nil
		}
		return fi
	}

	if script, info, ok := SplitScript(urlPath, splitPath); ok {
		if fi := stat(script); fi != nil && fi.Mode().IsRegular() {
			return Location{Kind: Script, ScriptName: script, PathInfo: info}
		}
		return Location{Kind: NotFound}
	}
	if fi := stat(urlPath); fi != nil {
		switch {
		case fi.Mode().IsRegular():
			return Location{Kind: File, File: strings.TrimPrefix(urlPath, "/")}
		case fi.IsDir() && !strings.HasSuffix(urlPath, "/"):
			return Location{Kind: Redirect, RedirectTo: urlPath + "/"}
		case fi.IsDir():
			if loc, ok := indexIn(stat, urlPath, index, splitPath); ok {
				return loc
			}
		}
	}
	if loc, ok := indexIn(stat, "/", index, splitPath); ok {
		return loc
	}
	return Location{Kind: NotFound}
}

// indexIn returns the first index file that is a regular file in dir (a
// URL path ending in "/").
func indexIn(stat func(string) fs.FileInfo, dir string, index, splitPath []string) (Location, bool) {
	for _, name := range index {
		if name == "" || strings.Contains(name, "/") {
			continue
		}
		p := dir + name
		if fi := stat(p); fi == nil || !fi.Mode().IsRegular() {
			continue
		}
		if script, _, ok := SplitScript(p, splitPath); ok && script == p {
			return Location{Kind: Script, ScriptName: p}, true
		}
		return Location{Kind: File, File: strings.TrimPrefix(p, "/")}, true
	}
	return Location{}, false
}

// hasDotDot reports whether the slash-separated path has a ".." segment.
func hasDotDot(p string) bool {
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." {
			return true
		}
	}
	return false
}
