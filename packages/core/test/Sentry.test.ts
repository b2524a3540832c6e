import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as CallLog from "../src/CallLog.js"
import * as Sentry from "../src/CallLog/Sentry.js"
import type * as CallRecord from "../src/CallRecord.js"
import { collector } from "./utils/collector.js"

const promptText = "PROMPT-TEXT-must-not-leak"

const record = (i: number, outcome: "ok" | "error"): CallRecord.CallRecord => ({
  ts: "2026-11-29T05:00:00.000Z",
  callId: `call-${i}`,
  scope: "tenant:acme",
  route: { reason: "request" },
  provider: "openai",
  model: "gpt-4o-mini",
  mode: "sync",
  promptHash: `sha256:${"b".repeat(64)}`,
  attempts: 4,
  latencyMs: 5012,
  inputTokens: 0,
  cachedInputTokens: 0,
  outputTokens: 0,
  reasoningTokens: 0,
  costUsd: "0",
  outcome,
  ...(outcome === "error" ? { errorTag: "ProviderUnavailable", errorMessage: "Provider unavailable (HTTP 503)" } : {}),
  prompt: [{ role: "user", content: promptText }],
  output: { text: "OUTPUT-TEXT-must-not-leak" }
})

describe("CallLog/Sentry", () => {
  it.effect("sends failed calls with tags and the record as context; nothing for successes; no prompt or output", () =>
    Effect.gen(function*() {
      const receiver = yield* collector
      const bodies = () => receiver.received.map((r) => r.body.toString("utf8"))
      const dsn = Redacted.make(`http://public@127.0.0.1:${receiver.port}/1`)
      yield* Effect.forEach([record(1, "ok"), record(2, "error"), record(3, "ok")], CallLog.write, { discard: true })
        .pipe(Effect.provide(Sentry.layer({ dsn })))
      // The layer's scope closed: the client flushed before it closed.
      const events = bodies().filter((body) => body.includes("\"type\":\"event\""))
      assert.strictEqual(events.length, 1, bodies().join("\n---\n"))
      assert.isTrue(receiver.received.every((r) => r.path.startsWith("/api/1/envelope/")))
      const event = JSON.parse(events[0]!.split("\n")[2]!)
      assert.deepStrictEqual(event.tags, {
        model: "gpt-4o-mini",
        errorTag: "ProviderUnavailable",
        promptHash: `sha256:${"b".repeat(64)}`,
        scope: "tenant:acme",
        provider: "openai"
      })
      assert.strictEqual(event.contexts.keel_call.callId, "call-2")
      assert.strictEqual(event.contexts.keel_call.attempts, 4)
      assert.strictEqual(event.exception.values[0].type, "ProviderUnavailable")
      for (const body of bodies()) {
        assert.notInclude(body, promptText)
        assert.notInclude(body, "OUTPUT-TEXT")
      }
    }).pipe(Effect.scoped))
})
