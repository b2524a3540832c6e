/**
 * Budget race: 10,000 calls start at once against a budget of a third of what they would cost
 * together, and what was spent is compared with the limit. Contenders:
 * - keel: `Llm.generate` with Pricing, the o200k tokenizer and a `Budget` (reserve the worst case
 *   before the call, settle the billed cost after; calls wait up to 5 s for other reservations to
 *   settle, and are refused when spend would pass the limit): in memory in one process, and on
 *   Postgres (`Budget/Sql`) across 4 processes of 2,500 calls each;
 * - a naive check-then-record budget: read what was spent, call if it is under the limit, add the
 *   billed cost afterwards (the same prices, over raw undici): a variable in one process, and a row
 *   on Postgres (`SELECT`, then `UPDATE … SET spent = spent + cost`) across 4 processes.
 * The simulator (zero latency) runs in this process; the contenders in child processes. Every call
 * sends the same request, so every call costs the same; the limit is 10,000 × that ÷ 3.
 *
 *   npx tsx --conditions=@keel/source bench/budget-race.ts [--calls 10000] [--json FILE]
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Budget from "@keel/core/Budget"
import * as BudgetSql from "@keel/core/Budget/Sql"
import * as Llm from "@keel/core/Llm"
import * as Money from "@keel/core/Money"
import * as Pricing from "@keel/core/Pricing"
import * as OpenAiClient from "@keel/openai/OpenAiClient"
import * as OpenAiLanguageModel from "@keel/openai/OpenAiLanguageModel"
import * as OpenAiPricing from "@keel/openai/OpenAiPricing"
import * as OpenAiTokenizer from "@keel/openai/OpenAiTokenizer"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Redacted from "effect/Redacted"
import { fork } from "node:child_process"
import * as Path from "node:path"
import { Agent, request } from "undici"
import * as Simulator from "../packages/openai/src/Simulator.js"
import * as Results from "./lib/results.js"

const MODEL = "gpt-4.1-mini"
const MAX_OUTPUT = 200
const SCOPE = "race"
const pg = PgClient.layer({ host: "127.0.0.1", port: 5432, database: "test", username: "postgres", maxConnections: 8 })
const messages = [{ role: "user" as const, content: "Say something about budgets." }]
const wire = { model: MODEL, messages, max_completion_tokens: MAX_OUTPUT }

/** `--max-wait <seconds>`: how long keel's reserve waits for other reservations (default 0: refused at once). */
const maxWaitSeconds = Results.numberFlag("max-wait", 0)
/** `--bound <seconds>`: a contender still running then reports what it has (its calls unfinished). */
const boundSeconds = Results.numberFlag("bound", 150)
const waitOption = maxWaitSeconds > 0 ? { maxWait: `${maxWaitSeconds} seconds` as const } : {}

type Kind = "keel-memory" | "keel-postgres" | "naive-memory" | "naive-postgres"

interface ChildResult {
  readonly ok: number
  readonly refused: number
  readonly failed: number
  readonly failures: Record<string, number>
  /** calls still running when the time bound passed */
  readonly unfinished: number
  /** pico-dollars spent, for the in-memory contenders (their ledger lives in the child) */
  readonly spent?: string
}

const price = Effect.runSync(Effect.provide(Pricing.price(MODEL), OpenAiPricing.layer()))
/** The billed cost of an answer's usage, at keel's prices. */
const billed = (usage: { prompt_tokens: number; completion_tokens: number }) =>
  Pricing.costOf(price, {
    inputTokens: usage.prompt_tokens,
    cachedInputTokens: 0,
    outputTokens: usage.completion_tokens,
    reasoningTokens: 0
  })

