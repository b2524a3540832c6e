/**
 * Budget: the cost of `reserve` + `settle` per call, in memory, on SQLite (a file in WAL mode) and
 * on Postgres (127.0.0.1, for information), one call after another and 32 at a time; plus the token
 * estimate of a typical request. Prints markdown (CPU time from process.cpuUsage, and wall time).
 *
 * Run: npx tsx --conditions=@keel/source bench/budget.ts
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Budget from "../packages/core/src/Budget.js"
import * as BudgetSql from "../packages/core/src/Budget/Sql.js"
import * as Money from "../packages/core/src/Money.js"
import * as Sqlite from "../packages/core/src/Sqlite.js"
import * as OpenAiTokenizer from "../packages/openai/src/OpenAiTokenizer.js"

const limits = [
  { scope: "global", window: "month" as const, limit: "1000000" },
  { scope: "tenant:acme", limit: "1000000" },
  { scope: "tenant:acme", window: "day" as const, limit: "100000" }
]
const scope = "tenant:acme/run:42" // 3 scopes, 5 counters (global total + month, tenant total + day, run total)
const amount = Money.unsafeParse("0.0042")
const cost = Money.unsafeParse("0.0031")

interface Row {
  readonly store: string
  readonly concurrency: number
  readonly calls: number
  readonly cpuMicros: number
  readonly wallMicros: number
}

const measure = async (
  store: string,
  layer: Layer.Layer<Budget.Budget, unknown>,
  calls: number,
  concurrency: number
): Promise<Row> => {
  const runtime = ManagedRuntime.make(layer)
  const budget = await runtime.runPromise(Budget.Budget)
  const one = Effect.flatMap(budget.reserve(scope, amount), (reservation) => budget.settle(reservation, cost))
  const run = (n: number) =>
    runtime.runPromise(Effect.forEach(Array.from({ length: n }), () => one, { concurrency, discard: true }))
  await run(Math.min(200, calls)) // warm up: statements prepared, JIT
  const cpu = process.cpuUsage()
  const start = performance.now()
  await run(calls)
  const wall = performance.now() - start
  const used = process.cpuUsage(cpu)
  await runtime.dispose()
  return {
    store,
    concurrency,
    calls,
    cpuMicros: (used.user + used.system) / calls,
    wallMicros: (wall * 1000) / calls
  }
}

const sqliteLayer = () => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-bench-budget-"))
  return BudgetSql.layer({ limits }).pipe(Layer.provide(Sqlite.layer({ filename: Path.join(dir, "budget.db") })))
}

const prefix = `keel_bench_${process.pid}`
const pg = PgClient.layer({ host: "127.0.0.1", port: 5432, database: "test", username: "postgres" })
const pgLayer = () => BudgetSql.layer({ limits, tablePrefix: prefix }).pipe(Layer.provide(pg))

const rows: Array<Row> = []
for (const concurrency of [1, 32]) {
  rows.push(await measure("memory", Budget.layerMemory({ limits }), 100_000, concurrency))
  rows.push(await measure("SQLite (file, WAL)", sqliteLayer(), 5_000, concurrency))
  try {
    rows.push(await measure("Postgres (127.0.0.1)", pgLayer(), 2_000, concurrency))
  } catch (error) {
    console.error(`Postgres skipped: ${String(error)}`)
  }
}
await Effect.runPromise(
  BudgetSql.drop(prefix).pipe(Effect.provide(pg), Effect.ignore)
)

// The token estimate a reservation needs: a typical scoring request (system + user + one tool); the
// listing differs per call, the system prompt and the tool schema repeat.
const requestFor = (i: number) => ({
  messages: [
    { role: "system" as const, content: "You score job listings from 0 to 100. Call the tool." },
    {
      role: "user" as const,
      content: `Listing ${i}: Senior Backend Engineer (TypeScript, Node.js) at Acme Corp, Berlin. 5+ years. `.repeat(8)
    }
  ],
  tools: [{
    name: "score_listing",
    strict: true,
    parameters: {
      type: "object",
      additionalProperties: false,
      required: ["score", "summary"],
      properties: { score: { type: "integer" }, summary: { type: "string" } }
    }
  }]
})
const loadStart = performance.now()
await Effect.runPromise(OpenAiTokenizer.load)
const loadMillis = performance.now() - loadStart
const tokens = await Effect.runPromise(OpenAiTokenizer.input(requestFor(0)))
const estimateRuns = 20_000
const requests = Array.from({ length: estimateRuns }, (_, i) => requestFor(i + 1))
const cpu = process.cpuUsage()
await Effect.runPromise(Effect.forEach(requests, OpenAiTokenizer.input, { discard: true }))
const used = process.cpuUsage(cpu)
const estimateMicros = (used.user + used.system) / estimateRuns

const fmt = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(1))
console.log(`reserve + settle per call (scope \`${scope}\`: 5 counters, 3 of them limited)\n`)
console.log("| store | concurrency | calls | CPU µs/call | wall µs/call |")
console.log("|---|---|---|---|---|")
for (const row of rows) {
  console.log(`| ${row.store} | ${row.concurrency} | ${row.calls} | ${fmt(row.cpuMicros)} | ${fmt(row.wallMicros)} |`)
}
console.log(
  `\nToken estimate (o200k_base) of a ${tokens}-token scoring request: ${
    fmt(estimateMicros)
  } µs CPU per request; encoder load ${fmt(loadMillis)} ms once per process.`
)
