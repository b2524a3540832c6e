/**
 * The simulator refuses what OpenAI refuses, with OpenAI's status, type, param, code and message:
 * strict schemas outside the Structured Outputs subset, parameters out of range, unknown models,
 * `stream_options` without `stream`. It lists its models at `GET /v1/models`, and its request ids
 * do not repeat across restarts with the same seed.
 */
import { assert, describe, it } from "@effect/vitest"
import addFormats from "ajv-formats"
import Ajv2020 from "ajv/dist/2020.js"
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { request } from "undici"
import * as Simulator from "../src/Simulator.js"

const spec = JSON.parse(
  Fs.readFileSync(Path.join(import.meta.dirname, "fixtures/openai-openapi/openapi.patched.json"), "utf8")
)
const ajv = new Ajv2020.default({ strict: false, allErrors: true, formats: { unixtime: true } })
addFormats.default(ajv)
ajv.addSchema({ $id: "https://keel.test/openai.json", components: spec.components })
const specSchema = (name: string) => ajv.getSchema(`https://keel.test/openai.json#/components/schemas/${name}`)!
const assertSpec = (name: string, body: unknown) => {
  const validate = specSchema(name)
  if (!validate(body)) assert.fail(`${JSON.stringify(body)} violates ${name}: ${ajv.errorsText(validate.errors)}`)
}

const AUTH = { authorization: "Bearer sk-test-0000" }

const send = (url: string, body?: unknown, headers: Record<string, string> = AUTH) =>
  Effect.promise(async () => {
    const res = await request(url, {
      method: body === undefined ? "GET" : "POST",
      headers: { "content-type": "application/json", ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) })
    })
    return { status: res.statusCode, headers: res.headers, json: (await res.body.json()) as any }
  })

const withSim = <A>(options: Simulator.Options, f: (sim: Simulator.Simulator["Type"]) => Effect.Effect<A>) =>
  Effect.flatMap(Simulator.Simulator, f).pipe(Effect.provide(Simulator.layer(options)))

const closed = (properties: Record<string, unknown>) => ({
  type: "object",
  properties,
  required: Object.keys(properties),
  additionalProperties: false
})

const messages = [{ role: "user", content: "Score this listing." }]
const toolBody = (parameters: unknown, strict = true) => ({
  model: "gpt-4.1-mini",
  messages,
  tools: [{ type: "function", function: { name: "score", strict, parameters } }],
  tool_choice: "required"
})
const formatBody = (schema: unknown, strict = true) => ({
  model: "gpt-4o-mini",
  messages,
  response_format: { type: "json_schema", json_schema: { name: "score", strict, schema } }
})

interface Expected {
  readonly status?: number
  readonly param: string | null
  readonly code: string | null
  readonly message: RegExp
}

/** Sends each body and checks OpenAI's error answer for it. */
const expectRefused = (cases: ReadonlyArray<readonly [unknown, Expected]>, options: Simulator.Options = {}) =>
  withSim(options, (sim) =>
    Effect.forEach(cases, ([body, expected]) =>
      Effect.gen(function*() {
        const a = yield* send(`${sim.url}/chat/completions`, body)
        const what = `${JSON.stringify(body).slice(0, 300)} → ${JSON.stringify(a.json)}`
        assert.strictEqual(a.status, expected.status ?? 400, what)
        assertSpec("ErrorResponse", a.json)
        assert.strictEqual(a.json.error.type, "invalid_request_error", what)
        assert.strictEqual(a.json.error.param, expected.param, what)
        assert.strictEqual(a.json.error.code, expected.code, what)
        assert.match(a.json.error.message, expected.message, what)
        assert.match(String(a.headers["x-request-id"]), /^req_/)
      })))

const nested = (depth: number): Record<string, unknown> =>
  depth === 0 ? { type: "string" } : closed({ inner: nested(depth - 1) })

