import { assert, describe, it } from "@effect/vitest"
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as HashMap from "effect/HashMap"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as CallLog from "../src/CallLog.js"
import * as JsonLines from "../src/CallLog/JsonLines.js"
import * as CallRecord from "../src/CallRecord.js"

const record = (i: number, outcome: "ok" | "error" = "ok"): CallRecord.CallRecord => ({
  ts: "2026-11-29T05:00:00.000Z",
  callId: `call-${i}`,
  scope: "run:1",
  route: { reason: "request" },
  provider: "openai",
  model: "gpt-4o-mini",
  mode: "sync",
  promptHash: `sha256:${"a".repeat(64)}`,
  attempts: 1,
  latencyMs: 12.5,
  inputTokens: 10,
  cachedInputTokens: 0,
  outputTokens: 5,
  reasoningTokens: 0,
  costUsd: "0.0000045",
  outcome,
  ...(outcome === "error" ? { errorTag: "Timeout", errorMessage: "The attempt timed out after 1m" } : {})
})

interface Logged {
  readonly level: LogLevel.LogLevel
  readonly message: string
  readonly annotations: Record<string, unknown>
}

/** Runs `self` with a logger that keeps every line (the layer's finalizers included). */
const withCapturedLogs = <A, E>(self: Effect.Effect<A, E>) => {
  const logs: Array<Logged> = []
  const logger = Logger.make<unknown, void>(({ annotations, logLevel, message }) => {
    logs.push({
      level: logLevel,
      message: (Array.isArray(message) ? message : [message]).map(String).join(" "),
      annotations: Object.fromEntries(HashMap.toEntries(annotations))
    })
  })
  return Effect.map(
    Effect.provide(self, Logger.replace(Logger.defaultLogger, logger)),
    (a) => ({ result: a, logs })
  )
}

const tempDir = () => Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-calllog-"))

const writeAll = (records: ReadonlyArray<CallRecord.CallRecord>) =>
  Effect.forEach(records, CallLog.write, { discard: true })

describe("CallLog", () => {
  it.effect("without a layer it writes nowhere and says so", () =>
    Effect.gen(function*() {
      const log = yield* CallLog.CallLog
      assert.isFalse(log.enabled)
      yield* CallLog.write(record(1))
    }))

  it.effect("writes every record to every sink", () =>
    Effect.gen(function*() {
      const a = CallLog.memory()
      const b = CallLog.memory()
      yield* writeAll([record(1), record(2, "error")]).pipe(
        Effect.provide(CallLog.layer({ sinks: [a.sink, Effect.succeed(b.sink)] }))
      )
      assert.deepStrictEqual(a.records.map((r) => r.callId), ["call-1", "call-2"])
      assert.deepStrictEqual(b.records, a.records)
    }))

  it.effect("a sink failing mid-run is reported once, the others go on, and lost records are counted at close", () =>
    Effect.gen(function*() {
      const kept = CallLog.memory()
      let n = 0
      const flaky: CallLog.Sink = {
        name: "flaky",
        write: () => ++n > 2 ? Effect.fail(new CallLog.SinkError({ sink: "flaky", reason: "ENOSPC" })) : Effect.void
      }
      const { logs, result: stats } = yield* withCapturedLogs(
        Effect.scoped(Effect.gen(function*() {
          const log = yield* CallLog.make({ sinks: [flaky, kept.sink] })
          for (let i = 0; i < 10; i++) yield* log.write(record(i))
          return yield* log.stats
        }))
      )
      assert.strictEqual(kept.records.length, 10)
      assert.deepStrictEqual(stats, [{ sink: "flaky", written: 2, lost: 8 }, { sink: "memory", written: 10, lost: 0 }])
      const warnings = logs.filter((l) => l.level === LogLevel.Warning)
      assert.strictEqual(warnings.length, 2, JSON.stringify(warnings))
      assert.include(warnings[0]!.message, "Call log sink flaky failed")
      assert.include(warnings[1]!.message, "flaky lost 8 of 10 records")
    }))

  it.effect("the logger sink logs each record with its fields as annotations", () =>
    Effect.gen(function*() {
      const { logs } = yield* withCapturedLogs(
        writeAll([record(1), record(2, "error")]).pipe(
          Effect.provide(CallLog.layer({ sinks: [CallLog.logger()] }))
        )
      )
      assert.strictEqual(logs.length, 2)
      assert.strictEqual(logs[0]!.level, LogLevel.Info)
      assert.strictEqual(logs[0]!.message, "llm call gpt-4o-mini ok")
      assert.strictEqual(logs[0]!.annotations.callId, "call-1")
      assert.strictEqual(logs[0]!.annotations["route.reason"], "request")
      assert.strictEqual(logs[0]!.annotations.costUsd, "0.0000045")
      assert.strictEqual(logs[1]!.level, LogLevel.Warning)
      assert.strictEqual(logs[1]!.annotations.errorTag, "Timeout")
    }))
})

