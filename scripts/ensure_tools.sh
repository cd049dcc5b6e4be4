#!/usr/bin/env bash
# Install the Debian tools the test suite drives (idempotent): docker-compose v1 validates docker-compose.yml;
# chromium runs the dashboard's browser tests (driven by Playwright, which never downloads a browser here).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

missing=()
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "tools: docker-compose $(docker-compose version --short 2>/dev/null || echo missing)," \
     "chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}' || echo missing)"
