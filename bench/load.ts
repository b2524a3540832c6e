/**
 * Saturation and outage side by side: keel (the cases of bench/saturation.ts and bench/outage.ts,
 * through their exported `runCase`) beside the official `openai` SDK and the Vercel AI SDK with their
 * default retries (2) and with 10 retries, and, for the outage, a no-jitter and a full-jitter retry
 * loop over raw undici (exponential from 500 ms, cap 8 s, 10 retries, a `retry-after(-ms)` hint as a
 * floor). Same simulator settings for every contender; each contender runs in its own child process;
 * the simulator runs in this one (a fresh one per contender). The request is keel's: one user message,
 * `max_completion_tokens` 400, plain text.
 *
 * Saturation: a limit of `--limit` requests/min (default 15,000; `npm run bench` uses 6,000), its bucket emptied first (as
 * saturation.ts does), then `--calls` calls (default 10,000; `npm run bench` uses 2,000, to fit its 15 minutes) at concurrency 64. Outage: 1,000 calls at
 * once meet a 2 s outage of 503s without a hint, capacity 500 requests/s (503 "overloaded" past it),
 * the limit announced in the headers. A contender still busy after `--bound` seconds (default 80) is
 * stopped: its unfinished calls are reported as such.
 *
 *   npx tsx --conditions=@keel/source bench/load.ts [saturation] [outage] [--limit 15000] [--calls 10000] [--bound 80] [--json FILE]
 */
import * as Effect from "effect/Effect"
import { fork } from "node:child_process"
import * as Path from "node:path"
import * as Simulator from "../packages/openai/src/Simulator.js"
import { freePort, sleep } from "./lib/processes.js"
import * as Results from "./lib/results.js"
import * as Stats from "./lib/stats.js"
import * as Outage from "./outage.js"
import * as Saturation from "./saturation.js"

const MODEL = "gpt-4.1-mini"
const CONCURRENCY = 64
const CAPACITY = 500
const OUTAGE_MS = 2_000

export type PeerId =
  | "openai-default"
  | "openai-10"
  | "ai-sdk-default"
  | "ai-sdk-10"
  | "no-jitter"
  | "full-jitter"

export const peerNames: Record<PeerId, string> = {
  "openai-default": "`openai` SDK, default retries (2)",
  "openai-10": "`openai` SDK, 10 retries",
  "ai-sdk-default": "Vercel AI SDK, default retries (2)",
  "ai-sdk-10": "Vercel AI SDK, 10 retries",
  "no-jitter": "raw undici, exponential backoff without jitter, 10 retries",
  "full-jitter": "raw undici, full-jitter backoff, 10 retries"
}

interface ClientResult {
  readonly ok: number
  readonly failed: number
  readonly unfinished: number
  readonly failures: Record<string, number>
  /** ms after "go" at which each finished call ended */
  readonly ends: Array<number>
  readonly latencies: Array<number>
}

