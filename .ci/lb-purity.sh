#!/usr/bin/env bash
# lars-lb, lars-sim and lars-stats must stay pure: no sockets, no event loop, no database
# among their normal (non-dev) dependencies. Fails when `cargo tree` lists one.
set -euo pipefail
cd "$(dirname "$0")/.."
for crate in lars-lb lars-sim lars-stats; do
    tree="$(cargo tree -p "$crate" -e normal --prefix none)"
    bad="$(printf '%s\n' "$tree" | grep -E '^(mio|socket2|mysql|mysql_common|rusqlite|libsqlite3-sys) ' | sort -u || true)"
    if [ -n "$bad" ]; then
        echo "$crate must stay pure, but its dependency tree contains:" >&2
        echo "$bad" >&2
        exit 1
    fi
    echo "$crate purity: ok ($(printf '%s\n' "$tree" | sort -u | wc -l) crates, none of mio/socket2/mysql/rusqlite)"
done
