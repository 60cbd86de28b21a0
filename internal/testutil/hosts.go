package testutil

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// HostsSubnet is the LAN of NewHosts: host i has HostsSubnet.(i+1)/24. A
// private range, and only ever configured inside the test's namespaces.
const HostsSubnet = "10.213.0"

// Host is one simulated machine: a network namespace of its own whose
// interfaces are lo and eth0, eth0 having Addr on a LAN shared with the other
// hosts of NewHosts (a veth pair to a bridge in a separate switch namespace),
// so Ray, libp2p and Kubo see distinct routable addresses, as on real hosts.
type Host struct {
	*NetNS
	Addr   string // this host's IPv4 address on the LAN
	sw     *NetNS // the switch namespace, holding the bridge
	port   string // this host's port on the bridge (the veth end in sw)
	hostIP string // absolute path of ip(8)
	link   *delayLink
}

// NewHosts creates n hosts on one LAN and registers cleanups that delete
// them (deleting a namespace deletes its veth ends and the bridge). The hosts
// at the indices in delayable get a cable whose delay SetDelay sets (a TAP
// pair this process relays frames across, see delayLink) instead of a veth
// pair. Create
// them before starting the processes that run in them, so that those
// processes' cleanups run first. Without root or ip(8) the test is skipped
// with one line; under CI=true it fails instead, so a CI run can never pass
// having run none of it.
func NewHosts(t testing.TB, n int, delayable ...int) []*Host {
	t.Helper()
	if why := hostsUnavailable(); why != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and %s", why)
		}
		t.Skipf("skipping: %s", why)
	}
	sw := NewNetNS(t)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(sw.ip, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
	}
	run("-n", sw.Name, "link", "add", "br0", "type", "bridge")
	run("-n", sw.Name, "link", "set", "br0", "up")
	hosts := make([]*Host, n)
	for i := range hosts {
		h := &Host{NetNS: NewNetNS(t), Addr: fmt.Sprintf("%s.%d", HostsSubnet, i+1), sw: sw,
			port: fmt.Sprintf("p%d", i), hostIP: sw.ip}
		if slices.Contains(delayable, i) {
			h.link = newDelayLink(t, run, sw.Name, h.Name, h.port)
		} else {
			run("-n", sw.Name, "link", "add", h.port, "type", "veth", "peer", "name", "eth0", "netns", h.Name)
		}
		run("-n", sw.Name, "link", "set", h.port, "master", "br0")
		run("-n", sw.Name, "link", "set", h.port, "up")
		run("-n", h.Name, "addr", "add", h.Addr+"/24", "dev", "eth0")
		run("-n", h.Name, "link", "set", "eth0", "up")
		hosts[i] = h
	}
	return hosts
}

// newDelayLink makes a delayLink from host namespace hostNS (its eth0) to
// the switch namespace swNS (its port), relaying until the test ends.
func newDelayLink(t testing.TB, run func(...string), swNS, hostNS, port string) *delayLink {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	tag := hex.EncodeToString(b[:])
	hostTap, err := openTap("eh" + tag)
	if err != nil {
		t.Fatalf("a TAP device for a delayable link: %v", err)
	}
	swTap, err := openTap("es" + tag)
	if err != nil {
		hostTap.Close()
		t.Fatalf("a TAP device for a delayable link: %v", err)
	}
	l := &delayLink{host: hostTap, sw: swTap}
	t.Cleanup(l.close) // before the namespaces go (cleanups run last first)
	run("link", "set", "eh"+tag, "netns", hostNS)
	run("-n", hostNS, "link", "set", "eh"+tag, "name", "eth0")
	run("link", "set", "es"+tag, "netns", swNS)
	run("-n", swNS, "link", "set", "es"+tag, "name", port)
	l.start()
	return l
}

// SetDelay sets the one-way delay of this host's cable (both directions, so
// a round trip takes 2*d more). Only for hosts NewHosts made delayable.
func (h *Host) SetDelay(d time.Duration) error {
	if h.link == nil {
		return fmt.Errorf("host %s was not made delayable (NewHosts' delayable)", h.Addr)
	}
	h.link.delay.Store(int64(d))
	return nil
}

func hostsUnavailable() string {
	if os.Geteuid() != 0 {
		return "needs root for network namespaces (separate hosts)"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "needs ip(8) (iproute2) for network namespaces (separate hosts)"
	}
	return ""
}

// SetLink pulls (up=false) or plugs back this host's cable: its port on the
// switch goes down or up. Nothing is told to either end's processes; packets
// just stop, as when a real link is cut.
func (h *Host) SetLink(up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	if out, err := exec.Command(h.hostIP, "-n", h.sw.Name, "link", "set", h.port, state).CombinedOutput(); err != nil {
		return fmt.Errorf("ip link set %s %s: %w: %s", h.port, state, err, bytes.TrimSpace(out))
	}
	return nil
}
