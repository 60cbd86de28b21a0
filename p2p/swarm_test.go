package p2p

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

func sampleJoin(t testing.TB) Join {
	id, err := peer.IDFromPrivateKey(newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	return Join{Secret: newSecret(t), Bootstrap: []peer.AddrInfo{{
		ID: id, Addrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/4001")},
	}}}
}

func TestJoinStringRoundTrip(t *testing.T) {
	j := sampleJoin(t)
	got, err := ParseJoin("  " + j.String() + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if got.Secret != j.Secret || len(got.Bootstrap) != 1 || got.Bootstrap[0].ID != j.Bootstrap[0].ID ||
		!got.Bootstrap[0].Addrs[0].Equal(j.Bootstrap[0].Addrs[0]) {
		t.Fatalf("round trip: got %+v want %+v", got, j)
	}
	empty, err := ParseJoin(Join{Secret: j.Secret}.String())
	if err != nil || len(empty.Bootstrap) != 0 {
		t.Fatalf("no bootstrap: %v %v", empty, err)
	}
}

func encodeToken(tok *pb.JoinToken) string {
	body, _ := proto.Marshal(tok)
	return JoinPrefix + base64.RawURLEncoding.EncodeToString(withChecksum(body))
}

func withChecksum(body []byte) []byte {
	sum := sha256Sum(body)
	return append(body, sum[:joinChecksumLen]...)
}

func TestParseJoinRefusesMalformed(t *testing.T) {
	good := sampleJoin(t).String()
	cases := map[string]string{
		"empty":          "",
		"no prefix":      strings.TrimPrefix(good, JoinPrefix),
		"truncated":      good[:len(good)-5],
		"bad base64":     JoinPrefix + "!!!!",
		"flipped char":   flip(good),
		"too long":       JoinPrefix + strings.Repeat("A", MaxJoinStringLen),
		"short secret":   encodeToken(&pb.JoinToken{Version: 1, Secret: []byte("short")}),
		"bad version":    encodeToken(&pb.JoinToken{Version: 2, Secret: make([]byte, SecretSize)}),
		"bad multiaddr":  encodeToken(&pb.JoinToken{Version: 1, Secret: make([]byte, SecretSize), Bootstrap: [][]byte{{0xff, 0x01}}}),
		"no peer id":     encodeToken(&pb.JoinToken{Version: 1, Secret: make([]byte, SecretSize), Bootstrap: [][]byte{ma.StringCast("/ip4/1.2.3.4/tcp/1").Bytes()}}),
		"not a protobuf": JoinPrefix + base64.RawURLEncoding.EncodeToString(withChecksum([]byte{0xff, 0xff, 0xff})),
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParseJoin(s)
			if !errors.Is(err, ErrInvalidJoinString) {
				t.Fatalf("ParseJoin(%q) = %v, want ErrInvalidJoinString", s, err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}

func flip(s string) string {
	b := []byte(s)
	i := len(JoinPrefix) + 10
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func TestSecretID(t *testing.T) {
	a, b := newSecret(t), newSecret(t)
	if a.ID() == b.ID() || a.ID() != a.ID() || len(a.ID()) != 12 {
		t.Fatalf("swarm ids: %s %s", a.ID(), b.ID())
	}
}

func FuzzParseJoin(f *testing.F) {
	f.Add(sampleJoin(f).String())
	f.Add(Join{}.String())
	f.Add(JoinPrefix)
	f.Add("edgellm1:AAAA")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		j, err := ParseJoin(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidJoinString) {
				t.Fatalf("unwrapped error %v", err)
			}
			return
		}
		// Whatever parses must re-encode and parse to the same secret.
		again, err := ParseJoin(j.String())
		if err != nil || again.Secret != j.Secret {
			t.Fatalf("re-encode: %v", err)
		}
	})
}
