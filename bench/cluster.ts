/**
 * Cluster: `keel run --cluster` over N generated listings (the job-scoring task, the whole pipeline)
 * on 1 and then 3 `keel worker` processes sharing Postgres (a fresh database per configuration) and
 * Redis, each at concurrency 32, against one `keel simulate` answering after 500 ms. The work is
 * latency-bound, so the workers' items in flight, not the 2 cores, set the pace. Reported per
 * configuration: the run's own time (first message sent to last outcome in the folder, from
 * summary.json), items/s over it, the wall time of the `keel run` process, and the check that every
 * item is in the folder once. Every process runs from sources (`node --import tsx`).
 *
 * `--kill`: one run on 3 workers instead (default 5,000 items), one of them killed with SIGKILL once a
 * third of the items are stored. Reported: the run's exit code and seconds, the items in the folder
 * (lines, unique, expected), the calls recorded, the ledger's reservations by status with their
 * amounts, the reservations adopted by a redo and the items by how many charged reservations they
 * have, and the calls beyond those recorded with an outcome, by worker (each owns its reservations
 * and is named with the outcomes it stores): the killed worker's calls in flight, and any by the
 * survivors (an item called twice by live workers).
 *
 *   npx tsx --conditions=@keel/source bench/cluster.ts [--count 3000] [--latency 500] [--kill] [--json FILE]
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Listings from "../packages/cli/src/Listings.js"
import { freePort, keel, stop, until } from "./lib/processes.js"
import * as Results from "./lib/results.js"

const task = Path.resolve("packages/cli/src/JobScoring.ts")

export interface Row {
  readonly workers: number
  readonly count: number
  readonly concurrencyPerWorker: number
  readonly latencyMs: number
  readonly exitCode: number | null
  /** first message sent to last outcome written (summary.json's elapsedMs) */
  readonly runSeconds: number
  readonly itemsPerSecond: number
  /** the `keel run` process, from spawn to exit (startup included) */
  readonly wallSeconds: number
  readonly eachOnce: boolean
  readonly results: number
  readonly errors: number
}

const pg = (database: string) =>
  ManagedRuntime.make(
    PgClient.layer({ host: "127.0.0.1", port: 5432, database, username: "postgres" }).pipe(Layer.orDie)
  )
const admin = pg("test")
const query = (text: string, runtime = admin) =>
  runtime.runPromise(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(text)))

/**
 * A fresh database, the input file and `workers` runners on it, each seen ready. A database, not a
 * schema: the runners' shard locks are advisory locks, which are per database, so a cluster in another
 * schema of the same database (a test, another bench) would hold some of our shards.
 */
const setUp = async (workers: number, count: number, simulatorUrl: string) => {
  const database = `keel_bench_cluster_${Crypto.randomBytes(4).toString("hex")}`
  await query(`CREATE DATABASE ${database}`)
  const db = pg(database)
  const postgres = `postgres://postgres@127.0.0.1:5432/${database}`
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-bench-cluster-"))
  const input = Path.join(dir, "listings.jsonl")
  Fs.writeFileSync(input, Array.from({ length: count }, (_, i) => JSON.stringify(Listings.listing(i + 1))).join("\n"))
  const runners: Array<ReturnType<typeof keel>> = []
  const tearDown = async () => {
    await stop(runners.filter((runner) => runner.child.exitCode === null && runner.child.signalCode === null))
    await db.dispose()
    await query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)
    Fs.rmSync(dir, { recursive: true, force: true })
  }
  try {
    for (let i = 0; i < workers; i++) {
      const port = await freePort()
      runners.push(keel([
        "worker",
        "--postgres",
        postgres,
        "--port",
        String(port),
        "--base-url",
        simulatorUrl,
        "--concurrency",
        "32"
      ]))
    }
    for (const runner of runners) {
      await until("a worker", () => runner.output().includes("keel: worker at") || runner.child.exitCode !== null)
      if (runner.child.exitCode !== null) throw new Error(`a worker exited: ${runner.output()}`)
    }
    // Let every runner see the others and take its share of the shards before the clock starts.
    await new Promise((resolve) => setTimeout(resolve, 5_000))
  } catch (error) {
    await tearDown()
    throw error
  }
  /** A statement in the cluster's database. */
  const inCluster = (text: string) => query(text, db)
  return { inCluster, postgres, dir, input, out: Path.join(dir, "out"), runners, tearDown }
}

/** The ids in the folder's results.jsonl and errors.jsonl. */
const outputIds = (out: string) =>
  ["results.jsonl", "errors.jsonl"].flatMap((file) =>
    Fs.existsSync(Path.join(out, file))
      ? Fs.readFileSync(Path.join(out, file), "utf8").split("\n").filter((line) => line !== "").map((line) =>
        JSON.parse(line).id as string
      )
      : []
  )

