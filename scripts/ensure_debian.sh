#!/usr/bin/env bash
# Install Debian packages the tests use when a command they bring is missing:
#   scripts/ensure_debian.sh COMMAND PACKAGE...
# e.g. `scripts/ensure_debian.sh chromedriver chromium chromium-driver`. COMMAND is a name on
# PATH or an absolute path; nothing happens when it is already there. Needs root or sudo and
# apt-get; says what to install by hand otherwise.
set -euo pipefail
[ "$#" -ge 2 ] || { echo "usage: $0 COMMAND PACKAGE..." >&2; exit 2; }
cmd="$1"; shift
have() { if [[ "$cmd" == /* ]]; then [ -x "$cmd" ]; else command -v "$cmd" >/dev/null 2>&1; fi; }
have && exit 0
echo "$cmd not found: installing Debian's $* (the tests need it)" >&2
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || {
    echo "error: $cmd is missing and cannot be installed (not root, no sudo): apt-get install $*, then run again" >&2
    exit 1; }
  sudo=(sudo)
fi
command -v apt-get >/dev/null 2>&1 || { echo "error: $cmd is missing and this system has no apt-get: install $* and run again" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
if ! ${sudo[@]+"${sudo[@]}"} apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; then
  # no package lists yet (or stale ones): update, then install once more, showing apt's output
  ${sudo[@]+"${sudo[@]}"} apt-get update -qq && ${sudo[@]+"${sudo[@]}"} apt-get install -y -qq --no-install-recommends "$@"
fi
have || { echo "error: installing $* did not bring $cmd (see apt-get's output above)" >&2; exit 1; }
