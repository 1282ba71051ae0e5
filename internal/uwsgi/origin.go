package uwsgi

import (
	"context"
	"net"
)

// Origin is what nginx (or another uwsgi client) told the uwsgi listener (internal/server) about a
// request it forwarded: facts about the client and the front server that
// Portico cannot learn from its own connection. The listener puts one in the
// context of each request it builds; [AppendRequest] uses it so that the
// Python app sees what it would have seen under uWSGI.
//
// A string field left "" means "not sent": AppendRequest then derives the
// variable from the *http.Request as it does for any other request.
type Origin struct {
	// Peer is the address of the connection the packet came on: nginx
	// itself, not the client.
	Peer net.Addr

	// Modifier1 and Modifier2 are the packet header's modifiers.
	Modifier1, Modifier2 uint8

	// ServerName is SERVER_NAME as sent (nginx's $server_name).
	ServerName string
	// ServerPort is SERVER_PORT as sent (nginx's $server_port).
	ServerPort string
	// RemoteAddr is REMOTE_ADDR as sent: the client's address as nginx saw
	// it (after its realip module, if any).
	RemoteAddr string
	// RemotePort is REMOTE_PORT as sent.
	RemotePort string
	// Scheme is "https" when nginx said so (HTTPS "on" or "1", or
	// REQUEST_SCHEME "https"), else "http"; "" lets AppendRequest decide from
	// the request's TLS state.
	Scheme string

	// ScriptName is SCRIPT_NAME as sent; meaningful only when HasScriptName.
	ScriptName string
	// HasScriptName records that SCRIPT_NAME was sent, even empty: the
	// front server then decided the app's mount point, and AppendRequest
	// uses it instead of (or in front of) its own EnvironOptions.ScriptName.
	HasScriptName bool

	// Extra holds the other variables sent, encoded as a uwsgi vars block
	// (walk it with ParseVars), passed on unchanged by AppendRequest:
	// DOCUMENT_ROOT, custom uwsgi_param values and the like. It never holds
	// a variable AppendRequest produces itself, an HTTP_* header variable
	// (headers travel in the request's Header), a uWSGI "magic" UWSGI_*
	// variable, or a wsgi.* key. Whoever builds an Origin by hand must keep
	// Extra a well-formed block.
	Extra []byte
}

// OriginContextKey is the context key of a request's *Origin. The uwsgi
// listener (internal/server) answers it from its request context without
// a context.WithValue per request; others use WithOrigin.
var OriginContextKey = &contextKey{"uwsgi-origin"}

type contextKey struct{ name string }

func (k *contextKey) String() string { return "uwsgi context value " + k.name }

// WithOrigin returns a copy of ctx carrying o, for OriginFrom to find.
// Tests and other front ends may call it.
func WithOrigin(ctx context.Context, o *Origin) context.Context {
	return context.WithValue(ctx, OriginContextKey, o)
}

// OriginFrom returns the uwsgi origin of a request built by the uwsgi
// listener (or put there by WithOrigin), or nil for any other request.
func OriginFrom(ctx context.Context) *Origin {
	o, _ := ctx.Value(OriginContextKey).(*Origin)
	return o
}
