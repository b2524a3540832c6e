/**
 * Cluster, shared limits: three `keel worker`s (concurrency 32 each, Postgres, Redis) held to one
 * budget and one provider quota. Each configuration has a Postgres database of its own.
 *
 * 1. Budget. A first run of N generated listings without a limit gives their cost (the ledger's
 *    charges); a second run of the same N items on fresh workers with `--budget-usd` = a third of it.
 *    Reported: what the ledger charged (settled + reclaimed reservations, and the counter), the limit,
 *    the overshoot max(0, spent − limit), items done and refused (BudgetExceeded in errors.jsonl), and
 *    the share of the limit used.
 * 2. Rate. A simulator allowing 3,000 requests/min (its bucket, like OpenAI's, holds a minute's worth
 *    and refills continuously; past it, 429), both tiers on one model so the whole run shares that one
 *    limit. Before the run the bench empties the simulator's bucket and keeps it empty until the
 *    workers' first call, so the limit binds from the first item. Twice: the workers told
 *    `--requests-per-minute 3000`, then learning the limit from the headers (and, with `--modes
 *    unlimited`, the same run on a simulator without a limit, for the cluster's own pace here).
 *    Reported: failed items (errors.jsonl by errorTag), 429s the simulator answered the workers,
 *    retries (calls.jsonl attempts), the busiest 10 s and the throughput against 3,000/min.
 *
 * The simulators run in this process (for their counters); the workers and `keel run --cluster` are
 * processes from sources. The rate limiter's Redis keys live in Redis database 9 (`--redis
 * redis://127.0.0.1:6379/9`), whose `keel:ratelimit:*` keys are deleted before each configuration,
 * so no other run shares the quota.
 *
 *   npx tsx --conditions=@keel/source bench/cluster-shared.ts [--count 1500] [--rate-count 2000]
 *     [--latency 50] [--rpm 3000] [--budget-only | --rate-only] [--modes configured,learned,unlimited]
 *     [--json FILE]
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Scope from "effect/Scope"
import { Redis } from "ioredis"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Listings from "../packages/cli/src/Listings.js"
import * as Simulator from "../packages/openai/src/Simulator.js"
import { freePort, keel, sleep, stop, until } from "./lib/processes.js"
import * as Results from "./lib/results.js"

const task = Path.resolve("packages/cli/src/JobScoring.ts")
const redisUrl = "redis://127.0.0.1:6379/9"

const runtimes = new Map<string, ManagedRuntime.ManagedRuntime<SqlClient.SqlClient, never>>()
const runtime = (database: string) => {
  let found = runtimes.get(database)
  if (found === undefined) {
    found = ManagedRuntime.make(
      PgClient.layer({ host: "127.0.0.1", port: 5432, database, username: "postgres" }).pipe(Layer.orDie)
    )
    runtimes.set(database, found)
  }
  return found
}
const query = <A extends object = Record<string, unknown>>(text: string, database = "test") =>
  runtime(database).runPromise(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe<A>(text)))
const disconnect = async (database: string) => {
  await runtimes.get(database)?.dispose()
  runtimes.delete(database)
}

/** A simulator in this process, for its counters. */
const startSimulator = async (options: Simulator.Options) => {
  const startedAt = Date.now()
  const scope = Effect.runSync(Scope.make())
  const simulator = await Effect.runPromise(Scope.extend(Simulator.make(options), scope))
  return {
    url: simulator.url,
    startedAt,
    stats: () => Effect.runPromise(simulator.stats),
    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

/** USD decimal string → pico-dollars, as the ledger keeps amounts. */
const pico = (usd: string) => {
  const [whole, fraction = ""] = usd.split(".")
  return BigInt(whole!) * 10n ** 12n + BigInt(fraction.padEnd(12, "0").slice(0, 12))
}
const usd = (pico: bigint) => Number(pico) / 1e12

const jsonLines = (file: string): Array<Record<string, any>> =>
  Fs.existsSync(file) ? Fs.readFileSync(file, "utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l)) : []

const countBy = (values: ReadonlyArray<string>) => {
  const counts: Record<string, number> = {}
  for (const value of values) counts[value] = (counts[value] ?? 0) + 1
  return counts
}

/**
 * A fresh database, three workers on it, and a run of `count` listings; the folder's files when done.
 * A database, not a schema: the runners' shard locks are advisory locks, which are per database, so a
 * cluster in another schema of the same database (a test, another bench) would hold some of our shards.
 */
const clusterRun = async <I extends Record<string, unknown>>(
  options: {
    readonly count: number
    readonly simulatorUrl: string
    readonly workerArgs: ReadonlyArray<string>
    /** Runs between the workers being ready and the run being started (e.g. draining the simulator). */
    readonly beforeRun?: () => Promise<void>
    /** Runs once the run has started, until it ends. */
    readonly duringRun?: () => Promise<void>
  },
  inspect: (database: string, out: string) => Promise<I>
) => {
  const database = `keel_bench_shared_${Crypto.randomBytes(4).toString("hex")}`
  await query(`CREATE DATABASE ${database}`)
  const postgres = `postgres://postgres@127.0.0.1:5432/${database}`
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-bench-shared-"))
  const workers: Array<ReturnType<typeof keel>> = []
  try {
    const input = Path.join(dir, "listings.jsonl")
    Fs.writeFileSync(
      input,
      Array.from({ length: options.count }, (_, i) => JSON.stringify(Listings.listing(i + 1))).join("\n")
    )
    for (let i = 0; i < 3; i++) {
      const port = await freePort()
      workers.push(keel([
        "worker",
        "--postgres",
        postgres,
        "--redis",
        redisUrl,
        "--port",
        String(port),
        "--base-url",
        options.simulatorUrl,
        "--concurrency",
        "32",
        ...options.workerArgs
      ]))
    }
    for (const worker of workers) {
      await until("a worker", () => worker.output().includes("keel: worker at") || worker.child.exitCode !== null)
      if (worker.child.exitCode !== null) throw new Error(`a worker exited: ${worker.output()}`)
    }
    // Let every runner see the others and take its share of the shards.
    await sleep(5_000)
    await options.beforeRun?.()
    const out = Path.join(dir, "out")
    const run = keel(["run", "--cluster", postgres, "--task", task, "--input", input, "--out", out])
    const during = options.duringRun?.()
    const exitCode = await run.exited
    await during
    await stop(workers)
    if (exitCode !== 0) throw new Error(`keel run exited with ${exitCode}: ${run.output()}`)
    const summary = JSON.parse(Fs.readFileSync(Path.join(out, "summary.json"), "utf8"))
    const results = jsonLines(Path.join(out, "results.jsonl"))
    const errors = jsonLines(Path.join(out, "errors.jsonl"))
    const calls = jsonLines(Path.join(out, "calls.jsonl"))
    const ids = [...results, ...errors].map((line) => line.id as string)
    return {
      count: options.count,
      runSeconds: summary.run.elapsedMs / 1000,
      eachOnce: ids.length === options.count && new Set(ids).size === options.count,
      results: results.length,
      errors: errors.length,
      errorTags: countBy(errors.map((e) => e.errorTag as string)),
      calls: calls.length,
      attempts: calls.reduce((sum, c) => sum + (c.attempts as number), 0),
      callsCostUsd: usd(calls.reduce((sum, c) => sum + (c.costUsd === undefined ? 0n : pico(c.costUsd)), 0n)),
      ...(await inspect(database, out))
    }
  } finally {
    await stop(workers.filter((w) => w.child.exitCode === null && w.child.signalCode === null))
    await disconnect(database)
    await query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)
    Fs.rmSync(dir, { recursive: true, force: true })
  }
}

/** The ledger: reservations by status (count, charged, reserved amount) and the counters. */
const ledger = async (database: string) => {
  const rows = await query<{ status: string; n: string; charged: string | null; amount: string | null }>(
    `SELECT status, count(*) AS n, sum(charged) AS charged, sum(amount) AS amount
     FROM keel_budget_reservations GROUP BY status`,
    database
  )
  const reservations = Object.fromEntries(
    rows.map((r) => [r.status, { n: Number(r.n), charged: BigInt(r.charged ?? 0), amount: BigInt(r.amount ?? 0) }])
  )
  const counters = await query<
    { key: string; scope: string; spent: string; reserved: string; overrun: string }
  >(
    `SELECT key, scope, CAST(spent AS TEXT) AS spent, CAST(reserved AS TEXT) AS reserved,
     CAST(overrun AS TEXT) AS overrun FROM keel_budget_counters`,
    database
  )
  const spent = (reservations.settled?.charged ?? 0n) + (reservations.reclaimed?.charged ?? 0n)
  return {
    spent,
    reservations: Object.fromEntries(
      Object.entries(reservations).map((
        [status, r]
      ) => [status, { n: r.n, chargedUsd: usd(r.charged), amountUsd: usd(r.amount) }])
    ),
    counters: counters.map((c) => ({
      key: c.key,
      spentUsd: usd(BigInt(c.spent)),
      reservedUsd: usd(BigInt(c.reserved)),
      overrunUsd: usd(BigInt(c.overrun))
    }))
  }
}

const budgetPart = async (count: number, latencyMs: number) => {
  const simulator = await startSimulator({ port: 0, seed: 1, latency: { baseMs: latencyMs } })
  try {
    const unlimited = await clusterRun(
      { count, simulatorUrl: simulator.url, workerArgs: [] },
      async (database) => {
        const l = await ledger(database)
        return {
          spentUsd: usd(l.spent),
          spentPico: String(l.spent),
          reservations: l.reservations,
          counters: l.counters
        }
      }
    )
    console.log(JSON.stringify({ budget: "unlimited", ...unlimited }))
    const cost = BigInt(unlimited.spentPico)
    // A third of the cost, rounded down to the micro-dollar (as the flag is given).
    const limitUsd = Math.floor(usd(cost) / 3 * 1e6) / 1e6
    const limit = pico(limitUsd.toFixed(6))
    const limited = await clusterRun(
      { count, simulatorUrl: simulator.url, workerArgs: ["--budget-usd", limitUsd.toFixed(6)] },
      async (database) => {
        const l = await ledger(database)
        const counter = l.counters.find((c) => c.key.includes("keel:run"))
        return {
          limitUsd,
          spentUsd: usd(l.spent),
          counterSpentUsd: counter?.spentUsd,
          overshootUsd: usd(l.spent > limit ? l.spent - limit : 0n),
          shareOfLimitUsed: Number(l.spent) / Number(limit),
          reservations: l.reservations,
          counters: l.counters
        }
      }
    )
    console.log(JSON.stringify({ budget: "limited", ...limited }))
    return { unlimited, limited }
  } finally {
    await simulator.close()
  }
}

const flushRateLimiterKeys = async () => {
  const redis = new Redis(redisUrl)
  try {
    let cursor = "0"
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", "keel:ratelimit:*", "COUNT", 1000)
      if (keys.length > 0) await redis.del(...keys)
      cursor = next
    } while (cursor !== "0")
  } finally {
    redis.disconnect()
  }
}

const model = "gpt-4o-mini"

/** The most requests that arrived in any 10 s from `fromMs` (epoch), as a rate per minute. */
const peakPerMinute = (arrivals: Simulator.Stats["arrivals"], simulatorStartedAt: number, fromMs: number) => {
  const first = Math.max(0, Math.floor((fromMs - simulatorStartedAt - arrivals.startMs) / 100))
  const counts = arrivals.counts.slice(first)
  let window = 0
  let peak = 0
  for (let i = 0; i < counts.length; i++) {
    window += counts[i]! - (i >= 100 ? counts[i - 100]! : 0)
    peak = Math.max(peak, window)
  }
  return peak * 6
}

type Mode = "configured" | "learned" | "unlimited"

const ratePart = async (count: number, latencyMs: number, RPM: number, modes: ReadonlyArray<Mode>) => {
  const rows: Array<Record<string, unknown>> = []
  for (const mode of modes) {
    // "unlimited": the same run on a simulator without a limit, for the throughput the cluster reaches here.
    const limited = mode !== "unlimited"
    const simulator = await startSimulator({
      port: 0,
      seed: 1,
      latency: { baseMs: latencyMs },
      ...(limited ? { limits: { requestsPerMinute: RPM } } : {})
    })
    try {
      await flushRateLimiterKeys()
      // The bench's own requests to empty the bucket: counted, so the workers' are told apart.
      const drain = { sent: 0, limited: 0, stop: false, loops: [] as Array<Promise<void>>, emptyAt: 0 }
      let workersFirstAt = 0
      const body = JSON.stringify({ model, messages: [{ role: "user", content: "drain" }], max_tokens: 1 })
      const loop = async () => {
        while (!drain.stop) {
          drain.sent++
          const response = await fetch(`${simulator.url}/chat/completions`, {
            method: "POST",
            headers: { "content-type": "application/json", authorization: "Bearer sk-bench" },
            body
          })
          await response.arrayBuffer()
          if (response.status === 429) {
            drain.limited++
            if (drain.emptyAt === 0) drain.emptyAt = Date.now()
            await sleep(100)
          }
        }
      }
      const row = await clusterRun({
        count,
        simulatorUrl: simulator.url,
        workerArgs: [
          "--model-simple",
          model,
          "--model-complex",
          model,
          ...(mode === "configured" ? ["--requests-per-minute", String(RPM)] : [])
        ],
        beforeRun: async () => {
          if (!limited) return
          drain.loops = Array.from({ length: 32 }, loop)
          await until("the simulator's bucket to empty", () => drain.emptyAt !== 0)
        },
        duringRun: async () => {
          // Keep the bucket empty until the workers' first call reaches the simulator.
          const deadline = Date.now() + 120_000
          while ((await simulator.stats()).requests <= drain.sent && Date.now() < deadline) await sleep(20)
          workersFirstAt = Date.now()
          drain.stop = true
          await Promise.all(drain.loops)
        }
      }, async () => {
        const stats = await simulator.stats()
        const workerRequests = stats.requests - drain.sent
        const worker429 = stats.rateLimited - drain.limited
        return {
          mode,
          rpmLimit: limited ? RPM : null,
          drainRequests: drain.sent,
          drainedMsBeforeFirstWorkerCall: limited ? workersFirstAt - drain.emptyAt : null,
          simulatorRequestsFromWorkers: workerRequests,
          simulator429sToWorkers: worker429,
          simulatorByStatus: stats.byStatus,
          peakRequestsPerMinuteOver10s: peakPerMinute(stats.arrivals, simulator.startedAt, workersFirstAt)
        }
      })
      const accepted = row.simulatorRequestsFromWorkers - row.simulator429sToWorkers
      const result = {
        ...row,
        failedItems: row.errors,
        retries: row.attempts - row.calls,
        itemsPerMinute: row.count / row.runSeconds * 60,
        acceptedRequestsPerMinute: accepted / row.runSeconds * 60,
        shareOfLimit: accepted / row.runSeconds * 60 / RPM
      }
      console.log(JSON.stringify({ rate: mode, ...result }))
      rows.push(result)
    } finally {
      await simulator.close()
    }
  }
  return rows
}

const main = async () => {
  const timer = Results.start("cluster-shared")
  const count = Results.numberFlag("count", 1_500)
  const rateCount = Results.numberFlag("rate-count", 2_000)
  const latencyMs = Results.numberFlag("latency", 50)
  try {
    const only = process.argv.includes("--rate-only") ? "rate" : process.argv.includes("--budget-only") ? "budget" : ""
    const budget = only === "rate" ? undefined : await budgetPart(count, latencyMs)
    const rpm = Results.numberFlag("rpm", 3_000)
    const modesFlag = process.argv.indexOf("--modes")
    const modes = (modesFlag >= 0 ? process.argv[modesFlag + 1]!.split(",") : ["configured", "learned"]) as Array<Mode>
    const rate = only === "budget" ? undefined : await ratePart(rateCount, latencyMs, rpm, modes)
    timer.finish({ workers: 3, concurrencyPerWorker: 32, latencyMs, budget, rate, load: Os.loadavg() })
  } finally {
    for (const database of [...runtimes.keys()]) await disconnect(database)
  }
}

await main().then(() => process.exit(0), (error) => {
  console.error(error)
  process.exit(1)
})
