/**
 * The simulator's Files and Batches over real HTTP on 127.0.0.1, with time moved by `TestClock`: the lifecycle
 * (validating → in_progress → finalizing → completed), shuffled output with usage equal to synchronous answers,
 * validation failures with OpenAI's codes, expiry with partial results, cancel, per-line faults, the
 * enqueued-token allowance, listing with `after`/`limit`, and file content and deletion.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as TestClock from "effect/TestClock"
import OpenAI, { toFile } from "openai"
import { request } from "undici"
import * as Simulator from "../src/Simulator.js"

type Sim = Simulator.Simulator["Type"]
const auth = { authorization: "Bearer sk-test-0000" }

const call = (sim: Sim, method: "GET" | "POST" | "DELETE", path: string, body?: unknown) =>
  Effect.promise(async () => {
    const res = await request(`${sim.url}${path}`, {
      method,
      headers: body === undefined ? auth : { ...auth, "content-type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) })
    })
    const text = await res.body.text()
    return {
      status: res.statusCode,
      text,
      json: res.headers["content-type"] === "application/json" ? JSON.parse(text) : undefined
    }
  })

// Node's own fetch and FormData: npm undici's request refuses (Node 26) or breaks on (Node 24) a
// FormData holding Node's global Blob.
const upload = (sim: Sim, content: string, purpose = "batch") =>
  Effect.promise(async () => {
    const form = new FormData()
    form.append("purpose", purpose)
    form.append("file", new Blob([content]), "input.jsonl")
    const res = await fetch(`${sim.url}/files`, { method: "POST", headers: auth, body: form })
    return { status: res.status, json: (await res.json()) as any }
  })

const body = (i: number, model = "gpt-4o-mini") => ({
  model,
  messages: [{ role: "user", content: `Score listing number ${i}.` }],
  response_format: {
    type: "json_schema",
    json_schema: {
      name: "score",
      strict: true,
      schema: {
        type: "object",
        properties: { score: { type: "integer" } },
        required: ["score"],
        additionalProperties: false
      }
    }
  }
})

const jsonl = (lines: ReadonlyArray<unknown>) => lines.map((l) => JSON.stringify(l)).join("\n") + "\n"
const line = (i: number, model?: string) => ({
  custom_id: `item-${i}`,
  method: "POST",
  url: "/v1/chat/completions",
  body: body(i, model)
})

/** Uploads lines and creates a batch over them. */
const submit = (sim: Sim, lines: ReadonlyArray<unknown>, metadata?: Record<string, string>) =>
  Effect.gen(function*() {
    const file = yield* upload(sim, jsonl(lines))
    assert.strictEqual(file.status, 200, JSON.stringify(file.json))
    const created = yield* call(sim, "POST", "/batches", {
      input_file_id: file.json.id,
      endpoint: "/v1/chat/completions",
      completion_window: "24h",
      ...(metadata === undefined ? {} : { metadata })
    })
    assert.strictEqual(created.status, 200, created.text)
    return created.json
  })

const retrieve = (sim: Sim, id: string) => Effect.map(call(sim, "GET", `/batches/${id}`), (r) => r.json)
const lines = (sim: Sim, fileId: string) =>
  Effect.map(call(sim, "GET", `/files/${fileId}/content`), (r) => r.text.trim().split("\n").map((l) => JSON.parse(l)))

const withSim = <A>(options: Simulator.Options, f: (sim: Sim) => Effect.Effect<A>) =>
  Effect.flatMap(Simulator.Simulator, f).pipe(Effect.provide(Simulator.layer(options)))

const timing = { validatingMs: 1_000, inProgressMs: 10_000, finalizingMs: 1_000, cancellingMs: 2_000 }

