/**
 * A `keel worker` losing Postgres mid-run: one worker reaches Postgres through a TCP proxy in this
 * process, a second one directly; each calls a simulator of its own (in this process, for its request
 * counter). Once the run has stored some outcomes and the first worker has taken work, the proxy is
 * cut (every connection destroyed, no new one accepted). The cut worker stops taking work (no call
 * reaches its simulator past those in flight at the cut) and says why, without exiting; the run
 * finishes through the other worker with every item once in the folder. When the proxy is back, the
 * cut worker recovers: it takes shards again and runs items of the next run.
 *
 * The cluster runs in a database of its own (not only a schema): the runners' shard locks are
 * advisory locks, which are per database, so clusters in two schemas of one database would contend.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as Simulator from "@keel/openai/Simulator"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Scope from "effect/Scope"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Listings from "../src/Listings.js"
import { assertEachOnce, freePort, jsonLines, killAll, spawnKeel, waitFor } from "./utils/processes.js"

const task = Path.join(import.meta.dirname, "..", "src", "JobScoring.ts")

/** A TCP proxy on 127.0.0.1 to Postgres, which can be cut (every connection destroyed, the port closed) and restored. */
const makeProxy = () => {
  let server: Net.Server | undefined
  let port = 0
  const sockets = new Set<Net.Socket>()
  /** Local ports of the live connections to Postgres: pg_stat_activity's client_port of the proxied sessions. */
  const upstreamPorts = new Set<number>()
  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const next = Net.createServer((client) => {
        const upstream = Net.connect(5432, "127.0.0.1", () => upstreamPorts.add(upstream.localPort!))
        sockets.add(client)
        sockets.add(upstream)
        const close = () => {
          client.destroy()
          upstream.destroy()
          sockets.delete(client)
          sockets.delete(upstream)
          if (upstream.localPort !== undefined) upstreamPorts.delete(upstream.localPort)
        }
        for (const socket of [client, upstream]) {
          socket.on("error", close)
          socket.on("close", close)
        }
        client.pipe(upstream)
        upstream.pipe(client)
      })
      next.once("error", reject)
      next.listen(port, "127.0.0.1", () => {
        port = (next.address() as Net.AddressInfo).port
        server = next
        resolve()
      })
    })
  const cut = () =>
    new Promise<void>((resolve) => {
      const closing = server
      server = undefined
      if (closing === undefined) return resolve()
      closing.close(() => resolve())
      for (const socket of sockets) socket.destroy()
      sockets.clear()
      upstreamPorts.clear()
    })
  return { listen, cut, port: () => port, upstreamPorts: () => upstreamPorts }
}

