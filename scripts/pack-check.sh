#!/usr/bin/env bash
# Checks that the published packages install into someone's app: builds and packs @keel/core and
# @keel/openai, installs the tarballs into a scratch app (in a temporary folder, outside this
# repository) pinned to another patch of effect, checks that `npm ls effect` finds exactly one copy,
# and runs one call against the simulator there (scripts/pack-check/app.mjs) with plain node.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
# another patch than the workspace's pin, inside the packages' peer range
app_effect=3.22.3

scratch=$(mktemp -d "${TMPDIR:-/tmp}/keel-pack-check.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

npm run --silent build
npm pack --silent --workspace packages/core --workspace packages/openai --pack-destination "$scratch" >/dev/null
core=$(ls "$scratch"/keel-core-*.tgz)
openai=$(ls "$scratch"/keel-openai-*.tgz)

mkdir "$scratch/app"
cp scripts/pack-check/app.mjs "$scratch/app/"
cat >"$scratch/app/package.json" <<JSON
{
  "name": "keel-pack-check-app",
  "private": true,
  "type": "module",
  "dependencies": {
    "@effect/platform": "0.97.2",
    "@effect/platform-node": "0.108.2",
    "@keel/core": "file:$core",
    "@keel/openai": "file:$openai",
    "effect": "$app_effect"
  }
}
JSON
cd "$scratch/app"
npm install --no-audit --no-fund --loglevel=error

copies=$(npm ls effect --all --parseable | sort -u)
count=$(printf '%s\n' "$copies" | grep -c .)
version=$(node -p 'require("effect/package.json").version')
if [ "$count" -ne 1 ] || [ "$version" != "$app_effect" ]; then
  echo "pack-check: expected one copy of effect $app_effect, found $count (version $version):" >&2
  printf '%s\n' "$copies" >&2
  npm ls effect --all >&2 || true
  exit 1
fi
echo "pack-check: one copy of effect ($version) in the app"

node app.mjs
cd "$repo"
