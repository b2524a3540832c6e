/**
 * `keel worker` and `keel run --cluster` as real processes: a `keel simulate` server, three workers
 * sharing Postgres (a database of their own) and Redis, and a run over generated listings. Every item
 * ends once in the output folder, the ledger charges what calls.jsonl records, and a worker killed
 * with SIGKILL mid-run leaves its items to the others, with no item called twice but for the killed
 * worker's calls in flight, whose reservations the redo adopts (one per item in the ledger). A `keel run` killed and started again on its folder reattaches without
 * calling any item twice, nor writing any line twice. Workers refuse to start on an unreachable Postgres or Redis.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Listings from "../src/Listings.js"
import { assertEachOnce, freePort, jsonLines, killAll, spawnKeel, waitFor } from "./utils/processes.js"

const task = Path.join(import.meta.dirname, "..", "src", "JobScoring.ts")

/**
 * A database of its own, not only a schema: the runners' shard locks are advisory locks, which are per
 * database, so a cluster in another schema of the same database (another test file) would hold some of
 * our shards. Its tables are in `public`.
 */
const database = `keel_worker_test_${Crypto.randomBytes(4).toString("hex")}`
const schema = "public"
const postgresUrl = `postgres://postgres@127.0.0.1:5432/${database}`
const pg = (name: string) =>
  ManagedRuntime.make(
    PgClient.layer({ host: "127.0.0.1", port: 5432, database: name, username: "postgres" }).pipe(Layer.orDie)
  )
const admin = pg("test")
const db = pg(database)
const query = <A extends object>(text: string, runtime = db) =>
  runtime.runPromise(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe<A>(text)))

let simulatorUrl = ""

beforeAll(async () => {
  await query(`CREATE DATABASE ${database}`, admin)
  const port = await freePort()
  const simulator = spawnKeel("simulate", "--port", String(port), "--latency-ms", "300")
  await waitFor("the simulator", () => simulator.output().includes("listening") || simulator.process.exitCode !== null)
  simulatorUrl = `http://127.0.0.1:${port}/v1`
}, 60_000)

