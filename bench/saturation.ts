/**
 * A saturated rate limit: the simulator limited to R requests/min, N calls at concurrency 64 through
 * keel's defaults (the default `RetryPolicy`) and a `RateLimiter` layer that is told no limit (it
 * learns it from the answers' headers). The simulator runs in this process; the clients are child
 * processes. Before each case the simulator's bucket is emptied with raw requests, so the run meets a
 * limit already reached, as a busy account does, and throughput is what the limit lets through.
 *
 * Cases: 3,000/min with 2,000 calls; 6,000/min with 10,000 calls; 3,000/min with three processes of
 * 700 calls each sharing the quota through Redis (127.0.0.1:6379).
 *
 *   npx tsx --conditions=@keel/source bench/saturation.ts [case …] [--json FILE]   (cases: 3000, 6000, redis; default all)
 *
 * `--json FILE` also writes the rows there (bench/lib/results.ts); `runCase` is exported for bench/load.ts.
 */
import * as Llm from "@keel/core/Llm"
import * as RateLimiter from "@keel/core/RateLimiter"
import * as RedisLimiter from "@keel/core/RateLimiter/Redis"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Redacted from "effect/Redacted"
import { fork } from "node:child_process"
import * as Os from "node:os"
import * as Path from "node:path"
import { Agent, request } from "undici"
import * as OpenAiClient from "../packages/openai/src/OpenAiClient.js"
import * as OpenAiLanguageModel from "../packages/openai/src/OpenAiLanguageModel.js"
import * as Simulator from "../packages/openai/src/Simulator.js"
import * as Results from "./lib/results.js"

const MODEL = "gpt-4.1-mini"
const CONCURRENCY = 64

interface ClientResult {
  readonly ok: number
  readonly failed: number
  readonly failures: Record<string, number>
  readonly latencies: Array<number>
}

/** Child process: `calls` calls at concurrency 64 through keel, then its result to the parent. */
const client = async (url: string, calls: number, store: "memory" | "redis", prefix: string) => {
  const limiter = store === "memory"
    ? RateLimiter.layerMemory()
    : RateLimiter.layer().pipe(Layer.provide(RedisLimiter.layerStore({ host: "127.0.0.1", port: 6379, prefix })))
  const model = OpenAiLanguageModel.layer().pipe(
    Layer.provide(OpenAiClient.layerUndici({ apiKey: Redacted.make("sk-bench"), baseUrl: url }))
  )
  const runtime = ManagedRuntime.make(
    Llm.layer({ defaultModel: MODEL }).pipe(
      Layer.provide(Layer.merge(model, limiter)),
      Layer.provide(Logger.minimumLogLevel(LogLevel.Warning))
    )
  )
  await runtime.runPromise(Effect.void)
  process.send!("ready")
  await new Promise((resolve) => process.once("message", resolve))
  const failures: Record<string, number> = {}
  const latencies: Array<number> = []
  let ok = 0
  let next = 0
  const worker = async () => {
    while (next < calls) {
      const i = next++
      const started = performance.now()
      const outcome = await runtime.runPromise(Effect.either(Llm.generate({
        messages: [{ role: "user", content: `Say something about item ${i}.` }],
        maxOutputTokens: 400
      })))
      latencies.push(performance.now() - started)
      if (outcome._tag === "Right") ok++
      else failures[outcome.left._tag] = (failures[outcome.left._tag] ?? 0) + 1
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  process.send!({ ok, failed: calls - ok, failures, latencies } satisfies ClientResult)
  await runtime.dispose()
  process.exit(0)
}

/** Sends raw requests until the simulator answers 429: the bucket is empty. */
const drain = async (url: string) => {
  const dispatcher = new Agent({ connections: CONCURRENCY })
  const body = JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "drain" }], max_tokens: 1 })
  let limited = false
  let sent = 0
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (!limited) {
      const res = await request(`${url}/chat/completions`, {
        method: "POST",
        dispatcher,
        headers: { "content-type": "application/json", authorization: "Bearer sk-bench" },
        body
      })
      await res.body.text()
      sent++
      if (res.statusCode === 429) limited = true
    }
  }))
  await dispatcher.close()
  return sent
}

export interface Row {
  readonly name: string
  readonly limit: number
  readonly calls: number
  readonly processes: number
  readonly failed: number
  readonly failures: Record<string, number>
  readonly requests: number
  readonly rateLimited: number
  readonly seconds: number
  readonly throughput: number
  readonly p50: number
  readonly p99: number
}

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? 0

