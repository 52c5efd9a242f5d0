#!/usr/bin/env bash
# CI of the Python lars client and of the conformance runner (issue 14):
# installs python3 (Debian package) and pytest if missing, builds the lars
# binaries the tests start, checks that `pip install` of the package works
# (py.typed included), runs both test suites.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export DEBIAN_FRONTEND=noninteractive PIP_ROOT_USER_ACTION=ignore

apt_install() {
    if [[ "$(id -u)" == 0 ]]; then
        apt-get update -qq && apt-get install -y -qq "$@"
    else
        sudo apt-get update -qq && sudo apt-get install -y -qq "$@"
    fi
}

if ! command -v python3 >/dev/null 2>&1; then
    apt_install python3 python3-pip
fi
python3 -c 'import sys; assert sys.version_info >= (3, 9), sys.version' \
    || { echo "python3 >= 3.9 is required" >&2; exit 1; }
if ! python3 -m pip --version >/dev/null 2>&1; then
    apt_install python3-pip
fi
if ! python3 -c 'import pytest' 2>/dev/null; then
    # Debian's system python refuses pip installs (PEP 668): use its package then.
    python3 -m pip install -q pytest 2>/dev/null || apt_install python3-pytest
fi

# The agent the client tests start; dns, reporter and cli for the runner's tests.
(cd "$root" && cargo build -q -p lars-agent-bin -p lars-dns-bin -p lars-reporter-bin -p lars-cli)

# The package installs with pip and ships its type marker.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# (from a copy: setuptools leaves build/ and *.egg-info next to the sources)
mkdir "$tmp/src"
cp -r "$here/pyproject.toml" "$here/README.md" "$here/lars_client" "$tmp/src/"
python3 -m pip install -q --disable-pip-version-check --target "$tmp/site" "$tmp/src"
(cd "$tmp" && PYTHONPATH="$tmp/site" python3 -c '
import pathlib, lars_client
p = pathlib.Path(lars_client.__file__).parent
assert p.parent.name == "site", p
assert (p / "py.typed").exists(), "py.typed missing"
print("pip install ok:", p)
')

cd "$here"
python3 -m pytest -q -p no:cacheprovider tests
# The conformance runner's own tests (clients/conformance/run.py).
cd "$root/clients/conformance"
python3 -m pytest -q -p no:cacheprovider tests
