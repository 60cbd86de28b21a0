package ipfs

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgellm/edgellm/internal/privdir"
)

// Where Kubo's HTTP RPC API and gateway listen by default: unix sockets in
// the node's private repository.
//
// Decision (hardening): on 127.0.0.1 TCP, without authentication, any local
// user could read every cached prompt's token ids from block metadata, shut
// Kubo down and take its port to receive every stored block and serve
// forged ones, and the gateway's CORS let any web page read blocks. A unix
// socket in a 0700 directory is reachable by this user only, needs no
// secret to hand around, and no browser can reach it. An explicit
// ipfs.api_port / gateway port still listens on 127.0.0.1 TCP (opt-in; the
// README says what that exposes). The backend also checks every block's
// bytes against its CID (kv/store.py), so even a forged answer is refused.
const (
	apiSocket     = "api.sock"
	gatewaySocket = "gateway.sock"
	// unixPrefix marks a socket path where a URL is expected (the form the
	// backend's EDGELLM_IPFS_API and EDGELLM_IPFS_GATEWAY take too).
	unixPrefix = "unix:"
	// maxSocketPath is the longest unix socket path Linux accepts.
	maxSocketPath = 107
)

// listenAddr is Kubo's listen multiaddr for the API or the gateway: TCP on
// 127.0.0.1 when a port is configured, else the named socket.
func (o Options) listenAddr(port int, socket string) string {
	if port != 0 {
		return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)
	}
	return "/unix" + o.socketPath(socket)
}

// socketPath is <repo>/<name>, or, when that is too long for a socket,
// <tmp>/edgellm-<uid>/ipfs-<hash of the repo>-<name> (made 0700 by
// prepareSockets).
func (o Options) socketPath(name string) string {
	if p := filepath.Join(o.RepoDir, name); len(p) <= maxSocketPath {
		return p
	}
	sum := sha256.Sum256([]byte(o.RepoDir))
	short := "ipfs-" + hex.EncodeToString(sum[:6]) + "-" + name
	for _, tmp := range []string{os.TempDir(), "/tmp"} {
		if p := filepath.Join(tmp, fmt.Sprintf("edgellm-%d", os.Geteuid()), short); len(p) <= maxSocketPath {
			return p
		}
	}
	return filepath.Join("/tmp", short) // refused by prepareSockets
}

// prepareSockets makes the sockets' directory private and removes sockets
// a killed daemon left (Kubo cannot listen on an existing path); a socket
// something still listens on is left alone (a daemon attach did not get an
// answer from in time must not lose its address).
func (o Options) prepareSockets(apiPort, gatewayPort int) error {
	for _, s := range []struct {
		port int
		name string
	}{{apiPort, apiSocket}, {gatewayPort, gatewaySocket}} {
		if s.port != 0 {
			continue
		}
		path := o.socketPath(s.name)
		if len(path) > maxSocketPath || !strings.HasPrefix(path, "/") {
			return fmt.Errorf("no directory gives Kubo's %s a socket path under %d bytes", s.name, maxSocketPath)
		}
		if err := privdir.Ensure(filepath.Dir(path)); err != nil {
			return err
		}
		if live(path) {
			continue // a daemon still answers there: the start fails on its repo.lock
		}
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

// live reports whether something accepts connections on the socket at path.
func live(path string) bool {
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}
