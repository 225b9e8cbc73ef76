#!/usr/bin/env bash
# Install Debian's Chromium and ChromeDriver for tests/integration/test_dashboard.py (a new CI machine
# has neither). Exits non-zero, saying why, when they cannot be installed here (not root, no apt-get,
# no package); the test is then skipped with that reason.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "no apt-get on this machine: install chromium and chromedriver by other means" >&2
  exit 2
fi
if [ "$(id -u)" != 0 ]; then
  echo "not root: run 'apt-get install -y chromium chromium-driver' as root" >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q chromium chromium-driver
command -v chromium >/dev/null && command -v chromedriver >/dev/null
