/**
 * The simulator looks like OpenAI to the official `openai` npm client: a tool call, structured
 * output, and errors the SDK classifies as OpenAI's own.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import OpenAI from "openai"
import * as Simulator from "../src/Simulator.js"

const withClient = <A>(options: Simulator.Options, f: (client: OpenAI) => Promise<A>) =>
  Effect.flatMap(
    Simulator.Simulator,
    (sim) => Effect.promise(() => f(new OpenAI({ apiKey: "sk-sdk-test", baseURL: sim.url, maxRetries: 0 })))
  ).pipe(Effect.provide(Simulator.layer(options)))

const parameters = {
  type: "object",
  additionalProperties: false,
  required: ["city", "days"],
  properties: {
    city: { type: "string" },
    days: { type: "integer", minimum: 1, maximum: 14 }
  }
}

describe("Simulator with the official openai SDK", () => {
  it.live("returns a tool call the SDK parses, with usage and the request id", () =>
    withClient({}, async (client) => {
      const { data, request_id } = await client.chat.completions.create({
        model: "gpt-4.1-mini",
        messages: [{ role: "user", content: "Weather in Lisbon for the next days?" }],
        tools: [{ type: "function", function: { name: "forecast", strict: true, parameters } }],
        tool_choice: "required"
      }).withResponse()
      assert.match(String(request_id), /^req_/)
      const choice = data.choices[0]!
      assert.strictEqual(choice.finish_reason, "tool_calls")
      const call = choice.message.tool_calls![0]!
      assert.strictEqual(call.type, "function")
      if (call.type === "function") {
        assert.strictEqual(call.function.name, "forecast")
        const args = JSON.parse(call.function.arguments)
        assert.isString(args.city)
        assert.isTrue(Number.isInteger(args.days) && args.days >= 1 && args.days <= 14)
      }
      assert.isAbove(data.usage!.prompt_tokens, 0)
      assert.strictEqual(data.usage!.prompt_tokens_details!.cached_tokens, 0)
    }))

  it.live("answers structured output the SDK's parse helper accepts", () =>
    withClient({}, async (client) => {
      const completion = await client.chat.completions.parse({
        model: "gpt-4o-mini",
        messages: [{ role: "user", content: "Plan a trip." }],
        response_format: { type: "json_schema", json_schema: { name: "trip", strict: true, schema: parameters } }
      })
      const parsed = completion.choices[0]!.message.parsed as unknown as { city: string; days: number }
      assert.isString(parsed.city)
      assert.isTrue(parsed.days >= 1 && parsed.days <= 14)
    }))

  it.live("fails with the SDK's own error classes, codes and retry hints", () =>
    Effect.gen(function*() {
      const quota = yield* withClient({ faults: { quota: 1 } }, (client) =>
        client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }] }).then(
          () =>
            undefined,
          (e: unknown) => e
        ))
      assert.instanceOf(quota, OpenAI.RateLimitError)
      const q = quota as InstanceType<typeof OpenAI.RateLimitError>
      assert.strictEqual(q.code, "insufficient_quota")
      assert.match(String(q.requestID), /^req_/)

      const limited = yield* withClient({ faults: { rate_limit: 1 }, retryAfterMs: 20 }, (client) =>
        client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }] }).then(
          () =>
            undefined,
          (e: unknown) =>
            e
        ))
      assert.instanceOf(limited, OpenAI.RateLimitError)
      const l = limited as InstanceType<typeof OpenAI.RateLimitError>
      assert.strictEqual(l.code, "rate_limit_exceeded")
      assert.strictEqual(l.headers.get("retry-after-ms"), "20")

      const unavailable = yield* withClient({ faults: { "503": 1 } }, (client) =>
        client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }] }).then(
          () =>
            undefined,
          (e: unknown) =>
            e
        ))
      assert.instanceOf(unavailable, OpenAI.InternalServerError)

      const denied = yield* withClient({ apiKey: "sk-other" }, (client) =>
        client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }] }).then(
          () =>
            undefined,
          (e: unknown) =>
            e
        ))
      assert.instanceOf(denied, OpenAI.AuthenticationError)
    }))
})
