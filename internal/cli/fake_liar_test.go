package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/edgellm/edgellm/p2p"
)

// fakeLiarEnv carries a fakeLiar's claim to the test binary run as one.
const fakeLiarEnv = "EDGELLM_FAKE_LIAR"

// fakeLiar is what a lying holder's record claims: model ID with weights
// WeightsCID, in directory DirCID of the IPFS node IPFSPeerID at IPFSAddrs,
// where DirCID holds other weights. No honest worker can advertise this (a
// worker's directory CID is what its own Kubo returned when it added the
// model), hence a fake: a swarm member with a hand-made, validly signed record.
type fakeLiar struct {
	Join       string   `json:"join"`
	Bootstrap  string   `json:"bootstrap"`
	ID         string   `json:"id"`
	WeightsCID string   `json:"weights_cid"`
	DirCID     string   `json:"dir_cid"`
	IPFSPeerID string   `json:"ipfs_peer_id"`
	IPFSAddrs  []string `json:"ipfs_addrs"`
}

// startFakeLiar runs this test binary as the fake liar (TestFakeLiarHolder)
// inside the swarm's namespace; it returns its peer id and a stop that
// withdraws its record and waits for it.
func (c *cliEnv) startFakeLiar(l fakeLiar) (string, func()) {
	c.t.Helper()
	spec, _ := json.Marshal(l)
	self, err := os.Executable()
	if err != nil {
		c.t.Fatal(err)
	}
	args := []string{"-test.run=^TestFakeLiarHolder$", "-test.v"}
	cmd := exec.CommandContext(context.Background(), self, args...)
	if c.ns != nil {
		cmd = c.ns.Command(context.Background(), self, args...)
	}
	cmd.Env = append(os.Environ(), fakeLiarEnv+"="+string(spec))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	stop := func() { stdin.Close(); _ = cmd.Wait() }
	c.t.Cleanup(stop)
	lines := bufio.NewScanner(stdout)
	var seen []string
	for lines.Scan() {
		if id, ok := strings.CutPrefix(lines.Text(), "fake liar "); ok {
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			return id, stop
		}
		seen = append(seen, lines.Text())
	}
	c.t.Fatalf("the fake liar exited before joining:\n%s\n%s", strings.Join(seen, "\n"), stderr.String())
	return "", nil
}

// TestFakeLiarHolder is no test of its own: it is the fake lying holder
// that TestModelPullAcrossWorkers runs (this binary with EDGELLM_FAKE_LIAR
// set). It joins the swarm, advertises the claim, prints its peer id and
// stays until its stdin closes, then withdraws its record.
func TestFakeLiarHolder(t *testing.T) {
	spec := os.Getenv(fakeLiarEnv)
	if spec == "" {
		t.Skip("the fake liar holder TestModelPullAcrossWorkers starts")
	}
	var l fakeLiar
	if err := json.Unmarshal([]byte(spec), &l); err != nil {
		t.Fatal(err)
	}
	join, err := p2p.ParseJoin(l.Join)
	if err != nil {
		t.Fatal(err)
	}
	ipfsID, err := peer.Decode(l.IPFSPeerID)
	if err != nil {
		t.Fatal(err)
	}
	caps := p2p.Capabilities{Device: "cpu", MaxSessions: 1, IPFSPeerID: ipfsID,
		Models: []p2p.Model{{ID: l.ID, WeightsCID: l.WeightsCID, DirCID: l.DirCID}}}
	for _, a := range l.IPFSAddrs {
		caps.IPFSAddrs = append(caps.IPFSAddrs, ma.StringCast(a))
	}
	boot, err := peer.AddrInfoFromString(l.Bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	key, err := p2p.NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	node, err := p2p.New(p2p.WithIdentity(key), p2p.WithSecret(join.Secret), p2p.WithBootstrap(append(join.Bootstrap, *boot)...),
		p2p.WithMDNS(false), p2p.WithListenAddrs(ma.StringCast("/ip4/127.0.0.1/tcp/0")),
		p2p.WithCapabilitySource(p2p.StaticSource(caps)), p2p.WithRecordTiming(2*time.Second, 6*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("fake liar %s\n", node.ID())
	_, _ = io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = node.Leave(ctx)
	_ = node.Close()
}
