/**
 * `keel demo` and `keel run` against the in-process simulator: every item ends once, in results or
 * errors; a rerun resumes without calling again; bad input is named; errors no call can escape stop
 * the run; `keel report` writes an HTML page with charts.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { assert, describe, it } from "@effect/vitest"
import * as Simulator from "@keel/openai/Simulator"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Cli from "../src/Cli.js"
import * as Listings from "../src/Listings.js"

const keel = (env: Record<string, string>, ...args: Array<string>) =>
  Effect.gen(function*() {
    const stdout: Array<string> = []
    const stderr: Array<string> = []
    const code = yield* Console.consoleWith((base) =>
      Cli.main(["node", "keel", ...args]).pipe(
        Effect.provide(NodeContext.layer),
        Effect.withConfigProvider(ConfigProvider.fromJson(env)),
        Effect.withConsole({
          ...base,
          log: (...line) => Effect.sync(() => void stdout.push(line.join(" "))),
          error: (...line) => Effect.sync(() => void stderr.push(line.join(" ")))
        })
      )
    )
    return { code, stdout: stdout.join("\n"), stderr: stderr.join("\n") }
  })

const tmp = () => Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-run-"))
const jsonLines = (file: string): Array<Record<string, any>> =>
  Fs.existsSync(file) ? Fs.readFileSync(file, "utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l)) : []
const ids = (out: string) => [
  ...jsonLines(Path.join(out, "results.jsonl")).map((r) => r.id as string),
  ...jsonLines(Path.join(out, "errors.jsonl")).map((e) => (e.id ?? `line:${e.line}`) as string)
]

describe("keel demo", () => {
  it.live("scores every listing once, and the summary's counts match calls.jsonl", () =>
    Effect.gen(function*() {
      const out = tmp()
      const { code, stdout } = yield* keel(
        {},
        "demo",
        "--count",
        "40",
        "--out",
        out,
        "--faults",
        "rate_limit=0.1,500=0.05,invalid_output=0.05"
      )
      assert.strictEqual(code, 0)
      const all = ids(out)
      assert.strictEqual(all.length, 40)
      assert.strictEqual(new Set(all).size, 40)
      const calls = jsonLines(Path.join(out, "calls.jsonl"))
      const summary = JSON.parse(Fs.readFileSync(Path.join(out, "summary.json"), "utf8"))
      assert.strictEqual(summary.calls.calls, calls.length)
      assert.strictEqual(summary.calls.failed, calls.filter((c) => c.outcome === "error").length)
      assert.strictEqual(summary.calls.retries, calls.reduce((n, c) => n + c.attempts - 1, 0))
      assert.match(stdout, /routing saved \$/)
      assert.match(stdout, /latency {4}p50/)

      const again = yield* keel({}, "demo", "--count", "40", "--out", out)
      assert.strictEqual(again.code, 0)
      assert.match(again.stdout, /40 skipped \(already done\)/)
      assert.strictEqual(jsonLines(Path.join(out, "calls.jsonl")).length, calls.length, "a rerun calls nothing again")
    }), { timeout: 60_000 })

  it("the committed sample is the generator's first 1,000 listings", () => {
    const sample = Fs.readFileSync(Path.join(import.meta.dirname, "../../../examples/listings-1000.jsonl"), "utf8")
    const generated = Array.from({ length: 1000 }, (_, i) => JSON.stringify(Listings.listing(i + 1))).join("\n") + "\n"
    assert.strictEqual(sample, generated)
    assert.isTrue(sample.includes("<li>") && /\p{Extended_Pictographic}/u.test(sample))
  })
})

describe("keel run: bad input", () => {
  const task = Path.join(import.meta.dirname, "../src/JobScoring.ts")

  it.live("a malformed line goes to errors.jsonl with its number, and the rest run", () =>
    Effect.gen(function*() {
      const out = tmp()
      const input = Path.join(out, "in.jsonl")
      const lines = [1, 2, 3].map((i) => JSON.stringify(Listings.listing(i)))
      Fs.writeFileSync(
        input,
        [lines[0], "{not json", lines[1], JSON.stringify({ id: "x" }), lines[2]].join("\n") + "\n"
      )
      const { code } = yield* keel({}, "run", "--task", task, "--input", input, "--out", Path.join(out, "o"))
      assert.strictEqual(code, 0)
      const errors = jsonLines(Path.join(out, "o", "errors.jsonl"))
      assert.deepStrictEqual(errors.map((e) => [e.line, e.errorTag]), [[2, "InputInvalid"], [4, "InputInvalid"]])
      assert.match(errors[1]!.message, /line 4: .*title/)
      assert.strictEqual(jsonLines(Path.join(out, "o", "results.jsonl")).length, 3)
    }), { timeout: 60_000 })

  it.effect("a missing input file, an unknown flag or an invalid value exit 2 naming it", () =>
    Effect.gen(function*() {
      const out = tmp()
      const missing = yield* keel({}, "run", "--task", task, "--input", "/nonexistent/in.jsonl", "--out", out)
      assert.strictEqual(missing.code, 2)
      assert.match(missing.stderr, /--input \/nonexistent\/in\.jsonl: no such file/)
      const unknown = yield* keel({}, "demo", "--cuont", "3")
      assert.strictEqual(unknown.code, 2)
      assert.match(unknown.stderr, /--cuont/)
      const mode = yield* keel({}, "demo", "--mode", "fast")
      assert.strictEqual(mode.code, 2)
      assert.match(mode.stderr, /--mode must be sync, batch or auto, got fast/)
      const concurrency = yield* keel({}, "demo", "--concurrency", "0")
      assert.strictEqual(concurrency.code, 2)
      assert.match(concurrency.stderr, /--concurrency must be an integer from 1 to 1024/)
      const rate = yield* keel({}, "demo", "--requests-per-minute", "0")
      assert.strictEqual(rate.code, 2)
      assert.match(rate.stderr, /--requests-per-minute must be a positive integer, got 0/)
      const redis = yield* keel({}, "demo", "--redis", "127.0.0.1:6379")
      assert.strictEqual(redis.code, 2)
      assert.match(redis.stderr, /--redis must be a redis:\/\/ URL/)
      // A password on the command line shows in process lists and would be kept in run.json.
      const password = yield* keel({}, "demo", "--redis", "redis://:hunter2@127.0.0.1:6379")
      assert.strictEqual(password.code, 2)
      assert.match(password.stderr, /--redis must not hold a password: set it in KEEL_REDIS_PASSWORD/)
      assert.notInclude(password.stderr, "hunter2")
      const badTask = yield* keel({}, "run", "--task", "./nope.ts", "--input", "/etc/hostname", "--out", out)
      assert.strictEqual(badTask.code, 2)
      assert.match(badTask.stderr, /--task \.\/nope\.ts: cannot import it/)
    }))

  it.effect("an --out that cannot be written is reported with status 2", () =>
    Effect.gen(function*() {
      const file = Path.join(tmp(), "a-file")
      Fs.writeFileSync(file, "")
      const { code, stderr } = yield* keel({}, "demo", "--count", "2", "--out", Path.join(file, "out"))
      assert.strictEqual(code, 2)
      assert.match(stderr, /--out .*a-file\/out: cannot write there/)
    }))

  it.live("an invalid OPENAI_API_KEY stops the run at the first AuthenticationFailed", () =>
    Effect.gen(function*() {
      const simulator = yield* Simulator.make({ apiKey: "sk-right" })
      const out = tmp()
      const { code, stderr } = yield* keel(
        { OPENAI_API_KEY: "sk-wrong" },
        "demo",
        "--count",
        "50",
        "--concurrency",
        "1",
        "--out",
        out,
        "--base-url",
        simulator.url
      )
      assert.strictEqual(code, 1)
      assert.match(stderr, /the run stopped: AuthenticationFailed/)
      assert.notInclude(stderr, "sk-wrong")
      assert.strictEqual(jsonLines(Path.join(out, "calls.jsonl")).length, 1)
      assert.deepStrictEqual(ids(out), [], "the stopped item is left for the next run")
    }).pipe(Effect.scoped), { timeout: 60_000 })

  it.live("QuotaExhausted stops new calls at once and says why", () =>
    Effect.gen(function*() {
      const out = tmp()
      const { code, stderr } = yield* keel(
        {},
        "demo",
        "--count",
        "50",
        "--concurrency",
        "2",
        "--out",
        out,
        "--faults",
        "quota=1"
      )
      assert.strictEqual(code, 1)
      assert.match(stderr, /the run stopped: QuotaExhausted/)
      assert.isAtMost(jsonLines(Path.join(out, "calls.jsonl")).length, 4)
    }), { timeout: 60_000 })
})

describe("keel demo --mode batch and keel budget", () => {
  it.live(
    "batch mode ends every listing once at batch prices; budget show reads the folder's ledger",
    () =>
      Effect.gen(function*() {
        const out = tmp()
        const { code, stdout } = yield* keel({}, "demo", "--count", "12", "--mode", "batch", "--out", out)
        assert.strictEqual(code, 0)
        assert.strictEqual(new Set(ids(out)).size, 12)
        assert.strictEqual(ids(out).length, 12)
        const calls = jsonLines(Path.join(out, "calls.jsonl"))
        assert.isTrue(calls.length > 0 && calls.every((c) => c.mode === "batch" && typeof c.batchId === "string"))
        assert.match(stdout, /batch prices saved \$/)
        const budget = yield* keel({}, "budget", "show", "--out", out)
        assert.strictEqual(budget.code, 0)
        assert.match(budget.stdout, /keel:demo .* spent \$0\.\d+/)
        const noLedger = yield* keel({}, "budget", "show", "--out", tmp())
        assert.strictEqual(noLedger.code, 2)
        assert.match(noLedger.stderr, /no ledger there/)
      }),
    { timeout: 120_000 }
  )
})

describe("keel demo --budget-usd", () => {
  it.live(
    "the run stops when the scope's budget cannot take another call, and never overspends",
    () =>
      Effect.gen(function*() {
        const out = tmp()
        const { code, stderr } = yield* keel(
          {},
          "demo",
          "--count",
          "60",
          "--budget-usd",
          "0.01",
          "--concurrency",
          "2",
          "--out",
          out
        )
        assert.strictEqual(code, 1)
        assert.match(stderr, /the run stopped: BudgetExceeded/)
        const spent = jsonLines(Path.join(out, "calls.jsonl")).reduce((n, c) => n + Number(c.costUsd ?? 0), 0)
        assert.isAbove(spent, 0)
        assert.isAtMost(spent, 0.01)
        assert.isBelow(ids(out).length, 60)
      }),
    { timeout: 60_000 }
  )
})

describe("keel demo under a provider's rate limit", () => {
  it.live(
    "learns the limit from the x-ratelimit headers: no call fails and few requests are answered 429",
    () =>
      Effect.gen(function*() {
        // 240 requests/min (4 per second), its bucket already emptied by another client.
        const simulator = yield* Simulator.make({ limits: { requestsPerMinute: 240 }, seed: 3 })
        const body = JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] })
        for (let status = 200; status !== 429;) {
          status = yield* Effect.promise(() =>
            fetch(`${simulator.url}/chat/completions`, {
              method: "POST",
              headers: { authorization: "Bearer sk-other", "content-type": "application/json" },
              body
            }).then(async (response) => {
              await response.arrayBuffer()
              return response.status
            })
          )
        }
        const drained = yield* simulator.stats
        const out = tmp()
        const { code, stdout } = yield* keel(
          { OPENAI_API_KEY: "sk-test" },
          "demo",
          "--count",
          "24",
          "--concurrency",
          "16",
          "--model-complex",
          "gpt-4o-mini",
          "--base-url",
          simulator.url,
          "--out",
          out
        )
        assert.strictEqual(code, 0)
        const summary = JSON.parse(Fs.readFileSync(Path.join(out, "summary.json"), "utf8"))
        assert.strictEqual(summary.calls.failed, 0)
        assert.strictEqual(jsonLines(Path.join(out, "results.jsonl")).length, 24)
        assert.match(stdout, /failures {3}none/)
        const stats = yield* simulator.stats
        const requests = stats.requests - drained.requests
        const answered429 = stats.rateLimited - drained.rateLimited
        const calls = jsonLines(Path.join(out, "calls.jsonl"))
        assert.strictEqual(requests, calls.reduce((n, c) => n + c.attempts, 0), "every request is in calls.jsonl")
        assert.isAtMost(answered429 / requests, 0.1, `${answered429} of ${requests} requests were answered 429`)
      }).pipe(Effect.scoped),
    { timeout: 60_000 }
  )
})

describe("keel report", () => {
  it.live("prints tables and writes a self-contained HTML page with SVG charts", () =>
    Effect.gen(function*() {
      const out = tmp()
      assert.strictEqual((yield* keel({}, "demo", "--count", "20", "--out", out)).code, 0)
      const html = Path.join(out, "report.html")
      const { code, stdout } = yield* keel({}, "report", Path.join(out, "calls.jsonl"), "--html", html)
      assert.strictEqual(code, 0)
      assert.match(stdout, /model\s+calls\s+failed/)
      const page = Fs.readFileSync(html, "utf8")
      assert.isAtLeast(page.match(/<svg/g)?.length ?? 0, 4)
      assert.notMatch(page, /<script|https?:\/\//)
      const missing = yield* keel({}, "report", Path.join(out, "nope.jsonl"))
      assert.strictEqual(missing.code, 2)
      assert.match(missing.stderr, /nope\.jsonl: no such file/)
    }), { timeout: 60_000 })
})
