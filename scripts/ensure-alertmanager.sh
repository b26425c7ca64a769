#!/usr/bin/env bash
# Sourced by scripts/test.sh: makes Prometheus Alertmanager available as $ALERTMANAGER_BIN for the
# test that has a real Alertmanager deliver alerts to mcplane's webhook. Debian's package
# (prometheus-alertmanager, 0.25 on bookworm) is installed when missing; the tests run the
# binary themselves with their own config and storage, never the packaged service.

find_alertmanager() {
  local c
  for c in "${ALERTMANAGER_BIN:-}" /usr/bin/prometheus-alertmanager "$(command -v alertmanager 2>/dev/null || true)"; do
    if [ -n "$c" ] && [ -x "$c" ] && "$c" --version >/dev/null 2>&1; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

if ! ALERTMANAGER_BIN=$(find_alertmanager); then
  echo "installing prometheus-alertmanager (apt)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt_install() { apt-get install -y --no-install-recommends prometheus-alertmanager >/dev/null; }
  apt_install || { apt-get update >/dev/null && apt_install; } \
    || { echo "could not install prometheus-alertmanager" >&2; exit 1; }
  # The package enables its own service; the tests run the binary with their own settings.
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl stop prometheus-alertmanager >/dev/null 2>&1 || true
  fi
  ALERTMANAGER_BIN=$(find_alertmanager) || { echo "prometheus-alertmanager installed but not runnable" >&2; exit 1; }
fi
export ALERTMANAGER_BIN
echo "using $("$ALERTMANAGER_BIN" --version 2>&1 | head -1) at $ALERTMANAGER_BIN" >&2
