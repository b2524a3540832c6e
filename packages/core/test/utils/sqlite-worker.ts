/**
 * A child process for the Sqlite tests: opens a SQLite file through `Sqlite.layer` and runs
 * `count` transactions, each adding one event row and incrementing the shared counter, then
 * prints `done <count>`.
 *
 * Run: node --import tsx packages/core/test/utils/sqlite-worker.ts <file> <source> <count>
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Sqlite from "../../src/Sqlite.js"

const [filename, source, count] = process.argv.slice(2) as [string, string, string]

const program = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  for (let i = 0; i < Number(count); i++) {
    yield* sql.withTransaction(Effect.gen(function*() {
      yield* sql`UPDATE counter SET n = n + 1`
      yield* sql`INSERT INTO event (source, seq) VALUES (${source}, ${i})`
    }))
  }
  process.stdout.write(`done ${count}\n`)
}).pipe(Effect.provide(Sqlite.layer({ filename })))

Effect.runPromise(program).then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`sqlite worker failed: ${String(error)}\n`)
    process.exit(1)
  }
)