/** Child: `calls` calls at once for one contender, against the budget `limit` (pico-dollars). */
const child = async (kind: Kind, url: string, calls: number, limit: bigint, prefix: string) => {
  const limits = [{ scope: SCOPE, limit: Money.format(limit as Money.Money) }]
  const counts = { ok: 0, refused: 0, failed: 0 }
  const failures: Record<string, number> = {}
  const fail = (tag: string) => {
    counts.failed++
    failures[tag] = (failures[tag] ?? 0) + 1
  }
  let go: () => Promise<void>
  let dispose = async () => {}
  let spentHere: () => Promise<bigint | undefined> = async () => undefined
  if (kind === "keel-memory" || kind === "keel-postgres") {
    const budget = kind === "keel-memory"
      ? Budget.layerMemory({ limits, ...waitOption })
      : BudgetSql.layer({ limits, ...waitOption, tablePrefix: prefix }).pipe(Layer.provide(pg))
    const model = OpenAiLanguageModel.layer().pipe(
      Layer.provide(OpenAiClient.layerUndici({ apiKey: Redacted.make("sk-bench"), baseUrl: url }))
    )
    const runtime = ManagedRuntime.make(
      Llm.layer({ defaultModel: MODEL, require: ["budget"] }).pipe(
        Layer.provideMerge(Layer.mergeAll(model, budget, OpenAiPricing.layer(), OpenAiTokenizer.layer)),
        Layer.provide(Logger.minimumLogLevel(LogLevel.Warning))
      )
    )
    await runtime.runPromise(Effect.andThen(OpenAiTokenizer.load, Effect.void))
    go = () =>
      runtime.runPromise(Effect.forEach(
        Array.from({ length: calls }),
        () =>
          Effect.match(Llm.generate({ messages, maxOutputTokens: MAX_OUTPUT, scope: SCOPE }), {
            onSuccess: () => {
              counts.ok++
            },
            onFailure: (error) => error._tag === "BudgetExceeded" ? counts.refused++ : fail(error._tag)
          }),
        { concurrency: "unbounded", discard: true }
      ))
    if (kind === "keel-memory") {
      spentHere = () =>
        runtime.runPromise(Effect.flatMap(Budget.Budget, (b) => b.status(SCOPE))).then((status) =>
          status.reduce((max, s) => (s.spent > max ? s.spent : max), 0n as bigint)
        )
    }
    dispose = () => runtime.dispose()
  } else {
    const dispatcher = new Agent({ connections: 64 })
    const headers = { "content-type": "application/json", authorization: "Bearer sk-bench" }
    const call = async () => {
      const res = await request(`${url}/chat/completions`, {
        method: "POST",
        dispatcher,
        headers,
        body: JSON.stringify(wire)
      })
      const json = JSON.parse(await res.body.text())
      if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`)
      return billed(json.usage)
    }
    let store: { read: () => Promise<bigint>; add: (cost: bigint) => Promise<void> }
    if (kind === "naive-memory") {
      let spent = 0n
      store = { read: async () => spent, add: async (cost) => void (spent += cost) }
      spentHere = async () => spent
    } else {
      const runtime = ManagedRuntime.make(pg)
      const sql = await runtime.runPromise(SqlClient.SqlClient)
      const table = `${prefix}_naive`
      store = {
        read: () =>
          runtime.runPromise(sql.unsafe<{ spent: string }>(`SELECT spent FROM ${table} WHERE id = 1`)).then((rows) =>
            BigInt(rows[0]!.spent)
          ),
        add: (cost) =>
          runtime.runPromise(sql.unsafe(`UPDATE ${table} SET spent = spent + ${cost.toString()} WHERE id = 1`)).then(
            () => undefined
          )
      }
      dispose = () => runtime.dispose()
    }
    go = async () => {
      await Promise.all(Array.from({ length: calls }, async () => {
        try {
          if ((await store.read()) >= limit) {
            counts.refused++
            return
          }
          const cost = await call()
          await store.add(cost)
          counts.ok++
        } catch (error) {
          fail(String((error as Error).message))
        }
      }))
      await dispatcher.close()
    }
  }
  process.on("disconnect", () => process.exit(1))
  process.send!("ready")
  await new Promise((resolve) => process.once("message", resolve))
  const t0 = performance.now()
  await Promise.race([go(), new Promise((resolve) => setTimeout(resolve, boundSeconds * 1000))])
  const t1 = performance.now()
  const spent = await spentHere()
  await dispose()
  if (process.env.KEEL_BENCH_DEBUG) {
    console.error(`${kind}: calls ${(t1 - t0).toFixed(0)} ms, then ${(performance.now() - t1).toFixed(0)} ms`)
  }
  const unfinished = calls - counts.ok - counts.refused - counts.failed
  process.send!(
    {
      ...counts,
      unfinished,
      failures,
      ...(spent === undefined ? {} : { spent: spent.toString() })
    } satisfies ChildResult,
    () => process.exit(0)
  )
}

export interface Row {
  readonly contender: string
  readonly keel: boolean
  readonly processes: number
  readonly calls: number
  readonly limitUsd: string
  readonly spentUsd: string
  /** spent − limit, when positive */
  readonly overshootUsd: string
  readonly overshootShare: number
  readonly served: number
  readonly refused: number
  readonly failed: number
  readonly unfinished: number
  readonly failures: Record<string, number>
  readonly seconds: number
}

const runCase = (kind: Kind, processes: number, calls: number, limit: bigint) =>
  Effect.gen(function*() {
    const simulator = yield* Simulator.Simulator
    const prefix = `keel_race_${process.pid}_${kind.replace("-", "_")}`
    if (kind === "naive-postgres") {
      yield* Effect.flatMap(SqlClient.SqlClient, (sql) =>
        Effect.andThen(
          sql.unsafe(`CREATE TABLE IF NOT EXISTS ${prefix}_naive (id int primary key, spent numeric not null)`),
          sql.unsafe(`INSERT INTO ${prefix}_naive VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET spent = 0`)
        )).pipe(Effect.provide(pg))
    }
    const per = Math.ceil(calls / processes)
    const children = Array.from({ length: processes }, () =>
      fork(import.meta.filename, [
        "--child",
        kind,
        simulator.url,
        String(per),
        limit.toString(),
        prefix,
        "--max-wait",
        String(maxWaitSeconds),
        "--bound",
        String(boundSeconds)
      ], {
        stdio: ["ignore", "inherit", "inherit", "ipc"]
      }))
    const next = <A>(c: ReturnType<typeof fork>) =>
      new Promise<A>((resolve, reject) => {
        const onExit = (code: number) => reject(new Error(`${kind}: a child exited with ${code}`))
        c.once("exit", onExit)
        c.once("message", (m) => {
          c.off("exit", onExit)
          resolve(m as A)
        })
      })
    yield* Effect.promise(() => Promise.all(children.map((c) => next(c))))
    const started = performance.now()
    const results = children.map((c) => next<ChildResult>(c))
    for (const c of children) c.send("go")
    const done = yield* Effect.promise(() => Promise.all(results))
    const seconds = (performance.now() - started) / 1000
    const served = done.reduce((n, r) => n + r.ok, 0)
    // what was spent, read from each contender's own ledger
    let spent = done[0]!.spent === undefined ? 0n : BigInt(done[0]!.spent)
    if (kind === "naive-postgres") {
      const rows = yield* Effect.flatMap(
        SqlClient.SqlClient,
        (sql) => sql.unsafe<{ spent: string }>(`SELECT spent FROM ${prefix}_naive WHERE id = 1`)
      ).pipe(Effect.provide(pg))
      spent = BigInt(rows[0]!.spent)
    } else if (kind === "keel-postgres") {
      const status = yield* Effect.flatMap(Budget.Budget, (b) => b.status(SCOPE)).pipe(
        Effect.provide(BudgetSql.layer({ tablePrefix: prefix }).pipe(Layer.provide(pg)))
      )
      spent = status.reduce((max, s) => (s.spent > max ? s.spent : max), 0n as bigint)
    }
    if (kind.endsWith("postgres")) {
      yield* Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(`DROP TABLE IF EXISTS ${prefix}_naive`)).pipe(
        Effect.zipRight(BudgetSql.drop(prefix)),
        Effect.provide(pg),
        Effect.ignore
      )
    }
    const failures: Record<string, number> = {}
    for (const r of done) for (const [tag, n] of Object.entries(r.failures)) failures[tag] = (failures[tag] ?? 0) + n
    const over = spent > limit ? spent - limit : 0n
    return {
      contender: `${kind.startsWith("keel") ? "keel Budget" : "naive check-then-record"}, ${
        kind.endsWith("memory") ? "in memory, 1 process" : `Postgres, ${processes} processes`
      }`,
      keel: kind.startsWith("keel"),
      processes,
      calls: per * processes,
      limitUsd: Money.format(limit as Money.Money),
      spentUsd: Money.format(spent as Money.Money),
      overshootUsd: Money.format(over as Money.Money),
      overshootShare: Number(over) / Number(limit),
      served,
      refused: done.reduce((n, r) => n + r.refused, 0),
      failed: done.reduce((n, r) => n + r.failed, 0),
      unfinished: done.reduce((n, r) => n + r.unfinished, 0),
      failures,
      seconds
    } satisfies Row
  }).pipe(Effect.provide(Simulator.layer({ seed: 1 })))

export interface Data {
  readonly calls: number
  readonly costPerCallUsd: string
  readonly rows: ReadonlyArray<Row>
}

const main = async () => {
  const timer = Results.start("budget-race")
  const calls = Results.numberFlag("calls", 10_000)
  // the cost of one call: one request to a simulator with the same seed
  const costOne = await Effect.runPromise(
    Effect.gen(function*() {
      const simulator = yield* Simulator.Simulator
      const res = yield* Effect.promise(() =>
        request(`${simulator.url}/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: "Bearer sk-bench" },
          body: JSON.stringify(wire)
        }).then((r) => r.body.json())
      )
      return billed((res as { usage: { prompt_tokens: number; completion_tokens: number } }).usage) as bigint
    }).pipe(Effect.provide(Simulator.layer({ seed: 1 })))
  )
  const limit = (BigInt(calls) * costOne) / 3n
  const rows: Array<Row> = []
  for (
    const [kind, processes] of [["keel-memory", 1], ["naive-memory", 1], ["keel-postgres", 4], [
      "naive-postgres",
      4
    ]] as const
  ) {
    const row = await Effect.runPromise(runCase(kind, processes, calls, limit))
    rows.push(row)
    console.error(
      `budget race: ${row.contender}: spent ${row.spentUsd} of ${row.limitUsd} in ${row.seconds.toFixed(1)} s`
    )
  }
  timer.finish({ calls, costPerCallUsd: Money.format(costOne as Money.Money), rows } satisfies Data)
  console.log(JSON.stringify(rows, null, 1))
}

if (process.argv[2] === "--child") {
  await child(
    process.argv[3] as Kind,
    process.argv[4]!,
    Number(process.argv[5]),
    BigInt(process.argv[6]!),
    process.argv[7]!
  )
} else if (Path.resolve(process.argv[1] ?? "") === import.meta.filename) {
  await main().then(() => process.exit(0), (error) => {
    console.error(error)
    process.exit(1)
  })
}
