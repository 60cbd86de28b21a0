#!/usr/bin/env bash
# Run a command inside a fresh network namespace whose only interface is its own loopback.
#
# Ray binds every interface and swaps a loopback --node-ip-address for the machine's routable
# address, so tests that start Ray clusters run in here: Ray then finds only 127.0.0.1, and
# nothing the test starts is reachable from, or sends to, any other address. The namespace is
# deleted when the command ends. Without root or iproute2 the command is not run and the
# script says why: such tests never fall back to the machine's real network. On a developer's
# machine that is a skip (exit 0); under CI=true it is a failure (exit 1), so a CI without
# root cannot pass having run none of these tests.
set -euo pipefail
cannot() {
  if [ "${CI:-}" = true ]; then
    echo "in-netns: FAILED '$*': $reason (CI=true: the Ray tests must run)" >&2
    exit 1
  fi
  echo "in-netns: skipping '$*': $reason" >&2
  exit 0
}
reason="needs root and ip(8) (iproute2) for a network namespace"
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null 2>&1; then
  cannot "$@"
fi
name="edgellm-test-$$-${RANDOM}"
if ! err=$(ip netns add "$name" 2>&1); then
  reason="cannot create a network namespace: $err"
  cannot "$@"
fi
trap 'ip netns delete "$name"' EXIT
ip -n "$name" link set lo up
ip netns exec "$name" "$@"
