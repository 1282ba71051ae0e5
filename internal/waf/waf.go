// Package waf inspects requests with Coraza (a ModSecurity-compatible
// engine) and the OWASP Core Rule Set 4, embedded in the binary
// (coraza-coreruleset), in anomaly-scoring mode.
//
// The decisions, in the order a request meets them:
//
//  1. Phase 1 (request line and headers) runs in the middleware, on the
//     real client address (after internal/realip) and with the request's
//     ID (internal/requestid) as the transaction ID.
//  2. Phase 2 (the body, and CRS's blocking evaluation, rule 949110) runs
//     where the body is: a route whose handler spools bodies (an app, a
//     proxy) sets Options.Deferred, and the proxy handler calls the
//     inspector (proxy.WithInspector) with a reader of the spool it
//     already filled — memory or its temporary file — so Portico keeps no
//     second copy; otherwise, or for a request without a body, phase 2 runs
//     at once in the middleware. Coraza's body processors keep their own
//     buffer of what they read, at most 128 KiB in memory
//     (SecRequestBodyInMemoryLimit), past that in a temporary file.
//  3. A request the rules interrupt gets 403 (block mode), or goes on
//     (detect mode: SecRuleEngine DetectionOnly). Either way one log
//     record, at warn, names the rule IDs, their messages, the matched
//     data and the request ID.
//  4. Responses are not inspected (CRS phases 3 and 4 are not loaded):
//     their rules look for data leaks in every response body, which would
//     cost a read of each body through the regex set, and a WSGI app's
//     errors do not reach the client unless debug is on.
//
// Loading the rule set takes a while (hundreds of milliseconds: see the
// README): build one WAF per distinct Options and share it.
package waf

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	coreruleset "github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/experimental"
	"github.com/corazawaf/coraza/v3/types"

	"portico/internal/errpage"
	"portico/internal/proxy"
	"portico/internal/requestid"
)

// Modes.
const (
	Block  = "block"
	Detect = "detect"
)

// Options configure a WAF. The zero value blocks at paranoia 1 with an
// anomaly threshold of 5 (one critical rule).
type Options struct {
	// Mode is Block (refuse with 403) or Detect (log, let through).
	// Empty: Block.
	Mode string
	// Paranoia is the CRS paranoia level, 1 to 4. Zero: 1.
	Paranoia int
	// AnomalyThreshold is the inbound anomaly score that interrupts a
	// request (critical 5, error 4, warning 3). Zero: 5.
	AnomalyThreshold int
	// ExcludeRules are rule IDs removed (SecRuleRemoveById).
	ExcludeRules []int
	// BodyLimit is the largest body inspected; the rest is not read
	// (SecRequestBodyLimitAction ProcessPartial: the route's max_body
	// refuses larger bodies before this). Zero: 10 MiB.
	BodyLimit int64
	// Logger receives one record per interrupted request. Nil:
	// slog.Default().
	Logger *slog.Logger
}

// Key identifies the rule set Options load: WAFs with equal keys are
// interchangeable (Logger and BodyLimit aside, which the caller keeps
// equal).
func (o Options) Key() string {
	o.defaults()
	ids := slices.Clone(o.ExcludeRules)
	slices.Sort(ids)
	return fmt.Sprintf("%s/%d/%d/%v/%d", o.Mode, o.Paranoia, o.AnomalyThreshold, ids, o.BodyLimit)
}

