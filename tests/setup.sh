#!/usr/bin/env bash
# Installs what ringlb needs from Debian's packages (only what is missing),
# then configures and builds it in ./build. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential meson ninja-build pkg-config
  liburing-dev libxxhash-dev libcriterion-dev libyaml-dev android-libboringssl-dev
  clang libclang-rt-14-dev
  python3 curl wrk nginx-light haproxy varnish gnuplot-nox procps
  openssl qemu-system-x86 busybox-static xz-utils cpio kmod
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
echo "setup: built build/ringlb"
