#!/usr/bin/env bash
# make compose-test: the docker-compose.yml dev swarm, for real, on a machine that can pull no
# image and whose containers reach no package registry.
#
#  1. `docker compose config` checks docker-compose.yml (alone, and with the local override);
#  2. a Debian bookworm rootfs made with debootstrap is imported as the base image
#     (base-rootfs.sh), and the repository's Dockerfile is built on it from artifacts made on
#     this host: edgellm, Kubo (.bin/ipfs) and a wheelhouse (wheelhouse.sh);
#  3. the SAME docker-compose.yml comes up, with scripts/compose/local.yml on top (build args,
#     CPU limits, a test image name), and the client's output is checked: the peers it listed
#     and its answer (tests/python/compose_client.py);
#  4. everything is torn down: containers, networks, volumes, and the private dockerd.
#
# The engine is a private dockerd started here (root), in its own network namespace (its
# bridge and iptables rules touch nothing else on the machine), with its own data root under
# the cache (so image layers are reused by the next run), socket and exec root; it is stopped
# by pid at the end. Environment:
#   COMPOSE_CACHE        cache directory (rootfs, wheelhouse, docker data root)
#   COMPOSE_BIN          the `docker compose` plugin binary to use (else the installed one)
#   PYTHON, TORCH_WHEEL  for the wheelhouse (see wheelhouse.sh)
#   IPFS_BIN             Kubo built on the host (make kubo)
#   HEAVY_LOCK           a file to flock(1) around the build and the swarm (shared machines)
#   COMPOSE_TEST_OPTIONAL=1  when no engine can start: say why in one line and exit 0
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
here="$repo/scripts/compose"
# Resolved: runc refuses a container rootfs whose path goes through a symlink (.cache may be one).
cache=$(realpath -m "${COMPOSE_CACHE:-$repo/.cache/compose}")
python=${PYTHON:-$repo/.venv/bin/python}
ipfs=${IPFS_BIN:-$repo/.bin/ipfs}
project=edgellm-compose-test
timeout_s=${COMPOSE_TEST_TIMEOUT:-600}

say() { echo "compose-test: $*" >&2; }

# No engine: one line, and exit 0 only when the caller asked for an optional run.
no_engine() {
  if [ "${COMPOSE_TEST_OPTIONAL:-}" = 1 ]; then
    say "skipped: $*"
    exit 0
  fi
  say "cannot run: $*"
  exit 1
}

# Serializes the heavy phases with other users of the machine (HEAVY_LOCK), one at a time.
heavy() {
  if [ -n "${HEAVY_LOCK:-}" ]; then
    (flock 9 && "$@") 9>>"$HEAVY_LOCK"
  else
    "$@"
  fi
}

# The same docker-compose.yml users run, with the local override on top (run in $repo).
compose() { docker compose -p "$project" -f docker-compose.yml -f "$here/local.yml" "$@"; }

[ "$(id -u)" = 0 ] || no_engine "starting a private dockerd needs root"
command -v dockerd >/dev/null || no_engine "no dockerd (apt-get install docker.io)"
command -v docker >/dev/null || no_engine "no docker CLI (apt-get install docker.io)"
command -v unshare >/dev/null || no_engine "no unshare(1) for dockerd's network namespace"
command -v debootstrap >/dev/null || no_engine "no debootstrap (apt-get install debootstrap)"

# The compose plugin: a private DOCKER_CONFIG whose cli-plugins holds COMPOSE_BIN.
export DOCKER_CONFIG="$cache/docker-config"
mkdir -p "$DOCKER_CONFIG/cli-plugins"
if [ -n "${COMPOSE_BIN:-}" ]; then
  ln -sf "$COMPOSE_BIN" "$DOCKER_CONFIG/cli-plugins/docker-compose"
fi
docker compose version >/dev/null 2>&1 || no_engine "no docker compose plugin (make compose-plugin)"

# 1. The file as users have it, then with the local override.
say "docker compose config"
(cd "$repo" && docker compose -f docker-compose.yml config --quiet)

# The artifacts, made on the host (network- and CPU-bound, outside the engine).
[ -x "$ipfs" ] || { say "no Kubo at $ipfs (make kubo)"; exit 1; }
rootfs=$("$here/base-rootfs.sh" "$cache")
wheels=$("$here/wheelhouse.sh" "$cache" "$python" "${TORCH_WHEEL:-}")
# The build context: the Dockerfile and backend/ as they are in the work tree, the host's
# binaries in prebuilt/ and the wheelhouse in wheels/ (hard links: same file system).
context="$cache/context"
rm -rf "$context"
mkdir -p "$context/prebuilt"
cp "$repo/Dockerfile" "$context/Dockerfile"
tar -C "$repo" --exclude=__pycache__ --exclude='*.egg-info' --exclude=build -cf - backend |
  tar -C "$context" -xf -
