#!/usr/bin/env bash
# weatherfleet's two entry points on a fresh Debian/Ubuntu machine:
#   ./dev.sh demo   install what is missing, then run the local system's scripted demo
#   ./dev.sh test   install what is missing, then run the whole test suite
# Anything after the command is passed on (to `weatherfleet demo` or to pytest).
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(mosquitto docker-registry lua5.4 nginx chromium wrk)

install_system_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  command -v node >/dev/null || missing+=(nodejs npm)
  [ ${#missing[@]} -eq 0 ] && return
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing system packages: ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

install_python_packages() {
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
}

install_node_packages() {
  # the real MicroPython interpreter (WebAssembly port) that the device-code tests run under
  [ -d node_modules/@micropython/micropython-webassembly-pyscript ] || npm ci --no-audit --no-fund --loglevel=error
}

setup() {
  install_system_packages
  install_python_packages
  install_node_packages
}

command="${1:-}"
shift || true
case "$command" in
  demo)
    setup
    exec .venv/bin/weatherfleet demo "$@"
    ;;
  test)
    setup
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    set +e
    .venv/bin/python -m pytest -q "$@"
    status=$?
    set -e
    # pytest exits 5 when it collected nothing: that is a failure, not a pass
    [ "$status" -eq 5 ] && echo "no tests were collected" >&2
    exit "$status"
    ;;
  *)
    echo "usage: ./dev.sh demo|test [args...]" >&2
    exit 2
    ;;
esac
