#!/usr/bin/env bash
# Installs what building and testing shortlong needs on Debian 12 / Ubuntu 22.04 or newer:
# a C compiler and make, CMake, pkg-config, OpenBLAS (with cblas.h), the Check test framework,
# Jansson, Open MPI (libshortlong_dist, the distributed training library, and its tests), and
# clang with libFuzzer for the fuzz target (fuzz/, cmake -DSL_FUZZ=ON). libFuzzer comes with
# clang's runtime package: libclang-rt-<version>-dev on Debian 12 (clang 14), part of
# libclang-common-<version>-dev (a dependency of clang) on older releases.
# Non-interactive and idempotent: when everything is already installed it changes nothing.
# Uses sudo only when not run as root.
set -euo pipefail

packages=(build-essential cmake pkg-config libopenblas-dev check libjansson-dev libopenmpi-dev
          openmpi-bin clang)

die() { echo "install-deps: error: $*" >&2; exit 1; }

command -v apt-get >/dev/null 2>&1 ||
    die "apt-get not found; install these packages by hand: ${packages[*]} (and libFuzzer)"

installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]; }

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and sudo not found; run as root"
    sudo=(sudo)
    [ -t 0 ] || sudo=(sudo -n)  # no terminal (CI): fail rather than wait for a password
fi
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0)
updated=false changed=false
install() {
    echo "install-deps: installing $*"
    changed=true
    if ! $updated; then
        "${apt[@]}" update >/dev/null || die "apt-get update failed"
        updated=true
    fi
    "${apt[@]}" install --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
}

missing=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] || install "${missing[@]}"

# clang's runtime with libFuzzer, for the clang that is now installed.
major=$(clang -dumpversion | cut -d. -f1)
rt=libclang-rt-$major-dev
if ! installed "$rt"; then
    if apt-cache show "$rt" >/dev/null 2>&1; then
        install "$rt"
    elif ! $updated && { "${apt[@]}" update >/dev/null; updated=true; } &&
         apt-cache show "$rt" >/dev/null 2>&1; then
        install "$rt"
    fi  # else: an older release, where libclang-common-$major-dev (clang's dependency) has it
fi
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return 0; }\n' |
    clang -x c -fsanitize=fuzzer -o /dev/null - 2>/dev/null ||
    die "clang $major cannot link libFuzzer (-fsanitize=fuzzer): install its runtime ($rt)"
if $changed; then echo "install-deps: done"
else echo "install-deps: already installed: ${packages[*]} $(installed "$rt" && echo "$rt")"; fi
