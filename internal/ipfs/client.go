package ipfs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// maxResponse caps what the client reads from one API answer.
const maxResponse = 64 << 20

// Client speaks Kubo's HTTP RPC API (every call is a POST to /api/v0/...).
type Client struct {
	url  string // as given: http://127.0.0.1:5001 or unix:/path/api.sock
	base string // what requests go to: the URL, or http://kubo over a socket
	http *http.Client
}

// NewClient returns a client of the Kubo API at apiURL: http://host:port, or
// unix:/path for a unix socket (how edgellm's own Kubo listens).
func NewClient(apiURL string) *Client {
	transport := &http.Transport{Proxy: nil}
	c := &Client{url: strings.TrimRight(apiURL, "/"), http: &http.Client{Timeout: 5 * time.Minute, Transport: transport}}
	c.base = c.url
	if path, ok := strings.CutPrefix(c.url, unixPrefix); ok {
		c.base = "http://kubo" // any host: the dialer ignores it
		transport.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
	}
	return c
}

// URL returns the API's address as given: http://host:port or unix:/path.
func (c *Client) URL() string { return c.url }

// APIError is an error answer from Kubo.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("ipfs api: HTTP %d: %s", e.Status, e.Message)
}

// call POSTs to /api/v0/<cmd> with the arguments and optional multipart
// file, and returns the body of a 200 answer.
func (c *Client) call(ctx context.Context, cmd string, args url.Values, file []byte) ([]byte, error) {
	var body io.Reader
	contentType := ""
	if file != nil {
		var buf bytes.Buffer
		w := multipart.NewWriter(&buf)
		part, err := w.CreateFormFile("data", "data")
		if err != nil {
			return nil, err
		}
		part.Write(file)
		if err := w.Close(); err != nil {
			return nil, err
		}
		body, contentType = &buf, w.FormDataContentType()
	}
	u := c.base + "/api/v0/" + cmd
	if len(args) > 0 {
		u += "?" + args.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ipfs api %s: %w", cmd, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("ipfs api %s: %w", cmd, err)
	}
	if len(data) > maxResponse {
		return nil, fmt.Errorf("ipfs api %s: answer larger than %d bytes", cmd, maxResponse)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Message string }
		if json.Unmarshal(data, &e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(data))
		}
		return nil, &APIError{Status: resp.StatusCode, Message: e.Message}
	}
	return data, nil
}

// Identity is a node's peer id and the addresses it announces, without the
// /p2p/<id> suffix Kubo appends.
type Identity struct {
	ID           peer.ID
	Addrs        []ma.Multiaddr
	AgentVersion string
}

// DialAddrs returns the addresses with /p2p/<id> appended, as SwarmConnect
// takes them.
func (i Identity) DialAddrs() []ma.Multiaddr {
	return P2PAddrs(i.ID, i.Addrs)
}

// P2PAddrs appends /p2p/<id> to each address that lacks it.
func P2PAddrs(id peer.ID, addrs []ma.Multiaddr) []ma.Multiaddr {
	suffix, err := ma.NewComponent("p2p", id.String())
	if err != nil {
		return nil
	}
	out := make([]ma.Multiaddr, 0, len(addrs))
	for _, a := range addrs {
		if _, last := ma.SplitLast(a); last != nil && last.Protocol().Code == ma.P_P2P {
			out = append(out, a)
			continue
		}
		out = append(out, a.Encapsulate(suffix))
	}
	return out
}

// ID returns the node's identity (POST /api/v0/id).
func (c *Client) ID(ctx context.Context) (Identity, error) {
	data, err := c.call(ctx, "id", nil, nil)
	if err != nil {
		return Identity{}, err
	}
	var r struct {
		ID           string
		Addresses    []string
		AgentVersion string
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return Identity{}, fmt.Errorf("ipfs api id: %w", err)
	}
	id, err := peer.Decode(r.ID)
	if err != nil {
		return Identity{}, fmt.Errorf("ipfs api id: peer id %q: %w", r.ID, err)
	}
	out := Identity{ID: id, AgentVersion: r.AgentVersion}
	seen := map[string]bool{}
	for _, s := range r.Addresses {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			continue
		}
		if rest, last := ma.SplitLast(a); last != nil && last.Protocol().Code == ma.P_P2P {
			a = rest
		}
		if len(a) == 0 || seen[a.String()] {
			continue
		}
		seen[a.String()] = true
		out.Addrs = append(out.Addrs, a)
	}
	return out, nil
}

// Version returns Kubo's version, e.g. "0.42.0" (POST /api/v0/version).
func (c *Client) Version(ctx context.Context) (string, error) {
	data, err := c.call(ctx, "version", nil, nil)
	if err != nil {
		return "", err
	}
	var r struct{ Version string }
	if err := json.Unmarshal(data, &r); err != nil {
		return "", fmt.Errorf("ipfs api version: %w", err)
	}
	return r.Version, nil
}

// SwarmConnect connects the node to a peer (POST /api/v0/swarm/connect).
// Each address must end in /p2p/<id>; Kubo dials them all and succeeds when
// a connection opens.
func (c *Client) SwarmConnect(ctx context.Context, addrs ...ma.Multiaddr) error {
	if len(addrs) == 0 {
		return fmt.Errorf("ipfs swarm connect: no addresses")
	}
	args := url.Values{}
	for _, a := range addrs {
		args.Add("arg", a.String())
	}
	_, err := c.call(ctx, "swarm/connect", args, nil)
	return err
}

// ConnectPeer connects the node to the IPFS node id at addrs (addresses as
// capability records carry them, without /p2p), after which bitswap fetches
// blocks from it. Kubo dials the addresses together and succeeds when one
// connection opens.
func (c *Client) ConnectPeer(ctx context.Context, id peer.ID, addrs []ma.Multiaddr) error {
	if id == "" {
		return fmt.Errorf("ipfs swarm connect: no peer id")
	}
	return c.SwarmConnect(ctx, P2PAddrs(id, addrs)...)
}

// SwarmPeers returns the ids of the peers the node is connected to.
func (c *Client) SwarmPeers(ctx context.Context) ([]peer.ID, error) {
	data, err := c.call(ctx, "swarm/peers", nil, nil)
	if err != nil {
		return nil, err
	}
	var r struct{ Peers []struct{ Peer string } }
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("ipfs api swarm/peers: %w", err)
	}
	var out []peer.ID
	for _, p := range r.Peers {
		if id, err := peer.Decode(p.Peer); err == nil {
			out = append(out, id)
		}
	}
	return out, nil
}

// BlockPut stores data as a raw block and returns its CID (CIDv1, raw codec,
// sha2-256), as `ipfs block put --cid-codec=raw` does.
func (c *Client) BlockPut(ctx context.Context, data []byte) (string, error) {
	out, err := c.call(ctx, "block/put", url.Values{"cid-codec": {"raw"}}, data)
	if err != nil {
		return "", err
	}
	var r struct{ Key string }
	if err := json.Unmarshal(out, &r); err != nil {
		return "", fmt.Errorf("ipfs api block/put: %w", err)
	}
	return r.Key, nil
}

// BlockGet returns a block's bytes, fetching it from connected peers
// (bitswap) when the node does not hold it; ctx bounds the search.
func (c *Client) BlockGet(ctx context.Context, cid string) ([]byte, error) {
	return c.call(ctx, "block/get", url.Values{"arg": {cid}}, nil)
}
