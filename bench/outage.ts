/**
 * A 2 s outage: the simulator serves 500 requests/s (past that it answers 503 "overloaded") and
 * answers every request 503 (no hint) for 2 s from the moment N calls start, all at once. keel runs
 * in a child process with its default `RetryPolicy`, with and without a `RateLimiter` layer (told no
 * limit). The simulator announces 30,000 requests/min in its `x-ratelimit-*` headers (its serving
 * capacity), which the limiter learns from the first answer after the outage; the last rows run
 * against a simulator that sends no such limit, so the limiter's slow start finds the capacity alone.
 *
 * Reported: failed calls, requests, the busiest 100 ms after the outage ends, 503 "overloaded"
 * answers, and when the last call ended, counted from the outage's start. The busiest 100 ms is
 * counted twice: by the simulator's receive time (its per-100 ms arrivals) and by the client's send
 * time (undici's `undici:client:sendHeaders` diagnostics channel, epoch ms, against the epoch ms at
 * which the simulator, and with it the outage, started). The two differ when either event loop lags:
 * a backlog read late by a busy simulator looks like one burst. The client's count is the one the
 * target is read against (it is what keel sent).
 *
 *   npx tsx --conditions=@keel/source bench/outage.ts [case …] [--timeline] [--json FILE]
 *     (cases: 1000, 100, 1000-none, 100-none, 1000-quiet, 100-quiet; default all)
 *
 * `--timeline` prints, per case, requests per 100 ms from the outage's start as the client sent them
 * and as the simulator received them.
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
import * as DiagnosticsChannel from "node:diagnostics_channel"
import * as Os from "node:os"
import * as Path from "node:path"
import * as PerfHooks from "node:perf_hooks"
import * as OpenAiClient from "../packages/openai/src/OpenAiClient.js"
import * as OpenAiLanguageModel from "../packages/openai/src/OpenAiLanguageModel.js"
import * as Simulator from "../packages/openai/src/Simulator.js"
import { freePort } from "./lib/processes.js"
import * as Results from "./lib/results.js"

const MODEL = "gpt-4.1-mini"
const CAPACITY = 500
const OUTAGE_MS = 2_000

interface ClientResult {
  readonly failed: number
  readonly failures: Record<string, number>
  /** epoch ms at which each call ended */
  readonly ends: Array<number>
  /** epoch ms at which each request's headers were written to its socket */
  readonly sends: Array<number>
  /** epoch ms at which each answer's headers arrived, with its status */
  readonly answers: Array<readonly [number, number]>
  readonly loop: Loop
}

/** How a process fared: its event loop's longest stall and its CPU time, from "go" to the end. */
interface Loop {
  readonly maxDelayMs: number
  readonly cpuMs: number
}

/** Starts watching this process's event loop and CPU; `stop` returns what was seen. */
const watchLoop = () => {
  const histogram = PerfHooks.monitorEventLoopDelay({ resolution: 10 })
  histogram.enable()
  const cpu = process.cpuUsage()
  return {
    stop: (): Loop => {
      histogram.disable()
      const used = process.cpuUsage(cpu)
      return { maxDelayMs: histogram.max / 1e6, cpuMs: (used.user + used.system) / 1000 }
    }
  }
}

/**
 * Epoch ms, the one clock both processes read alike (`performance.timeOrigin` is taken at a process's
 * start and can be off from it by milliseconds).
 */
const epochNow = () => Date.now()

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
  const sends: Array<number> = []
  const answers: Array<readonly [number, number]> = []
  DiagnosticsChannel.subscribe("undici:client:sendHeaders", () => sends.push(epochNow()))
  DiagnosticsChannel.subscribe("undici:request:headers", (message) => {
    answers.push([epochNow(), (message as { response: { statusCode: number } }).response.statusCode])
  })
  process.send!("ready")
  await new Promise((resolve) => process.once("message", resolve))
  const watch = watchLoop()
  const failures: Record<string, number> = {}
  const ends: Array<number> = []
  await Promise.all(Array.from({ length: calls }, async (_, i) => {
    const outcome = await runtime.runPromise(Effect.either(Llm.generate({
      messages: [{ role: "user", content: `Say something about item ${i}.` }],
      maxOutputTokens: 400
    })))
    ends.push(epochNow())
    if (outcome._tag === "Left") failures[outcome.left._tag] = (failures[outcome.left._tag] ?? 0) + 1
  }))
  process.send!(
    {
      failed: Object.values(failures).reduce((a, b) => a + b, 0),
      failures,
      ends,
      sends,
      answers,
      loop: watch.stop()
    } satisfies ClientResult
  )
  await runtime.dispose()
  process.exit(0)
}

export interface Row {
  readonly name: string
  readonly calls: number
  readonly failed: number
  readonly failures: Record<string, number>
  readonly requests: number
  /** the busiest 100 ms after the outage, by the client's send times */
  readonly peak: number
  /** the same, by the simulator's receive times */
  readonly peakReceived: number
  readonly overloaded: number
  /** when the last call ended, in ms from the outage's start */
  readonly lastEndMs: number
  /** requests per 100 ms from the outage's start, by send time */
  readonly sent: ReadonlyArray<number>
  /** requests per 100 ms from the outage's start, by receive time */
  readonly received: ReadonlyArray<number>
  /** 200 answers per 100 ms from the outage's start, as the client read them */
  readonly answered: ReadonlyArray<number>
  /** keel's process, and the simulator's */
  readonly clientLoop: Loop
  readonly simulatorLoop: Loop
}

