package proxy

import (
	"context"
	"io"
	"net/http"
)

// Inspector sees a request once its body is spooled and before an upstream
// is chosen: body reads the spooled bytes from their start (the spool's
// memory or its temporary file, no copy), length is their count (0 and
// http.NoBody for a request without a body). Returning a handler refuses
// the request: the handler answers and no upstream is tried. Nil: the
// request goes on.
//
// This is how the WAF reads a body the handler already holds instead of a
// second copy. It travels in the request's context (WithInspector), not in
// Options, because one Handler may serve several routes with different
// inspection (an app's worker pool is shared by every route naming the
// app), and the route decides.
type Inspector func(r *http.Request, body io.Reader, length int64) http.HandlerFunc

type inspectorKey struct{}

// WithInspector returns ctx carrying in: a Handler serving a request with
// that context calls in after spooling. A request with an Inspector is
// always spooled, even on an Unbuffered handler: it cannot be judged
// before it is whole.
func WithInspector(ctx context.Context, in Inspector) context.Context {
	return context.WithValue(ctx, inspectorKey{}, in)
}

func inspectorFrom(ctx context.Context) Inspector {
	in, _ := ctx.Value(inspectorKey{}).(Inspector)
	return in
}
