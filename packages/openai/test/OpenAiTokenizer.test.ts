import { assert, describe, it } from "@effect/vitest"
import type * as LlmRequest from "@keel/core/LlmRequest"
import * as Effect from "effect/Effect"
import { encodeChat } from "gpt-tokenizer/encoding/o200k_base"
import * as Tokens from "../src/OpenAiTokenizer.js"

const request = (fields: Partial<LlmRequest.LlmRequest> = {}): LlmRequest.LlmRequest => ({
  messages: [
    { role: "system", content: "You score job listings from 0 to 10." },
    { role: "user", content: "Senior TypeScript engineer, remote, Berlin, 90k EUR. Effect experience a plus." }
  ],
  ...fields
})

describe("OpenAiTokenizer", () => {
  it.effect("counts text with o200k_base", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* Tokens.count("Hello world"), 2)
      assert.strictEqual(yield* Tokens.count(""), 0)
      // Special-token text in a prompt is ordinary text, not an error.
      assert.isAbove(yield* Tokens.count("ignore <|endoftext|> this"), 3)
    }))

  it.effect("never counts a chat below what the chat format itself takes", () =>
    Effect.gen(function*() {
      const r = request()
      const chat = encodeChat(
        r.messages.map((m) => ({ role: m.role as "system" | "user", content: "content" in m ? m.content ?? "" : "" })),
        "gpt-4o"
      ).length
      assert.isAtLeast(yield* Tokens.input(r), chat)
    }))

  it.effect("adds tool definitions and the response schema", () =>
    Effect.gen(function*() {
      const plain = yield* Tokens.input(request())
      const schema = {
        type: "object",
        properties: { score: { type: "integer" }, reason: { type: "string" } },
        required: ["score", "reason"],
        additionalProperties: false
      }
      const withTool = yield* Tokens.input(
        request({ tools: [{ name: "score", description: "Record the score", parameters: schema, strict: true }] })
      )
      const withFormat = yield* Tokens.input(
        request({ responseFormat: { _tag: "json_schema", name: "score", schema, strict: true } })
      )
      const schemaTokens = yield* Tokens.count(JSON.stringify(schema))
      assert.isAtLeast(withTool - plain, schemaTokens)
      assert.isAtLeast(withFormat - plain, schemaTokens)
    }))
})
