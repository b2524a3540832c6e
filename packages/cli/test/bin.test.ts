/**
 * `keel` as a real process (the binary's source under tsx): the simulate flags take effect, start-up
 * errors exit 2 with one line on stderr, SIGTERM stops it cleanly, and a demo run stopped by Ctrl-C
 * or killed outright resumes with every listing once.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import * as Money from "@keel/core/Money"
import * as Sqlite from "@keel/core/Sqlite"
import * as Simulator from "@keel/openai/Simulator"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"

const repo = Path.join(import.meta.dirname, "..", "..", "..")
const bin = Path.join(repo, "packages", "cli", "src", "bin.ts")

interface Keel {
  readonly process: ChildProcess.ChildProcess
  readonly stdout: () => string
  readonly stderr: () => string
  readonly exited: Effect.Effect<number | null>
}

/** Starts `keel` with the given arguments; the process is killed when the scope closes. */
const spawnKeel = (...args: Array<string>) =>
  Effect.acquireRelease(
    Effect.sync((): Keel => {
      const child = ChildProcess.spawn(
        process.execPath,
        ["--import", "tsx", "--conditions=@keel/source", bin, ...args],
        {
          cwd: repo,
          stdio: ["ignore", "pipe", "pipe"]
        }
      )
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (chunk) => (stdout += chunk))
      child.stderr.on("data", (chunk) => (stderr += chunk))
      const exit = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
      return { process: child, stdout: () => stdout, stderr: () => stderr, exited: Effect.promise(() => exit) }
    }),
    (keel) => Effect.sync(() => keel.process.kill("SIGKILL"))
  )

const freePort = Effect.async<number>((resume) => {
  const server = Net.createServer().listen(0, "127.0.0.1", () => {
    const { port } = server.address() as Net.AddressInfo
    server.close(() => resume(Effect.succeed(port)))
  })
})

const chat = (port: number, content: string) =>
  Effect.gen(function*() {
    const started = Date.now()
    const response = yield* Effect.promise(() =>
      fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: "Bearer sk-any", "content-type": "application/json" },
        body: JSON.stringify({ model: "gpt-4o-mini", max_tokens: 20, messages: [{ role: "user", content }] })
      })
    )
    const body = yield* Effect.promise(() => response.json() as Promise<Record<string, any>>)
    return { status: response.status, headers: response.headers, body, elapsedMs: Date.now() - started }
  })

/** What a simulator started in this process with the given seed answers to `content`. */
const answerWithSeed = (seed: number, content: string) =>
  Effect.gen(function*() {
    const simulator = yield* Simulator.make({ seed })
    const { body } = yield* chat(simulator.port, content)
    return body.choices[0].message.content as string
  }).pipe(Effect.scoped)

const waitUntilListening = (keel: Keel) =>
  Effect.suspend(() =>
    keel.stdout().includes("listening on") ? Effect.void : Effect.fail(new Error(`not listening: ${keel.stderr()}`))
  ).pipe(Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo("30 seconds"))))