/** Counts per 100 ms from `from` (epoch ms). */
const per100 = (times: ReadonlyArray<number>, from: number) => {
  const counts: Array<number> = []
  for (const t of times) {
    const slot = Math.max(0, Math.floor((t - from) / 100))
    while (counts.length <= slot) counts.push(0)
    counts[slot]!++
  }
  return counts
}

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
      // The simulator's engine took its start (and the outage's) as the layer was built, after loading its
      // token counter (a second or more under load) and before binding its port (a few ms): now is within
      // those few ms of it.
      const outageStart = epochNow()
      const simulator = yield* Simulator.Simulator
      const result = new Promise<ClientResult>((resolve) => child.once("message", resolve as never))
      const watch = watchLoop()
      child.send("go")
      const done = yield* Effect.promise(() => result)
      const simulatorLoop = watch.stop()
      const stats = yield* simulator.stats
      const received = [...Array.from({ length: stats.arrivals.startMs / 100 }, () => 0), ...stats.arrivals.counts]
      const sent = per100(done.sends, outageStart)
      const after = OUTAGE_MS / 100
      return {
        name,
        calls,
        failed: done.failed,
        failures: done.failures,
        requests: stats.requests,
        peak: Math.max(0, ...sent.slice(after)),
        peakReceived: Math.max(0, ...received.slice(after)),
        overloaded: stats.overloaded,
        lastEndMs: Math.max(...done.ends) - outageStart,
        sent,
        received,
        answered: per100(done.answers.filter(([, status]) => status === 200).map(([t]) => t), outageStart),
        clientLoop: done.loop,
        simulatorLoop
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

const cases = [
  { key: "1000", name: "keel defaults + RateLimiter, 1,000 calls", calls: 1_000, limiter: true, announce: true },
  { key: "100", name: "keel defaults + RateLimiter, 100 calls", calls: 100, limiter: true, announce: true },
  {
    key: "1000-none",
    name: "keel defaults, no RateLimiter, 1,000 calls",
    calls: 1_000,
    limiter: false,
    announce: true
  },
  { key: "100-none", name: "keel defaults, no RateLimiter, 100 calls", calls: 100, limiter: false, announce: true },
  {
    key: "1000-quiet",
    name: "keel defaults + RateLimiter, 1,000 calls, no limit in the headers",
    calls: 1_000,
    limiter: true,
    announce: false
  },
  {
    key: "100-quiet",
    name: "keel defaults + RateLimiter, 100 calls, no limit in the headers",
    calls: 100,
    limiter: true,
    announce: false
  }
]

const main = async () => {
  const wanted = process.argv.slice(2).filter((a, i, all) => !a.startsWith("--") && all[i - 1] !== "--json")
  const timeline = process.argv.includes("--timeline")
  const load = [Os.loadavg()[0]!]
  const rows: Array<Row> = []
  for (const c of cases.filter((c) => wanted.length === 0 || wanted.includes(c.key))) {
    const row = await Effect.runPromise(runCase(c.name, c.calls, c.limiter, c.announce))
    rows.push(row)
    load.push(Os.loadavg()[0]!)
    console.error(`done: ${c.name}`)
    if (timeline) {
      console.error(`  sent per 100 ms:     ${row.sent.join(" ")}`)
      console.error(`  received per 100 ms: ${row.received.join(" ")}`)
      console.error(`  200s per 100 ms:     ${row.answered.join(" ")}`)
    }
  }
  writeJson(rows)
  console.log(
    `\nOutage (${Os.cpus().length} cores, shared machine, 1-min load average ${
      load.map((l) => l.toFixed(1)).join(" → ")
    }; capacity ${CAPACITY} requests/s, a ${OUTAGE_MS} ms outage of 503s without a hint from the moment the calls start; ${
      new Date().toISOString().slice(0, 16)
    } UTC)\n`
  )
  console.log(
    "| case | failed calls | requests | busiest 100 ms after recovery, sent (received) | answered 503 overloaded | last call done (from the outage's start) | longest event-loop stall, keel (simulator) | CPU s, keel (simulator) |"
  )
  console.log("|---|---:|---:|---:|---:|---:|---:|---:|")
  for (const r of rows) {
    const failed = r.failed === 0 ? "0" : `${r.failed} (${JSON.stringify(r.failures)})`
    console.log(
      `| ${r.name} | ${failed} | ${r.requests} | ${r.peak} (${r.peakReceived}) | ${r.overloaded} | ${
        (r.lastEndMs / 1000).toFixed(2)
      } s | ${r.clientLoop.maxDelayMs.toFixed(0)} ms (${r.simulatorLoop.maxDelayMs.toFixed(0)} ms) | ${
        (r.clientLoop.cpuMs / 1000).toFixed(2)
      } (${(r.simulatorLoop.cpuMs / 1000).toFixed(2)}) |`
    )
  }
}

if (process.argv[2] === "--client") {
  client(process.argv[3]!, Number(process.argv[4]), process.argv[5] === "true")
} else if (Path.resolve(process.argv[1] ?? "") === import.meta.filename) {
  main().then(() => process.exit(0))
}