func (o *Options) defaults() {
	if o.Mode == "" {
		o.Mode = Block
	}
	if o.Paranoia == 0 {
		o.Paranoia = 1
	}
	if o.AnomalyThreshold == 0 {
		o.AnomalyThreshold = 5
	}
	if o.BodyLimit <= 0 {
		o.BodyLimit = 10 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// inMemory is how much of a body Coraza's own buffer holds in memory.
const inMemory = 128 << 10

// WAF is a loaded rule set; safe for concurrent use.
type WAF struct {
	opt    Options
	waf    coraza.WAF
	withID experimental.WAFWithOptions
	// LoadTime is how long New took to load the rules.
	LoadTime time.Duration
}

// New loads the Core Rule Set with opt's settings.
func New(opt Options) (*WAF, error) {
	opt.defaults()
	engine := "On"
	switch opt.Mode {
	case Block:
	case Detect:
		engine = "DetectionOnly"
	default:
		return nil, fmt.Errorf("waf: mode %q is not %s or %s", opt.Mode, Block, Detect)
	}
	if opt.Paranoia < 1 || opt.Paranoia > 4 {
		return nil, fmt.Errorf("waf: paranoia %d is not 1 to 4", opt.Paranoia)
	}
	var b strings.Builder
	b.WriteString("Include @coraza.conf-recommended\n")
	fmt.Fprintf(&b, "SecRuleEngine %s\n", engine)
	b.WriteString("SecResponseBodyAccess Off\n")
	fmt.Fprintf(&b, "SecRequestBodyLimit %d\n", opt.BodyLimit)
	fmt.Fprintf(&b, "SecRequestBodyInMemoryLimit %d\n", min(opt.BodyLimit, inMemory))
	b.WriteString("SecRequestBodyLimitAction ProcessPartial\n")
	b.WriteString("SecAuditEngine Off\n")
	b.WriteString("Include @crs-setup.conf.example\n")
	fmt.Fprintf(&b, `SecAction "id:900000,phase:1,pass,t:none,nolog,setvar:tx.blocking_paranoia_level=%d"`+"\n", opt.Paranoia)
	fmt.Fprintf(&b, `SecAction "id:900110,phase:1,pass,t:none,nolog,setvar:tx.inbound_anomaly_score_threshold=%d,setvar:tx.outbound_anomaly_score_threshold=4"`+"\n", opt.AnomalyThreshold)
	b.WriteString("Include @owasp_crs/REQUEST-*.conf\n")
	for _, id := range opt.ExcludeRules {
		fmt.Fprintf(&b, "SecRuleRemoveById %d\n", id)
	}
	start := time.Now()
	w, err := coraza.NewWAF(coraza.NewWAFConfig().WithRootFS(coreruleset.FS).WithDirectives(b.String()))
	if err != nil {
		return nil, fmt.Errorf("waf: loading the rule set: %w", err)
	}
	withID, ok := w.(experimental.WAFWithOptions)
	if !ok {
		return nil, fmt.Errorf("waf: coraza has no NewTransactionWithOptions")
	}
	return &WAF{opt: opt, waf: w, withID: withID, LoadTime: time.Since(start)}, nil
}

// Close releases what the rule set holds in Coraza's process-wide cache
// of compiled patterns (shared with other WAFs loading the same
// patterns), so that reloads do not grow it. Call it once no request
// uses w.
func (w *WAF) Close() error {
	if c, ok := w.waf.(experimental.WAFCloser); ok {
		return c.Close()
	}
	return nil
}

// Mode returns Block or Detect.
func (w *WAF) Mode() string { return w.opt.Mode }

// Middleware returns next guarded by w. deferred says next spools request
// bodies through a proxy.Handler, which then runs phase 2 on the spool
// (see the package doc); false: phase 2 runs before next without the body
// (static files, redirects and fixed answers do not read it).
func (w *WAF) Middleware(next http.Handler, deferred bool) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		c := &check{w: w, tx: w.begin(r)}
		defer c.end()
		c.tx.ProcessRequestHeaders()
		if c.judge(r) {
			w.refuse(rw)
			return
		}
		hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
		if deferred && hasBody {
			ctx := proxy.WithInspector(r.Context(), func(r *http.Request, body io.Reader, n int64) http.HandlerFunc {
				if n > 0 {
					if _, _, err := c.tx.ReadRequestBodyFrom(body); err != nil {
						w.opt.Logger.Error("waf: reading the spooled body", "err", err, "request_id", requestid.Of(r))
					}
				}
				if c.phase2(r) {
					return func(rw http.ResponseWriter, r *http.Request) { w.refuse(rw) }
				}
				return nil
			})
			next.ServeHTTP(rw, r.WithContext(ctx))
			return
		}
		if c.phase2(r) {
			w.refuse(rw)
			return
		}
		next.ServeHTTP(rw, r)
	})
}

// check is one request's transaction.
type check struct {
	w      *WAF
	tx     types.Transaction
	logged bool // the verdict was logged: one record per request
}

func (c *check) end() {
	c.tx.ProcessLogging()
	_ = c.tx.Close()
}

