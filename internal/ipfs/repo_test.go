package ipfs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

func TestOptionsValidate(t *testing.T) {
	ok := Options{Binary: "ipfs", RepoDir: "/r"}
	tests := []struct {
		name   string
		mutate func(*Options)
		err    bool
	}{
		{"defaults", func(*Options) {}, false},
		{"no binary", func(o *Options) { o.Binary = "" }, true},
		{"no repo", func(o *Options) { o.RepoDir = "" }, true},
		{"api port high", func(o *Options) { o.APIPort = 70000 }, true},
		{"swarm port negative", func(o *Options) { o.SwarmPort = -1 }, true},
		{"short swarm key", func(o *Options) { o.SwarmKey = make([]byte, 16) }, true},
		{"swarm key", func(o *Options) { o.SwarmKey = make([]byte, 32) }, false},
		{"bad swarm ip", func(o *Options) { o.SwarmIPs = []net.IP{{1, 2}} }, true},
		{"negative timeout", func(o *Options) { o.StopTimeout = -1 }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ok
			tt.mutate(&o)
			_, err := o.withDefaults()
			if (err != nil) != tt.err || (err != nil && !errors.Is(err, ErrInvalidOption)) {
				t.Fatalf("err = %v, want error %v", err, tt.err)
			}
		})
	}
}

func TestSwarmAddrsDefaults(t *testing.T) {
	tests := []struct {
		name     string
		opts     Options
		want     []string
		loopback bool
	}{
		{"no swarm: loopback", Options{}, []string{"/ip4/127.0.0.1/tcp/4101"}, true},
		{"swarm: every interface", Options{SwarmKey: make([]byte, 32)},
			[]string{"/ip4/0.0.0.0/tcp/4101", "/ip6/::/tcp/4101"}, false},
		{"explicit", Options{SwarmKey: make([]byte, 32), SwarmIPs: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}},
			[]string{"/ip4/127.0.0.1/tcp/4101", "/ip6/::1/tcp/4101"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Binary, tt.opts.RepoDir = "ipfs", "/r"
			o, err := tt.opts.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			if got := o.swarmAddrs(4101); !slices.Equal(got, tt.want) {
				t.Fatalf("swarm addrs %v, want %v", got, tt.want)
			}
			if o.loopbackOnly() != tt.loopback {
				t.Fatalf("loopbackOnly = %v", !tt.loopback)
			}
		})
	}
}

func TestSwarmIPsOf(t *testing.T) {
	var addrs []ma.Multiaddr
	for _, s := range []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/tcp/5", "/ip6/::/tcp/0", "/dns4/example.com/tcp/1"} {
		addrs = append(addrs, ma.StringCast(s))
	}
	got := SwarmIPsOf(addrs)
	if len(got) != 2 || !got[0].Equal(net.ParseIP("127.0.0.1")) || !got[1].Equal(net.IPv6unspecified) {
		t.Fatalf("SwarmIPsOf = %v", got)
	}
}

func TestSwarmKeyFile(t *testing.T) {
	key := bytes.Repeat([]byte{0xab}, 32)
	want := "/key/swarm/psk/1.0.0/\n/base16/\n" + strings.Repeat("ab", 32) + "\n"
	if got := string(SwarmKeyFile(key)); got != want {
		t.Fatalf("swarm.key = %q", got)
	}
}

