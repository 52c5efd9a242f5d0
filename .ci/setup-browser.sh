#!/usr/bin/env bash
# Installs Debian's chromium and chromedriver for the console's end-to-end
# browser test (lars-web/tests/browser.rs). Idempotent and quiet when both
# are already installed.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
echo "installing chromium and chromium-driver (for the web console's browser test)"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
/usr/bin/chromium --version
/usr/bin/chromedriver --version
