#!/usr/bin/env bash
# Print the container engine command to use: docker where its daemon answers, else podman with the global
# flags rootful podman needs on a machine without systemd (runc, cgroupfs). `make image` and
# tests/test_image.py both ask here. LMBENCH_CONTAINER_ENGINE and LMBENCH_PODMAN_FLAGS override.
set -euo pipefail
engine="${LMBENCH_CONTAINER_ENGINE:-}"
if [ -z "$engine" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    engine=docker
  elif command -v podman >/dev/null; then
    engine=podman
  else
    echo "needs docker or podman (Debian: apt-get install podman runc)" >&2
    exit 1
  fi
fi
if [ "$(basename "$engine")" = podman ]; then
  echo "$engine ${LMBENCH_PODMAN_FLAGS---runtime runc --cgroup-manager=cgroupfs}"
else
  echo "$engine"
fi