// TestConfigure: the settings edgellm depends on are written, other keys
// are kept, and swarm.key follows SwarmKey.
func TestConfigure(t *testing.T) {
	dir := t.TempDir()
	orig := `{"Identity":{"PeerID":"12D3KooWx"},"Addresses":{"API":"/ip4/127.0.0.1/tcp/5001","Announce":["/ip4/1.2.3.4/tcp/1"]},
"Swarm":{"RelayClient":{},"Transports":{"Network":{}}},"Plugins":{"Plugins":null},"Bootstrap":["auto"],"Datastore":{"StorageMax":"3GB"}}`
	if err := os.WriteFile(filepath.Join(dir, configFile), []byte(orig), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := Options{Binary: "ipfs", RepoDir: dir, SwarmKey: bytes.Repeat([]byte{1}, 32)}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if err := o.configure(5123, 0, 4123); err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	data, _ := os.ReadFile(filepath.Join(dir, configFile))
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	get := func(key string) any {
		var v any = cfg
		for _, p := range strings.Split(key, ".") {
			v = v.(map[string]any)[p]
		}
		return v
	}
	checks := map[string]string{
		"Addresses.API":                         `"/ip4/127.0.0.1/tcp/5123"`,
		"Addresses.Swarm":                       `["/ip4/0.0.0.0/tcp/4123","/ip6/::/tcp/4123"]`,
		"Addresses.Gateway":                     `[]`,
		"Addresses.Announce":                    `["/ip4/1.2.3.4/tcp/1"]`,
		"Bootstrap":                             `[]`,
		"Routing.Type":                          `"none"`,
		"AutoConf.Enabled":                      `false`,
		"Discovery.MDNS.Enabled":                `false`,
		"Swarm.Transports.Network.QUIC":         `false`,
		"Swarm.Transports.Network.TCP":          `true`,
		"Swarm.DisableNatPortMap":               `false`,
		"Datastore.StorageMax":                  `"3GB"`,
		"Identity.PeerID":                       `"12D3KooWx"`,
		"Swarm.Transports.Network.WebRTCDirect": `false`,
		"Gateway.HTTPHeaders":                   `{"Access-Control-Allow-Origin":[""]}`,
	}
	for key, want := range checks {
		got, _ := json.Marshal(get(key))
		if string(got) != want {
			t.Errorf("%s = %s, want %s", key, got, want)
		}
	}
	key, err := os.ReadFile(filepath.Join(dir, swarmKeyFile))
	if err != nil || !bytes.Equal(key, SwarmKeyFile(o.SwarmKey)) {
		t.Fatalf("swarm.key = %q, %v", key, err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, swarmKeyFile)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("swarm.key mode %v", fi.Mode())
	}
	// Without a swarm key the file goes and the swarm is loopback only.
	o.SwarmKey, o.SwarmIPs = nil, nil
	if o, err = o.withDefaults(); err != nil {
		t.Fatal(err)
	}
	if err := o.configure(5123, 0, 4123); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, swarmKeyFile)); !os.IsNotExist(err) {
		t.Fatalf("swarm.key still there: %v", err)
	}
	// Without ports the API and the gateway are sockets in the repository.
	o.Gateway = true
	if err := o.configure(0, 0, 4123); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(filepath.Join(dir, configFile))
	cfg = nil
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"Addresses.API": "/unix" + dir + "/api.sock", "Addresses.Gateway": "/unix" + dir + "/gateway.sock"} {
		if got := get(key); got != want {
			t.Errorf("%s = %v, want %s", key, got, want)
		}
	}
	if o.repoPeerID() != "12D3KooWx" {
		t.Fatalf("repoPeerID = %q", o.repoPeerID())
	}
}

func TestAPIURL(t *testing.T) {
	tests := map[string]string{
		"/ip4/127.0.0.1/tcp/5001": "http://127.0.0.1:5001",
		"/ip6/::1/tcp/5001":       "http://[::1]:5001",
		"/unix/tmp/api.sock":      "unix:/tmp/api.sock",
		"garbage":                 "",
	}
	for in, want := range tests {
		if got := apiURL(in); got != want {
			t.Errorf("apiURL(%q) = %q, want %q", in, got, want)
		}
	}
	if p := urlPort("http://127.0.0.1:5123"); p != 5123 {
		t.Fatalf("urlPort = %d", p)
	}
}

func TestP2PAddrs(t *testing.T) {
	id, err := peer.Decode("12D3KooWSZHB5crW1uvEfoa3G83WTTN6htkBfXtcoY56hz3bjxbF")
	if err != nil {
		t.Fatal(err)
	}
	in := []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/4001"), ma.StringCast("/ip4/10.0.0.1/tcp/4001/p2p/" + id.String())}
	got := P2PAddrs(id, in)
	for _, a := range got {
		if !strings.HasSuffix(a.String(), "/tcp/4001/p2p/"+id.String()) {
			t.Fatalf("P2PAddrs: %v", got)
		}
	}
}

func TestFreePort(t *testing.T) {
	p, err := freePort([]net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil || p <= 0 {
		t.Fatalf("freePort = %d, %v", p, err)
	}
}

// TestSocketPathFallback: a repository too deep for a socket path puts the
// sockets in this user's private directory under the temporary directory.
func TestSocketPathFallback(t *testing.T) {
	short := Options{RepoDir: "/data/ipfs"}
	if got := short.socketPath(apiSocket); got != "/data/ipfs/api.sock" {
		t.Fatalf("socketPath = %s", got)
	}
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	deep := Options{RepoDir: "/" + strings.Repeat("d", 120) + "/ipfs"}
	got := deep.socketPath(gatewaySocket)
	if len(got) > maxSocketPath || filepath.Dir(got) != filepath.Join(tmp, fmt.Sprintf("edgellm-%d", os.Geteuid())) {
		t.Fatalf("socketPath = %s", got)
	}
	if other := (Options{RepoDir: deep.RepoDir + "2"}).socketPath(gatewaySocket); other == got {
		t.Fatalf("two repositories share a socket: %s", got)
	}
	if err := deep.prepareSockets(0, 0); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Dir(got)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory %v, %v", fi.Mode(), err)
	}
}

// TestPrepareSockets: a socket a killed daemon left is removed before the
// next start; one something still listens on is left alone.
func TestPrepareSockets(t *testing.T) {
	o := Options{RepoDir: t.TempDir()}
	path := o.socketPath(apiSocket)
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.prepareSockets(0, 1234); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("a live socket was removed: %v", err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // as a SIGKILL leaves it: the file, nobody listening
	if err := o.prepareSockets(0, 1234); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("a stale socket is still there: %v", err)
	}
}
