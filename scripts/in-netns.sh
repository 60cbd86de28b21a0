#!/usr/bin/env bash
# Run a command inside a fresh network namespace whose only interface is its own loopback.
#
# Ray binds every interface and swaps a loopback --node-ip-address for the machine's routable
# address, so tests that start Ray clusters run in here: Ray then finds only 127.0.0.1, and
# nothing the test starts is reachable from, or sends to, any other address. The namespace is
# deleted when the command ends. Without root or iproute2 the command is not run (exit 0) and
# says why: such tests never fall back to the machine's real network.
set -euo pipefail
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null 2>&1; then
  echo "in-netns: skipping '$*': needs root and ip(8) (iproute2) for a network namespace" >&2
  exit 0
fi
name="edgellm-test-$$-${RANDOM}"
ip netns add "$name"
trap 'ip netns delete "$name"' EXIT
ip -n "$name" link set lo up
ip netns exec "$name" "$@"
