#!/usr/bin/env bash
# `make image`: build the lmbench image with docker, or with podman where there is no Docker daemon.
# Podman builds from a locally made base image (docker/base-image.sh) and mounts pip's cache into the
# build, so llama-cpp-python is compiled once per machine; both reuse the layer cache between builds.
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-lmbench}"
read -r -a engine <<< "$(docker/engine.sh)"
if [ "$(basename "${engine[0]}")" != podman ]; then
  exec "${engine[@]}" build --tag "$image" .
fi
pip_cache="${LMBENCH_PIP_CACHE:-$HOME/.cache/pip}"
mkdir -p "$pip_cache"
# This machine's CA bundle, so pip trusts what this machine trusts (a TLS-inspecting proxy's certificate).
ca="${LMBENCH_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}"
ca_args=()
if [ -f "$ca" ]; then
  ca_args=(--volume "$ca:/run/build-ca.crt:ro" --build-arg PIP_CERT=/run/build-ca.crt)
fi
docker/base-image.sh debian:bookworm-slim
# Modest ulimits and the host's network: what builds need on machines like these.
exec "${engine[@]}" build --format docker --network host \
  --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
  --volume "$pip_cache:/root/.cache/pip" "${ca_args[@]}" --tag "$image" .