describe("CallLog/JsonLines", () => {
  it.effect("appends one JSON line per record, on disk as soon as the write returns", () =>
    Effect.gen(function*() {
      const path = Path.join(tempDir(), "logs", "calls.jsonl")
      Fs.mkdirSync(Path.dirname(path))
      Fs.writeFileSync(path, JSON.stringify(record(0)) + "\n")
      yield* Effect.gen(function*() {
        for (let i = 1; i <= 3; i++) {
          yield* CallLog.write(record(i))
          // Read by another file handle right away: nothing waits in a buffer.
          assert.strictEqual(Fs.readFileSync(path, "utf8").trimEnd().split("\n").length, i + 1)
        }
      }).pipe(Effect.provide(JsonLines.layer({ path })))
      const lines = Fs.readFileSync(path, "utf8").trimEnd().split("\n")
      const decoded = lines.map((line) => CallRecord.decodeUnknownSync(JSON.parse(line)))
      assert.deepStrictEqual(decoded.map((r) => r.callId), ["call-0", "call-1", "call-2", "call-3"])
    }))

  it.effect("concurrent calls' records, written together, are each on disk when its call returns, once and whole", () =>
    Effect.gen(function*() {
      const path = Path.join(tempDir(), "concurrent.jsonl")
      const records = Array.from({ length: 200 }, (_, i) => record(i))
      yield* Effect.forEach(records, (r) =>
        Effect.gen(function*() {
          yield* Effect.yieldNow()
          yield* CallLog.write(r)
          assert.include(Fs.readFileSync(path, "utf8"), `"callId":"${r.callId}"`)
        }), { concurrency: "unbounded", discard: true }).pipe(Effect.provide(JsonLines.layer({ path })))
      const lines = Fs.readFileSync(path, "utf8").trimEnd().split("\n")
      const ids = lines.map((line) => CallRecord.decodeUnknownSync(JSON.parse(line)).callId)
      assert.deepStrictEqual([...ids].sort(), records.map((r) => r.callId).sort())
    }))

  it.effect("creates a missing folder", () =>
    Effect.gen(function*() {
      const path = Path.join(tempDir(), "a", "b", "calls.jsonl")
      yield* CallLog.write(record(1)).pipe(Effect.provide(JsonLines.layer({ path })))
      assert.strictEqual(Fs.readFileSync(path, "utf8").split("\n").length, 2)
    }))

  it.effect("layerConfig reads the path from configuration", () =>
    Effect.gen(function*() {
      const path = Path.join(tempDir(), "configured.jsonl")
      yield* CallLog.write(record(1)).pipe(
        Effect.provide(JsonLines.layerConfig({ path: Config.string("KEEL_CALL_LOG") })),
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["KEEL_CALL_LOG", path]])))
      )
      assert.strictEqual(CallRecord.decodeUnknownSync(JSON.parse(Fs.readFileSync(path, "utf8"))).callId, "call-1")
    }))

  it.effect("an unwritable path fails when the layer is built, naming the path", () =>
    Effect.gen(function*() {
      const file = Path.join(tempDir(), "not-a-folder")
      Fs.writeFileSync(file, "")
      const path = Path.join(file, "calls.jsonl")
      const error = yield* Effect.flip(Layer.build(JsonLines.layer({ path })).pipe(Effect.scoped))
      assert.strictEqual(error._tag, "SinkUnavailable")
      assert.strictEqual(error.target, path)
      assert.include(error.message, path)
    }))

  /** Sets this process's file-size limit (RLIMIT_FSIZE, bytes; Node ignores SIGXFSZ, so a write past it is EFBIG). */
  const fileSizeLimit = (soft: number | "unlimited") =>
    Effect.sync(() => ChildProcess.execFileSync("prlimit", ["--pid", String(process.pid), `--fsize=${soft}:unlimited`]))
  const prlimit = process.platform === "linux" &&
    ChildProcess.spawnSync("prlimit", ["--pid", String(process.pid), "--fsize"]).status === 0

  it.effect.skipIf(!prlimit)(
    "a write cut part-way (file size limit reached) leaves a torn line, and the next record starts on a fresh line",
    () =>
      Effect.gen(function*() {
        const path = Path.join(tempDir(), "torn.jsonl")
        const { logs } = yield* withCapturedLogs(
          Effect.gen(function*() {
            yield* CallLog.write(record(1))
            // The next line may grow the file by only 100 bytes: the kernel writes those, then refuses.
            yield* fileSizeLimit(Fs.statSync(path).size + 100)
            yield* CallLog.write(record(2)).pipe(Effect.ensuring(fileSizeLimit("unlimited")))
            yield* CallLog.write(record(3))
          }).pipe(Effect.provide(CallLog.layer({ sinks: [JsonLines.sink(path)] })))
        )
        const lines = Fs.readFileSync(path, "utf8").split("\n")
        // record 1, the first 100 bytes of record 2, record 3 on a line of its own, and the final newline.
        assert.strictEqual(lines.length, 4, JSON.stringify(lines))
        assert.strictEqual(lines[1], JSON.stringify(record(2)).slice(0, 100))
        assert.strictEqual(lines[3], "")
        assert.deepStrictEqual(
          [lines[0]!, lines[2]!].map((line) => CallRecord.decodeUnknownSync(JSON.parse(line)).callId),
          ["call-1", "call-3"]
        )
        const warnings = logs.filter((l) => l.level === LogLevel.Warning).map((l) => l.message)
        assert.include(warnings[0], `Call log sink jsonl:${path} failed`)
        assert.include(warnings[1], "lost 1 of 3 records")
      })
  )

  it.effect.skipIf(!Fs.existsSync("/dev/full"))(
    "a full disk (/dev/full) is reported once, calls go on, lost lines are reported at close",
    () =>
      Effect.gen(function*() {
        const kept = CallLog.memory()
        const { logs } = yield* withCapturedLogs(
          writeAll(Array.from({ length: 25 }, (_, i) => record(i))).pipe(
            Effect.provide(CallLog.layer({ sinks: [JsonLines.sink("/dev/full"), kept.sink] }))
          )
        )
        assert.strictEqual(kept.records.length, 25)
        const warnings = logs.filter((l) => l.level === LogLevel.Warning).map((l) => l.message)
        assert.strictEqual(warnings.length, 2, JSON.stringify(warnings))
        assert.include(warnings[0], "Call log sink jsonl:/dev/full failed")
        assert.include(warnings[1], "jsonl:/dev/full lost 25 of 25 records")
      })
  )
})
