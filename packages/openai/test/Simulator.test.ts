/**
 * The simulator over real HTTP on 127.0.0.1: answers valid against OpenAI's own spec, headers,
 * determinism, every fault kind, limits, auth, error bodies and plugged-in endpoints.
 */
import * as HttpRouter from "@effect/platform/HttpRouter"
import { assert, describe, it } from "@effect/vitest"
import addFormats from "ajv-formats"
import Ajv2020 from "ajv/dist/2020.js"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { request } from "undici"
import { goDuration, ModelLimiter } from "../src/internal/simulator/limits.js"
import * as Simulator from "../src/Simulator.js"

const spec = JSON.parse(
  Fs.readFileSync(Path.join(import.meta.dirname, "fixtures/openai-openapi/openapi.patched.json"), "utf8")
)
const ajv = new Ajv2020.default({ strict: false, allErrors: true, formats: { unixtime: true } })
addFormats.default(ajv)
ajv.addSchema({ $id: "https://keel.test/openai.json", components: spec.components })
const specSchema = (name: string) => ajv.getSchema(`https://keel.test/openai.json#/components/schemas/${name}`)!
const validResponse = specSchema("CreateChatCompletionResponse")
const validError = specSchema("ErrorResponse")

const assertSpec = (validate: typeof validResponse, body: unknown) => {
  if (!validate(body)) assert.fail(`${JSON.stringify(body)} violates the spec: ${ajv.errorsText(validate.errors)}`)
}

interface Answer {
  readonly status: number
  readonly headers: Record<string, string | Array<string> | undefined>
  readonly text: string
  readonly json: any
}

const AUTH = { authorization: "Bearer sk-test-0000" }

const send = (
  url: string,
  options: { readonly method?: "GET" | "POST"; readonly body?: unknown; readonly headers?: Record<string, string> }
) =>
  Effect.promise(async (): Promise<Answer> => {
    const res = await request(url, {
      method: options.method ?? "POST",
      headers: { "content-type": "application/json", ...(options.headers ?? AUTH) },
      ...(options.body === undefined
        ? {}
        : { body: typeof options.body === "string" ? options.body : JSON.stringify(options.body) })
    })
    const text = await res.body.text()
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch {
      json = undefined
    }
    return { status: res.statusCode, headers: res.headers, text, json }
  })

const chat = (sim: Simulator.Simulator["Type"], body: unknown, headers?: Record<string, string>) =>
  send(`${sim.url}/chat/completions`, { body, ...(headers === undefined ? {} : { headers }) })

/** Runs `f` against a fresh simulator that stops afterwards. */
const withSim = <A>(options: Simulator.Options, f: (sim: Simulator.Simulator["Type"]) => Effect.Effect<A>) =>
  Effect.flatMap(Simulator.Simulator, f).pipe(Effect.provide(Simulator.layer(options)))

const scoreSchema = {
  type: "object",
  additionalProperties: false,
  required: ["score", "seniority", "remote", "skills", "posted"],
  properties: {
    score: { type: "integer", minimum: 0, maximum: 10 },
    seniority: { type: "string", enum: ["junior", "mid", "senior"] },
    remote: { type: ["boolean", "null"] },
    skills: { type: "array", items: { type: "string" }, minItems: 1, maxItems: 4 },
    posted: { type: "string", format: "date" }
  }
}
const validScore = ajv.compile(scoreSchema)

const toolRequest = (content = "Senior TypeScript engineer, Berlin, remote friendly.", model = "gpt-4.1-mini") => ({
  model,
  messages: [{ role: "system", content: "Score the job listing." }, { role: "user", content }],
  tools: [{ type: "function", function: { name: "score_listing", strict: true, parameters: scoreSchema } }],
  tool_choice: { type: "function", function: { name: "score_listing" } }
})

const formatRequest = (content = "Score this listing.") => ({
  model: "gpt-4o-mini",
  messages: [{ role: "user", content }],
  response_format: { type: "json_schema", json_schema: { name: "score", strict: true, schema: scoreSchema } }
})

const textRequest = (content = "Say something.", model = "gpt-4o-mini") => ({
  model,
  messages: [{ role: "user", content }]
})

const withoutCreated = (body: any) => ({ ...body, created: 0 })