/** One call of a peer; throws on failure (after its retries). */
const makePeer = async (id: PeerId, url: string): Promise<(i: number) => Promise<void>> => {
  const body = (i: number) => ({
    model: MODEL,
    messages: [{ role: "user" as const, content: `Say something about item ${i}.` }],
    max_completion_tokens: 400
  })
  switch (id) {
    case "openai-default":
    case "openai-10": {
      const { default: OpenAI } = await import("openai")
      const sdk = new OpenAI({
        apiKey: "sk-bench",
        baseURL: url,
        ...(id === "openai-10" ? { maxRetries: 10 } : {})
      })
      return async (i) => {
        await sdk.chat.completions.create(body(i))
      }
    }
    case "ai-sdk-default":
    case "ai-sdk-10": {
      const { generateText } = await import("ai")
      const { createOpenAI } = await import("@ai-sdk/openai")
      const model = createOpenAI({ apiKey: "sk-bench", baseURL: url }).chat(MODEL)
      return async (i) => {
        await generateText({
          model,
          prompt: `Say something about item ${i}.`,
          maxOutputTokens: 400,
          ...(id === "ai-sdk-10" ? { maxRetries: 10 } : {})
        })
      }
    }
    case "no-jitter":
    case "full-jitter": {
      const { Agent, request } = await import("undici")
      const dispatcher = new Agent({ connections: CONCURRENCY })
      const headers = { "content-type": "application/json", authorization: "Bearer sk-bench" }
      return async (i) => {
        for (let attempt = 0;; attempt++) {
          const res = await request(`${url}/chat/completions`, {
            method: "POST",
            dispatcher,
            headers,
            body: JSON.stringify(body(i))
          })
          const text = await res.body.text()
          if (res.statusCode === 200) {
            JSON.parse(text)
            return
          }
          const retryable = res.statusCode === 429 || res.statusCode >= 500
          if (!retryable || attempt === 10) throw new Error(`status ${res.statusCode}`)
          const ms = Number(res.headers["retry-after-ms"])
          const s = Number(res.headers["retry-after"])
          const hint = Number.isFinite(ms) ? ms : Number.isFinite(s) ? s * 1000 : 0
          const ceiling = Math.min(8_000, 500 * 2 ** attempt)
          await sleep(Math.max(hint, id === "full-jitter" ? Math.random() * ceiling : ceiling))
        }
      }
    }
  }
}

/** Child: `calls` calls of a peer at `concurrency` (0: all at once), stopped at `boundMs`. */
const client = async (id: PeerId, url: string, calls: number, concurrency: number, boundMs: number) => {
  const one = await makePeer(id, url)
  process.on("disconnect", () => process.exit(1))
  process.send!("ready")
  await new Promise((resolve) => process.once("message", resolve))
  const started = performance.now()
  const failures: Record<string, number> = {}
  const ends: Array<number> = []
  const latencies: Array<number> = []
  let ok = 0
  let failed = 0
  let next = 0
  const call = async (i: number) => {
    const t0 = performance.now()
    try {
      await one(i)
      ok++
    } catch (error) {
      failed++
      const tag = (error as { status?: number; statusCode?: number }).status ??
        (error as { statusCode?: number }).statusCode ?? (error as Error).constructor?.name ?? "Error"
      failures[String(tag)] = (failures[String(tag)] ?? 0) + 1
    }
    const now = performance.now()
    ends.push(now - started)
    latencies.push(now - t0)
  }
  const all = concurrency === 0
    ? Promise.all(Array.from({ length: calls }, (_, i) => call(i)))
    : Promise.all(Array.from({ length: concurrency }, async () => {
      while (next < calls && performance.now() - started < boundMs) await call(next++)
    }))
  await Promise.race([all, sleep(boundMs)])
  process.send!(
    { ok, failed, unfinished: calls - ok - failed, failures, ends, latencies } satisfies ClientResult,
    () => process.exit(0)
  )
}

const forkPeer = (id: PeerId, url: string, calls: number, concurrency: number, boundMs: number) => {
  const child = fork(import.meta.filename, ["--peer", id, url, String(calls), String(concurrency), String(boundMs)], {
    stdio: ["ignore", "ignore", "inherit", "ipc"]
  })
  const ready = new Promise<void>((resolve) => child.once("message", () => resolve()))
  const go = () => {
    const result = new Promise<ClientResult>((resolve) => child.once("message", resolve as never))
    child.send("go")
    return result
  }
  return { ready, go }
}

/** Sends raw requests until the simulator answers 429: the bucket is empty (as saturation.ts does). */
const drain = async (url: string) => {
  const { Agent, request } = await import("undici")
  const dispatcher = new Agent({ connections: CONCURRENCY })
  const body = JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "drain" }], max_tokens: 1 })
  let limited = false
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (!limited) {
      const res = await request(`${url}/chat/completions`, {
        method: "POST",
        dispatcher,
        headers: { "content-type": "application/json", authorization: "Bearer sk-bench" },
        body
      })
      await res.body.text()
      if (res.statusCode === 429) limited = true
    }
  }))
  await dispatcher.close()
}

