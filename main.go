// Command edgellm is the EdgeLLM node: peer-to-peer LLM inference.
package main

import (
	"context"
	"os"

	"github.com/edgellm/edgellm/internal/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