describe("the keel binary", () => {
  it.live(
    "keel simulate --seed, --rpm, --tpm and --latency-ms take effect; SIGTERM stops it with status 0",
    () =>
      Effect.gen(function*() {
        const port = yield* freePort
        const keel = yield* spawnKeel(
          "simulate",
          "--port",
          String(port),
          "--seed",
          "5",
          "--rpm",
          "2",
          "--tpm",
          "1000",
          "--latency-ms",
          "300"
        )
        yield* waitUntilListening(keel)

        const first = yield* chat(port, "Say hello")
        assert.strictEqual(first.status, 200)
        assert.isAtLeast(first.elapsedMs, 300, "--latency-ms 300 delays every answer")
        assert.strictEqual(first.headers.get("x-ratelimit-limit-requests"), "2")
        assert.strictEqual(first.headers.get("x-ratelimit-limit-tokens"), "1000")
        const content = first.body.choices[0].message.content
        assert.strictEqual(content, yield* answerWithSeed(5, "Say hello"), "--seed 5 answers as seed 5 does")
        assert.notStrictEqual(content, yield* answerWithSeed(0, "Say hello"), "and not as the default seed")

        const tooLarge = yield* chat(port, "word ".repeat(2_000))
        assert.strictEqual(tooLarge.status, 429)
        assert.match(tooLarge.body.error.message, /tokens per min \(TPM\): Limit 1000/)

        const second = yield* chat(port, "Say hello")
        assert.strictEqual(second.status, 200)
        const third = yield* chat(port, "Say hello")
        assert.strictEqual(third.status, 429)
        assert.match(third.body.error.message, /requests per min \(RPM\): Limit 2/)

        keel.process.kill("SIGTERM")
        assert.strictEqual(yield* keel.exited, 0)
      }).pipe(Effect.scoped),
    { timeout: 120_000 }
  )

  it.live("a start-up error is one line on stderr, nothing on stdout, status 2", () =>
    Effect.gen(function*() {
      const keel = yield* spawnKeel("simulate", "--port", "notaport")
      assert.strictEqual(yield* keel.exited, 2)
      assert.strictEqual(keel.stderr().trim(), "--port: 'notaport' is not an integer")
      assert.strictEqual(keel.stdout(), "")
    }).pipe(Effect.scoped), { timeout: 120_000 })

  it.live(
    "--help on a pipe has no colour codes and shows `keel simulate` with its defaults",
    () =>
      Effect.gen(function*() {
        const keel = yield* spawnKeel("simulate", "--help")
        assert.strictEqual(yield* keel.exited, 0)
        assert.notInclude(keel.stdout(), "\u001b[")
        assert.match(keel.stdout(), /^keel simulate \[--port integer\]/m)
        assert.include(keel.stdout(), "(default 8787; 0 picks a free one)")
      }).pipe(Effect.scoped),
    { timeout: 120_000 }
  )

  it.live(
    "keel run --task takes a path relative to the working directory without ./, as the README writes it",
    () =>
      Effect.gen(function*() {
        const out = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-bin-"))
        const input = Path.join(out, "in.jsonl")
        Fs.writeFileSync(
          input,
          Fs.readFileSync(Path.join(repo, "examples/listings-1000.jsonl"), "utf8").split("\n").slice(0, 3).join("\n")
        )
        const keel = yield* spawnKeel("run", "--task", "packages/cli/src/JobScoring.ts", "--input", input, "--out", out)
        assert.strictEqual(yield* keel.exited, 0, keel.stderr())
        assert.strictEqual(lines(Path.join(out, "results.jsonl")).length, 3)
      }).pipe(Effect.scoped),
    { timeout: 120_000 }
  )

  const lines = (file: string): Array<Record<string, any>> =>
    Fs.existsSync(file)
      ? Fs.readFileSync(file, "utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l))
      : []
  const ended = (out: string) => [
    ...lines(Path.join(out, "results.jsonl")).map((r) => r.id as string),
    ...lines(Path.join(out, "errors.jsonl")).map((e) => e.id as string)
  ]
  const someDone = (out: string, n: number) =>
    Effect.suspend(() => ended(out).length >= n ? Effect.void : Effect.fail(new Error("not yet"))).pipe(
      Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo("90 seconds")))
    )

  it.live(
    "Ctrl-C stops taking listings, lets the calls in flight end and writes the summary; kill -9 loses nothing; reruns finish every listing once",
    () =>
      Effect.gen(function*() {
        const out = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-bin-"))
        const args = ["demo", "--count", "120", "--concurrency", "4", "--out", out]

        const interrupted = yield* spawnKeel(...args)
        yield* someDone(out, 8)
        interrupted.process.kill("SIGINT")
        yield* interrupted.exited
        assert.match(interrupted.stderr(), /stopping: no new items/)
        const summary = JSON.parse(Fs.readFileSync(Path.join(out, "summary.json"), "utf8"))
        assert.match(summary.run.stopped, /interrupted/)
        const afterStop = ended(out).length
        assert.isBelow(afterStop, 120)
        assert.strictEqual(summary.items.results + summary.items.errors, afterStop)

        const killed = yield* spawnKeel(...args)
        yield* someDone(out, afterStop + 8)
        killed.process.kill("SIGKILL")
        yield* killed.exited

        const last = yield* spawnKeel(...args)
        assert.strictEqual(yield* last.exited, 0)
        const all = ended(out)
        assert.strictEqual(all.length, 120)
        assert.strictEqual(new Set(all).size, 120)

        // The folder's ledger: the calls the killed run had in flight were adopted by their redo, not
        // left open to their lease, and every charge is a call recorded in calls.jsonl.
        const ledger = yield* Effect.flatMap(SqlClient.SqlClient, (sql) =>
          sql<{ status: string; n: number; charged: string | null }>`SELECT status, count(*) AS n,
            CAST(sum(charged) AS TEXT) AS charged FROM keel_budget_reservations GROUP BY status`).pipe(
            Effect.provide(Sqlite.layer({ filename: Path.join(out, "ledger.sqlite") })),
            Effect.orDie
          )
        const byStatus = Object.fromEntries(ledger.map((row) => [row.status, row]))
        assert.strictEqual(byStatus.open, undefined, JSON.stringify(ledger))
        const charged = lines(Path.join(out, "calls.jsonl")).filter((call) =>
          Number(call.costUsd ?? 0) > 0
        )
        assert.strictEqual(Number(byStatus.settled?.n ?? 0), charged.length)
        assert.strictEqual(
          BigInt(byStatus.settled?.charged ?? 0),
          charged.reduce((sum, call) => sum + Money.unsafeParse(call.costUsd), 0n)
        )
      }).pipe(Effect.scoped),
    { timeout: 240_000 }
  )
})