const measure = async (workers: number, count: number, latencyMs: number, simulatorUrl: string): Promise<Row> => {
  const { input, out, postgres, runners, tearDown } = await setUp(workers, count, simulatorUrl)
  try {
    const started = performance.now()
    const run = keel(["run", "--cluster", postgres, "--task", task, "--input", input, "--out", out])
    const exitCode = await run.exited
    const wallSeconds = (performance.now() - started) / 1000
    await stop(runners)
    if (exitCode !== 0) throw new Error(`keel run exited with ${exitCode}: ${run.output()}`)
    const summary = JSON.parse(Fs.readFileSync(Path.join(out, "summary.json"), "utf8"))
    const ids = outputIds(out)
    return {
      workers,
      count,
      concurrencyPerWorker: 32,
      latencyMs,
      exitCode,
      runSeconds: summary.run.elapsedMs / 1000,
      itemsPerSecond: count / (summary.run.elapsedMs / 1000),
      wallSeconds,
      eachOnce: ids.length === count && new Set(ids).size === count,
      results: summary.items.results,
      errors: summary.items.errors
    }
  } finally {
    await tearDown()
  }
}

/** Reservations of one status: how many, what they reserved and what they were charged (USD). */
export interface LedgerStatus {
  readonly n: number
  readonly reservedUsd: number
  readonly chargedUsd: number
}

export interface KillRow {
  readonly mode: "kill"
  readonly workers: number
  readonly count: number
  readonly concurrencyPerWorker: number
  readonly latencyMs: number
  /** `keel run`'s exit code: 0 when the run finished */
  readonly exitCode: number | null
  /** outcomes in the store when the worker was killed, and seconds since the run started */
  readonly killedAtStored: number
  readonly killedAtSeconds: number
  /** summary.json's elapsedMs, when the run finished */
  readonly runSeconds: number | null
  readonly wallSeconds: number
  readonly output: { readonly lines: number; readonly unique: number; readonly expected: number }
  readonly eachOnce: boolean
  /** lines of calls.jsonl (one per call whose outcome was stored) */
  readonly callsRecorded: number
  readonly ledger: Record<string, LedgerStatus>
  readonly results: number | null
  readonly errors: number | null
  readonly errorTags: Record<string, number>
  /** per worker: its reservations by status, the charged calls recorded with the outcomes it stored */
  readonly byWorker: ReadonlyArray<{
    readonly worker: "killed" | "survivor"
    readonly reservations: Record<string, number>
    readonly chargedCallsRecorded: number
    readonly extra: number
  }>
  /** reservations the killed worker left open and a redo of the same call adopted (one charge per call) */
  readonly adopted: number
  /** items by how many charged reservations the ledger holds for them: { "1": 4998, "2": 2 } */
  readonly itemsByCharges: Record<string, number>
  /** reservations (calls) beyond the calls recorded, and why */
  readonly extraCalls: {
    readonly total: number
    /**
     * the killed worker's calls with no outcome stored: its calls in flight, run again elsewhere (their
     * reservations adopted by the redo, left open or reclaimed, or settled just before the kill)
     */
    readonly killedInFlight: number
    /** the survivors' calls with no outcome stored by them (an item called twice by live workers) */
    readonly others: number
  }
}

/** errors.jsonl's lines by error tag. */
const errorTags = (out: string) => {
  const file = Path.join(out, "errors.jsonl")
  const tags: Record<string, number> = {}
  if (!Fs.existsSync(file)) return tags
  for (const line of Fs.readFileSync(file, "utf8").split("\n")) {
    if (line === "") continue
    const tag = String(JSON.parse(line).errorTag)
    tags[tag] = (tags[tag] ?? 0) + 1
  }
  return tags
}

const usd = (pico: unknown) => Number(BigInt(String(pico ?? 0))) / 1e12