// phase2 runs the request-body phase (with whatever body was written) and
// reports whether the request is refused.
func (c *check) phase2(r *http.Request) bool {
	if _, err := c.tx.ProcessRequestBody(); err != nil {
		c.w.opt.Logger.Error("waf: processing the request body", "err", err, "request_id", requestid.Of(r))
	}
	return c.judge(r)
}

// judge reports whether the request is refused (block mode, interrupted),
// logging an interruption (or a detect-mode one) the first time it is seen.
func (c *check) judge(r *http.Request) bool {
	tx := c.tx
	if !tx.IsInterrupted() && !detected(tx) {
		return false
	}
	if !c.logged {
		c.logged = true
		c.w.log(r, tx)
	}
	return tx.IsInterrupted()
}

// begin starts a transaction and feeds it the connection, request line
// and headers.
func (w *WAF) begin(r *http.Request) types.Transaction {
	id := requestid.Of(r)
	var tx types.Transaction
	if id != "" {
		tx = w.withID.NewTransactionWithOptions(experimental.Options{ID: id, Context: r.Context()})
	} else {
		tx = w.waf.NewTransaction()
	}
	cip, cport := splitAddr(r.RemoteAddr)
	sip, sport := "", 0
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		sip, sport = splitAddr(la.String())
	}
	tx.ProcessConnection(cip, cport, sip, sport)
	uri := r.RequestURI
	if uri == "" {
		uri = r.URL.RequestURI()
	}
	tx.ProcessURI(uri, r.Method, r.Proto)
	for k, vs := range r.Header {
		for _, v := range vs {
			tx.AddRequestHeader(k, v)
		}
	}
	if r.Host != "" {
		tx.AddRequestHeader("Host", r.Host)
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		tx.SetServerName(host)
	}
	if r.ContentLength > 0 && r.Header.Get("Content-Length") == "" {
		tx.AddRequestHeader("Content-Length", strconv.FormatInt(r.ContentLength, 10))
	}
	return tx
}

// log writes the one record of an interrupted transaction.
func (w *WAF) log(r *http.Request, tx types.Transaction) {
	it := tx.Interruption()
	blocked := it != nil
	if it == nil {
		if d, ok := tx.(detectOnly); ok {
			it = d.DetectionOnlyInterruption()
		}
	}
	var ids []int
	var matched []string
	for _, m := range tx.MatchedRules() {
		id := m.Rule().ID()
		if m.Message() == "" || id == 0 || id >= 900000 && id < 902000 {
			continue // setup and initialization rules: nothing about the request
		}
		ids = append(ids, id)
		if id >= 949000 && id < 950000 {
			continue // the blocking evaluation: its data is the score
		}
		for _, md := range m.MatchedDatas() {
			v := md.Variable().Name()
			if md.Key() != "" {
				v += ":" + md.Key()
			}
			matched = append(matched, fmt.Sprintf("%d %s=%q (%s)", id, v, clip(md.Value(), 80), m.Message()))
		}
	}
	msg, level := "waf: request refused", slog.LevelWarn
	if !blocked {
		msg = "waf: request would be refused (detect mode)"
	}
	attrs := []any{"client", r.RemoteAddr, "method", r.Method, "uri", clip(r.RequestURI, 200),
		"rules", ids, "matched", matched, "mode", w.opt.Mode, "request_id", requestid.Of(r)}
	if it != nil {
		attrs = append(attrs, "rule", it.RuleID)
	}
	w.opt.Logger.Log(r.Context(), level, msg, attrs...)
}

// detectOnly is what Coraza's transaction tells of a detect-mode
// interruption (not yet in its types.Transaction interface).
type detectOnly interface {
	IsDetectionOnlyInterrupted() bool
	DetectionOnlyInterruption() *types.Interruption
}

// detected reports whether a detect-mode transaction would have been
// interrupted.
func detected(tx types.Transaction) bool {
	d, ok := tx.(detectOnly)
	return ok && d.IsDetectionOnlyInterrupted()
}

func (w *WAF) refuse(rw http.ResponseWriter) {
	if errpage.Serve(rw, http.StatusForbidden) {
		return
	}
	http.Error(rw, "403 forbidden", http.StatusForbidden)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// splitAddr splits "ip:port" or a bare ip; a Unix-socket peer gives ("", 0).
func splitAddr(s string) (string, int) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().String(), int(ap.Port())
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().String(), 0
	}
	return "", 0
}
