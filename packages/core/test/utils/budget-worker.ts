/**
 * A child process for the multi-process budget tests: runs `calls` Llm.generate calls against a
 * scripted model with the SQL budget store (SQLite file or Postgres), and prints one line per
 * settled reservation (`settled <id> <amount>`, written synchronously to the pipe right after the
 * settle committed) and a final `done ok=<n> refused=<n>`.
 *
 * Run: node --import tsx packages/core/test/utils/budget-worker.ts '<json options>'
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Budget from "../../src/Budget.js"
import * as BudgetSql from "../../src/Budget/Sql.js"
import * as Llm from "../../src/Llm.js"
import * as Sqlite from "../../src/Sqlite.js"
import * as TestKit from "../../src/TestKit.js"
import * as TestPrices from "./prices.js"

export interface WorkerOptions {
  readonly store: { readonly sqlite: string } | { readonly pg: string }
  readonly tablePrefix: string
  readonly calls: number
  readonly concurrency: number
  readonly limit: string
  readonly leaseMillis: number
  readonly delayMillis: number
  readonly report: boolean
}

export const model = "gpt-4o-mini"
export const answer = TestKit.response({ model, usage: { inputTokens: 10, outputTokens: 30 } })
export const limitScope = "tenant:acme"

export const sqlLayer = (store: WorkerOptions["store"]) =>
  "sqlite" in store
    ? Sqlite.layer({ filename: store.sqlite })
    : PgClient.layer({ host: "127.0.0.1", port: 5432, database: "test", username: "postgres", maxConnections: 8 })
      .pipe(Layer.orDie)

const main = (options: WorkerOptions) => {
  const storeLayer = Layer.effect(
    Budget.BudgetStore,
    Effect.map(BudgetSql.make({ tablePrefix: options.tablePrefix }), (store) =>
      Budget.BudgetStore.of({
        ...store,
        settle: (id, amount, estimated) =>
          Effect.tap(store.settle(id, amount, estimated), (settled) => {
            if (settled !== undefined && options.report) process.stdout.write(`settled ${id} ${amount}\n`)
          })
      }))
  )
  const budget = Budget.layer({
    limits: [{ scope: limitScope, limit: options.limit }],
    lease: options.leaseMillis,
    reclaimEvery: "1 hour"
  }).pipe(Layer.provide(storeLayer))
  const scripted = TestKit.scripted([], {
    otherwise: () => Effect.delay(Effect.succeed(answer), options.delayMillis)
  })
  const layer = Layer.provide(Llm.layer(), Layer.mergeAll(scripted.layer, TestPrices.layer(), budget)).pipe(
    Layer.provide(sqlLayer(options.store))
  )
  return Effect.gen(function*() {
    const results = yield* Effect.forEach(
      Array.from({ length: options.calls }, (_, i) => i),
      (i) =>
        Effect.either(Llm.generate({
          model,
          messages: [{ role: "user", content: `Score listing #${String(i).padStart(4, "0")}` }],
          maxOutputTokens: 40,
          scope: `${limitScope}/run:${process.pid}`
        })),
      { concurrency: options.concurrency }
    )
    const ok = results.filter(Either.isRight).length
    const refused = results.filter((r) => Either.isLeft(r) && r.left._tag === "BudgetExceeded").length
    const other = results.filter((r) => Either.isLeft(r) && r.left._tag !== "BudgetExceeded")
    if (other.length > 0) process.stderr.write(`unexpected: ${String(Either.isLeft(other[0]!) && other[0].left)}\n`)
    process.stdout.write(`done ok=${ok} refused=${refused} other=${other.length}\n`)
  }).pipe(Effect.provide(layer))
}

if (process.argv[1] !== undefined && import.meta.filename === process.argv[1]) {
  Effect.runPromise(main(JSON.parse(process.argv[2]!) as WorkerOptions)).then(
    () => process.exit(0),
    (error) => {
      process.stderr.write(`worker failed: ${String(error)}\n`)
      process.exit(1)
    }
  )
}
