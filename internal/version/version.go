// Package version reports the Go node's version. Release builds set the
// variables with the linker:
//
//	go build -ldflags "-X github.com/edgellm/edgellm/internal/version.Version=v0.1.0 \
//	  -X github.com/edgellm/edgellm/internal/version.Commit=$(git rev-parse --short HEAD)" .
package version

import "runtime"

// Version is the node's release version; "dev" for builds without ldflags.
var Version = "dev"

// Commit is the source revision the binary was built from; empty when unknown.
var Commit = ""

// String returns the version with the commit when known, e.g. "v0.1.0 (3f2a9c1)".
func String() string {
	if Commit == "" {
		return Version
	}
	return Version + " (" + Commit + ")"
}

// GoVersion returns the Go toolchain and platform, e.g. "go1.26.8 linux/amd64".
func GoVersion() string {
	return runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
}