describe("Simulator refuses what OpenAI refuses", () => {
  it.live("strict tool schemas: closed objects, every property required, the keyword subset, an object root, limits", () => {
    const tool = (message: RegExp): Expected => ({
      param: "tools[0].function.parameters",
      code: "invalid_function_parameters",
      message
    })
    return expectRefused([
      [
        toolBody({ type: "object", properties: { a: { type: "string" } }, required: ["a"] }),
        tool(
          /^Invalid schema for function 'score': In context=\(\), 'additionalProperties' is required to be supplied and to be false\.$/
        )
      ],
      [
        toolBody(closed({ salary: { ...closed({ min: { type: "number" } }), required: [] } })),
        tool(/In context=\('properties', 'salary'\), 'required' is required to be supplied .* Missing 'min'\.$/)
      ],
      [
        toolBody({ type: "object", properties: { a: { type: "string" } }, additionalProperties: false }),
        tool(/'required' is required to be supplied and to be an array including every key in properties/)
      ],
      [
        toolBody(closed({ tags: { type: "array", items: { type: "string" }, uniqueItems: true } })),
        tool(/In context=\('properties', 'tags'\), 'uniqueItems' is not permitted\.$/)
      ],
      [
        toolBody(closed({ n: { type: "integer", not: { const: 3 } } })),
        tool(/'not' is not permitted/)
      ],
      [
        toolBody({ type: "array", items: { type: "string" } }),
        tool(/schema must be a JSON Schema of 'type: "object"'/)
      ],
      [toolBody(nested(11)), tool(/11 levels of nesting exceeds limit of 10\.$/)],
      [
        toolBody(closed({ e: { type: "string", enum: Array.from({ length: 1001 }, (_, i) => `v${i}`) } })),
        tool(/1001 enum values in all exceeds limit of 1000/)
      ]
    ])
  })

  it.live("strict and non-strict json_schema formats: an object root always, the strict rules when strict", () => {
    const format = (message: RegExp): Expected => ({ param: "response_format", code: null, message })
    return expectRefused([
      [
        formatBody({ type: "object", properties: { a: { type: "string" } }, required: ["a"] }),
        format(
          /^Invalid schema for response_format 'score': In context=\(\), 'additionalProperties' is required to be supplied and to be false\.$/
        )
      ],
      [
        formatBody(closed({ a: { type: "string", patternProperties: {} } })),
        format(/'patternProperties' is not permitted/)
      ],
      [
        formatBody({ type: "array", items: { type: "string" } }, false),
        format(
          /^Invalid schema for response_format 'score': schema must be a JSON Schema of 'type: "object"', got 'type: "array"'\.$/
        )
      ],
      [formatBody({ anyOf: [closed({ a: { type: "string" } }), { type: "null" }] }), format(/got 'type: "None"'/)]
    ])
  })

  it.live("accepts what strict mode allows, and the same open schemas when not strict", () =>
    withSim({}, (sim) =>
      Effect.gen(function*() {
        const open = { type: "object", properties: { a: { type: "string", minLength: 2 } } }
        for (
          const body of [
            toolBody(open, false),
            formatBody(open, false),
            toolBody({
              ...closed({ node: { $ref: "#/$defs/n" } }),
              $defs: { n: closed({ v: { type: ["string", "null"] } }) }
            }),
            toolBody(nested(10)),
            formatBody(closed({ x: { anyOf: [closed({ a: { type: "integer" } }), { type: "null" }] } }))
          ]
        ) {
          const a = yield* send(`${sim.url}/chat/completions`, body)
          assert.strictEqual(a.status, 200, JSON.stringify(a.json))
        }
      })))

  it.live("parameter ranges: temperature, top_p, penalties, n, max tokens, top_logprobs", () => {
    const body = (extra: Record<string, unknown>, model = "gpt-4o-mini") => ({ model, messages, ...extra })
    const out = (param: string, code: string, message: RegExp): Expected => ({ param, code, message })
    return expectRefused([
      [
        body({ temperature: 5 }),
        out(
          "temperature",
          "decimal_above_max_value",
          /^Invalid 'temperature': decimal above maximum value\. Expected a value <= 2, but got 5 instead\.$/
        )
      ],
      [body({ temperature: -0.5 }), out("temperature", "decimal_below_min_value", /Expected a value >= 0/)],
      [body({ temperature: "hot" }), out("temperature", "invalid_type", /^Invalid type for 'temperature'/)],
      [body({ top_p: 1.5 }), out("top_p", "decimal_above_max_value", /Expected a value <= 1, but got 1\.5/)],
      [body({ presence_penalty: 3 }), out("presence_penalty", "decimal_above_max_value", /<= 2/)],
      [body({ frequency_penalty: -2.5 }), out("frequency_penalty", "decimal_below_min_value", />= -2/)],
      [body({ n: 129 }), out("n", "integer_above_max_value", /^Invalid 'n': integer above maximum value/)],
      [body({ n: 0 }), out("n", "integer_below_min_value", /Expected a value >= 1, but got 0/)],
      [body({ n: 1.5 }), out("n", "invalid_type", /expected an integer/)],
      [body({ max_completion_tokens: 0 }), out("max_completion_tokens", "integer_below_min_value", />= 1/)],
      [body({ max_tokens: -3 }), out("max_tokens", "integer_below_min_value", /but got -3/)],
      [body({ top_logprobs: 21 }), out("top_logprobs", "integer_above_max_value", /<= 20/)],
      [
        body({ max_tokens: 100 }, "o4-mini"),
        out("max_tokens", "unsupported_parameter", /Use 'max_completion_tokens' instead/)
      ],
      [
        body({ temperature: 0.2 }, "gpt-5-mini"),
        out("temperature", "unsupported_value", /Only the default \(1\) value is supported/)
      ]
    ])
  })

  it.live("stream_options without stream", () =>
    expectRefused([[
      { model: "gpt-4o-mini", messages, stream_options: { include_usage: true } },
      {
        param: "stream_options",
        code: null,
        message: /^The 'stream_options' parameter is only allowed when 'stream' is enabled\.$/
      }
    ]]))

  it.live("unknown models: 404 model_not_found; the model list is configurable", () =>
    Effect.gen(function*() {
      const notFound = (model: string): Expected => ({
        status: 404,
        param: null,
        code: "model_not_found",
        message: new RegExp(`^The model \`${model}\` does not exist or you do not have access to it\\.$`)
      })
      yield* expectRefused([[{ model: "gpt-9-ultra", messages }, notFound("gpt-9-ultra")]])
      yield* expectRefused([[{ model: "gpt-4o", messages }, notFound("gpt-4o")]], { models: ["house-model"] })
      yield* withSim({ models: ["house-model"], faultsByModel: { "model-b": { "500": 1 } } }, (sim) =>
        Effect.gen(function*() {
          assert.strictEqual(
            (yield* send(`${sim.url}/chat/completions`, { model: "house-model", messages })).status,
            200
          )
          // a model given faults is served (with its faults)
          assert.strictEqual((yield* send(`${sim.url}/chat/completions`, { model: "model-b", messages })).status, 500)
        }))
    }))
})

