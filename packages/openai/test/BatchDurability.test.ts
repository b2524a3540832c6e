/**
 * Batch runs killed with SIGKILL at each dangerous moment of a chunk's life, then run again: the
 * simulator (a process of its own) holds one batch per chunk and try, every item ends exactly once,
 * and the SQLite ledger charges each chunk once, exactly what the items' call records add up to.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import * as Sqlite from "@keel/core/Sqlite"
import * as Effect from "effect/Effect"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Readline from "node:readline"
import type { KillAt, WorkerOptions } from "./utils/batchWorker.js"

const here = Path.dirname(new URL(import.meta.url).pathname)
const nodeArgs = ["--import", "tsx", "--conditions=@keel/source"]

interface Exit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

const runWorker = (options: WorkerOptions): Promise<Exit> =>
  new Promise((resolve) => {
    const child = ChildProcess.spawn(process.execPath, [
      ...nodeArgs,
      Path.join(here, "utils/batchWorker.ts"),
      JSON.stringify(options)
    ], {
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk) => (stdout += chunk))
    child.stderr.on("data", (chunk) => (stderr += chunk))
    child.on("exit", (code, signal) => resolve({ code, signal, stdout, stderr }))
  })

interface Simulator {
  readonly url: string
  readonly batches: () => Promise<ReadonlyArray<{ readonly metadata: Record<string, string>; readonly status: string }>>
  readonly stop: () => void
}

const startSimulator = (options: object): Promise<Simulator> =>
  new Promise((resolve, reject) => {
    const child = ChildProcess.spawn(
      process.execPath,
      [...nodeArgs, Path.join(here, "utils/batchSimulator.ts"), JSON.stringify(options)],
      { stdio: ["pipe", "pipe", "inherit"] }
    )
    const lines = Readline.createInterface({ input: child.stdout })
    const waiting: Array<(line: string) => void> = []
    lines.on("line", (line) => {
      if (line.startsWith("url ")) {
        resolve({
          url: line.slice(4),
          batches: () =>
            new Promise((done) => {
              waiting.push((stats) => done(JSON.parse(stats).batches))
              child.stdin.write("stats\n")
            }),
          stop: () => child.kill("SIGKILL")
        })
      } else if (line.startsWith("stats ")) {
        waiting.shift()?.(line.slice(6))
      }
    })
    child.on("exit", (code) => reject(new Error(`simulator exited with ${code}`)))
  })

const picoOf = (usd: string): bigint => {
  const [whole, fraction = ""] = usd.split(".")
  return BigInt(whole! + fraction.padEnd(12, "0"))
}

const items = 30
const moments: ReadonlyArray<KillAt> = ["upload", "create", "poll", "download", "settle"]

describe("Batch after kill -9", () => {
  let simulator: Simulator
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-batch-kill-"))

  it("starts the simulator", async () => {
    simulator = await startSimulator({ batch: { validatingMs: 100, inProgressMs: 600, finalizingMs: 100 } })
    assert.match(simulator.url, /^http:\/\/127\.0\.0\.1:\d+\/v1$/)
  }, 60_000)

  for (const killAt of moments) {
    it(
      `killed ${
        killAt === "upload"
          ? "after an upload, before create"
          : killAt === "create"
          ? "after create, before the engine recorded it"
          : killAt === "poll"
          ? "while polling"
          : killAt === "download"
          ? "while downloading results"
          : "after the ledger settled, before the engine recorded it"
      }: the rerun ends every item once, with one batch per chunk and one charge`,
      async () => {
        const runId = `kill-${killAt}`
        const options: WorkerOptions = {
          url: simulator.url,
          engineDb: Path.join(dir, `${runId}-engine.db`),
          budgetDb: Path.join(dir, `${runId}-budget.db`),
          logPath: Path.join(dir, `${runId}-calls.jsonl`),
          items,
          maxLines: 10,
          runId,
          pollMs: 300
        }
        const killed = await runWorker({ ...options, killAt })
        assert.strictEqual(killed.signal, "SIGKILL", `the worker was not killed: ${killed.stderr}`)

        const rerun = await runWorker(options)
        assert.strictEqual(rerun.code, 0, rerun.stderr)
        const results = rerun.stdout.split("\n").filter((line) => line.startsWith("result ")).map((line) =>
          line.split(" ")
        )
        assert.strictEqual(results.length, items)
        assert.strictEqual(new Set(results.map(([, id]) => id)).size, items)
        for (const [, id, outcome] of results) assert.strictEqual(outcome, "ok", `${id} ended ${outcome}`)

        // One batch per chunk and try, every one completed.
        const batches = (await simulator.batches()).filter((batch) => batch.metadata.keel_run === runId)
        const keys = batches.map((batch) => `${batch.metadata.keel_chunk}/${batch.metadata.keel_try}`)
        assert.deepStrictEqual([...keys].sort(), ["c0/0", "c1/0", "c2/0"])
        for (const batch of batches) assert.strictEqual(batch.status, "completed")

        // The ledger: each chunk settled once, for what its items' records say they cost.
        const rows = await Effect.runPromise(
          Effect.flatMap(SqlClient.SqlClient, (sql) =>
            sql<{ id: string; status: string; charged: number | bigint }>`
              SELECT id, status, charged FROM keel_budget_reservations`).pipe(
              Effect.provide(Sqlite.layer({ filename: options.budgetDb, readonly: true }))
            )
        )
        assert.deepStrictEqual(rows.map((row) => row.id).sort(), [0, 1, 2].map((c) => `keel-batch:${runId}:c${c}`))
        for (const row of rows) assert.strictEqual(row.status, "settled")
        const charged = rows.reduce((sum, row) => sum + BigInt(row.charged), 0n)
        const records = new Map<string, bigint>()
        for (const line of Fs.readFileSync(options.logPath, "utf8").trim().split("\n")) {
          const record = JSON.parse(line)
          assert.strictEqual(record.mode, "batch")
          records.set(record.callId, picoOf(record.costUsd))
        }
        assert.strictEqual(records.size, items)
        assert.strictEqual(charged, [...records.values()].reduce((a, b) => a + b, 0n))
        assert.isAbove(Number(charged), 0)
      },
      120_000
    )
  }

  it("stops the simulator", () => {
    simulator.stop()
    Fs.rmSync(dir, { recursive: true, force: true })
  })
})