export interface SaturationRow {
  readonly contender: string
  readonly keel: boolean
  readonly limit: number
  readonly calls: number
  readonly failed: number
  readonly unfinished: number
  readonly failures: Record<string, number>
  readonly requests: number
  readonly rateLimited: number
  readonly rateLimitedShare: number
  readonly seconds: number
  /** successful calls per minute ÷ the limit */
  readonly throughput: number
  readonly p50: number
  readonly p99: number
}

const saturationPeer = (id: PeerId, limit: number, calls: number, boundMs: number) =>
  Effect.gen(function*() {
    const simulator = yield* Simulator.Simulator
    const peer = forkPeer(id, simulator.url, calls, CONCURRENCY, boundMs)
    yield* Effect.promise(() => peer.ready)
    yield* Effect.promise(() => drain(simulator.url))
    const before = yield* simulator.stats
    const started = performance.now()
    const done = yield* Effect.promise(() => peer.go())
    const seconds = (performance.now() - started) / 1000
    const after = yield* simulator.stats
    const latencies = done.latencies.sort((a, b) => a - b)
    const requests = after.requests - before.requests
    const rateLimited = after.rateLimited - before.rateLimited
    return {
      contender: peerNames[id],
      keel: false,
      limit,
      calls,
      failed: done.failed,
      unfinished: done.unfinished,
      failures: done.failures,
      requests,
      rateLimited,
      rateLimitedShare: rateLimited / Math.max(1, requests),
      seconds,
      throughput: done.ok / (seconds / 60) / limit,
      p50: Stats.percentile(latencies, 0.5),
      p99: Stats.percentile(latencies, 0.99)
    } satisfies SaturationRow
  }).pipe(Effect.provide(Simulator.layer({ seed: 1, limits: { requestsPerMinute: limit } })))

export interface OutageRow {
  readonly contender: string
  readonly keel: boolean
  readonly calls: number
  readonly failed: number
  readonly unfinished: number
  readonly failures: Record<string, number>
  readonly requests: number
  /** arrivals in the busiest 100 ms after the outage ended */
  readonly peak: number
  /** peak ÷ what the server serves in 100 ms */
  readonly peakRatio: number
  readonly overloaded: number
  readonly lastEndMs: number
}

const outagePeer = (id: PeerId, calls: number, boundMs: number) =>
  Effect.gen(function*() {
    // as outage.ts: the client is built first; the simulator (and the outage) starts when the calls go
    const port = yield* Effect.promise(freePort)
    const peer = forkPeer(id, `http://127.0.0.1:${port}/v1`, calls, 0, boundMs)
    yield* Effect.promise(() => peer.ready)
    return yield* Effect.gen(function*() {
      const simulator = yield* Simulator.Simulator
      const done = yield* Effect.promise(() => peer.go())
      const stats = yield* simulator.stats
      const from = Math.ceil((OUTAGE_MS - stats.arrivals.startMs) / 100)
      const peak = Math.max(0, ...stats.arrivals.counts.slice(Math.max(0, from)))
      return {
        contender: peerNames[id],
        keel: false,
        calls,
        failed: done.failed,
        unfinished: done.unfinished,
        failures: done.failures,
        requests: stats.requests,
        peak,
        peakRatio: peak / (CAPACITY / 10),
        overloaded: stats.overloaded,
        lastEndMs: Math.max(0, ...done.ends)
      } satisfies OutageRow
    }).pipe(Effect.provide(Simulator.layer({
      seed: 1,
      port,
      outages: [{ atMs: 0, durationMs: OUTAGE_MS, status: 503 }],
      capacityPerSecond: CAPACITY,
      limits: { requestsPerMinute: CAPACITY * 60 }
    })))
  })