describe("Simulator batches", () => {
  it.effect("a batch goes validating → in_progress → finalizing → completed; output is shuffled, usage as sync", () =>
    withSim({ seed: 3, batch: timing }, (sim) =>
      Effect.gen(function*() {
        const input = Array.from({ length: 20 }, (_, i) => line(i))
        const created = yield* submit(sim, input, { run: "r1", chunk: "0" })
        assert.strictEqual(created.status, "validating")
        assert.deepStrictEqual(created.metadata, { run: "r1", chunk: "0" })
        assert.deepStrictEqual(created.request_counts, { total: 20, completed: 0, failed: 0 })

        yield* TestClock.adjust("1 second")
        const started = yield* retrieve(sim, created.id)
        assert.strictEqual(started.status, "in_progress")
        assert.strictEqual(started.in_progress_at, started.created_at + 1)

        // half of the in-progress time: half of the lines are done
        yield* TestClock.adjust("5 seconds")
        const half = yield* retrieve(sim, created.id)
        assert.strictEqual(half.status, "in_progress")
        assert.deepStrictEqual(half.request_counts, { total: 20, completed: 10, failed: 0 })
        assert.isNull(half.output_file_id)

        yield* TestClock.adjust("5 seconds")
        assert.strictEqual((yield* retrieve(sim, created.id)).status, "finalizing")
        yield* TestClock.adjust("999 millis")
        assert.strictEqual((yield* retrieve(sim, created.id)).status, "finalizing")
        yield* TestClock.adjust("1 millis")
        const done = yield* retrieve(sim, created.id)
        assert.strictEqual(done.status, "completed")
        assert.deepStrictEqual(done.request_counts, { total: 20, completed: 20, failed: 0 })
        assert.isNull(done.error_file_id)

        const output = yield* lines(sim, done.output_file_id)
        const ids = output.map((l) => l.custom_id)
        assert.deepStrictEqual([...ids].sort(), input.map((l) => l.custom_id).sort())
        assert.notDeepEqual(ids, input.map((l) => l.custom_id), "output order should not be input order")

        // every line is answered as the same body sent synchronously, with the same usage
        let inputTokens = 0
        let outputTokens = 0
        for (const out of output) {
          assert.strictEqual(out.response.status_code, 200)
          assert.isNull(out.error)
          assert.match(out.id, /^batch_req_/)
          const i = Number(out.custom_id.slice(5))
          const sync = yield* call(sim, "POST", "/chat/completions", body(i))
          assert.deepStrictEqual(out.response.body.usage, sync.json.usage)
          assert.strictEqual(out.response.body.choices[0].message.content, sync.json.choices[0].message.content)
          inputTokens += out.response.body.usage.prompt_tokens
          outputTokens += out.response.body.usage.completion_tokens
        }
        assert.strictEqual(done.usage.input_tokens, inputTokens)
        assert.strictEqual(done.usage.output_tokens, outputTokens)
        assert.strictEqual(done.usage.total_tokens, inputTokens + outputTokens)
        const stats = yield* sim.stats
        assert.deepStrictEqual(stats.batches.map((b) => [b.id, b.status, b.metadata]), [[
          created.id,
          "completed",
          { run: "r1", chunk: "0" }
        ]])
      })))

  it.effect("an invalid input file fails after validation, with OpenAI's code and line for each problem", () =>
    withSim({ batch: timing }, (sim) =>
      Effect.gen(function*() {
        const text = [
          JSON.stringify(line(1)),
          "{\"custom_id\": \"item-2\", \"method\": \"POST\", \"url\": \"/v1/chat/comp", // cut
          JSON.stringify({ ...line(3), url: "/v1/embeddings" }),
          JSON.stringify({ ...line(4), method: "GET" }),
          JSON.stringify(line(5, "gpt-4.1-mini")),
          JSON.stringify({ ...line(6), custom_id: "item-1" })
        ].join("\n")
        const file = yield* upload(sim, text)
        const created = yield* call(sim, "POST", "/batches", {
          input_file_id: file.json.id,
          endpoint: "/v1/chat/completions",
          completion_window: "24h"
        })
        assert.strictEqual(created.json.status, "validating")
        yield* TestClock.adjust("1 second")
        const failed = yield* retrieve(sim, created.json.id)
        assert.strictEqual(failed.status, "failed")
        assert.strictEqual(failed.failed_at, failed.created_at + 1)
        assert.isNull(failed.output_file_id)
        assert.deepStrictEqual(
          failed.errors.data.map((e: any) => [e.line, e.code, e.param]),
          [
            [2, "invalid_json_line", null],
            [3, "url_mismatch", "url"],
            [4, "invalid_request", "method"],
            [5, "model_mismatch", "body.model"],
            [6, "duplicate_custom_id", "custom_id"]
          ]
        )
        const empty = yield* upload(sim, "")
        const none = yield* call(sim, "POST", "/batches", {
          input_file_id: empty.json.id,
          endpoint: "/v1/chat/completions",
          completion_window: "24h"
        })
        yield* TestClock.adjust("1 second")
        assert.strictEqual((yield* retrieve(sim, none.json.id)).errors.data[0].code, "empty_file")
      })))

  it.effect("a batch past its window expires with the lines done by then; the rest fail batch_expired", () =>
    withSim({ batch: { ...timing, windowMs: 6_000 } }, (sim) =>
      Effect.gen(function*() {
        const created = yield* submit(sim, Array.from({ length: 10 }, (_, i) => line(i)))
        yield* TestClock.adjust("5999 millis")
        assert.strictEqual((yield* retrieve(sim, created.id)).status, "in_progress")
        yield* TestClock.adjust("1 millis")
        const expired = yield* retrieve(sim, created.id)
        assert.strictEqual(expired.status, "expired")
        assert.strictEqual(expired.expired_at, expired.created_at + 6)
        // 5 of the 10 s in progress passed: 5 lines done, 5 expired
        assert.deepStrictEqual(expired.request_counts, { total: 10, completed: 5, failed: 5 })
        const done = yield* lines(sim, expired.output_file_id)
        const failed = yield* lines(sim, expired.error_file_id)
        assert.strictEqual(done.length, 5)
        assert.strictEqual(failed.length, 5)
        for (const l of failed) {
          assert.isNull(l.response)
          assert.strictEqual(l.error.code, "batch_expired")
        }
        assert.deepStrictEqual(
          [...done, ...failed].map((l) => l.custom_id).sort(),
          Array.from({ length: 10 }, (_, i) => `item-${i}`).sort()
        )
        assert.isAbove(expired.usage.output_tokens, 0)
      })))

  it.effect("cancel: cancelling, then cancelled with the lines done when asked; a final batch cannot be cancelled", () =>
    withSim({ batch: timing }, (sim) =>
      Effect.gen(function*() {
        const created = yield* submit(sim, Array.from({ length: 10 }, (_, i) => line(i)))
        yield* TestClock.adjust("4 seconds") // 3 s in progress: 3 lines done
        const cancelling = yield* call(sim, "POST", `/batches/${created.id}/cancel`)
        assert.strictEqual(cancelling.json.status, "cancelling")
        assert.isNull(cancelling.json.cancelled_at)
        yield* TestClock.adjust("1999 millis")
        assert.strictEqual((yield* retrieve(sim, created.id)).status, "cancelling")
        yield* TestClock.adjust("1 millis")
        const cancelled = yield* retrieve(sim, created.id)
        assert.strictEqual(cancelled.status, "cancelled")
        assert.strictEqual(cancelled.cancelled_at, cancelled.cancelling_at + 2)
        assert.deepStrictEqual(cancelled.request_counts, { total: 10, completed: 3, failed: 0 })
        assert.strictEqual((yield* lines(sim, cancelled.output_file_id)).length, 3)
        const again = yield* call(sim, "POST", `/batches/${created.id}/cancel`)
        assert.strictEqual(again.status, 409)
        assert.include(again.json.error.message, "cancelled")
      })))

  it.effect("line faults at their rates: HTTP errors in response.body.error, counted as failed, in the error file", () =>
    withSim(
      { seed: 5, batch: { ...timing, lineFaults: { "500": 0.3, refusal: 0.2 } } },
      (sim) =>
        Effect.gen(function*() {
          const created = yield* submit(sim, Array.from({ length: 200 }, (_, i) => line(i)))
          yield* TestClock.adjust("12 seconds")
          const done = yield* retrieve(sim, created.id)
          assert.strictEqual(done.status, "completed")
          const errors = yield* lines(sim, done.error_file_id)
          const output = yield* lines(sim, done.output_file_id)
          assert.strictEqual(errors.length + output.length, 200)
          assert.deepStrictEqual(done.request_counts, { total: 200, completed: output.length, failed: errors.length })
          assert.approximately(errors.length / 200, 0.3, 0.1)
          for (const l of errors) {
            assert.isNull(l.error)
            assert.strictEqual(l.response.status_code, 500)
            assert.strictEqual(l.response.body.error.type, "server_error")
          }
          const refusals = output.filter((l) => l.response.body.choices[0].message.refusal !== null)
          assert.approximately(refusals.length / 200, 0.2, 0.1)
        })
    ))

  it.effect("the enqueued-token allowance: a batch past it fails token_limit_exceeded; tokens free when one ends", () =>
    withSim({ batch: { ...timing, enqueuedTokensByModel: { "gpt-4o-mini": 1_000 } } }, (sim) =>
      Effect.gen(function*() {
        const first = yield* submit(sim, Array.from({ length: 10 }, (_, i) => line(i)))
        const tokens = (yield* call(sim, "POST", "/chat/completions", body(0))).json.usage.prompt_tokens
        assert.isAbove(tokens * 10, 500, "the first batch holds more than half the allowance")
        const second = yield* submit(sim, Array.from({ length: 10 }, (_, i) => line(100 + i)))
        yield* TestClock.adjust("1 second")
        const refused = yield* retrieve(sim, second.id)
        assert.strictEqual(refused.status, "failed")
        assert.strictEqual(refused.errors.data[0].code, "token_limit_exceeded")
        assert.include(refused.errors.data[0].message, "Limit: 1,000 enqueued tokens")
        // another model has its own allowance (none here)
        const other = yield* submit(sim, Array.from({ length: 10 }, (_, i) => line(i, "gpt-4.1-mini")))
        // the first batch completes 12 s after its creation (1 s ago); the other one 1 s later
        yield* TestClock.adjust("10999 millis")
        assert.strictEqual((yield* retrieve(sim, first.id)).status, "finalizing")
        const stillFull = yield* submit(sim, Array.from({ length: 10 }, (_, i) => line(300 + i)))
        yield* TestClock.adjust("1 millis")
        assert.strictEqual((yield* retrieve(sim, first.id)).status, "completed")
        assert.strictEqual((yield* retrieve(sim, other.id)).status, "finalizing")
        // the first batch's tokens are free again
        const third = yield* submit(sim, Array.from({ length: 10 }, (_, i) => line(200 + i)))
        yield* TestClock.adjust("1 second")
        assert.strictEqual((yield* retrieve(sim, third.id)).status, "in_progress")
        assert.strictEqual(
          (yield* retrieve(sim, stillFull.id)).status,
          "failed",
          "the allowance was full a moment before"
        )
      })))

  it.effect("list: newest first, paged with after and limit, with metadata", () =>
    withSim({ batch: timing }, (sim) =>
      Effect.gen(function*() {
        const ids: Array<string> = []
        for (let i = 0; i < 5; i++) ids.push((yield* submit(sim, [line(i)], { chunk: String(i) })).id)
        const page1 = (yield* call(sim, "GET", "/batches?limit=2")).json
        assert.deepStrictEqual(page1.data.map((b: any) => b.id), [ids[4], ids[3]])
        assert.strictEqual(page1.has_more, true)
        assert.deepStrictEqual(page1.data[0].metadata, { chunk: "4" })
        const page2 = (yield* call(sim, "GET", `/batches?limit=2&after=${page1.last_id}`)).json
        assert.deepStrictEqual(page2.data.map((b: any) => b.id), [ids[2], ids[1]])
        const page3 = (yield* call(sim, "GET", `/batches?limit=2&after=${page2.last_id}`)).json
        assert.deepStrictEqual(page3.data.map((b: any) => b.id), [ids[0]])
        assert.strictEqual(page3.has_more, false)
        assert.strictEqual((yield* call(sim, "GET", "/batches?limit=101")).status, 400)
        assert.strictEqual((yield* call(sim, "GET", "/batches")).json.data.length, 5)
      })))

  it.effect("files: content, delete, and OpenAI's errors for a bad upload or batch", () =>
    withSim({}, (sim) =>
      Effect.gen(function*() {
        const text = jsonl([line(1)])
        const file = yield* upload(sim, text)
        assert.strictEqual(file.json.purpose, "batch")
        assert.strictEqual(file.json.bytes, Buffer.byteLength(text))
        assert.strictEqual(file.json.filename, "input.jsonl")
        assert.strictEqual((yield* call(sim, "GET", `/files/${file.json.id}/content`)).text, text)
        assert.strictEqual((yield* call(sim, "DELETE", `/files/${file.json.id}`)).json.deleted, true)
        assert.strictEqual((yield* call(sim, "GET", `/files/${file.json.id}/content`)).status, 404)
        assert.strictEqual((yield* upload(sim, text, "nonsense")).status, 400)
        const other = yield* upload(sim, text, "user_data")
        const wrongPurpose = yield* call(sim, "POST", "/batches", {
          input_file_id: other.json.id,
          endpoint: "/v1/chat/completions",
          completion_window: "24h"
        })
        assert.strictEqual(wrongPurpose.status, 400)
        assert.include(wrongPurpose.json.error.message, "purpose 'batch'")
        const missing = yield* call(sim, "POST", "/batches", {
          input_file_id: "file-nope",
          endpoint: "/v1/chat/completions",
          completion_window: "24h"
        })
        assert.strictEqual(missing.status, 404)
        const window = yield* call(sim, "POST", "/batches", {
          input_file_id: other.json.id,
          endpoint: "/v1/chat/completions",
          completion_window: "1h"
        })
        assert.strictEqual(window.json.error.param, "completion_window")
      })))

  it.effect("the official openai SDK uploads, creates, follows, lists and downloads a batch", () =>
    withSim({ batch: timing }, (sim) =>
      Effect.gen(function*() {
        const client = new OpenAI({ apiKey: "sk-sdk-test", baseURL: sim.url, maxRetries: 0 })
        const input = Array.from({ length: 4 }, (_, i) => line(i))
        const file = yield* Effect.promise(async () =>
          client.files.create({ file: await toFile(Buffer.from(jsonl(input)), "input.jsonl"), purpose: "batch" })
        )
        assert.strictEqual(file.purpose, "batch")
        const batch = yield* Effect.promise(() =>
          client.batches.create({
            input_file_id: file.id,
            endpoint: "/v1/chat/completions",
            completion_window: "24h",
            metadata: { run: "sdk" }
          })
        )
        yield* TestClock.adjust("12 seconds")
        const done = yield* Effect.promise(() => client.batches.retrieve(batch.id))
        assert.strictEqual(done.status, "completed")
        assert.deepStrictEqual(done.request_counts, { total: 4, completed: 4, failed: 0 })
        const listed = yield* Effect.promise(() => client.batches.list({ limit: 10 }))
        assert.deepStrictEqual(listed.data.map((b) => b.id), [batch.id])
        const text = yield* Effect.promise(async () => (await client.files.content(done.output_file_id!)).text())
        assert.strictEqual(text.trim().split("\n").length, 4)
      })))

  it.effect("bad batch options fail at start, naming the option", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Effect.scoped(Simulator.make({ batch: { lineFaults: { hang: 0.1 } as any } }))
      )
      assert.include(error.message, "unknown line fault \"hang\"")
      const allowance = yield* Effect.flip(Effect.scoped(Simulator.make({ batch: { enqueuedTokens: 0 } })))
      assert.include(allowance.message, "batch.enqueuedTokens must be a positive integer")
    }))
})
