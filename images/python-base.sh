#!/usr/bin/env bash
# Build the base image the three Dockerfiles start FROM (ARG BASE_IMAGE), from Debian packages only, so it builds
# where no container registry can be pulled from: mmdebstrap lays a minimal Debian bookworm with its python3
# (3.11) from the Debian mirror apt uses, and podman imports it under the tag the Dockerfiles name.
#   images/python-base.sh [TAG]     (default localhost/routeiq/python-base:3.11-bookworm)
# Skips the build when the tag exists already (FORCE=1 rebuilds). MIRROR=http://… picks another Debian mirror.
set -euo pipefail
tag=${1:-localhost/routeiq/python-base:3.11-bookworm}
if [ -z "${FORCE:-}" ] && podman image exists "$tag"; then
  echo "base image $tag exists (FORCE=1 rebuilds)"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# minbase = Essential packages + apt, without Recommends. The merged-usr hook lays /usr merged itself (with the
# tiny usr-is-merged package) instead of installing usrmerge, which would pull in perl (~50 MB). python3-venv for
# the build stage's venv; ca-certificates for HTTPS to providers and S3; netbase for /etc/services and
# /etc/protocols; passwd for useradd. Docs, man pages and locales are left out (copyright files kept).
mmdebstrap --variant=minbase --quiet --aptopt='APT::Install-Recommends "false"' \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include=python3,python3-venv,ca-certificates,netbase,passwd \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  bookworm "$work/rootfs.tar" ${MIRROR:+"$MIRROR"}
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --change "LABEL org.opencontainers.image.title=routeiq-python-base" \
  --change "LABEL org.opencontainers.image.description=Debian bookworm minbase with python3 3.11, built with mmdebstrap" \
  --change "LABEL org.opencontainers.image.created=$created" \
  "$work/rootfs.tar" "$tag"