export interface Data {
  readonly saturation?: {
    readonly limit: number
    readonly calls: number
    readonly concurrency: number
    readonly boundSeconds: number
    readonly rows: ReadonlyArray<SaturationRow>
  }
  readonly outage?: {
    readonly calls: number
    readonly capacity: number
    readonly outageMs: number
    readonly boundSeconds: number
    readonly rows: ReadonlyArray<OutageRow>
  }
}

const main = async () => {
  const timer = Results.start("load")
  const args = process.argv.slice(2).filter((a) => !a.startsWith("--") && !/^[\d./]/.test(a) && !a.endsWith(".json"))
  const wanted = args.length === 0 ? ["saturation", "outage"] : args
  const limit = Results.numberFlag("limit", 15_000)
  const calls = Results.numberFlag("calls", 10_000)
  const boundMs = Results.numberFlag("bound", 80) * 1000
  const data: { -readonly [K in keyof Data]: Data[K] } = {}
  if (wanted.includes("saturation")) {
    const rows: Array<SaturationRow> = []
    const keel = await Effect.runPromise(
      Saturation.runCase(`${limit}/min, ${calls} calls`, limit, calls, 1, "memory")
    )
    rows.push({
      contender: "keel defaults + RateLimiter (learns the limit from headers)",
      keel: true,
      limit,
      calls: keel.calls,
      failed: keel.failed,
      unfinished: 0,
      failures: keel.failures,
      requests: keel.requests,
      rateLimited: keel.rateLimited,
      rateLimitedShare: keel.rateLimited / Math.max(1, keel.requests),
      seconds: keel.seconds,
      throughput: keel.throughput,
      p50: keel.p50,
      p99: keel.p99
    })
    console.error(`saturation: keel done in ${keel.seconds.toFixed(1)} s`)
    for (const id of ["openai-default", "openai-10", "ai-sdk-default", "ai-sdk-10"] as const) {
      const row = await Effect.runPromise(saturationPeer(id, limit, calls, boundMs))
      rows.push(row)
      console.error(`saturation: ${id} done in ${row.seconds.toFixed(1)} s`)
    }
    data.saturation = { limit, calls, concurrency: CONCURRENCY, boundSeconds: boundMs / 1000, rows }
  }
  if (wanted.includes("outage")) {
    const outageCalls = 1_000
    const rows: Array<OutageRow> = []
    for (
      const [name, limiter] of [["keel defaults + RateLimiter", true], [
        "keel defaults, no RateLimiter",
        false
      ]] as const
    ) {
      const keel = await Effect.runPromise(Outage.runCase(name, outageCalls, limiter, true))
      rows.push({
        contender: name,
        keel: true,
        calls: keel.calls,
        failed: keel.failed,
        unfinished: 0,
        failures: keel.failures,
        requests: keel.requests,
        // the peers' rows count arrivals at the simulator: keel's is counted the same way here
        peak: keel.peakReceived,
        peakRatio: keel.peakReceived / (CAPACITY / 10),
        overloaded: keel.overloaded,
        lastEndMs: keel.lastEndMs
      })
      console.error(`outage: ${name} done`)
    }
    for (
      const id of ["openai-default", "openai-10", "ai-sdk-default", "ai-sdk-10", "no-jitter", "full-jitter"] as const
    ) {
      rows.push(await Effect.runPromise(outagePeer(id, outageCalls, boundMs)))
      console.error(`outage: ${id} done`)
    }
    data.outage = { calls: outageCalls, capacity: CAPACITY, outageMs: OUTAGE_MS, boundSeconds: boundMs / 1000, rows }
  }
  const result = timer.finish(data)
  console.log(JSON.stringify(result.data, (k, v) => (k === "latencies" || k === "ends" ? undefined : v), 1))
}

if (process.argv[2] === "--peer") {
  await client(
    process.argv[3] as PeerId,
    process.argv[4]!,
    Number(process.argv[5]),
    Number(process.argv[6]),
    Number(process.argv[7])
  )
} else if (Path.resolve(process.argv[1] ?? "") === import.meta.filename) {
  await main().then(() => process.exit(0), (error) => {
    console.error(error)
    process.exit(1)
  })
}
