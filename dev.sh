#!/usr/bin/env bash
# Bootstrap for a fresh Debian / Raspberry Pi OS machine: a virtualenv with the project, the
# system tools it needs, then the demo (`./dev.sh run`) or the test suite (`./dev.sh test`).
set -euo pipefail
cd "$(dirname "$0")"

VENV=${ALLMENDE_VENV:-.venv}
PY=${PYTHON:-python3}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

apt_install() {
    # Installs Debian packages that are missing; needs root or sudo.
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    say "installing system packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

system_tools() {
    command -v apt-get >/dev/null 2>&1 || { say "no apt-get: install mosquitto yourself"; return 0; }
    # mosquitto: the real broker for tests and the demo (the daemon is started per test, on a
    # free port; we never rely on the distribution's service).
    # postgresql: the fleet suite runs on SQLite and on a throwaway PostgreSQL cluster that
    # the tests start themselves (initdb/pg_ctl on a free port), never the system service.
    apt_install mosquitto python3-venv postgresql
}

venv() {
    local stamp="$VENV/.installed"
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating virtualenv $VENV"
        "$PY" -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        say "installing allmende and its dependencies"
        "$VENV/bin/pip" install -q --upgrade pip
        "$VENV/bin/pip" install -q -e '.[dev,gateway,fleet]'
        touch "$stamp"
    fi
}

cmd=${1:-help}
shift || true
case "$cmd" in
    run)
        system_tools; venv
        exec "$VENV/bin/allmende" demo "$@"
        ;;
    test)
        system_tools; venv
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: ./dev.sh run [demo options]   # the whole system, on embedded defaults"
        echo "       ./dev.sh test [pytest options] # the test suite"
        exit 2
        ;;
esac