cp -al "$wheels" "$context/wheels" 2>/dev/null || cp -a "$wheels" "$context/wheels"
cp "$ipfs" "$context/prebuilt/ipfs"
version="-X github.com/edgellm/edgellm/internal/version"
(cd "$repo" && CGO_ENABLED=0 go build -o "$context/prebuilt/edgellm" -ldflags \
  "$version.Version=$(git describe --tags --always --dirty) $version.Commit=$(git rev-parse --short HEAD)" .)

# The private engine.
run="$cache/run"
mkdir -p "$run"
rm -f "$run/docker.sock" "$run/dockerd.pid"
export DOCKER_HOST="unix://$run/docker.sock"
unshare_pid=
stop_engine() {
  [ -n "$unshare_pid" ] || return 0
  local pid
  pid=$(cat "$run/dockerd.pid" 2>/dev/null || true)
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; fi
  for _ in $(seq 60); do kill -0 "$unshare_pid" 2>/dev/null || break; sleep 1; done
  if kill -0 "$unshare_pid" 2>/dev/null; then
    say "dockerd did not stop in 60 s; killing it"
    [ -z "$pid" ] || kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$unshare_pid" 2>/dev/null || true
  unshare_pid=
}
teardown() {
  local rc=$?
  if [ -n "$unshare_pid" ] && docker info >/dev/null 2>&1; then
    (cd "$repo" && compose down --volumes --remove-orphans --timeout 20 >/dev/null 2>&1) ||
      say "compose down failed"
  fi
  stop_engine
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM
say "starting a private dockerd (log: $run/dockerd.log)"
unshare --net --fork sh -c 'ip link set lo up && exec "$@"' sh \
  dockerd --data-root "$cache/docker" --exec-root "$run/exec" --pidfile "$run/dockerd.pid" \
  --host "$DOCKER_HOST" >"$run/dockerd.log" 2>&1 &
unshare_pid=$!
for _ in $(seq 60); do
  docker info >/dev/null 2>&1 && break
  kill -0 "$unshare_pid" 2>/dev/null || break
  sleep 1
done
if ! docker info >/dev/null 2>&1; then
  reason=$(grep -m1 -E 'level=(error|fatal)' "$run/dockerd.log" | sed 's/.*msg="\([^"]*\)".*/\1/')
  stop_engine
  no_engine "dockerd cannot start: ${reason:-see $run/dockerd.log}"
fi

# 2. The base image from the rootfs (once per rootfs).
base="edgellm-base:$(basename "$rootfs" .tar)"
if ! docker image inspect "$base" >/dev/null 2>&1; then
  say "importing $rootfs as $base"
  docker import "$rootfs" "$base" >/dev/null
fi
export EDGELLM_COMPOSE_CONTEXT="$context" EDGELLM_COMPOSE_BASE="$base"
# The override may change how services are built and limited, never which services run.
(cd "$repo" && compose config --quiet &&
  diff <(docker compose -f docker-compose.yml config --services | sort) \
    <(compose config --services | sort) >/dev/null) ||
  { say "scripts/compose/local.yml does not match docker-compose.yml's services"; exit 1; }

# 3. Build, then the dev swarm as `docker compose up` brings it up: the client's exit status
# and output. One heavy chunk (a few minutes; a warm build takes seconds). Every service runs
# the one image, so one service's build makes it.
build_and_swarm() {
  local t0=$SECONDS rc=0
  say "building the node image (log: $run/build.log)"
  if ! compose build swarm-init >"$run/build.log" 2>&1; then
    tail -n 30 "$run/build.log" >&2
    say "the image did not build"
    return 1
  fi
  docker image prune --force >/dev/null # the images this build replaced
  say "built in $((SECONDS - t0)) s; docker compose up (log: $run/swarm.log)"
  t0=$SECONDS
  # up returns once the workers are healthy and the client started; wait, once it exits.
  timeout "$timeout_s" docker compose -p "$project" -f docker-compose.yml \
    -f "$here/local.yml" up --detach --no-build || rc=$?
  [ "$rc" != 0 ] || timeout "$timeout_s" docker compose -p "$project" -f docker-compose.yml \
    -f "$here/local.yml" wait client >/dev/null || rc=$?
  compose logs --no-color --no-log-prefix client >"$run/client.log" 2>&1 || true
  compose logs --no-color --timestamps >"$run/swarm.log" 2>&1 || true
  compose down --volumes --remove-orphans --timeout 20 >/dev/null 2>&1 || true
  say "swarm up, answered and down in $((SECONDS - t0)) s"
  if [ "$rc" != 0 ]; then
    say "the client exited $rc; its output:"
    tail -n 30 "$run/client.log" >&2
    return 1
  fi
}
say "prepared in $SECONDS s (artifacts, engine, base image)"
(cd "$repo" && heavy build_and_swarm)
"$python" "$repo/tests/python/compose_client.py" "$run/client.log"
say "passed in $SECONDS s (lock waits included)"
