#!/usr/bin/env bash
# Renders a keel HTML report to a PNG in headless Chromium (Debian's `chromium` package), so a person
# can check that it looks right: scripts/report-screenshot.sh keel-out/calls.jsonl [out.png]
set -euo pipefail
calls="${1:?usage: scripts/report-screenshot.sh CALLS.jsonl [OUT.png]}"
png="${2:-$(dirname "$calls")/report.png}"
html="$(dirname "$png")/report.html"
root="$(cd "$(dirname "$0")/.." && pwd)"
command -v chromium >/dev/null || { echo "needs chromium: apt-get install -y chromium" >&2; exit 2; }
(cd "$root" && npx tsx --conditions=@keel/source packages/cli/src/bin.ts report "$calls" --html "$html" >/dev/null)
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --screenshot="$png" --window-size=1280,1400 \
  "file://$(cd "$(dirname "$html")" && pwd)/$(basename "$html")" 2>/dev/null
echo "$png"
