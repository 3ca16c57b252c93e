#!/bin/sh
# The image's entry point (run under tini): put the lmbench notebooks into the volume on first start
# (never over the user's own copies), then JupyterLab in the foreground; its arguments go to `jupyter lab`.
set -eu
mkdir -p /data/notebooks
cp -Rn /opt/lmbench/share/lmbench/notebooks/. /data/notebooks/
exec jupyter lab "$@"
