package proxy

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// switchProtocols completes a protocol switch (a WebSocket): the upstream
// answered 101, so the client's connection is taken over and bytes are
// copied both ways until either side closes or nothing moves for
// WebSocketTimeout. The lease is held for the life of the tunnel: it is a
// connection to the upstream.
func (h *Handler) switchProtocols(w http.ResponseWriter, r *http.Request, rc *http.ResponseController, lease Lease, resp *http.Response, dl deadline) error {
	defer lease.Release()
	defer dl.end()
	up, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return fmt.Errorf("%w: %s: 101 without a writable body", errUpstream, lease.Upstream().Name)
	}
	defer up.Close()
	conn, brw, err := rc.Hijack()
	if err != nil {
		// HTTP/2 cannot be hijacked (WebSockets over HTTP/2 are RFC 8441,
		// which the front does not offer).
		return fmt.Errorf("%w: taking over the client connection: %w", errUpstream, err)
	}
	defer conn.Close()
	protocol, _ := isUpgrade(r.Header)
	if v := resp.Header.Get("Upgrade"); v != "" {
		protocol = v
	}
	removeHopByHop(resp.Header)
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n", protocol)
	if err := resp.Header.Write(brw); err != nil {
		return nil
	}
	_, _ = brw.WriteString("\r\n")
	if err := brw.Flush(); err != nil {
		return nil
	}
	_ = conn.SetDeadline(time.Time{})

	// An idle watchdog: activity is a counter bumped by each copy; the
	// watchdog closes both sides when it has not moved for a whole period.
	var activity atomic.Int64
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			conn.Close()
			up.Close()
		})
	}
	var last int64 = -1
	var watch *time.Timer
	watch = time.AfterFunc(h.opt.WebSocketTimeout, func() {
		if a := activity.Load(); a != last {
			last = a
			watch.Reset(h.opt.WebSocketTimeout)
			return
		}
		h.log.Info("closing an idle upgraded connection", "uri", r.RequestURI, "idle", h.opt.WebSocketTimeout)
		closeBoth()
	})
	defer watch.Stop()

	errc := make(chan error, 2)
	go func() {
		// What the client sent after its request head is in brw's reader.
		_, err := copyCounting(up, brw.Reader, &activity)
		errc <- err
	}()
	go func() {
		_, err := copyCounting(conn, up, &activity)
		errc <- err
	}()
	err = <-errc
	closeBoth()
	<-errc
	if err != nil && !errors.Is(err, io.EOF) {
		h.log.Debug("upgraded connection ended", "uri", r.RequestURI, "err", err)
	}
	return nil
}

// copyCounting copies src to dst, bumping activity at each read.
func copyCounting(dst io.Writer, src io.Reader, activity *atomic.Int64) (int64, error) {
	bp := copyPool.Get().(*[]byte)
	defer copyPool.Put(bp)
	var total int64
	for {
		n, err := src.Read(*bp)
		if n > 0 {
			activity.Add(1)
			if _, werr := dst.Write((*bp)[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if err != nil {
			return total, err
		}
	}
}
