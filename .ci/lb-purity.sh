#!/usr/bin/env bash
# lars-lb must stay pure: no sockets, no event loop, no database among its
# normal (non-dev) dependencies. Fails when `cargo tree` lists one of them.
set -euo pipefail
cd "$(dirname "$0")/.."
tree="$(cargo tree -p lars-lb -e normal --prefix none)"
bad="$(printf '%s\n' "$tree" | grep -E '^(mio|socket2|mysql|mysql_common|rusqlite|libsqlite3-sys) ' | sort -u || true)"
if [ -n "$bad" ]; then
    echo "lars-lb must stay pure, but its dependency tree contains:" >&2
    echo "$bad" >&2
    exit 1
fi
echo "lars-lb purity: ok ($(printf '%s\n' "$tree" | sort -u | wc -l) crates, none of mio/socket2/mysql/rusqlite)"
