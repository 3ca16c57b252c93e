#!/usr/bin/env bash
# Make the base image `debian:bookworm-slim` locally when no image registry can be reached:
# debootstrap's minimal Debian from the mirror this machine's apt uses, imported into podman.
# The root file system is kept as a tarball in the cache folder, so later builds import it in seconds.
set -euo pipefail
base="${1:-debian:bookworm-slim}"
cache="${LMBENCH_IMAGE_CACHE:-$HOME/.cache/lmbench-image}"
tarball="$cache/bookworm-minbase.tar"

if podman image exists "$base"; then
  exit 0
fi
if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || { echo "base image: needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }
  # The Debian mirror apt uses here (deb822 URIs: or a one-line deb entry), else deb.debian.org.
  mirror="$( (grep -rhoE '^(URIs: *|deb +)https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true) \
    | head -1 | sed -E 's/^(URIs: *|deb +)//; s/ *$//')"
  mirror="${mirror:-http://deb.debian.org/debian}"
  mkdir -p "$cache"
  root="$(mktemp -d "$cache/rootfs.XXXXXX")"
  trap 'rm -rf "$root"' EXIT
  echo "base image: debootstrap --variant=minbase bookworm from $mirror" >&2
  debootstrap --variant=minbase bookworm "$root" "$mirror" >&2
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
fi
podman import "$tarball" "$base" >/dev/null
echo "base image: $base imported from $tarball" >&2