/** A simulator in this process, for its request counter. */
const startSimulator = async () => {
  const scope = Effect.runSync(Scope.make())
  const simulator = await Effect.runPromise(
    Scope.extend(Simulator.make({ port: 0, seed: 1, latency: { baseMs: 400 } }), scope)
  )
  return {
    url: simulator.url,
    requests: async () => (await Effect.runPromise(simulator.stats)).requests,
    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

const database = `keel_pgloss_${Crypto.randomBytes(4).toString("hex")}`
const postgresUrl = (port: number) => `postgres://postgres@127.0.0.1:${port}/${database}`
const admin = ManagedRuntime.make(
  PgClient.layer({ host: "127.0.0.1", port: 5432, database: "test", username: "postgres" }).pipe(Layer.orDie)
)
const db = ManagedRuntime.make(
  PgClient.layer({ host: "127.0.0.1", port: 5432, database, username: "postgres" }).pipe(Layer.orDie)
)
const query = <A extends object>(runtime: typeof db, text: string) =>
  runtime.runPromise(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe<A>(text)))

const proxy = makeProxy()
const simulators: Array<Awaited<ReturnType<typeof startSimulator>>> = []

beforeAll(async () => {
  await query(admin, `CREATE DATABASE ${database}`)
  await proxy.listen()
  simulators.push(await startSimulator(), await startSimulator())
}, 60_000)

afterAll(async () => {
  await killAll()
  await proxy.cut()
  await Promise.all(simulators.map((simulator) => simulator.close()))
  await db.dispose()
  await query(admin, `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)
  await admin.dispose()
}, 60_000)

const CONCURRENCY = 8

const startWorker = async (postgres: string, simulatorUrl: string) => {
  const port = await freePort()
  const worker = spawnKeel(
    "worker",
    "--postgres",
    postgres,
    "--port",
    String(port),
    "--base-url",
    simulatorUrl,
    "--concurrency",
    String(CONCURRENCY)
  )
  await waitFor("a worker", () => worker.output().includes("keel: worker at") || worker.process.exitCode !== null)
  assert.strictEqual(worker.process.exitCode, null, worker.output())
  return { worker }
}

const runOn = (count: number, from: number) => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-pgloss-"))
  const input = Path.join(dir, "listings.jsonl")
  Fs.writeFileSync(
    input,
    Array.from({ length: count }, (_, i) => JSON.stringify(Listings.listing(from + i))).join("\n") + "\n"
  )
  const out = Path.join(dir, "out")
  const run = spawnKeel("run", "--cluster", postgresUrl(5432), "--task", task, "--input", input, "--out", out)
  return { out, run }
}

const stored = async () =>
  Number((await query<{ n: string }>(db, `SELECT count(*) AS n FROM keel_cluster_results`))[0]!.n)

/**
 * Shard locks held in the cluster's database by the worker behind the proxy and by the other: on
 * Postgres they are advisory locks of the runner's lock connection, told apart by its client port.
 */
const shardLocks = async () => {
  const rows = await query<{ client_port: number; n: string }>(
    admin,
    `SELECT a.client_port, count(*) AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = '${database}')
     GROUP BY a.client_port`
  )
  const proxied = proxy.upstreamPorts()
  const held = { proxied: 0, direct: 0 }
  for (const row of rows) held[proxied.has(Number(row.client_port)) ? "proxied" : "direct"] += Number(row.n)
  return held
}

describe("keel worker losing Postgres", () => {
  it(
    "stops taking work and says so, the run finishes on the other worker, and it recovers when Postgres is back",
    async () => {
      const [simulatorCut, simulatorKept] = simulators as [typeof simulators[0], typeof simulators[0]]
      const started = Date.now()
      const phases: Array<string> = []
      const phase = (name: string) => phases.push(`${name} ${((Date.now() - started) / 1000).toFixed(1)} s`)
      const [cut, kept] = await Promise.all([
        startWorker(postgresUrl(proxy.port()), simulatorCut.url),
        startWorker(postgresUrl(5432), simulatorKept.url)
      ])
      phase("workers up")
      await waitFor("both runners to hold shards", async () => {
        const held = await shardLocks()
        return held.proxied > 0 && held.direct > 0
      }, 60_000)
      phase("shards held")

      const count = 300
      const { out, run } = runOn(count, 1)
      await waitFor(
        "outcomes stored and the worker behind the proxy working",
        async () => (await stored()) >= 40 && (await simulatorCut.requests()) >= 20,
        120_000,
        async () =>
          JSON.stringify({
            stored: await stored(),
            cut: await simulatorCut.requests(),
            kept: await simulatorKept.requests(),
            locks: await shardLocks()
          }) + `\nrun:\n${run.output()}\ncut worker:\n${cut.worker.output().slice(-3000)}`
      )
      phase("cut")
      const requestsAtCut = await simulatorCut.requests()
      const storedAtCut = await stored()
      const outputAtCut = cut.worker.output().length
      await proxy.cut()
      const cutAt = Date.now()

      // The cut worker says that its store is unreachable and that it keeps trying.
      await waitFor("the cut worker to report the lost store", () => {
        const since = cut.worker.output().slice(outputAtCut)
        return /Shard lock storage is unhealthy/.test(since) && /cluster store: .* failed: .*; retrying/.test(since)
      }, 60_000)

      const reportedMs = Date.now() - cutAt

      // The run finishes through the other worker, every item once.
      assert.strictEqual(await run.exited, 0, run.output())
      const finishedMs = Date.now() - cutAt
      phase("run done")
      assertEachOnce(out, count, 1)
      assert.isTrue(jsonLines(Path.join(out, "errors.jsonl")).length === 0, "no item failed")

      // The cut worker took no work after the cut: no call reached its simulator past those in flight then.
      const requestsAfter = await simulatorCut.requests()
      const logged = cut.worker.output().slice(outputAtCut)
      if (process.env.KEEL_PGLOSS_LOG !== undefined) Fs.writeFileSync(process.env.KEEL_PGLOSS_LOG, logged)
      process.stderr.write(
        `Postgres cut after ${storedAtCut}/${count} stored, the cut worker having made ${requestsAtCut} calls; ` +
          `it reported the lost store after ${reportedMs} ms, made ${
            requestsAfter - requestsAtCut
          } calls after the cut ` +
          `and logged ${logged.split("\n").length - 1} lines; the run ended ${finishedMs} ms after the cut\n`
      )
      assert.isAtMost(requestsAfter - requestsAtCut, CONCURRENCY, "calls made by the cut worker after the cut")
      assert.strictEqual(cut.worker.process.exitCode, null, "the cut worker keeps running, waiting for Postgres")

      // Postgres back: the cut worker recovers, takes shards again and runs items of the next run.
      const outputAtRestore = cut.worker.output().length
      await proxy.listen()
      await waitFor("the cut worker to take shards again", async () => (await shardLocks()).proxied > 0, 90_000)
      assert.match(cut.worker.output().slice(outputAtRestore), /Shard lock storage has recovered/)
      phase("recovered")
      const next = runOn(60, 1_001)
      assert.strictEqual(await next.run.exited, 0, next.run.output())
      assertEachOnce(next.out, 60, 1_001)
      assert.isAbove(await simulatorCut.requests(), requestsAfter, "the recovered worker ran items again")
      phase("next run done")
      process.stderr.write(`phases: ${phases.join(", ")}\n`)

      for (const { worker } of [cut, kept]) worker.process.kill("SIGTERM")
      assert.deepStrictEqual(await Promise.all([cut.worker.exited, kept.worker.exited]), [0, 0])
    },
    300_000
  )
})