/** One case, for `bench/load.ts` (which puts the peers beside keel). */
export const runCase = (name: string, limit: number, calls: number, processes: number, store: "memory" | "redis") =>
  Effect.gen(function*() {
    const simulator = yield* Simulator.Simulator
    const prefix = `keel-bench-${process.pid}-${Date.now()}:`
    const per = Math.ceil(calls / processes)
    const children = Array.from(
      { length: processes },
      () => fork(import.meta.filename, ["--client", simulator.url, String(per), store, prefix], { stdio: "inherit" })
    )
    yield* Effect.promise(() =>
      Promise.all(children.map((child) => new Promise((resolve) => child.once("message", resolve))))
    )
    yield* Effect.promise(() => drain(simulator.url))
    const before = yield* simulator.stats
    const started = performance.now()
    const results = children.map((child) =>
      new Promise<ClientResult>((resolve) => child.once("message", resolve as never))
    )
    for (const child of children) child.send("go")
    const done = yield* Effect.promise(() => Promise.all(results))
    const seconds = (performance.now() - started) / 1000
    const after = yield* simulator.stats
    const failures: Record<string, number> = {}
    for (const r of done) for (const [tag, n] of Object.entries(r.failures)) failures[tag] = (failures[tag] ?? 0) + n
    const latencies = done.flatMap((r) => r.latencies).sort((a, b) => a - b)
    const ok = done.reduce((n, r) => n + r.ok, 0)
    return {
      name,
      limit,
      calls: per * processes,
      processes,
      failed: done.reduce((n, r) => n + r.failed, 0),
      failures,
      requests: after.requests - before.requests,
      rateLimited: after.rateLimited - before.rateLimited,
      seconds,
      throughput: ok / (seconds / 60) / limit,
      p50: percentile(latencies, 0.5),
      p99: percentile(latencies, 0.99)
    } satisfies Row
  }).pipe(Effect.provide(Simulator.layer({ seed: 1, limits: { requestsPerMinute: limit } })))

const timer = Results.start("saturation")
/** `--json FILE`: the rows, machine-readable. */
const writeJson = (rows: ReadonlyArray<Row>) => timer.finish({ rows })

const main = async () => {
  const wanted = process.argv.slice(2).filter((a, i, all) => a !== "--json" && all[i - 1] !== "--json")
  const cases = [
    { key: "3000", name: "3,000/min, 2,000 calls, 1 process", limit: 3_000, calls: 2_000, processes: 1 },
    { key: "6000", name: "6,000/min, 10,000 calls, 1 process", limit: 6_000, calls: 10_000, processes: 1 },
    {
      key: "redis",
      name: "3,000/min, 3 × 700 calls, 3 processes sharing Redis",
      limit: 3_000,
      calls: 2_100,
      processes: 3
    }
  ].filter((c) => wanted.length === 0 || wanted.includes(c.key))
  const rows: Array<Row> = []
  for (const c of cases) {
    const row = await Effect.runPromise(
      runCase(c.name, c.limit, c.calls, c.processes, c.key === "redis" ? "redis" : "memory")
    )
    rows.push(row)
    console.error(`done: ${c.name} in ${row.seconds.toFixed(1)} s`)
  }
  writeJson(rows)
  console.log(
    `\nSaturation (${Os.cpus().length} cores, shared machine; simulator in-process, keel in child processes, concurrency 64 per process; ${
      new Date().toISOString().slice(0, 10)
    })\n`
  )
  console.log("| case | calls | failed calls | requests | answered 429 | throughput / limit | p50 | p99 |")
  console.log("|---|---:|---:|---:|---:|---:|---:|---:|")
  for (const r of rows) {
    const failed = r.failed === 0 ? "0" : `${r.failed} (${JSON.stringify(r.failures)})`
    console.log(
      `| keel defaults + RateLimiter, ${r.name} | ${r.calls} | ${failed} | ${r.requests} | ${r.rateLimited} (${
        (100 * r.rateLimited / r.requests).toFixed(2)
      }%) | ${r.throughput.toFixed(3)} | ${(r.p50 / 1000).toFixed(1)} s | ${(r.p99 / 1000).toFixed(1)} s |`
    )
  }
  console.log(
    "| `openai` SDK, default retries (issue 12, measured earlier) | 2000 | 1629 | | 93% | | | |\n" +
      "| Vercel AI SDK (issue 12, measured earlier) | 2000 | 1519 | | | | | |\n" +
      "| full-jitter loop honouring retry-after-ms (issue 12) | 2000 | 1 | | 62% | 0.90 | | |\n" +
      "| keel before this change, default policy (issue 12) | 2000 | 494 | | 74% | 0.99 | | |\n" +
      "| keel before this change, 10 attempts (issue 12) | 2000 | 0 | | | 0.77 | | 19 s |"
  )
}

if (process.argv[2] === "--client") {
  client(process.argv[3]!, Number(process.argv[4]), process.argv[5] as "memory" | "redis", process.argv[6]!)
} else if (Path.resolve(process.argv[1] ?? "") === import.meta.filename) {
  main().then(() => process.exit(0))
}
