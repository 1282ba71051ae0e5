package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"portico/internal/porticotest"
)

// netLab is a small network made of Linux network namespaces: a switch
// namespace holding a bridge, app hosts each in their own namespace on it,
// and this process's namespace joined to it too, so that Portico (run
// here) and the test's client reach the hosts by their addresses across
// veth pairs, as across a LAN.
type netLab struct {
	t      testing.TB
	prefix string // namespace and interface name prefix
	subnet string // "10.231.N"
	nss    []string
}

// newNetLab builds the switch and joins this namespace to it as
// SUBNET.1. Without ip(8) or the right to make namespaces (not root, a
// container without CAP_SYS_ADMIN), the test is skipped with the reason,
// or fails with PORTICO_REQUIRE_INTEROP=1.
func newNetLab(t testing.TB) *netLab {
	t.Helper()
	porticotest.RequireProgram(t, "ip")
	n := os.Getpid()%200 + 20
	lab := &netLab{t: t, prefix: fmt.Sprintf("pt%d", n), subnet: fmt.Sprintf("10.231.%d", n)}
	sw := lab.prefix + "sw"
	if out, err := exec.Command("ip", "netns", "add", sw).CombinedOutput(); err != nil {
		porticotest.Missing(t, "this machine does not let the test make network namespaces (ip netns add: %v: %s)", err, bytes.TrimSpace(out))
	}
	lab.nss = append(lab.nss, sw)
	t.Cleanup(lab.close)
	lab.run("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
	lab.run("ip", "-n", sw, "link", "set", "br0", "up")
	// This namespace's port on the switch.
	front := lab.prefix + "f"
	lab.run("ip", "link", "add", front, "type", "veth", "peer", "name", front+"p", "netns", sw)
	lab.run("ip", "-n", sw, "link", "set", front+"p", "master", "br0", "up")
	lab.run("ip", "addr", "add", lab.subnet+".1/24", "dev", front)
	lab.run("ip", "link", "set", front, "up")
	return lab
}

// addHost makes namespace NAME with address SUBNET.<octet> on the switch
// and returns the namespace's name.
func (lab *netLab) addHost(name string, octet int) string {
	ns := lab.prefix + name
	sw := lab.prefix + "sw"
	lab.run("ip", "netns", "add", ns)
	lab.nss = append(lab.nss, ns)
	veth := lab.prefix + name + "v"
	lab.run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
	lab.run("ip", "link", "set", veth, "netns", sw)
	lab.run("ip", "-n", sw, "link", "set", veth, "master", "br0", "up")
	lab.run("ip", "-n", ns, "addr", "add", fmt.Sprintf("%s.%d/24", lab.subnet, octet), "dev", "eth0")
	lab.run("ip", "-n", ns, "link", "set", "eth0", "up")
	lab.run("ip", "-n", ns, "link", "set", "lo", "up")
	return ns
}

func (lab *netLab) run(args ...string) {
	lab.t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		lab.t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// close removes the namespaces (and with them every veth pair).
func (lab *netLab) close() {
	for i := len(lab.nss) - 1; i >= 0; i-- {
		if out, err := exec.Command("ip", "netns", "del", lab.nss[i]).CombinedOutput(); err != nil {
			lab.t.Logf("ip netns del %s: %v: %s", lab.nss[i], err, out)
		}
	}
	_ = exec.Command("ip", "link", "del", lab.prefix+"f").Run()
}

// Three app hosts, each in its own network namespace on its own address,
// behind one Portico; one host is taken off the network (its link goes
// down: packets vanish, nothing is refused) in the middle of a load of
// GETs. No client request fails, and the test reports how long the front
// took to route around the lost host.
func TestProxyNetnsFailover(t *testing.T) {
	lab := newNetLab(t)
	var hosts []string
	var ups []string
	for i := 1; i <= 3; i++ {
		ns := lab.addHost(fmt.Sprintf("h%d", i), 10+i)
		hosts = append(hosts, ns)
		addr := fmt.Sprintf("%s.%d:8000", lab.subnet, 10+i)
		startGunicornIn(t, ns, addr, fmt.Sprintf("ECHO_NAME=h%d", i))
		ups = append(ups, fmt.Sprintf("%q", "http://"+addr))
	}
	cfg := fmt.Sprintf(`access_log = "off"
[[listener]]
addr = "%s.1:0"
[[site]]
hosts = ["default"]
[[site.route]]
path = "/"
proxy = { upstreams = [%s], policy = "round_robin", retries = 2, timeout = "2s", connect_timeout = "1s", fail_timeout = "30s" }
`, lab.subnet, strings.Join(ups, ", "))
	path := filepath.Join(t.TempDir(), "portico.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startCommand(t, "serve", "-c", path)
	c := newClient(t)

	const clients, perClient = 8, 120
	var okCount, failed atomic.Int64
	var lastH2 atomic.Int64 // unix nanos of the last answer from h2
	var slowest atomic.Int64
	killAt := make(chan struct{})
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perClient {
				start := time.Now()
				resp, err := c.Get(p.URL("/x"))
				if err != nil {
					failed.Add(1)
					t.Log(err)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					t.Logf("status %d: %s", resp.StatusCode, body)
					continue
				}
				d := int64(time.Since(start))
				for {
					s := slowest.Load()
					if d <= s || slowest.CompareAndSwap(s, d) {
						break
					}
				}
				var seen echoSeen
				_ = json.Unmarshal(body, &seen)
				if seen.Name == "h2" {
					lastH2.Store(time.Now().UnixNano())
				}
				if okCount.Add(1) == clients*perClient/4 {
					close(killAt)
				}
			}
		}()
	}
	<-killAt
	down := time.Now()
	lab.run("ip", "-n", hosts[1], "link", "set", "eth0", "down")
	p.waitLog(t, "upstream down", 20*time.Second)
	routed := time.Since(down)
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d of %d GETs failed", failed.Load(), clients*perClient)
	}
	t.Logf("h2 taken off the network after %d answers; out of rotation %v later; slowest request %v; %d requests in all",
		clients*perClient/4, routed.Round(time.Millisecond), time.Duration(slowest.Load()).Round(time.Millisecond), okCount.Load())
	if h2 := lastH2.Load(); h2 > down.UnixNano()+int64(time.Second) {
		t.Errorf("h2 answered %v after it went off the network", time.Duration(h2-down.UnixNano()))
	}
}
