import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { assert, describe, it } from "@effect/vitest"
import * as Budget from "@keel/core/Budget"
import * as Pricing from "@keel/core/Pricing"
import * as Simulator from "@keel/openai/Simulator"
import * as ConfigError from "effect/ConfigError"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Schedule from "effect/Schedule"
import * as Net from "node:net"
import * as Cli from "../src/Cli.js"

const keel = (...args: Array<string>) => Cli.run(["node", "keel", ...args]).pipe(Effect.provide(NodeContext.layer))

/** Runs `keel` as the binary does, with what it prints on stdout and stderr. */
const keelMain = (...args: Array<string>) =>
  Effect.gen(function*() {
    const stdout: Array<string> = []
    const stderr: Array<string> = []
    const code = yield* Console.consoleWith((base) =>
      Cli.main(["node", "keel", ...args]).pipe(
        Effect.provide(NodeContext.layer),
        Effect.withConsole({
          ...base,
          log: (...line) => Effect.sync(() => void stdout.push(line.join(" "))),
          error: (...line) => Effect.sync(() => void stderr.push(line.join(" ")))
        })
      )
    )
    return { code, stdout: stdout.join("\n"), stderr: stderr.join("\n").trim() }
  })

const freePort = Effect.async<number>((resume) => {
  const server = Net.createServer().listen(0, "127.0.0.1", () => {
    const { port } = server.address() as Net.AddressInfo
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** A port some other server holds for the rest of the scope. */
const busyPort = Effect.acquireRelease(
  Effect.async<Net.Server>((resume) => {
    const server = Net.createServer().listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
  }),
  (server) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
).pipe(Effect.map((server) => (server.address() as Net.AddressInfo).port))

describe("keel simulate", () => {
  it.live("serves the simulator with the faults asked for", () =>
    Effect.gen(function*() {
      const port = yield* freePort
      const server = yield* Effect.fork(keel("simulate", "--port", String(port), "--faults", "503=1"))
      const response = yield* Effect.tryPromise(() =>
        fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
          method: "POST",
          headers: { authorization: "Bearer sk-any", "content-type": "application/json" },
          body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] })
        })
      ).pipe(Effect.retry(Schedule.spaced("50 millis").pipe(Schedule.upTo("10 seconds"))))
      assert.strictEqual(response.status, 503)
      yield* Fiber.interrupt(server)
    }))

  it.effect("a bad --faults value is a ValidationError that lists the valid names", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(keel("simulate", "--faults", "explode=0.5"))
      assert.isTrue(ValidationError.isValidationError(error) && ValidationError.isInvalidValue(error))
      assert.match(JSON.stringify(error), /unknown fault \\"explode\\".*rate_limit/)
    }))

  it.effect("the outage, batch line fault and model flags are checked, naming the flag", () =>
    Effect.gen(function*() {
      const outage = yield* Effect.flip(keel("simulate", "--outage", "5000"))
      assert.match(JSON.stringify(outage), /--outage 5000: expected atMs:durationMs\[:status\]/)
      const status = yield* Effect.flip(keel("simulate", "--outage", "0:100:418"))
      assert.match(JSON.stringify(status), /--outage 0:100:418/)
      const line = yield* Effect.flip(keel("simulate", "--batch-line-faults", "explode=0.1"))
      assert.match(JSON.stringify(line), /unknown line fault \\"explode\\"/)
    }))

  it.effect("a non-positive --rpm is refused", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(keel("simulate", "--rpm", "0"))
      assert.match(JSON.stringify(error), /--rpm must be a positive integer/)
    }))
})

describe("keel's exit status and messages", () => {
  it.effect("a value that is not a number names its flag, on stderr only, with status 2", () =>
    Effect.gen(function*() {
      for (const args of [["--port", "notaport"], ["--port=notaport"]]) {
        const { code, stderr, stdout } = yield* keelMain("simulate", ...args)
        assert.strictEqual(code, 2)
        assert.strictEqual(stderr, "--port: 'notaport' is not an integer")
        assert.strictEqual(stdout, "")
      }
    }))

  it.effect("a port out of range and a negative latency are refused before starting, naming the flag", () =>
    Effect.gen(function*() {
      const port = yield* keelMain("simulate", "--port", "99999")
      assert.strictEqual(port.code, 2)
      assert.match(port.stderr, /^--port must be a TCP port in 0\.\.65535.*got 99999$/)
      const latency = yield* keelMain("simulate", "--latency-ms", "-5")
      assert.strictEqual(latency.code, 2)
      assert.strictEqual(latency.stderr, "--latency-ms must be a non-negative integer, got -5")
      assert.strictEqual(port.stdout + latency.stdout, "")
    }))

  it.live("a port in use is one line saying so and what to do, with status 2", () =>
    Effect.gen(function*() {
      const port = yield* busyPort
      const { code, stderr, stdout } = yield* keelMain("simulate", "--port", String(port))
      assert.strictEqual(code, 2)
      assert.strictEqual(
        stderr,
        `keel: --port ${port}: 127.0.0.1:${port} is already in use; choose another port (0 picks a free one)`
      )
      assert.strictEqual(stdout, "")
    }).pipe(Effect.scoped))

  it("configuration errors of every kind give status 2; other failures do not", () => {
    const configuration = [
      ConfigError.MissingData(["OPENAI_API_KEY"], "Expected OPENAI_API_KEY to exist"),
      new Budget.BudgetConfigError({ field: "limits[0].limit", reason: "must not be negative" }),
      new Pricing.PricingConfigError({ field: "gpt-4.1.input", reason: "not a number" }),
      new Simulator.StartError({ reason: "latency.baseMs must be ≥ 0" }),
      new Cli.UsageError({ message: "--port 80: in use" })
    ]
    for (const error of configuration) assert.isTrue(Cli.isConfigurationError(error), String(error))
    assert.isFalse(Cli.isConfigurationError(new Error("socket hang up")))
    assert.isFalse(Cli.isConfigurationError({ _tag: "BudgetConfigError" }))
  })

  it.effect("--help shows usage as `keel simulate`, the defaults, and no colour codes when not on a terminal", () =>
    Effect.gen(function*() {
      const { code, stderr, stdout } = yield* keelMain("simulate", "--help")
      assert.strictEqual(code, 0)
      assert.strictEqual(stderr, "")
      assert.notInclude(stdout, "\u001b[")
      assert.match(stdout, /^keel simulate \[--port integer\] \[--seed integer\]/m)
      assert.notMatch(stdout, /^\$ /m)
      for (const shown of ["default 8787", "default 0", "default no limit", "default none"]) {
        assert.include(stdout, shown)
      }
    }))
})