afterAll(async () => {
  await killAll()
  await db.dispose()
  await query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`, admin)
  await admin.dispose()
}, 60_000)

const startWorker = async () => {
  const port = await freePort()
  const worker = spawnKeel(
    "worker",
    "--postgres",
    postgresUrl,
    "--port",
    String(port),
    "--base-url",
    simulatorUrl,
    "--concurrency",
    "32"
  )
  await waitFor(
    "a worker",
    () => worker.output().includes("keel: worker at") || worker.process.exitCode !== null
  )
  assert.strictEqual(worker.process.exitCode, null, worker.output())
  return worker
}

const input = (count: number, from = 1) => {
  const file = Path.join(Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-cluster-in-")), "listings.jsonl")
  Fs.writeFileSync(
    file,
    Array.from({ length: count }, (_, i) => JSON.stringify(Listings.listing(from + i))).join("\n") + "\n"
  )
  return file
}

/** USD decimal string → pico-dollars, as the ledger keeps amounts. */
const pico = (usd: string) => {
  const [whole, fraction = ""] = usd.split(".")
  return BigInt(whole!) * 10n ** 12n + BigInt(fraction.padEnd(12, "0").slice(0, 12))
}

/** Reservations of the ledger by status: count and amount charged (pico-dollars). */
const ledger = async () => {
  const rows = await query<{ status: string; n: string; charged: string | null }>(
    `SELECT status, count(*) AS n, sum(charged) AS charged FROM ${schema}.keel_budget_reservations GROUP BY status`
  )
  return Object.fromEntries(rows.map((r) => [r.status, { n: Number(r.n), charged: BigInt(r.charged ?? 0) }]))
}

const runOn = (count: number, from: number) => {
  const out = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-cluster-out-"))
  const run = spawnKeel("run", "--cluster", postgresUrl, "--task", task, "--input", input(count, from), "--out", out)
  return { out, run }
}

describe("keel worker", () => {
  it("refuses to start on an unreachable Postgres or Redis, naming it, with a non-zero status", async () => {
    const closed = await freePort()
    const noPostgres = spawnKeel(
      "worker",
      "--postgres",
      `postgres://postgres@127.0.0.1:${closed}/test`,
      "--base-url",
      "http://127.0.0.1:1/v1"
    )
    const noRedis = spawnKeel(
      "worker",
      "--postgres",
      postgresUrl,
      "--redis",
      `redis://127.0.0.1:${closed}`,
      "--base-url",
      "http://127.0.0.1:1/v1"
    )
    assert.strictEqual(await noPostgres.exited, 1)
    assert.match(
      noPostgres.output(),
      new RegExp(`Postgres at postgres://postgres@127.0.0.1:${closed}/test is unreachable`)
    )
    assert.strictEqual(await noRedis.exited, 1)
    assert.match(noRedis.output(), new RegExp(`Redis at redis://127.0.0.1:${closed} is unreachable: .*ECONNREFUSED`))
  }, 60_000)

  it("three workers run 300 items, each once, and the ledger charges exactly the calls recorded", async () => {
    const workers = await Promise.all([startWorker(), startWorker(), startWorker()])
    const before = await ledger()
    const { out, run } = runOn(300, 1)
    assert.strictEqual(await run.exited, 0, run.output())
    assertEachOnce(out, 300, 1)
    const calls = jsonLines(Path.join(out, "calls.jsonl"))
    assert.strictEqual(new Set(calls.map((c) => c.callId)).size, calls.length)
    assert.strictEqual(calls.length, 300, "one call per item: each item was called once")
    const after = await ledger()
    const settled = after.settled!.n - (before.settled?.n ?? 0)
    const charged = after.settled!.charged - (before.settled?.charged ?? 0n)
    assert.strictEqual(settled, calls.length)
    assert.strictEqual(charged, calls.reduce((sum, c) => sum + pico(c.costUsd), 0n))
    assert.strictEqual(after.open?.n ?? 0, 0)
    const summary = JSON.parse(Fs.readFileSync(Path.join(out, "summary.json"), "utf8"))
    assert.strictEqual(summary.items.results + summary.items.errors, 300)
    assert.strictEqual(summary.calls.calls, 300)
    // Every worker took a share of the shards.
    const runners = await query<{ n: string }>(`SELECT count(*) AS n FROM ${schema}.keel_cluster_runners WHERE healthy`)
    assert.strictEqual(Number(runners[0]!.n), 3)

    // A submitter killed after writing outcomes and calls to the folder but before marking them collected
    // (and mid-line in calls.jsonl): the same command again writes each line once, the cut one whole.
    const { run: runId } = JSON.parse(Fs.readFileSync(Path.join(out, "cluster-run.json"), "utf8"))
    await query(`UPDATE ${schema}.keel_cluster_results SET collected = FALSE WHERE run_id = '${runId}'`)
    await query(`UPDATE ${schema}.keel_cluster_calls SET collected = FALSE WHERE run_id = '${runId}'`)
    const log = Path.join(out, "calls.jsonl")
    Fs.truncateSync(log, Fs.statSync(log).size - 40)
    const again = spawnKeel("run", "--cluster", postgresUrl, "--task", task, "--input", input(300, 1), "--out", out)
    assert.strictEqual(await again.exited, 0, again.output())
    assertEachOnce(out, 300, 1)
    const recollected = jsonLines(log)
    assert.deepStrictEqual(recollected.map((c) => c.callId).sort(), calls.map((c) => c.callId).sort())
    for (const worker of workers) worker.process.kill("SIGTERM")
    await Promise.all(workers.map((worker) => worker.exited))
  }, 180_000)

  it("a worker killed with SIGKILL mid-run: its items finish on the others, each once", async () => {
    const workers = await Promise.all([startWorker(), startWorker(), startWorker()])
    const before = await ledger()
    const from = 1_001
    const { out, run } = runOn(900, from)
    const stored = async () =>
      Number((await query<{ n: string }>(`SELECT count(*) AS n FROM ${schema}.keel_cluster_results`))[0]!.n)
    const already = await stored()
    await waitFor("a third of the run", async () => (await stored()) - already >= 300, 120_000)
    workers[0]!.process.kill("SIGKILL")
    assert.strictEqual(await run.exited, 0, run.output())
    assertEachOnce(out, 900, from)
    const calls = jsonLines(Path.join(out, "calls.jsonl"))
    assert.strictEqual(new Set(calls.map((c) => c.callId)).size, calls.length)
    assert.strictEqual(calls.length, 900, "calls.jsonl holds one call per item")
    const after = await ledger()
    const delta = (status: string) => (after[status]?.n ?? 0) - (before[status]?.n ?? 0)
    const charged = (after.settled?.charged ?? 0n) - (before.settled?.charged ?? 0n)
    process.stderr.write(
      `kill -9 run: ${calls.length} calls recorded, ${delta("settled")} settled, ${delta("open")} open, ` +
        `${delta("reclaimed")} reclaimed, ${delta("released")} released\n`
    )
    // Each worker's reservations (owned by its name, `Cluster.workerName`) against the calls recorded
    // with the outcomes it stored. A survivor calls only the items whose outcome it stores: a call of
    // an item whose shard moved is never cut off nor made again by the shard's new owner (the per-chunk
    // claim in Cluster.ts). The killed worker's calls in flight are redone by the survivors under the
    // same call keys (run/item/n), which adopt the reservations it left open (closed as adopted, their
    // amounts moved to the redo's): none is left to its lease.
    const byWorker = async (pid: number | undefined) => {
      const reservations = await query<{ status: string; n: string }>(
        `SELECT status, count(*) AS n FROM ${schema}.keel_budget_reservations WHERE owner LIKE '%#${pid}'
         GROUP BY status`
      )
      // Calls charged: a call refused before its reservation (an open breaker, say) is recorded at no cost.
      const recorded = await query<{ n: string }>(
        `SELECT count(*) AS n FROM ${schema}.keel_cluster_calls c
         JOIN ${schema}.keel_cluster_results r USING (run_id, item_id)
         WHERE r.runner LIKE '%#${pid}' AND coalesce((c.record::jsonb->>'costUsd')::numeric, 0) > 0`
      )
      const n = (status: string) => Number(reservations.find((r) => r.status === status)?.n ?? 0)
      return {
        settled: n("settled"),
        inFlight: n("open") + n("reclaimed"),
        adopted: n("adopted"),
        recorded: Number(recorded[0]!.n)
      }
    }
    const [killed, ...survivors] = await Promise.all(workers.map((worker) => byWorker(worker.process.pid)))
    for (const survivor of survivors) {
      assert.strictEqual(survivor.inFlight, 0)
      assert.strictEqual(survivor.settled, survivor.recorded, "a survivor called only the items it stored, once")
    }
    assert.strictEqual(killed!.inFlight, 0, "the killed worker's open reservations were adopted by the redo")
    // Calls the killed worker finished and settled but had not stored: their items were called again.
    const finishedUnstored = killed!.settled - killed!.recorded
    assert.isAtMost(finishedUnstored, 32, "no more than the killed worker's concurrency was in flight")
    const charges = calls.filter((c) => c.costUsd !== undefined && pico(c.costUsd) > 0n).length
    // The ledger per item of this run: one charged reservation each, but for those finished-unstored calls,
    // which the provider billed twice (two answered calls).
    const { run: runId } = JSON.parse(Fs.readFileSync(Path.join(out, "cluster-run.json"), "utf8"))
    const perItem = await query<{ reservations: string; items: string }>(
      `SELECT reservations, count(*) AS items FROM (
         SELECT regexp_replace(call_key, '/[0-9]+$', '') AS item, count(*) AS reservations
         FROM ${schema}.keel_budget_reservations
         WHERE call_key LIKE '${runId}/%' AND charged > 0 GROUP BY 1) per_item
       GROUP BY reservations ORDER BY reservations`
    )
    assert.deepStrictEqual(
      perItem.map((row) => [Number(row.reservations), Number(row.items)]),
      [[1, charges - finishedUnstored], ...(finishedUnstored > 0 ? [[2, finishedUnstored]] : [])]
    )
    const adopted = await query<{ n: string }>(
      `SELECT count(*) AS n FROM ${schema}.keel_budget_reservations WHERE call_key LIKE '${runId}/%' AND status = 'adopted'`
    )
    assert.strictEqual(delta("settled"), charges + finishedUnstored)
    assert.strictEqual(killed!.adopted, Number(adopted[0]!.n), "only the killed worker's reservations were adopted")
    assert.strictEqual(delta("open") + delta("reclaimed"), 0)
    process.stderr.write(`kill -9 run: ${adopted[0]!.n} reservations adopted, ${finishedUnstored} finished unstored\n`)
    // Every settled reservation is charged what its call recorded (an adopting call's record includes
    // the lost attempt's estimate), but the killed worker's finished-unstored ones.
    if (finishedUnstored === 0) {
      assert.strictEqual(charged, calls.reduce((sum, c) => sum + pico(c.costUsd), 0n))
    }
    for (const worker of workers.slice(1)) worker.process.kill("SIGTERM")
  }, 240_000)

  it(
    "keel run killed with SIGKILL and started again on the same --out reattaches: each item once, none called twice",
    async () => {
      const workers = await Promise.all([startWorker(), startWorker()])
      const before = await ledger()
      const from = 3_001
      const file = input(2_400, from)
      const out = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-cluster-out-"))
      const args = ["run", "--cluster", postgresUrl, "--task", task, "--input", file, "--out", out] as const
      const results = Path.join(out, "results.jsonl")
      const first = spawnKeel(...args)
      await waitFor(
        "the first outcomes in the folder",
        () => Fs.existsSync(results) && Fs.readFileSync(results, "utf8").split("\n").length > 100,
        120_000
      )
      first.process.kill("SIGKILL")
      await first.exited
      // The workers go on with the chunks already sent; the second submitter sends every chunk not yet
      // in the folder again, under the same keys, and collects what the workers stored meanwhile.
      const second = spawnKeel(...args)
      assert.strictEqual(await second.exited, 0, second.output())
      assertEachOnce(out, 2_400, from)
      const summary = JSON.parse(Fs.readFileSync(Path.join(out, "summary.json"), "utf8"))
      assert.isAbove(summary.run.skippedAsDone, 0, "the second run skipped the items already in the folder")
      const calls = jsonLines(Path.join(out, "calls.jsonl"))
      assert.strictEqual(calls.length, 2_400, "calls.jsonl holds one call per item")
      const after = await ledger()
      assert.strictEqual(after.settled!.n - (before.settled?.n ?? 0), 2_400, "each item was called once")
      assert.strictEqual(
        after.settled!.charged - (before.settled?.charged ?? 0n),
        calls.reduce((sum, c) => sum + pico(c.costUsd), 0n)
      )
      for (const worker of workers) worker.process.kill("SIGTERM")
      await Promise.all(workers.map((worker) => worker.exited))
    },
    240_000
  )
})
