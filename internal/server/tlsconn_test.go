package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// serveTLSClosing starts s on a TLS listener (tlsListen) and closes it,
// rather than shutting it down, when the test ends: the tests here leave
// stalled clients behind.
func serveTLSClosing(t *testing.T, s *HTTP) string {
	t.Helper()
	l := tlsListen(t)
	done := make(chan error, 1)
	go func() { done <- s.ServeTLS(l) }()
	t.Cleanup(func() {
		s.Close()
		<-done
	})
	return l.Addr().String()
}

// A frozenConn stops reading once frozen is closed, as a client process
// that stopped (or an attacker) does: the server's writes then fill the
// socket buffers and block.
type frozenConn struct {
	net.Conn
	frozen <-chan struct{}
	stop   <-chan struct{} // test end
}

func (c *frozenConn) Read(p []byte) (int, error) {
	select {
	case <-c.frozen:
		<-c.stop
		return 0, io.EOF
	default:
	}
	return c.Conn.Read(p)
}

// tlsClient returns a client for proto ("http/1.1" or "h2") whose
// connections stop reading when frozen is closed (nil: never).
func tlsClient(t *testing.T, proto string, frozen <-chan struct{}) *http.Client {
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{proto}},
		Protocols:       new(http.Protocols),
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil || frozen == nil {
				return c, err
			}
			return &frozenConn{Conn: c, frozen: frozen, stop: stop}, nil
		},
	}
	if proto == "h2" {
		tr.Protocols.SetHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// probeTLS checks that the server answers another client meanwhile.
func probeTLS(t *testing.T, addr, proto string) {
	t.Helper()
	resp, err := tlsClient(t, proto, nil).Get("https://" + addr + "/probe")
	if err != nil {
		t.Fatalf("probe: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "probe" || resp.Proto != map[string]string{"h2": "HTTP/2.0", "http/1.1": "HTTP/1.1"}[proto] {
		t.Fatalf("probe: %s %s %q", resp.Proto, resp.Status, body)
	}
}

// TestTLSBodyTimeout: over HTTPS (HTTP/1.1 and HTTP/2), a request body
// that stalls fails the handler's read at the body timeout, while the
// server answers others.
func TestTLSBodyTimeout(t *testing.T) {
	for _, proto := range []string{"http/1.1", "h2"} {
		t.Run(proto, func(t *testing.T) {
			const timeout = 500 * time.Millisecond
			started := make(chan struct{})
			readErr := make(chan error, 1)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/probe" {
					io.WriteString(w, "probe")
					return
				}
				var b [5]byte
				if _, err := io.ReadFull(r.Body, b[:]); err != nil {
					readErr <- fmt.Errorf("first bytes: %w", err)
					return
				}
				close(started)
				_, err := io.ReadAll(r.Body)
				readErr <- err
			})
			s := NewHTTP(h, Options{BodyTimeout: timeout, Logger: slog.New(slog.DiscardHandler)})
			addr := serveTLSClosing(t, s)

			pr, pw := io.Pipe()
			defer pw.Close()
			go pw.Write([]byte("hello")) // then nothing more
			req, _ := http.NewRequest("POST", "https://"+addr+"/upload", pr)
			req.ContentLength = 1000
			go func() {
				resp, err := tlsClient(t, proto, nil).Do(req)
				if err == nil {
					resp.Body.Close()
				}
			}()
			select {
			case <-started:
			case err := <-readErr:
				t.Fatal(err)
			case <-time.After(10 * time.Second):
				t.Fatal("the handler never got the first bytes")
			}
			t0 := time.Now()
			probeTLS(t, addr, proto)
			select {
			case err := <-readErr:
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("the body read ended with %v, want a timeout", err)
				}
				if d := time.Since(t0); d > 5*time.Second {
					t.Errorf("cut after %v, want about %v", d, timeout)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("a stalled body was not cut at the body timeout")
			}
		})
	}
}

// TestTLSSendTimeout: over HTTPS (HTTP/1.1 and HTTP/2), a client that
// stops reading a large download is cut at the send timeout: the
// handler's write fails, while the server answers others.
func TestTLSSendTimeout(t *testing.T) {
	for _, proto := range []string{"http/1.1", "h2"} {
		t.Run(proto, func(t *testing.T) {
			const timeout = 500 * time.Millisecond
			writeErr := make(chan error, 1)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/probe" {
					io.WriteString(w, "probe")
					return
				}
				chunk := make([]byte, 32<<10)
				for range 64 << 20 / len(chunk) { // 64 MiB
					if _, err := w.Write(chunk); err != nil {
						writeErr <- err
						return
					}
				}
				writeErr <- nil
			})
			s := NewHTTP(h, Options{SendTimeout: timeout, Logger: slog.New(slog.DiscardHandler)})
			addr := serveTLSClosing(t, s)

			frozen := make(chan struct{})
			resp, err := tlsClient(t, proto, frozen).Get("https://" + addr + "/download")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if _, err := io.ReadFull(resp.Body, make([]byte, 1<<20)); err != nil {
				t.Fatal(err)
			}
			close(frozen) // the client stops reading
			probeTLS(t, addr, proto)
			select {
			case err := <-writeErr:
				if err == nil {
					t.Fatal("64 MiB written to a client that stopped reading")
				}
			case <-time.After(20 * time.Second):
				t.Fatal("a client that stopped reading was not cut at the send timeout")
			}
		})
	}
}