describe("Simulator models and ids", () => {
  it.live("GET /v1/models lists the served models and GET /v1/models/{id} answers one, in OpenAI's shapes", () =>
    withSim({ limitsByModel: { "my-tuned-model": { requestsPerMinute: 10 } } }, (sim) =>
      Effect.gen(function*() {
        const list = yield* send(`${sim.url}/models`)
        assert.strictEqual(list.status, 200)
        assertSpec("ListModelsResponse", list.json)
        const ids = list.json.data.map((m: { id: string }) => m.id)
        for (const id of [...Simulator.defaultModels, "my-tuned-model"]) assert.include(ids, id)

        const one = yield* send(`${sim.url}/models/gpt-4.1-mini`)
        assert.strictEqual(one.status, 200)
        assertSpec("Model", one.json)
        assert.deepStrictEqual(one.json, list.json.data.find((m: { id: string }) => m.id === "gpt-4.1-mini"))

        const missing = yield* send(`${sim.url}/models/gpt-9-ultra`)
        assert.strictEqual(missing.status, 404)
        assertSpec("ErrorResponse", missing.json)
        assert.deepStrictEqual(
          { param: missing.json.error.param, code: missing.json.error.code },
          { param: "model", code: "model_not_found" }
        )
        assert.strictEqual((yield* send(`${sim.url}/models`, undefined, {})).status, 401)
      })))

  it.live("request ids do not repeat across restarts with the same seed; the answers do", () =>
    Effect.gen(function*() {
      const run = withSim({ seed: 9 }, (sim) =>
        Effect.forEach([1, 2, 3], (i) =>
          Effect.map(
            send(`${sim.url}/chat/completions`, {
              model: "gpt-4o-mini",
              messages: [{ role: "user", content: `q${i}` }]
            }),
            (a) => ({ requestId: String(a.headers["x-request-id"]), content: a.json.choices[0].message.content })
          )))
      const a = yield* run
      const b = yield* run
      assert.deepStrictEqual(a.map((x) => x.content), b.map((x) => x.content))
      const ids = new Set([...a, ...b].map((x) => x.requestId))
      assert.strictEqual(ids.size, 6)
    }))
})
