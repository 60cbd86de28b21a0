package p2p

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// SecretSize is the length of a swarm secret: a libp2p pre-shared key.
const SecretSize = 32

// JoinPrefix starts every join string; the digit is the format version.
const JoinPrefix = "edgellm1:"

const joinChecksumLen = 4

// Secret is a swarm's pre-shared key. Whoever holds it is a member.
type Secret [SecretSize]byte

// NewSecret returns a fresh random swarm secret.
func NewSecret() (Secret, error) {
	var s Secret
	if _, err := rand.Read(s[:]); err != nil {
		return s, fmt.Errorf("generate swarm secret: %w", err)
	}
	return s, nil
}

// PSK returns the secret in the form libp2p's private network expects.
func (s Secret) PSK() pnet.PSK { return pnet.PSK(bytes.Clone(s[:])) }

// ID is a short public name for the swarm derived from the secret by a one-way
// hash: safe to print and to announce over mDNS, useless for joining.
func (s Secret) ID() string {
	h := sha256.Sum256(append([]byte("edgellm/swarm-id/"), s[:]...))
	return hex.EncodeToString(h[:6])
}

// Join is the decoded content of a join string: the swarm secret plus
// addresses of members to bootstrap from.
type Join struct {
	Secret    Secret
	Bootstrap []peer.AddrInfo
}

// String encodes the join string: JoinPrefix, then unpadded base64url of the
// JoinToken protobuf followed by a 4-byte SHA-256 checksum (which catches
// truncated or mistyped pastes).
func (j Join) String() string {
	tok := &pb.JoinToken{Version: 1, Secret: j.Secret[:]}
	for _, ai := range j.Bootstrap {
		addrs, err := peer.AddrInfoToP2pAddrs(&ai)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			tok.Bootstrap = append(tok.Bootstrap, a.Bytes())
		}
	}
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(tok)
	if err != nil { // cannot happen for this message
		panic(err)
	}
	sum := sha256.Sum256(body)
	body = append(body, sum[:joinChecksumLen]...)
	return JoinPrefix + base64.RawURLEncoding.EncodeToString(body)
}

// ParseJoin decodes a join string. Every failure wraps ErrInvalidJoinString
// and says in one line what is wrong.
func ParseJoin(s string) (Join, error) {
	var j Join
	s = strings.TrimSpace(s)
	fail := func(format string, args ...any) (Join, error) {
		return Join{}, fmt.Errorf("%w: %s", ErrInvalidJoinString, fmt.Sprintf(format, args...))
	}
	if len(s) > MaxJoinStringLen {
		return fail("longer than %d characters", MaxJoinStringLen)
	}
	rest, ok := strings.CutPrefix(s, JoinPrefix)
	if !ok {
		return fail("it must start with %q (copy it whole from `edgellm swarm init`)", JoinPrefix)
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return fail("not base64url after the prefix (truncated or mistyped?)")
	}
	if len(raw) <= joinChecksumLen {
		return fail("too short")
	}
	body, sum := raw[:len(raw)-joinChecksumLen], raw[len(raw)-joinChecksumLen:]
	want := sha256.Sum256(body)
	if !bytes.Equal(sum, want[:joinChecksumLen]) {
		return fail("checksum mismatch (truncated or mistyped?)")
	}
	var tok pb.JoinToken
	if err := proto.Unmarshal(body, &tok); err != nil {
		return fail("undecodable token")
	}
	if tok.GetVersion() != 1 {
		return fail("unsupported version %d", tok.GetVersion())
	}
	if len(tok.GetSecret()) != SecretSize {
		return fail("the swarm secret must be %d bytes, got %d", SecretSize, len(tok.GetSecret()))
	}
	copy(j.Secret[:], tok.GetSecret())
	if len(tok.GetBootstrap()) > maxBootstrap {
		return fail("more than %d bootstrap addresses", maxBootstrap)
	}
	bs, err := decodeBootstrap(tok.GetBootstrap())
	if err != nil {
		return fail("%v", err)
	}
	j.Bootstrap = bs
	return j, nil
}

func decodeBootstrap(raw [][]byte) ([]peer.AddrInfo, error) {
	addrs := make([]ma.Multiaddr, 0, len(raw))
	for i, b := range raw {
		a, err := ma.NewMultiaddrBytes(b)
		if err != nil {
			return nil, fmt.Errorf("bootstrap address %d is not a multiaddr", i+1)
		}
		if _, err := a.ValueForProtocol(ma.P_P2P); err != nil {
			return nil, fmt.Errorf("bootstrap address %s has no /p2p/<peer id>", a)
		}
		addrs = append(addrs, a)
	}
	infos, err := peer.AddrInfosFromP2pAddrs(addrs...)
	if err != nil {
		return nil, fmt.Errorf("bootstrap addresses: %v", err)
	}
	return infos, nil
}

// ParseBootstrapAddrs parses /p2p multiaddr strings (flags, config) into peer
// infos, merging addresses of the same peer.
func ParseBootstrapAddrs(ss []string) ([]peer.AddrInfo, error) {
	raw := make([][]byte, 0, len(ss))
	for _, s := range ss {
		a, err := ma.NewMultiaddr(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%w: bootstrap address %q: %v", ErrInvalidConfig, s, err)
		}
		raw = append(raw, a.Bytes())
	}
	infos, err := decodeBootstrap(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	return infos, nil
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }
