/**
 * A 2 s outage: the simulator serves 500 requests/s (past that it answers 503 "overloaded") and
 * answers every request 503 (no hint) for 2 s from the moment N calls start, all at once. keel runs
 * in a child process with its default `RetryPolicy`, with and without a `RateLimiter` layer (told no
 * limit). The simulator announces 30,000 requests/min in its `x-ratelimit-*` headers (its serving
 * capacity), which the limiter learns from the first answer after the outage; the last rows run
 * against a simulator that sends no such limit, so the limiter's slow start finds the capacity alone.
 *
 * Reported: failed calls, requests, the busiest 100 ms after the outage ends (arrivals, answered or
 * not), 503 "overloaded" answers, and when the last call ended, counted from the outage's start.
 *
 *   npx tsx --conditions=@keel/source bench/outage.ts [--json FILE]
 *
 * `--json FILE` also writes the rows there (bench/lib/results.ts); `runCase` is exported for bench/load.ts.
 */
import * as Llm from "@keel/core/Llm"
import * as RateLimiter from "@keel/core/RateLimiter"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Redacted from "effect/Redacted"
import { fork } from "node:child_process"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as OpenAiClient from "../packages/openai/src/OpenAiClient.js"
import * as OpenAiLanguageModel from "../packages/openai/src/OpenAiLanguageModel.js"
import * as Simulator from "../packages/openai/src/Simulator.js"
import * as Results from "./lib/results.js"

const MODEL = "gpt-4.1-mini"
const CAPACITY = 500
const OUTAGE_MS = 2_000

interface ClientResult {
  readonly failed: number
  readonly failures: Record<string, number>
  /** ms after "go" at which each call ended */
  readonly ends: Array<number>
}

/** Child process: `calls` calls at once through keel, then its result to the parent. */
const client = async (url: string, calls: number, withLimiter: boolean) => {
  const model = OpenAiLanguageModel.layer().pipe(
    Layer.provide(OpenAiClient.layerUndici({ apiKey: Redacted.make("sk-bench"), baseUrl: url }))
  )
  const runtime = ManagedRuntime.make(
    Llm.layer({ defaultModel: MODEL }).pipe(
      Layer.provide(withLimiter ? Layer.merge(model, RateLimiter.layerMemory()) : model),
      Layer.provide(Logger.minimumLogLevel(LogLevel.Warning))
    )
  )
  await runtime.runPromise(Effect.void)
  process.send!("ready")
  await new Promise((resolve) => process.once("message", resolve))
  const started = performance.now()
  const failures: Record<string, number> = {}
  const ends: Array<number> = []
  await Promise.all(Array.from({ length: calls }, async (_, i) => {
    const outcome = await runtime.runPromise(Effect.either(Llm.generate({
      messages: [{ role: "user", content: `Say something about item ${i}.` }],
      maxOutputTokens: 400
    })))
    ends.push(performance.now() - started)
    if (outcome._tag === "Left") failures[outcome.left._tag] = (failures[outcome.left._tag] ?? 0) + 1
  }))
  process.send!({ failed: Object.values(failures).reduce((a, b) => a + b, 0), failures, ends } satisfies ClientResult)
  await runtime.dispose()
  process.exit(0)
}

export interface Row {
  readonly name: string
  readonly calls: number
  readonly failed: number
  readonly failures: Record<string, number>
  readonly requests: number
  readonly peak: number
  readonly overloaded: number
  readonly lastEndMs: number
}

/** A free port on 127.0.0.1, for a simulator started after its client. */
const freePort = () =>
  new Promise<number>((resolve) => {
    const server = Net.createServer().listen(0, "127.0.0.1", () => {
      const port = (server.address() as Net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })

/** One case, for `bench/load.ts` (which puts the peers beside keel). */
export const runCase = (name: string, calls: number, withLimiter: boolean, announce: boolean) =>
  Effect.gen(function*() {
    // The client is built first; the simulator (and with it the outage) starts when the calls go.
    const port = yield* Effect.promise(freePort)
    const child = fork(
      import.meta.filename,
      ["--client", `http://127.0.0.1:${port}/v1`, String(calls), String(withLimiter)],
      { stdio: "inherit" }
    )
    yield* Effect.promise(() => new Promise((resolve) => child.once("message", resolve)))
    return yield* Effect.gen(function*() {
      const simulator = yield* Simulator.Simulator
      const result = new Promise<ClientResult>((resolve) => child.once("message", resolve as never))
      child.send("go")
      const done = yield* Effect.promise(() => result)
      const stats = yield* simulator.stats
      // Arrivals per 100 ms from the end of the outage on.
      const from = Math.ceil((OUTAGE_MS - stats.arrivals.startMs) / 100)
      return {
        name,
        calls,
        failed: done.failed,
        failures: done.failures,
        requests: stats.requests,
        peak: Math.max(0, ...stats.arrivals.counts.slice(Math.max(0, from))),
        overloaded: stats.overloaded,
        lastEndMs: Math.max(...done.ends)
      } satisfies Row
    }).pipe(
      Effect.provide(Simulator.layer({
        seed: 1,
        port,
        outages: [{ atMs: 0, durationMs: OUTAGE_MS, status: 503 }],
        capacityPerSecond: CAPACITY,
        ...(announce ? { limits: { requestsPerMinute: CAPACITY * 60 } } : {})
      }))
    )
  })

const timer = Results.start("outage")
/** `--json FILE`: the rows, machine-readable. */
const writeJson = (rows: ReadonlyArray<Row>) => timer.finish({ rows })

const main = async () => {
  const cases = [
    { name: "keel defaults + RateLimiter, 1,000 calls", calls: 1_000, limiter: true, announce: true },
    { name: "keel defaults + RateLimiter, 100 calls", calls: 100, limiter: true, announce: true },
    { name: "keel defaults, no RateLimiter, 1,000 calls", calls: 1_000, limiter: false, announce: true },
    { name: "keel defaults, no RateLimiter, 100 calls", calls: 100, limiter: false, announce: true },
    {
      name: "keel defaults + RateLimiter, 1,000 calls, no limit in the headers",
      calls: 1_000,
      limiter: true,
      announce: false
    },
    {
      name: "keel defaults + RateLimiter, 100 calls, no limit in the headers",
      calls: 100,
      limiter: true,
      announce: false
    }
  ]
  const rows: Array<Row> = []
  for (const c of cases) {
    rows.push(await Effect.runPromise(runCase(c.name, c.calls, c.limiter, c.announce)))
    console.error(`done: ${c.name}`)
  }
  writeJson(rows)
  console.log(
    `\nOutage (${Os.cpus().length} cores, shared machine; capacity ${CAPACITY} requests/s, a ${OUTAGE_MS} ms outage of 503s without a hint from the moment the calls start; ${
      new Date().toISOString().slice(0, 10)
    })\n`
  )
  console.log(
    "| case | failed calls | requests | busiest 100 ms after recovery | answered 503 overloaded | last call done (from the outage's start) |"
  )
  console.log("|---|---:|---:|---:|---:|---:|")
  for (const r of rows) {
    const failed = r.failed === 0 ? "0" : `${r.failed} (${JSON.stringify(r.failures)})`
    console.log(
      `| ${r.name} | ${failed} | ${r.requests} | ${r.peak} | ${r.overloaded} | ${(r.lastEndMs / 1000).toFixed(2)} s |`
    )
  }
  console.log(
    "| `openai` SDK / Vercel AI SDK, 1,000 calls (issue 12, measured earlier) | | | 154–216 | | 3.2–4.1 s |\n" +
      "| full-jitter loop, 1,000 calls (issue 12) | | | 81 | | 9.8 s |\n" +
      "| keel before this change, 1,000 calls (issue 12) | 92 | | 127 | | |\n" +
      "| keel before this change, 100 calls (issue 12) | 58 | | | | |"
  )
}

if (process.argv[2] === "--client") {
  client(process.argv[3]!, Number(process.argv[4]), process.argv[5] === "true")
} else if (Path.resolve(process.argv[1] ?? "") === import.meta.filename) {
  main().then(() => process.exit(0))
}
