package p2p

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/edgellm/edgellm/internal/atomicfile"
)

// IdentityFile is the name of the node's private key inside its data directory.
const IdentityFile = "identity.key"

// LoadOrCreateIdentity returns the node's persistent Ed25519 identity stored in
// dataDir/identity.key, creating the directory and a fresh key (mode 0600) on
// first use. A key of another type is refused.
func LoadOrCreateIdentity(dataDir string) (crypto.PrivKey, error) {
	path := filepath.Join(dataDir, IdentityFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		return decodeIdentity(path, data)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read identity: %w", err)
	}
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity: %w", err)
	}
	data, err = crypto.MarshalPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encode identity: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	// Synced and linked into place whole: a crash never leaves a truncated
	// key the node then refuses, and of two processes starting at once one
	// creates it and the other reads it (fs.ErrExist).
	err = atomicfile.Create(path, data, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return LoadOrCreateIdentity(dataDir)
	}
	if err != nil {
		return nil, fmt.Errorf("write identity: %w", err)
	}
	return priv, nil
}

func decodeIdentity(path string, data []byte) (crypto.PrivKey, error) {
	priv, err := crypto.UnmarshalPrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", path, ErrInvalidConfig, err)
	}
	if priv.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("%s: %w: identity key must be Ed25519", path, ErrInvalidConfig)
	}
	return priv, nil
}

// NewEphemeralIdentity returns a fresh Ed25519 key that is not stored
// anywhere (benchmarks, throwaway clients).
func NewEphemeralIdentity() (crypto.PrivKey, error) {
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity: %w", err)
	}
	return priv, nil
}
