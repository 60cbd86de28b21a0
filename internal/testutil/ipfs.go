package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// EnvIPFSBin names the Kubo binary tests use; `make test` sets it to the
// pinned build in <repo>/.bin/ipfs, so no test skips for want of Kubo there.
const EnvIPFSBin = "EDGELLM_IPFS_BIN"

// IPFSBinary returns the Kubo binary for tests: $EDGELLM_IPFS_BIN, else
// <repo>/.bin/ipfs (built by `make setup`). It skips the test when neither
// exists.
func IPFSBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(EnvIPFSBin); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s: %v", EnvIPFSBin, p, err)
		}
		return p
	}
	p := filepath.Join(RepoRoot(t), ".bin", "ipfs")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("skipping: needs Kubo: set %s or run `make setup` to build %s", EnvIPFSBin, p)
	}
	return p
}

// IPFSEnv returns the environment entry that points edgellm processes a
// test starts at the pinned Kubo, <repo>/.bin/ipfs, when $EDGELLM_IPFS_BIN
// is unset (a binary built into a temp directory has no .bin beside it);
// nil when the variable is set (it is inherited) or there is no build, and
// the nodes then run without an IPFS node and warn.
func IPFSEnv(t testing.TB) []string {
	t.Helper()
	if os.Getenv(EnvIPFSBin) != "" {
		return nil
	}
	p := filepath.Join(RepoRoot(t), ".bin", "ipfs")
	if _, err := os.Stat(p); err != nil {
		return nil
	}
	return []string{EnvIPFSBin + "=" + p}
}