const measureKill = async (count: number, latencyMs: number, simulatorUrl: string): Promise<KillRow> => {
  const workers = 3
  const { inCluster, input, out, postgres, runners, tearDown } = await setUp(workers, count, simulatorUrl)
  try {
    const stored = async () =>
      Number(((await inCluster(`SELECT count(*) AS n FROM keel_cluster_results`)) as Array<any>)[0].n)
    const started = performance.now()
    const run = keel(["run", "--cluster", postgres, "--task", task, "--input", input, "--out", out])
    let killedAtStored = 0
    while (run.child.exitCode === null) {
      killedAtStored = await stored()
      if (killedAtStored >= count / 3) break
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
    runners[0]!.child.kill("SIGKILL")
    const killedAtSeconds = (performance.now() - started) / 1000
    console.error(`killed a worker at ${killedAtStored} outcomes stored, ${killedAtSeconds.toFixed(1)} s`)
    const exitCode = await run.exited
    const wallSeconds = (performance.now() - started) / 1000
    if (exitCode !== 0) console.error(`keel run exited with ${exitCode}: ${run.output().slice(-2_000)}`)
    const summaryFile = Path.join(out, "summary.json")
    const summary = Fs.existsSync(summaryFile) ? JSON.parse(Fs.readFileSync(summaryFile, "utf8")) : undefined
    const ids = outputIds(out)
    const callsFile = Path.join(out, "calls.jsonl")
    const callsRecorded = Fs.existsSync(callsFile)
      ? Fs.readFileSync(callsFile, "utf8").split("\n").filter((line) => line !== "").length
      : 0
    const rows = (await inCluster(
      `SELECT owner, status, count(*) AS n, sum(amount) AS reserved, sum(charged) AS charged
       FROM keel_budget_reservations GROUP BY owner, status`
    )) as Array<{ owner: string; status: string; n: string; reserved: string | null; charged: string | null }>
    const ledger: Record<string, LedgerStatus> = {}
    for (const row of rows) {
      const before = ledger[row.status] ?? { n: 0, reservedUsd: 0, chargedUsd: 0 }
      ledger[row.status] = {
        n: before.n + Number(row.n),
        reservedUsd: before.reservedUsd + usd(row.reserved),
        chargedUsd: before.chargedUsd + usd(row.charged)
      }
    }
    // A worker's reservations are owned by its name, `${host}:${port}#${pid}` (Cluster.workerName), also
    // kept with each outcome it stored: its calls beyond the calls recorded with those outcomes.
    // Calls charged: a call refused before its reservation (an open breaker, say) is recorded at no cost.
    const recordedBy = (await inCluster(
      `SELECT r.runner, count(*) AS n FROM keel_cluster_calls c
       JOIN keel_cluster_results r USING (run_id, item_id)
       WHERE coalesce((c.record::jsonb->>'costUsd')::numeric, 0) > 0 GROUP BY r.runner`
    )) as Array<{ runner: string | null; n: string }>
    const byWorker = runners.map((runner, i) => {
      const mine = (owner: string | null) => owner?.endsWith(`#${runner.child.pid}`) === true
      const reservations = Object.fromEntries(
        rows.filter((row) => mine(row.owner)).map((row) => [row.status, Number(row.n)])
      )
      // Charged: settled and reclaimed; a released or adopted reservation charged nothing.
      const charged = rows.filter((row) => mine(row.owner) && (row.status === "settled" || row.status === "reclaimed"))
        .reduce((sum, row) => sum + Number(row.n), 0)
      const recorded = recordedBy.filter((row) => mine(row.runner)).reduce((sum, row) => sum + Number(row.n), 0)
      return {
        worker: i === 0 ? "killed" as const : "survivor" as const,
        reservations,
        chargedCallsRecorded: recorded,
        extra: charged - recorded
      }
    })
    const adopted = (await inCluster(
      `SELECT count(*) AS n FROM keel_budget_reservations WHERE status = 'adopted'`
    )) as Array<{ n: string }>
    const perItem = (await inCluster(
      `SELECT reservations, count(*) AS items FROM (
         SELECT regexp_replace(call_key, '/[0-9]+$', '') AS item, count(*) AS reservations
         FROM keel_budget_reservations WHERE charged > 0 GROUP BY 1) per_item
       GROUP BY reservations ORDER BY reservations`
    )) as Array<{ reservations: string; items: string }>
    const killedInFlight = byWorker[0]!.extra
    const others = byWorker.slice(1).reduce((sum, worker) => sum + worker.extra, 0)
    return {
      mode: "kill",
      workers,
      count,
      concurrencyPerWorker: 32,
      latencyMs,
      exitCode,
      killedAtStored,
      killedAtSeconds,
      runSeconds: summary === undefined ? null : summary.run.elapsedMs / 1000,
      wallSeconds,
      output: { lines: ids.length, unique: new Set(ids).size, expected: count },
      eachOnce: ids.length === count && new Set(ids).size === count,
      callsRecorded,
      ledger,
      results: summary?.items.results ?? null,
      errors: summary?.items.errors ?? null,
      errorTags: errorTags(out),
      byWorker,
      adopted: Number(adopted[0]!.n),
      itemsByCharges: Object.fromEntries(perItem.map((row) => [row.reservations, Number(row.items)])),
      extraCalls: { total: killedInFlight + others, killedInFlight, others }
    }
  } finally {
    await tearDown()
  }
}

const main = async () => {
  const kill = process.argv.includes("--kill")
  const timer = Results.start(kill ? "cluster-kill" : "cluster")
  const count = Results.numberFlag("count", kill ? 5_000 : 3_000)
  const latencyMs = Results.numberFlag("latency", 500)
  const port = await freePort()
  const simulator = keel(["simulate", "--port", String(port), "--latency-ms", String(latencyMs)])
  await until("the simulator", () => simulator.output().includes("listening") || simulator.child.exitCode !== null)
  const url = `http://127.0.0.1:${port}/v1`
  try {
    if (kill) {
      const row = await measureKill(count, latencyMs, url)
      console.log(JSON.stringify(row))
      timer.finish({ rows: [row], load: Os.loadavg() })
      return
    }
    const rows: Array<Row> = []
    for (const workers of [1, 3]) {
      const row = await measure(workers, count, latencyMs, url)
      console.log(JSON.stringify(row))
      rows.push(row)
    }
    const speedup = rows[1]!.itemsPerSecond / rows[0]!.itemsPerSecond
    const data = { rows, speedup, load: Os.loadavg() }
    timer.finish(data)
    console.log(`3 workers / 1 worker: ${speedup.toFixed(2)}×`)
  } finally {
    await stop([simulator])
    await admin.dispose()
  }
}

await main().then(() => process.exit(0), (error) => {
  console.error(error)
  process.exit(1)
})