/** Runs a request under TestClock: waits until its answer sleeps on the clock, then moves the clock to its wake-up. */
const afterLatency = <A>(effect: Effect.Effect<A>) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(effect)
    while (Chunk.isEmpty(yield* TestClock.sleeps())) {
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 1)))
    }
    const wakeAt = Chunk.unsafeHead(yield* TestClock.sleeps())
    yield* TestClock.adjust(wakeAt - (yield* Clock.currentTimeMillis))
    return yield* Fiber.join(fiber)
  })

describe("Simulator", () => {
  it.live("answers a forced strict tool call with arguments satisfying the schema, and OpenAI's headers", () =>
    withSim({}, (sim) =>
      Effect.gen(function*() {
        const answer = yield* chat(sim, toolRequest())
        assert.strictEqual(answer.status, 200)
        assertSpec(validResponse, answer.json)
        const choice = answer.json.choices[0]
        assert.strictEqual(choice.message.content, null)
        assert.strictEqual(choice.finish_reason, "stop") // a named tool_choice ends with "stop", as OpenAI does
        const call = choice.message.tool_calls[0]
        assert.strictEqual(call.type, "function")
        assert.strictEqual(call.function.name, "score_listing")
        assert.isTrue(validScore(JSON.parse(call.function.arguments)), ajv.errorsText(validScore.errors))
        assert.match(answer.json.id, /^chatcmpl-/)
        assert.match(call.id, /^call_/)

        const h = answer.headers
        assert.strictEqual(h["content-type"], "application/json")
        assert.match(String(h["x-request-id"]), /^req_[0-9a-f]{32}$/)
        assert.match(String(h["openai-processing-ms"]), /^\d+$/)
        for (const name of ["limit-requests", "limit-tokens", "remaining-requests", "remaining-tokens"]) {
          assert.match(String(h[`x-ratelimit-${name}`]), /^\d+$/, name)
        }
        for (const name of ["reset-requests", "reset-tokens"]) {
          assert.match(String(h[`x-ratelimit-${name}`]), /^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$/, name)
        }
      })))

  it.live("answers hard schemas over HTTP: $defs recursion, formats, nullable anyOf, exclusive bounds", () => {
    const closed = (properties: Record<string, unknown>) => ({
      type: "object",
      properties,
      required: Object.keys(properties),
      additionalProperties: false
    })
    const schemas = [
      {
        ...closed({ tree: { $ref: "#/$defs/node" } }),
        $defs: {
          node: closed({ name: { type: "string" }, children: { type: "array", items: { $ref: "#/$defs/node" } } })
        }
      },
      closed({
        id: { type: "string", format: "uuid" },
        at: { type: "string", format: "date-time" },
        email: { type: "string", format: "email" },
        code: { type: "string", pattern: "^[A-Z]{2}-\\d{4}$" },
        ratio: { type: "number", exclusiveMinimum: 0, exclusiveMaximum: 1 },
        note: { anyOf: [{ type: "string" }, { type: "null" }] },
        level: { type: ["integer", "null"], minimum: 1, maximum: 3 }
      }),
      closed({ items: { type: "array", minItems: 2, maxItems: 2, items: closed({ k: { enum: ["a", "b"] } }) } })
    ]
    return withSim({}, (sim) =>
      Effect.forEach(schemas, (schema, i) =>
        Effect.gen(function*() {
          const validate = ajv.compile(schema)
          const tool = yield* chat(sim, {
            model: "gpt-4.1",
            messages: [{ role: "user", content: `case ${i}` }],
            tools: [{ type: "function", function: { name: `f${i}`, strict: true, parameters: schema } }],
            tool_choice: "required"
          })
          assertSpec(validResponse, tool.json)
          const args = JSON.parse(tool.json.choices[0].message.tool_calls[0].function.arguments)
          assert.isTrue(validate(args), `${JSON.stringify(args)}: ${ajv.errorsText(validate.errors)}`)
          const content = yield* chat(sim, {
            model: "gpt-4.1",
            messages: [{ role: "user", content: `case ${i}` }],
            response_format: { type: "json_schema", json_schema: { name: `s${i}`, strict: true, schema } }
          })
          const value = JSON.parse(content.json.choices[0].message.content)
          assert.isTrue(validate(value), `${JSON.stringify(value)}: ${ajv.errorsText(validate.errors)}`)
        })))
  })

  it.live("calls the first tool when tool_choice is auto, and answers in text after a tool result", () =>
    withSim({}, (sim) =>
      Effect.gen(function*() {
        const { tool_choice: _, ...auto } = toolRequest()
        const first = yield* chat(sim, auto)
        assert.strictEqual(first.json.choices[0].finish_reason, "tool_calls")
        const call = first.json.choices[0].message.tool_calls[0]
        const after = yield* chat(sim, {
          ...auto,
          messages: [
            ...auto.messages,
            { role: "assistant", content: null, tool_calls: [call] },
            { role: "tool", tool_call_id: call.id, content: "{\"saved\":true}" }
          ]
        })
        assertSpec(validResponse, after.json)
        assert.strictEqual(after.json.choices[0].finish_reason, "stop")
        assert.isString(after.json.choices[0].message.content)
        assert.isUndefined(after.json.choices[0].message.tool_calls)
      })))

  it.live("answers json_schema formats in content, json_object with an object, and plain text otherwise", () =>
    withSim({}, (sim) =>
      Effect.gen(function*() {
        const structured = yield* chat(sim, formatRequest())
        assertSpec(validResponse, structured.json)
        assert.isTrue(validScore(JSON.parse(structured.json.choices[0].message.content)))
        const object = yield* chat(sim, { ...textRequest(), response_format: { type: "json_object" } })
        assert.isObject(JSON.parse(object.json.choices[0].message.content))
        const text = yield* chat(sim, textRequest())
        assertSpec(validResponse, text.json)
        assert.isAbove(text.json.choices[0].message.content.length, 10)
        assert.strictEqual(text.json.choices[0].message.refusal, null)
        const two = yield* chat(sim, { ...textRequest(), n: 2 })
        assert.lengthOf(two.json.choices, 2)
        assert.notStrictEqual(two.json.choices[0].message.content, two.json.choices[1].message.content)
      })))

  it.live("counts usage with the tokenizer: cached prefixes, reasoning tokens, max_completion_tokens", () =>
    withSim({}, (sim) =>
      Effect.gen(function*() {
        const plain = yield* chat(sim, textRequest("Hello there, how are you today?"))
        // 8 tokens of text plus OpenAI's per-message and reply-priming overhead
        assert.isAtLeast(plain.json.usage.prompt_tokens, 9)
        assert.isAtMost(plain.json.usage.prompt_tokens, 16)
        const u = plain.json.usage
        assert.strictEqual(u.total_tokens, u.prompt_tokens + u.completion_tokens)
        assert.strictEqual(u.prompt_tokens_details.cached_tokens, 0)
        assert.strictEqual(u.completion_tokens_details.reasoning_tokens, 0)

        const system = "You are a meticulous recruiter. ".repeat(220)
        const long = (question: string) => ({
          model: "gpt-4.1",
          messages: [{ role: "system", content: system }, { role: "user", content: question }]
        })
        const first = yield* chat(sim, long("First listing"))
        const second = yield* chat(sim, long("Second listing"))
        assert.isAbove(first.json.usage.prompt_tokens, 1024)
        assert.strictEqual(first.json.usage.prompt_tokens_details.cached_tokens, 0)
        const cached = second.json.usage.prompt_tokens_details.cached_tokens
        assert.isAtLeast(cached, 1024)
        assert.strictEqual(cached % 128, 0)
        assert.isAtMost(cached, second.json.usage.prompt_tokens)

        const reasoning = yield* chat(sim, textRequest("Think.", "o3-mini"))
        const r = reasoning.json.usage
        assert.isAbove(r.completion_tokens_details.reasoning_tokens, 0)
        assert.isAbove(r.completion_tokens, r.completion_tokens_details.reasoning_tokens)
        const gpt5 = yield* chat(sim, toolRequest(undefined, "gpt-5-mini"))
        assert.isAbove(gpt5.json.usage.completion_tokens_details.reasoning_tokens, 0)

        const capped = yield* chat(sim, { ...textRequest(), max_completion_tokens: 5 })
        assert.strictEqual(capped.json.choices[0].finish_reason, "length")
        assert.strictEqual(capped.json.usage.completion_tokens, 5)
      })))

  it.live("is deterministic: the same seed and requests give the same answers, another seed others", () =>
    Effect.gen(function*() {
      const requests = [toolRequest(), formatRequest(), textRequest(), { ...textRequest(), n: 3 }]
      const run = (seed: number) =>
        withSim({ seed }, (sim) => Effect.forEach(requests, (body) => Effect.map(chat(sim, body), (a) => a.json)))
      const a = yield* run(7)
      const b = yield* run(7)
      const c = yield* run(8)
      assert.deepStrictEqual(a.map(withoutCreated), b.map(withoutCreated))
      for (let i = 0; i < requests.length; i++) {
        assert.notDeepEqual(withoutCreated(a[i]).choices, withoutCreated(c[i]).choices)
      }
    }))

  it.live("answers a retried request with the same content and a fresh fault draw", () =>
    withSim({ faults: { "500": 0.5 } }, (sim) =>
      Effect.gen(function*() {
        const answers = yield* Effect.forEach(Array.from({ length: 30 }), () => chat(sim, toolRequest()))
        const ok = answers.filter((a) => a.status === 200)
        assert.isAbove(ok.length, 0)
        assert.isBelow(ok.length, 30)
        const args = new Set(ok.map((a) => a.json.choices[0].message.tool_calls[0].function.arguments))
        assert.strictEqual(args.size, 1)
        const ids = new Set(ok.map((a) => a.json.id))
        assert.strictEqual(ids.size, ok.length)
      })))

  describe("faults", () => {
    const only = (fault: Simulator.Fault, extra: Simulator.Options = {}) => ({ ...extra, faults: { [fault]: 1 } })

    it.live("rate_limit: 429 rate_limit_exceeded with retry-after-ms and retry-after", () =>
      withSim(only("rate_limit", { retryAfterMs: 1500 }), (sim) =>
        Effect.gen(function*() {
          const a = yield* chat(sim, toolRequest())
          assert.strictEqual(a.status, 429)
          assertSpec(validError, a.json)
          assert.strictEqual(a.json.error.code, "rate_limit_exceeded")
          assert.strictEqual(a.json.error.type, "requests")
          assert.match(a.json.error.message, /^Rate limit reached for requests|^Rate limit reached for/)
          assert.strictEqual(a.headers["retry-after-ms"], "1500")
          assert.strictEqual(a.headers["retry-after"], "2")
          assert.strictEqual(a.headers["x-ratelimit-remaining-requests"], "0")
          assert.match(String(a.headers["x-request-id"]), /^req_/)
          assert.strictEqual((yield* sim.stats).faults.rate_limit, 1)
        })))

    it.live("quota: 429 insufficient_quota without retry hints", () =>
      withSim(only("quota"), (sim) =>
        Effect.gen(function*() {
          const a = yield* chat(sim, toolRequest())
          assert.strictEqual(a.status, 429)
          assertSpec(validError, a.json)
          assert.deepStrictEqual(
            { type: a.json.error.type, code: a.json.error.code, param: a.json.error.param },
            { type: "insufficient_quota", code: "insufficient_quota", param: null }
          )
          assert.match(a.json.error.message, /^You exceeded your current quota, please check your plan and billing/)
          assert.isUndefined(a.headers["retry-after"])
          assert.isUndefined(a.headers["retry-after-ms"])
        })))

    for (const status of ["500", "502", "503"] as const) {
      it.live(`${status}: an OpenAI error body with that status`, () =>
        withSim(only(status), (sim) =>
          Effect.gen(function*() {
            const a = yield* chat(sim, toolRequest())
            assert.strictEqual(a.status, Number(status))
            assertSpec(validError, a.json)
            assert.match(String(a.headers["x-request-id"]), /^req_/)
          })))
    }

    it.live("hang: never answers, and the connection is released when the client gives up", () =>
      withSim(only("hang"), (sim) =>
        Effect.gen(function*() {
          const result = yield* Effect.either(Effect.tryPromise(() =>
            request(`${sim.url}/chat/completions`, {
              method: "POST",
              headers: AUTH,
              body: JSON.stringify(toolRequest()),
              headersTimeout: 200
            })
          ))
          assert.isTrue(Either.isLeft(result))
          assert.strictEqual((yield* sim.stats).faults.hang, 1)
        })))

    it.live("hang: closing the simulator ends hanging requests instead of waiting for them", () =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const sim = yield* Simulator.make(only("hang")).pipe(Scope.extend(scope))
        const pending = request(`${sim.url}/chat/completions`, {
          method: "POST",
          headers: AUTH,
          body: JSON.stringify(toolRequest())
        }).then(() => "answered", () => "connection closed")
        yield* sim.stats.pipe(
          Effect.repeat({ schedule: Schedule.spaced("5 millis"), until: (s) => s.faults.hang === 1 })
        )
        const closed = yield* Scope.close(scope, Exit.void).pipe(Effect.timeout("3 seconds"), Effect.either)
        assert.isTrue(Either.isRight(closed), "the simulator did not close while a request hung")
        assert.strictEqual(yield* Effect.promise(() => pending), "connection closed")
      }))

    it.live("reset: the connection is destroyed without an answer", () =>
      withSim(only("reset"), (sim) =>
        Effect.gen(function*() {
          const result = yield* Effect.either(Effect.tryPromise(() =>
            request(`${sim.url}/chat/completions`, {
              method: "POST",
              headers: AUTH,
              body: JSON.stringify(toolRequest())
            })
          ))
          assert.isTrue(Either.isLeft(result))
          assert.strictEqual((yield* sim.stats).faults.reset, 1)
        })))

    it.live("cut: a 200 with its headers and part of the body, then the connection is destroyed", () =>
      withSim(only("cut"), (sim) =>
        Effect.gen(function*() {
          const seen = yield* Effect.promise(async () => {
            const res = await request(`${sim.url}/chat/completions`, {
              method: "POST",
              headers: AUTH,
              body: JSON.stringify(toolRequest())
            })
            let received = 0
            let error: unknown = undefined
            try {
              for await (const chunk of res.body) received += (chunk as Buffer).length
            } catch (e) {
              error = e
            }
            return { status: res.statusCode, length: Number(res.headers["content-length"]), received, error }
          })
          assert.strictEqual(seen.status, 200)
          assert.isDefined(seen.error, "the body ended cleanly")
          assert.isAbove(seen.received, 0)
          assert.isBelow(seen.received, seen.length)
          const stats = yield* sim.stats
          assert.strictEqual(stats.faults.cut, 1)
          assert.strictEqual(stats.byStatus["200"], 1)
        })))

    it.live("malformed: a 200 whose body is not JSON", () =>
      withSim(only("malformed"), (sim) =>
        Effect.gen(function*() {
          const a = yield* chat(sim, toolRequest())
          assert.strictEqual(a.status, 200)
          assert.strictEqual(a.headers["content-type"], "application/json")
          assert.isAbove(a.text.length, 0)
          assert.throws(() => JSON.parse(a.text))
        })))

    it.live("invalid_output: tool arguments and json_schema content that are JSON but violate the schema", () =>
      withSim(only("invalid_output"), (sim) =>
        Effect.gen(function*() {
          for (let i = 0; i < 10; i++) {
            const tool = yield* chat(sim, toolRequest(`listing ${i}`))
            assertSpec(validResponse, tool.json)
            const args = JSON.parse(tool.json.choices[0].message.tool_calls[0].function.arguments)
            assert.isFalse(validScore(args), JSON.stringify(args))
            const format = yield* chat(sim, formatRequest(`listing ${i}`))
            assert.isFalse(validScore(JSON.parse(format.json.choices[0].message.content)))
          }
        })))

    it.live("truncated: finish_reason length with cut JSON", () =>
      withSim(only("truncated"), (sim) =>
        Effect.gen(function*() {
          const tool = yield* chat(sim, toolRequest())
          assertSpec(validResponse, tool.json)
          const choice = tool.json.choices[0]
          assert.strictEqual(choice.finish_reason, "length")
          assert.throws(() => JSON.parse(choice.message.tool_calls[0].function.arguments))
          const format = yield* chat(sim, formatRequest())
          assert.strictEqual(format.json.choices[0].finish_reason, "length")
          assert.throws(() => JSON.parse(format.json.choices[0].message.content))
        })))

    it.live("refusal: message.refusal set and content null", () =>
      withSim(only("refusal"), (sim) =>
        Effect.gen(function*() {
          const a = yield* chat(sim, formatRequest())
          assertSpec(validResponse, a.json)
          const message = a.json.choices[0].message
          assert.isString(message.refusal)
          assert.strictEqual(message.content, null)
          assert.isUndefined(message.tool_calls)
        })))

    it.live("draws faults at the configured rates, reproducibly per seed, per model", () =>
      Effect.gen(function*() {
        const options = (seed: number): Simulator.Options => ({
          seed,
          faults: { "500": 0.2, rate_limit: 0.2 },
          faultsByModel: { "gpt-4o-mini": {} }
        })
        const run = (seed: number) =>
          withSim(options(seed), (sim) =>
            Effect.gen(function*() {
              const statuses = yield* Effect.forEach(
                Array.from({ length: 200 }, (_, i) => i),
                (i) => Effect.map(chat(sim, toolRequest(`listing ${i}`)), (a) => a.status),
                { concurrency: 8 }
              )
              const quiet = yield* Effect.forEach(
                Array.from({ length: 20 }, (_, i) => i),
                (i) => Effect.map(chat(sim, formatRequest(`listing ${i}`)), (a) => a.status)
              )
              return { statuses, quiet, stats: yield* sim.stats }
            }))
        const a = yield* run(3)
        const b = yield* run(3)
        const c = yield* run(4)
        assert.deepStrictEqual(a.statuses, b.statuses)
        assert.notDeepEqual(a.statuses, c.statuses)
        const count = (status: number) => a.statuses.filter((s) => s === status).length
        // 200 draws at 0.2: mean 40, sd ≈ 5.7
        assert.isAbove(count(500), 15)
        assert.isBelow(count(500), 65)
        assert.isAbove(count(429), 15)
        assert.isBelow(count(429), 65)
        assert.strictEqual(a.stats.faults["500"], count(500))
        assert.deepStrictEqual(a.quiet, Array(20).fill(200))
      }))
  })

  describe("limits", () => {
    it.effect("enforces requests per minute per model with 429s, retry hints and x-ratelimit headers", () =>
      withSim({ limits: { requestsPerMinute: 2 } }, (sim) =>
        Effect.gen(function*() {
          const first = yield* chat(sim, textRequest())
          const second = yield* chat(sim, textRequest())
          assert.strictEqual(first.headers["x-ratelimit-limit-requests"], "2")
          assert.strictEqual(first.headers["x-ratelimit-remaining-requests"], "1")
          assert.strictEqual(second.headers["x-ratelimit-remaining-requests"], "0")
          const third = yield* chat(sim, textRequest())
          assert.strictEqual(third.status, 429)
          assertSpec(validError, third.json)
          assert.deepStrictEqual(
            { type: third.json.error.type, code: third.json.error.code },
            { type: "requests", code: "rate_limit_exceeded" }
          )
          assert.match(third.json.error.message, /^Rate limit reached for gpt-4o-mini .* requests per min/)
          // one request refills every 30 s
          const waitMs = Number(third.headers["retry-after-ms"])
          assert.isAbove(waitMs, 29_000)
          assert.isAtMost(waitMs, 30_000)
          assert.strictEqual(third.headers["retry-after"], "30")
          assert.strictEqual(third.headers["x-ratelimit-remaining-requests"], "0")
          const other = yield* chat(sim, textRequest(undefined, "gpt-4.1"))
          assert.strictEqual(other.status, 200)
          assert.strictEqual((yield* sim.stats).rateLimited, 1)
        })))

    it.effect("enforces tokens per minute, per model when limitsByModel names it", () =>
      withSim({ limitsByModel: { "gpt-4o-mini": { tokensPerMinute: 40 } } }, (sim) =>
        Effect.gen(function*() {
          const small = yield* chat(sim, { ...textRequest("Hi"), max_completion_tokens: 1 })
          assert.strictEqual(small.status, 200)
          assert.strictEqual(small.headers["x-ratelimit-limit-tokens"], "40")
          const big = yield* chat(sim, textRequest("word ".repeat(60)))
          assert.strictEqual(big.status, 429)
          assert.strictEqual(big.json.error.type, "tokens")
          assert.match(big.json.error.message, /^Request too large/)
          const again = yield* chat(sim, textRequest("word ".repeat(25)))
          assert.strictEqual(again.status, 429)
          assert.match(again.json.error.message, /tokens per min \(TPM\)/)
          assert.isAbove(Number(again.headers["retry-after-ms"]), 0)
          assert.strictEqual((yield* chat(sim, textRequest("word ".repeat(60), "gpt-4.1"))).status, 200)
        })))

    it("refills continuously: one request per (60 s / limit)", () => {
      const limiter = new ModelLimiter(2, undefined, 0)
      assert.isTrue(limiter.admit(0, 10).ok)
      assert.isTrue(limiter.admit(0, 10).ok)
      const denied = limiter.admit(1_000, 10)
      assert.isFalse(denied.ok)
      if (!denied.ok) assert.strictEqual(denied.retryAfterMs, 29_000)
      assert.isTrue(limiter.admit(30_000, 10).ok)
      assert.isFalse(limiter.admit(30_001, 10).ok)
      const full = limiter.peek(200_000)
      assert.strictEqual(full.remainingRequests, 2)
      assert.strictEqual(full.resetRequestsMs, 0)
    })

    it("formats reset times as Go durations", () => {
      assert.deepStrictEqual(
        [0, 12, 999, 1_000, 1_500, 59_999, 360_000, 3_723_000].map(goDuration),
        ["0s", "12ms", "999ms", "1s", "1.5s", "59.999s", "6m0s", "1h2m3s"]
      )
    })
  })

  describe("requests it refuses", () => {
    it.live("401 invalid_api_key without a Bearer token, or with the wrong one when apiKey is set", () =>
      withSim({ apiKey: "sk-right" }, (sim) =>
        Effect.gen(function*() {
          const missing = yield* chat(sim, toolRequest(), {})
          assert.strictEqual(missing.status, 401)
          assertSpec(validError, missing.json)
          assert.strictEqual(missing.json.error.code, "invalid_api_key")
          const wrong = yield* chat(sim, toolRequest(), { authorization: "Bearer sk-wrong" })
          assert.strictEqual(wrong.status, 401)
          assert.notInclude(wrong.text, "sk-wrong")
          assert.strictEqual(wrong.json.error.code, "invalid_api_key")
          assert.strictEqual((yield* chat(sim, toolRequest(), { authorization: "Bearer sk-right" })).status, 200)
        })))

    it.live("accepts any Bearer token when no apiKey is set", () =>
      withSim({}, (sim) =>
        Effect.gen(function*() {
          assert.strictEqual((yield* chat(sim, textRequest(), { authorization: "Bearer anything" })).status, 200)
          assert.strictEqual((yield* chat(sim, textRequest(), { authorization: "Basic abc" })).status, 401)
        })))

    it.live("400 invalid_request_error for bad JSON, a missing model or messages, an unknown forced tool", () =>
      withSim({}, (sim) =>
        Effect.gen(function*() {
          const cases: ReadonlyArray<readonly [unknown, string | null]> = [
            ["{\"model\": ", null],
            [{ messages: [{ role: "user", content: "hi" }] }, null],
            [{ model: "gpt-4o-mini" }, "messages"],
            [{ model: "gpt-4o-mini", messages: [] }, "messages"],
            [{ ...toolRequest(), tool_choice: { type: "function", function: { name: "nope" } } }, "tool_choice"],
            [
              { ...toolRequest(), tools: [{ type: "function", function: { name: "f", parameters: { $ref: "#/x" } } }] },
              "tools[0].function.parameters"
            ]
          ]
          for (const [body, param] of cases) {
            const a = yield* chat(sim, body)
            assert.strictEqual(a.status, 400, JSON.stringify(body))
            assertSpec(validError, a.json)
            assert.strictEqual(a.json.error.type, "invalid_request_error")
            assert.strictEqual(a.json.error.param, param)
          }
        })))

    it.live("404 with an OpenAI error body for unknown paths", () =>
      withSim({}, (sim) =>
        Effect.gen(function*() {
          const a = yield* send(`${sim.url}/engines`, { method: "GET" })
          assert.strictEqual(a.status, 404)
          assertSpec(validError, a.json)
          assert.strictEqual(a.json.error.message, "Invalid URL (GET /v1/engines)")
          assert.match(String(a.headers["x-request-id"]), /^req_/)
          assert.strictEqual((yield* sim.stats).byStatus["404"], 1)
        })))
  })

  it.live("serves plugged-in routes behind the same auth, with the simulator's headers and chat answers", () => {
    const routes: ReadonlyArray<Simulator.Route> = [
      HttpRouter.makeRoute(
        "POST",
        "/v1/echo-chat",
        Effect.gen(function*() {
          const endpoint = yield* Simulator.EndpointContext
          const answer = endpoint.completeChat(toolRequest())
          return endpoint.json(200, { seed: endpoint.seed, answer })
        })
      ),
      HttpRouter.makeRoute("GET", "/v1/broken", Effect.die("boom")),
      HttpRouter.makeRoute(
        "GET",
        "/v1/teapot",
        Effect.map(Simulator.EndpointContext, (endpoint) => endpoint.error(418, "short and stout", "teapot"))
      )
    ]
    return withSim({ seed: 5, routes }, (sim) =>
      Effect.gen(function*() {
        const a = yield* send(`${sim.url}/echo-chat`, { body: {} })
        assert.strictEqual(a.status, 200)
        assert.strictEqual(a.json.seed, 5)
        assert.strictEqual(a.json.answer.status, 200)
        assertSpec(validResponse, a.json.answer.body)
        assert.match(String(a.headers["x-request-id"]), /^req_/)
        assert.strictEqual((yield* send(`${sim.url}/echo-chat`, { body: {}, headers: {} })).status, 401)
        const broken = yield* send(`${sim.url}/broken`, { method: "GET" })
        assert.strictEqual(broken.status, 500)
        assertSpec(validError, broken.json)
        const teapot = yield* send(`${sim.url}/teapot`, { method: "GET" })
        assert.strictEqual(teapot.status, 418)
        assert.deepStrictEqual(teapot.json.error, {
          message: "short and stout",
          type: "teapot",
          param: null,
          code: null
        })
      }))
  })

  it.effect("applies the latency model: base + per output token", () =>
    withSim({ latency: { baseMs: 60, perOutputTokenMs: 1 } }, (sim) =>
      Effect.gen(function*() {
        const started = yield* Clock.currentTimeMillis
        const a = yield* afterLatency(chat(sim, toolRequest()))
        const elapsed = (yield* Clock.currentTimeMillis) - started
        const expected = 60 + a.json.usage.completion_tokens
        assert.strictEqual(a.headers["openai-processing-ms"], String(expected))
        assert.isAtLeast(elapsed, expected - 2)
      })))

  it.effect("draws latency jitter from the seed", () =>
    Effect.gen(function*() {
      const delays = (seed: number) =>
        withSim({ seed, latency: { baseMs: 1, jitterMs: 20 } }, (sim) =>
          Effect.forEach(
            [1, 2, 3, 4, 5, 6],
            (i) =>
              Effect.map(
                afterLatency(chat(sim, textRequest(`question ${i}`))),
                (a) => Number(a.headers["openai-processing-ms"])
              )
          ))
      const a = yield* delays(1)
      assert.deepStrictEqual(a, yield* delays(1))
      for (const ms of a) assert.isTrue(ms >= 1 && ms <= 21, String(ms))
      assert.isAbove(new Set(a).size, 1)
    }))

  it("parses fault specs as the CLI takes them", () => {
    assert.deepStrictEqual(
      Simulator.parseFaults("rate_limit=0.05, 500=0.02,hang=0"),
      Either.right({ rate_limit: 0.05, "500": 0.02, hang: 0 })
    )
    assert.deepStrictEqual(Simulator.parseFaults(""), Either.right({}))
    const unknown = Simulator.parseFaults("rate_limit=0.1,timeout=0.2")
    assert.isTrue(Either.isLeft(unknown))
    if (Either.isLeft(unknown)) {
      assert.include(unknown.left, "timeout=0.2")
      assert.include(unknown.left, "rate_limit, quota, 500, 502, 503, hang, reset, malformed, invalid_output")
    }
    assert.isTrue(Either.isLeft(Simulator.parseFaults("500=abc")))
    assert.isTrue(Either.isLeft(Simulator.parseFaults("500=1.5")))
    assert.isTrue(Either.isLeft(Simulator.parseFaults("500")))
    assert.isTrue(Either.isLeft(Simulator.parseFaults("500=0.6,502=0.6")))
  })

  it.live("refuses to start with bad options, naming the option", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(Simulator.make({ faults: { "500": 0.7, "503": 0.7 } })))
      assert.strictEqual(error._tag, "StartError")
      assert.include(error.message, "faults")
      const port = yield* Effect.flip(Effect.scoped(Simulator.make({ port: 70000 })))
      assert.include(port.message, "port")
      const busy = yield* withSim({}, (sim) => Effect.either(Effect.scoped(Simulator.make({ port: sim.port }))))
      assert.isTrue(Either.isLeft(busy))
      if (Either.isLeft(busy)) assert.include(busy.left.message, "cannot listen on 127.0.0.1:")
    }))
})
