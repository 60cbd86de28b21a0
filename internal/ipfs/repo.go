package ipfs

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/edgellm/edgellm/internal/atomicfile"
)

// Files in a Kubo repository that the supervisor reads or writes.
const (
	configFile   = "config"
	apiFile      = "api"
	gatewayFile  = "gateway"
	swarmKeyFile = "swarm.key"
)

// SwarmKeyFile renders key as Kubo's swarm.key (a go-libp2p pnet V1 PSK).
func SwarmKeyFile(key []byte) []byte {
	return []byte("/key/swarm/psk/1.0.0/\n/base16/\n" + hex.EncodeToString(key) + "\n")
}

// daemonEnv is the daemon's environment: the node's, minus anything that
// would point Kubo elsewhere, plus the repository and the switches.
func (o Options) daemonEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "IPFS_PATH", "IPFS_TELEMETRY", "LIBP2P_FORCE_PNET", "IPFS_HTTP_ROUTERS":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "IPFS_PATH="+o.RepoDir, "IPFS_TELEMETRY=off")
	if o.SwarmKey != nil {
		env = append(env, "LIBP2P_FORCE_PNET=1") // refuse to run without swarm.key
	}
	return env
}

// initRepo runs `ipfs init` when the repository has no config yet.
func (o Options) initRepo(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(o.RepoDir, configFile)); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(o.RepoDir, 0o700); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, o.Binary, "--repo-dir="+o.RepoDir, "init", "--empty-repo")
	cmd.Env = o.daemonEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		if out = bytes.TrimSpace(out); len(out) > 0 {
			return fmt.Errorf("ipfs init: %w: %s", err, out)
		}
		return fmt.Errorf("ipfs init: %w", err)
	}
	return nil
}

