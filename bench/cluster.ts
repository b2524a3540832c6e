/**
 * Cluster: `keel run --cluster` over N generated listings (the job-scoring task, the whole pipeline)
 * on 1 and then 3 `keel worker` processes sharing Postgres (a fresh schema per configuration) and
 * Redis, each at concurrency 32, against one `keel simulate` answering after 500 ms. The work is
 * latency-bound, so the workers' items in flight, not the 2 cores, set the pace. Reported per
 * configuration: the run's own time (first message sent to last outcome in the folder, from
 * summary.json), items/s over it, the wall time of the `keel run` process, and the check that every
 * item is in the folder once. Every process runs from sources (`node --import tsx`).
 *
 *   npx tsx --conditions=@keel/source bench/cluster.ts [--count 3000] [--latency 500] [--json FILE]
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import { type ChildProcess, spawn } from "node:child_process"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Listings from "../packages/cli/src/Listings.js"
import * as Results from "./lib/results.js"

const bin = Path.resolve("packages/cli/src/bin.ts")
const task = Path.resolve("packages/cli/src/JobScoring.ts")
const nodeArgs = ["--conditions=@keel/source", "--import", "tsx"]

const keel = (args: ReadonlyArray<string>) => {
  const child = spawn(process.execPath, [...nodeArgs, bin, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, OPENAI_API_KEY: "", NO_COLOR: "1" }
  })
  let output = ""
  const keep = (chunk: unknown) => {
    output += String(chunk)
    if (output.length > 100_000) output = output.slice(-50_000)
  }
  child.stdout!.on("data", keep)
  child.stderr!.on("data", keep)
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve))
  return { child, output: () => output, exited }
}

const until = async (what: string, check: () => boolean, timeoutMs = 120_000) => {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

const freePort = () =>
  new Promise<number>((resolve) => {
    const server = Net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as Net.AddressInfo
      server.close(() => resolve(port))
    })
  })

const stop = async (processes: ReadonlyArray<{ readonly child: ChildProcess; readonly exited: Promise<unknown> }>) => {
  for (const p of processes) p.child.kill("SIGTERM")
  await Promise.all(processes.map((p) => p.exited))
}

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

const db = ManagedRuntime.make(
  PgClient.layer({ host: "127.0.0.1", port: 5432, database: "test", username: "postgres" }).pipe(Layer.orDie)
)
const query = (text: string) => db.runPromise(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(text)))

const measure = async (workers: number, count: number, latencyMs: number, simulatorUrl: string): Promise<Row> => {
  const schema = `keel_bench_cluster_${Crypto.randomBytes(4).toString("hex")}`
  await query(`CREATE SCHEMA ${schema}`)
  const postgres = `postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D${schema}`
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-bench-cluster-"))
  try {
    const input = Path.join(dir, "listings.jsonl")
    Fs.writeFileSync(input, Array.from({ length: count }, (_, i) => JSON.stringify(Listings.listing(i + 1))).join("\n"))
    const runners = []
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
    const out = Path.join(dir, "out")
    const started = performance.now()
    const run = keel(["run", "--cluster", postgres, "--task", task, "--input", input, "--out", out])
    const exitCode = await run.exited
    const wallSeconds = (performance.now() - started) / 1000
    await stop(runners)
    if (exitCode !== 0) throw new Error(`keel run exited with ${exitCode}: ${run.output()}`)
    const summary = JSON.parse(Fs.readFileSync(Path.join(out, "summary.json"), "utf8"))
    const ids = ["results.jsonl", "errors.jsonl"].flatMap((file) =>
      Fs.readFileSync(Path.join(out, file), "utf8").split("\n").filter((line) => line !== "").map((line) =>
        JSON.parse(line).id as string
      )
    )
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
    await query(`DROP SCHEMA ${schema} CASCADE`)
    Fs.rmSync(dir, { recursive: true, force: true })
  }
}

const main = async () => {
  const timer = Results.start("cluster")
  const count = Results.numberFlag("count", 3_000)
  const latencyMs = Results.numberFlag("latency", 500)
  const port = await freePort()
  const simulator = keel(["simulate", "--port", String(port), "--latency-ms", String(latencyMs)])
  await until("the simulator", () => simulator.output().includes("listening") || simulator.child.exitCode !== null)
  const url = `http://127.0.0.1:${port}/v1`
  try {
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
    await db.dispose()
  }
}

await main().then(() => process.exit(0), (error) => {
  console.error(error)
  process.exit(1)
})
