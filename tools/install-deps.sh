#!/usr/bin/env bash
# Installs what building and testing shortlong needs on Debian 12 / Ubuntu 22.04 or newer:
# a C compiler and make, CMake, pkg-config, OpenBLAS (with cblas.h), the Check test framework,
# Jansson, and Open MPI (libshortlong_dist, the distributed training library, and its tests).
# Non-interactive and idempotent: when everything is already installed it changes nothing.
# Uses sudo only when not run as root.
set -euo pipefail

packages=(build-essential cmake pkg-config libopenblas-dev check libjansson-dev libopenmpi-dev
          openmpi-bin)

die() { echo "install-deps: error: $*" >&2; exit 1; }

command -v apt-get >/dev/null 2>&1 ||
    die "apt-get not found; install these packages by hand: ${packages[*]}"

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: already installed: ${packages[*]}"
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and sudo not found; run as root"
    sudo=(sudo)
    [ -t 0 ] || sudo=(sudo -n)  # no terminal (CI): fail rather than wait for a password
fi

echo "install-deps: installing ${missing[*]}"
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0)
"${apt[@]}" update >/dev/null || die "apt-get update failed"
"${apt[@]}" install --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
echo "install-deps: done"