// configure writes the settings edgellm depends on into the repository's
// config (leaving every other key as it is) and writes or removes swarm.key.
// The daemon must not be running.
func (o Options) configure(apiPort, gatewayPort, swarmPort int) error {
	path := filepath.Join(o.RepoDir, configFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cfg map[string]any
	if err := json.Unmarshal(data, &cfg); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	gateway := any([]string{})
	if o.Gateway {
		gateway = o.listenAddr(gatewayPort, gatewaySocket)
	}
	settings := []struct {
		key   string
		value any
	}{
		{"Addresses.API", o.listenAddr(apiPort, apiSocket)},
		{"Addresses.Gateway", gateway},
		// No cross-origin reads of blocks by web pages: an empty
		// Access-Control-Allow-Origin matches no origin (Kubo's gateway
		// sends "*" when the header is not configured).
		{"Gateway.HTTPHeaders", map[string][]string{"Access-Control-Allow-Origin": {""}}},
		{"API.HTTPHeaders", map[string][]string{}},
		// Trustless responses only (raw blocks, CARs): what the backend reads.
		{"Gateway.DeserializedResponses", false},
		{"Gateway.NoFetch", false},
		{"Addresses.Swarm", o.swarmAddrs(swarmPort)},
		{"Bootstrap", []string{}},
		{"AutoConf.Enabled", false},
		{"AutoTLS.Enabled", false},
		{"Routing.Type", "none"},
		{"Routing.DelegatedRouters", []string{}},
		{"Ipns.DelegatedPublishers", []string{}},
		{"DNS.Resolvers", map[string]string{}},
		{"Discovery.MDNS.Enabled", false},
		{"Provide.Enabled", false},
		{"Swarm.RelayClient.Enabled", false},
		{"Swarm.DisableNatPortMap", o.loopbackOnly()},
		{"Swarm.Transports.Network.TCP", true},
		{"Swarm.Transports.Network.Websocket", false},
		{"Swarm.Transports.Network.QUIC", false},
		{"Swarm.Transports.Network.WebTransport", false},
		{"Swarm.Transports.Network.WebRTCDirect", false},
	}
	for _, s := range settings {
		if err := setKey(cfg, s.key, s.value); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	out, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, out); err != nil {
		return err
	}
	keyPath := filepath.Join(o.RepoDir, swarmKeyFile)
	if o.SwarmKey == nil {
		if err := os.Remove(keyPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	return writeFileAtomic(keyPath, SwarmKeyFile(o.SwarmKey))
}

// setKey sets a dotted key in a decoded JSON object, creating objects on
// the way (Kubo writes some sections as null).
func setKey(cfg map[string]any, key string, value any) error {
	parts := strings.Split(key, ".")
	m := cfg
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			if m[p] != nil {
				return fmt.Errorf("config key %s: %q is not an object", key, p)
			}
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = value
	return nil
}

// writeFileAtomic replaces path with data (mode 0600): a fresh temporary
// file, synced, renamed, the directory synced (a crash leaves the old config
// or the new, never a truncated one Kubo refuses to start on).
func writeFileAtomic(path string, data []byte) error {
	return atomicfile.Write(path, data, 0o600)
}

// repoPeerID returns the peer id in the repository's config, "" if none.
func (o Options) repoPeerID() string {
	data, err := os.ReadFile(filepath.Join(o.RepoDir, configFile))
	if err != nil {
		return ""
	}
	var cfg struct {
		Identity struct{ PeerID string }
	}
	if json.Unmarshal(data, &cfg) != nil {
		return ""
	}
	return cfg.Identity.PeerID
}

// readAPIFile returns the API URL in the repository's api file (written by
// a running daemon), "" when there is none or it is not a TCP address.
func (o Options) readAPIFile() string {
	data, err := os.ReadFile(filepath.Join(o.RepoDir, apiFile))
	if err != nil {
		return ""
	}
	return apiURL(strings.TrimSpace(string(data)))
}

// readGatewayFile returns the gateway URL in the repository's gateway file
// (written by a running daemon that serves one), "" when there is none.
func (o Options) readGatewayFile() string {
	data, err := os.ReadFile(filepath.Join(o.RepoDir, gatewayFile))
	if err != nil {
		return ""
	}
	u := strings.TrimSpace(string(data))
	// Kubo writes "http://" + the listener's address: a socket's path for
	// a unix listener.
	if path, ok := strings.CutPrefix(u, "http://"); ok && strings.HasPrefix(path, "/") {
		return unixPrefix + path
	}
	if !strings.HasPrefix(u, "http://") || urlPort(u) == 0 {
		return ""
	}
	return u
}

// apiURL turns /ip4/H/tcp/P (or /ip6) into http://H:P and /unix/PATH into
// unix:PATH; "" otherwise.
func apiURL(addr string) string {
	m, err := ma.NewMultiaddr(addr)
	if err != nil {
		return ""
	}
	if path, err := m.ValueForProtocol(ma.P_UNIX); err == nil {
		return unixPrefix + path
	}
	host, err := m.ValueForProtocol(ma.P_IP4)
	if err != nil {
		if host, err = m.ValueForProtocol(ma.P_IP6); err != nil {
			return ""
		}
	}
	port, err := m.ValueForProtocol(ma.P_TCP)
	if err != nil {
		return ""
	}
	return "http://" + net.JoinHostPort(host, port)
}

// urlPort returns the port of an http://host:port URL, 0 if none.
func urlPort(u string) int {
	_, p, err := net.SplitHostPort(strings.TrimPrefix(u, "http://"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// freePort returns a TCP port free on every one of ips right now. An IP
// that cannot be bound at all (no IPv6 here) does not count against a port:
// Kubo starts when at least one swarm address listens.
func freePort(ips []net.IP) (int, error) {
	var lastErr error
	for range 20 {
		l, err := net.Listen(tcpNet(ips[0]), net.JoinHostPort(ips[0].String(), "0"))
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		ok := true
		for _, ip := range ips[1:] {
			l2, err := net.Listen(tcpNet(ip), net.JoinHostPort(ip.String(), strconv.Itoa(port)))
			if errors.Is(err, syscall.EADDRINUSE) {
				ok, lastErr = false, err
				break
			}
			if err == nil {
				l2.Close()
			}
		}
		l.Close()
		if ok {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no port free on all of %v: %w", ips, lastErr)
}

// tcpNet is "tcp4" or "tcp6": an IPv6 wildcard then binds IPv6 only, as
// libp2p's listeners do, and does not clash with the IPv4 one.
func tcpNet(ip net.IP) string {
	if ip.To4() != nil {
		return "tcp4"
	}
	return "tcp6"
}
