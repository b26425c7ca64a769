#!/usr/bin/env bash
# Sourced by scripts/test.sh: makes strace available for the fault case that turns a running
# worker's disk read-only (it injects EROFS into the worker's writes with `strace --inject`,
# since the tests may run as root, whom `chmod` does not stop). Debian's package is installed
# when missing.

if ! command -v strace >/dev/null 2>&1; then
  echo "installing strace (apt)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt_install() { apt-get install -y --no-install-recommends strace >/dev/null; }
  apt_install || { apt-get update >/dev/null && apt_install; } \
    || { echo "could not install strace" >&2; exit 1; }
fi
echo "using $(strace -V 2>&1 | head -1)" >&2
