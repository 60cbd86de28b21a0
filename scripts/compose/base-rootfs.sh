#!/usr/bin/env bash
# Make the local stand-in for the Dockerfile's base image (python:3.11-slim-bookworm), which
# cannot be pulled here: a Debian bookworm root filesystem made with debootstrap from Debian's
# packages, as a tarball for `docker import`. Prints the tarball's path.
#
#   scripts/compose/base-rootfs.sh CACHE_DIR
#
# The tarball is cached in CACHE_DIR under a name that hashes this script, so a rerun reuses
# it and a change here makes a new one. The mirror is the one apt on this machine uses.
set -euo pipefail
cache=${1:?usage: base-rootfs.sh CACHE_DIR}
suite=bookworm
# What the runtime stage needs from its base: Python 3.11 with venv (and so pip), useradd.
packages=python3,python3-venv,passwd
key=$(sha256sum "$0" | cut -c1-12)
tarball="$cache/rootfs-$suite-$key.tar"
if [ -s "$tarball" ]; then
  echo "$tarball"
  exit 0
fi

mirror_from_apt() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] || continue
    awk '$1 == "URIs:" && $2 !~ /security/ {print $2; exit}' "$f"
  done
  [ -e /etc/apt/sources.list ] &&
    awk '$1 == "deb" && $2 !~ /security/ && $2 !~ /^\[/ {print $2}' /etc/apt/sources.list
  true
}
mirror=${DEBOOTSTRAP_MIRROR:-$(mirror_from_apt | head -n1)}
if [ -z "$mirror" ]; then
  echo "base-rootfs: no Debian mirror in apt's sources (set DEBOOTSTRAP_MIRROR)" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  echo "base-rootfs: debootstrap is not installed (apt-get install debootstrap)" >&2
  exit 1
fi

mkdir -p "$cache"
root=$(mktemp -d "$cache/rootfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
echo "base-rootfs: debootstrap $suite from $mirror (once; cached in $tarball)" >&2
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$root.log" 2>&1 ||
  { tail -n 20 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# The official image's `python` is Python 3.11 on PATH; the Dockerfile calls it so.
ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
mv -f "$tarball.tmp" "$tarball"
echo "$tarball"
