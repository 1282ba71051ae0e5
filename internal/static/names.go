package static

import (
	"mime"
	"path"
	"strings"
	"sync"
)

// contentTypes memoizes contentType by extension: the hot path then costs
// one map read.
var contentTypes sync.Map // extension → Content-Type

// contentType is the media type for name's extension, or
// application/octet-stream, so that browsers never guess (with nosniff).
// Text types, JavaScript and JSON get "; charset=utf-8" when the MIME table
// gives no charset.
func contentType(name string) string {
	ext := path.Ext(name)
	if ct, ok := contentTypes.Load(ext); ok {
		return ct.(string)
	}
	ct := mime.TypeByExtension(ext)
	if ct == "" {
		ct = "application/octet-stream"
	} else if !strings.Contains(ct, "charset=") {
		mt, _, _ := strings.Cut(ct, ";")
		switch mt = strings.TrimSpace(mt); {
		case strings.HasPrefix(mt, "text/"), mt == "application/javascript", mt == "application/json":
			ct = mt + "; charset=utf-8"
		}
	}
	contentTypes.Store(ext, ct)
	return ct
}

// immutableCacheControl is sent for names carrying a content hash: the
// content under such a name never changes, so caches may keep it a year
// and browsers need not revalidate it.
const immutableCacheControl = "public, max-age=31536000, immutable"

// hashed reports whether name's base carries a content hash just before its
// extension, as asset pipelines write them:
//
//   - Django's ManifestStaticFilesStorage: "app.3f9a2b1c4d5e.css" (the first
//     12 hex digits of an MD5, dot-separated);
//   - webpack, Parcel, esbuild with hex hashes: "main.3f9a2b1c.js";
//   - "-" separated: "main-3f9a2b1c.js" (Sprockets, some webpack configs).
//
// The hash segment is 8 to 64 lower-case hex digits, at least one of them a
// decimal digit (so that words such as "deadbeef" or "accede" never match),
// after a non-empty stem. Base64 hashes (Vite's "index-BfR3a4x_.js") are not
// recognised: too many ordinary names look like them.
func hashed(name string) bool {
	base := path.Base(name)
	dot := strings.LastIndexByte(base, '.')
	if dot <= 0 {
		return false
	}
	stem := base[:dot]
	sep := strings.LastIndexAny(stem, ".-")
	if sep <= 0 {
		return false
	}
	h := stem[sep+1:]
	if len(h) < 8 || len(h) > 64 {
		return false
	}
	digit := false
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case c >= '0' && c <= '9':
			digit = true
		case c >= 'a' && c <= 'f':
		default:
			return false
		}
	}
	return digit
}
