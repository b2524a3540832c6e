/**
 * The simulator's request handling without HTTP: given a chat completion request body, decide the
 * answer (a status, headers and body, after a delay), a hang or a connection reset. Everything that
 * varies is drawn from PRNGs seeded by (seed, request hash, how often that exact request was seen),
 * so a run with the same seed and the same requests gives the same answers and faults, while a
 * retried request gets a fresh fault draw. Schemas are compiled once per distinct `tools` or
 * `response_format` value.
 */
import { type CompiledSchema, compileSchema } from "./jsonSchema.js"
import { type Decision, goDuration, ModelLimiter, type Snapshot } from "./limits.js"
import { hashString, makeRng, randomId, type Rng } from "./random.js"
import { paragraph, words } from "./text.js"
import type { CountTokens } from "./tokens.js"

export const FAULTS = [
  "rate_limit",
  "quota",
  "500",
  "502",
  "503",
  "hang",
  "reset",
  "malformed",
  "invalid_output",
  "truncated",
  "refusal"
] as const

export type Fault = typeof FAULTS[number]
export type FaultRates = Partial<Record<Fault, number>>

export interface Limits {
  readonly requestsPerMinute?: number
  readonly tokensPerMinute?: number
}

export interface EngineOptions {
  readonly seed: number
  readonly baseMs: number
  readonly perOutputTokenMs: number
  readonly jitterMs: number
  readonly limits: Limits
  readonly limitsByModel: Readonly<Record<string, Limits>>
  readonly faults: FaultRates
  readonly faultsByModel: Readonly<Record<string, FaultRates>>
  readonly retryAfterMs: number
}

export type Outcome =
  | {
    readonly _tag: "Respond"
    readonly status: number
    readonly headers: Record<string, string>
    readonly body: string
    readonly delayMs: number
  }
  | { readonly _tag: "Hang" }
  | { readonly _tag: "Reset"; readonly delayMs: number }

type Json = Record<string, unknown>
const isObject = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)

interface ToolEntry {
  readonly tools: ReadonlyArray<{ readonly name: string; readonly schema: CompiledSchema }>
  readonly tokens: number
  readonly error?: { readonly message: string; readonly param: string; readonly code: string }
}

interface FormatEntry {
  readonly kind: "text" | "json_object" | "json_schema"
  readonly schema?: CompiledSchema
  readonly tokens: number
  readonly error?: { readonly message: string; readonly param: string; readonly code: string | null }
}

type Plan =
  | { readonly _tag: "Tool"; readonly name: string; readonly schema: CompiledSchema; readonly named: boolean }
  | { readonly _tag: "Json"; readonly schema: CompiledSchema }
  | { readonly _tag: "JsonObject" }
  | { readonly _tag: "Text" }

interface Prepared {
  readonly model: string
  readonly promptTokens: number
  readonly cachedTokens: number
  readonly maxTokens: number | undefined
  readonly n: number
  readonly plan: Plan
  readonly reasoning: boolean
}

type Mode = "ok" | "invalid_output" | "truncated" | "refusal"

/** Compiled `tools` / `response_format` values kept (each map starts over when full). */
const CACHE_MAX_ENTRIES = 2_000
/** Request hashes and prompt prefixes remembered, for fault draws per attempt and cached_tokens. */
const SEEN_MAX_ENTRIES = 200_000
/** OpenAI caches prompt prefixes from 1024 tokens, in steps of 128. */
const CACHE_MIN_TOKENS = 1024
const CACHE_STEP = 128
const REFUSAL = "I'm sorry, but I can't help with that request."
const REASONING_MODEL = /^(o\d|gpt-5)/

const json = (value: unknown): string => JSON.stringify(value)

/** An OpenAI error body. */
const errorBody = (message: string, type: string, param: string | null, code: string | null): string =>
  json({ error: { message, type, param, code } })

const setCapped = <K, V>(map: Map<K, V>, key: K, value: V, max: number): void => {
  if (map.size >= max) map.clear()
  map.set(key, value)
}

export class Engine {
  private readonly limiters = new Map<string, ModelLimiter>()
  private readonly faultTables = new Map<string, ReadonlyArray<readonly [Fault, number]>>()
  private readonly toolCache = new Map<string, ToolEntry>()
  private readonly formatCache = new Map<string, FormatEntry>()
  private readonly occurrences = new Map<number, number>()
  private readonly seenPrefixes = new Set<number>()
  private readonly idRng: Rng
  private requests = 0
  private completions = 0
  private rateLimited = 0
  private readonly faultCounts: Record<Fault, number>
  private readonly statusCounts: Record<string, number> = {}

  constructor(private readonly options: EngineOptions, private readonly count: CountTokens) {
    this.idRng = makeRng(options.seed, 0x1d1d1d1d, 0)
    this.faultCounts = Object.fromEntries(FAULTS.map((f) => [f, 0])) as Record<Fault, number>
  }

  stats() {
    return {
      requests: this.requests,
      completions: this.completions,
      rateLimited: this.rateLimited,
      faults: { ...this.faultCounts },
      byStatus: { ...this.statusCounts }
    }
  }

  /** Records an answer's status in the stats (every endpoint calls this once per answer). */
  recordStatus(status: number): void {
    this.statusCounts[status] = (this.statusCounts[status] ?? 0) + 1
  }

  /** A fresh `req_…` id. */
  requestId(): string {
    const r = this.idRng
    return "req_" + (r.u32().toString(16).padStart(8, "0") + r.u32().toString(16).padStart(8, "0") +
      r.u32().toString(16).padStart(8, "0") + r.u32().toString(16).padStart(8, "0"))
  }

  /** A JSON answer with the common headers. */
  respond(status: number, body: string, extra?: Record<string, string>, delayMs = 0): Outcome {
    const headers: Record<string, string> = {
      "x-request-id": this.requestId(),
      "openai-version": "2020-10-01",
      "openai-processing-ms": String(Math.max(1, Math.round(delayMs))),
      ...extra
    }
    return { _tag: "Respond", status, headers, body, delayMs }
  }

  /** An OpenAI-style error answer. */
  error(
    status: number,
    message: string,
    type: string,
    param: string | null,
    code: string | null,
    extra?: Record<string, string>,
    delayMs = 0
  ): Outcome {
    return this.respond(status, errorBody(message, type, param, code), extra, delayMs)
  }

  private limiter(model: string): ModelLimiter {
    let limiter = this.limiters.get(model)
    if (limiter === undefined) {
      const limits = this.options.limitsByModel[model] ?? this.options.limits
      limiter = new ModelLimiter(limits.requestsPerMinute, limits.tokensPerMinute, Date.now())
      this.limiters.set(model, limiter)
    }
    return limiter
  }

  private faultTable(model: string): ReadonlyArray<readonly [Fault, number]> {
    let table = this.faultTables.get(model)
    if (table === undefined) {
      const rates = this.options.faultsByModel[model] ?? this.options.faults
      let cumulative = 0
      const entries: Array<readonly [Fault, number]> = []
      for (const fault of FAULTS) {
        const rate = rates[fault] ?? 0
        if (rate > 0) {
          cumulative += rate
          entries.push([fault, cumulative])
        }
      }
      table = entries
      this.faultTables.set(model, table)
    }
    return table
  }

  private drawFault(model: string, rng: Rng): Fault | undefined {
    const table = this.faultTable(model)
    if (table.length === 0) return undefined
    const u = rng.next()
    for (const [fault, upTo] of table) if (u < upTo) return fault
    return undefined
  }

  private rateHeaders(s: Snapshot): Record<string, string> {
    return {
      "x-ratelimit-limit-requests": String(s.limitRequests),
      "x-ratelimit-limit-tokens": String(s.limitTokens),
      "x-ratelimit-remaining-requests": String(s.remainingRequests),
      "x-ratelimit-remaining-tokens": String(s.remainingTokens),
      "x-ratelimit-reset-requests": goDuration(s.resetRequestsMs),
      "x-ratelimit-reset-tokens": goDuration(s.resetTokensMs)
    }
  }

  /** Answers one `POST /v1/chat/completions` body received at `now` (ms since the epoch). */
  chat(text: string, now: number): Outcome {
    this.requests++
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch {
      return this.error(
        400,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)",
        "invalid_request_error",
        null,
        null
      )
    }
    const prepared = this.prepare(body)
    if (prepared._tag === "Invalid") return prepared.outcome
    const p = prepared.value
    const hash = hashString(text)
    const occurrence = this.occurrences.get(hash) ?? 0
    setCapped(this.occurrences, hash, occurrence + 1, SEEN_MAX_ENTRIES)
    const attemptRng = makeRng(this.options.seed, hash, occurrence + 1)
    const limiter = this.limiter(p.model)
    const admitted = limiter.admit(now, p.promptTokens + (p.maxTokens ?? 0))
    const baseDelay = this.options.baseMs + (this.options.jitterMs > 0 ? attemptRng.next() * this.options.jitterMs : 0)
    if (!admitted.ok) {
      this.rateLimited++
      return this.limitExceeded(p.model, admitted, baseDelay)
    }
    const fault = this.drawFault(p.model, attemptRng)
    if (fault !== undefined) this.faultCounts[fault]++
    const rate = this.rateHeaders(admitted.snapshot)
    switch (fault) {
      case "rate_limit": {
        const ms = this.options.retryAfterMs
        return this.error(
          429,
          `Rate limit reached for ${p.model} in organization org-simulator on requests per min (RPM): Limit ${admitted.snapshot.limitRequests}, Used ${admitted.snapshot.limitRequests}, Requested 1. Please try again in ${
            goDuration(ms)
          }. Visit https://platform.openai.com/account/rate-limits to learn more.`,
          "requests",
          null,
          "rate_limit_exceeded",
          {
            ...rate,
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": goDuration(ms),
            "retry-after": String(Math.max(1, Math.ceil(ms / 1000))),
            "retry-after-ms": String(ms)
          },
          baseDelay
        )
      }
      case "quota":
        return this.error(
          429,
          "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
          "insufficient_quota",
          null,
          "insufficient_quota",
          rate,
          baseDelay
        )
      case "500":
        return this.error(
          500,
          "The server had an error while processing your request. Sorry about that!",
          "server_error",
          null,
          null,
          rate,
          baseDelay
        )
      case "502":
        return this.error(502, "Bad gateway.", "cf_bad_gateway", null, null, rate, baseDelay)
      case "503":
        return this.error(
          503,
          "The engine is currently overloaded, please try again later.",
          "server_error",
          null,
          null,
          rate,
          baseDelay
        )
      case "hang":
        return { _tag: "Hang" }
      case "reset":
        return { _tag: "Reset", delayMs: baseDelay }
    }
    const mode: Mode = fault === "invalid_output" || fault === "truncated" || fault === "refusal" ? fault : "ok"
    const answerRng = makeRng(this.options.seed ^ 0x5bd1e995, hash, 0)
    const answer = this.answer(p, mode, answerRng, attemptRng, Math.floor(now / 1000))
    limiter.charge(answer.completionTokens - (p.maxTokens ?? 0))
    this.completions++
    const delay = baseDelay + this.options.perOutputTokenMs * answer.completionTokens
    const out = fault === "malformed" ? answer.body.slice(0, Math.floor(answer.body.length / 2)) : answer.body
    return this.respond(200, out, rate, delay)
  }

  /** The answer to a valid chat request without faults or limits, e.g. for a batch line. */
  complete(body: unknown, now: number): { readonly status: number; readonly body: unknown } {
    const prepared = this.prepare(body)
    if (prepared._tag === "Invalid") {
      const outcome = prepared.outcome as Extract<Outcome, { _tag: "Respond" }>
      return { status: outcome.status, body: JSON.parse(outcome.body) }
    }
    const text = json(body)
    const hash = hashString(text)
    const answer = this.answer(
      prepared.value,
      "ok",
      makeRng(this.options.seed ^ 0x5bd1e995, hash, 0),
      makeRng(this.options.seed, hash, 0x7fffffff),
      Math.floor(now / 1000)
    )
    return { status: 200, body: JSON.parse(answer.body) }
  }

  private limitExceeded(model: string, decision: Extract<Decision, { ok: false }>, delay: number): Outcome {
    const s = decision.snapshot
    const rate = this.rateHeaders(s)
    const unit = decision.kind === "requests" ? "requests per min (RPM)" : "tokens per min (TPM)"
    const limit = decision.kind === "requests" ? s.limitRequests : s.limitTokens
    if (decision.retryAfterMs === undefined) {
      return this.error(
        429,
        `Request too large for ${model} in organization org-simulator on ${unit}: Limit ${limit}, Requested more. The input or output tokens must be reduced in order to run successfully. Visit https://platform.openai.com/account/rate-limits to learn more.`,
        decision.kind,
        null,
        "rate_limit_exceeded",
        rate,
        delay
      )
    }
    const ms = decision.retryAfterMs
    return this.error(
      429,
      `Rate limit reached for ${model} in organization org-simulator on ${unit}: Limit ${limit}, Used ${decision.used}, Requested 1. Please try again in ${
        goDuration(ms)
      }. Visit https://platform.openai.com/account/rate-limits to learn more.`,
      decision.kind,
      null,
      "rate_limit_exceeded",
      { ...rate, "retry-after": String(Math.max(1, Math.ceil(ms / 1000))), "retry-after-ms": String(ms) },
      delay
    )
  }

  private invalid(message: string, param: string | null, code: string | null = null): {
    readonly _tag: "Invalid"
    readonly outcome: Outcome
  } {
    return { _tag: "Invalid", outcome: this.error(400, message, "invalid_request_error", param, code) }
  }

  private prepare(
    body: unknown
  ): { readonly _tag: "Valid"; readonly value: Prepared } | { readonly _tag: "Invalid"; readonly outcome: Outcome } {
    if (!isObject(body)) return this.invalid("The request body must be a JSON object.", null)
    const model = body.model
    if (typeof model !== "string" || model.length === 0) {
      return this.invalid("you must provide a model parameter", null)
    }
    const messages = body.messages
    if (!Array.isArray(messages)) {
      return this.invalid("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    }
    if (messages.length === 0) {
      return this.invalid(
        "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        "messages",
        "empty_array"
      )
    }
    if (body.stream === true) {
      return this.invalid(
        "The simulator does not support streaming: 'stream' must be false.",
        "stream",
        "unsupported_value"
      )
    }
    const n = body.n === undefined || body.n === null ? 1 : body.n
    if (typeof n !== "number" || !Number.isInteger(n) || n < 1 || n > 128) {
      return this.invalid(`Invalid 'n': expected an integer between 1 and 128.`, "n", "invalid_value")
    }
    const maxRaw = body.max_completion_tokens ?? body.max_tokens
    const maxTokens = typeof maxRaw === "number" && maxRaw > 0 ? Math.floor(maxRaw) : undefined

    let extraTokens = 0
    let tools: ToolEntry | undefined
    if (body.tools !== undefined && body.tools !== null) {
      if (!Array.isArray(body.tools)) {
        return this.invalid("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
      }
      if (body.tools.length > 0) {
        tools = this.toolEntry(body.tools)
        if (tools.error !== undefined) return this.invalid(tools.error.message, tools.error.param, tools.error.code)
        extraTokens += tools.tokens
      }
    }
    let format: FormatEntry | undefined
    if (body.response_format !== undefined && body.response_format !== null) {
      format = this.formatEntry(body.response_format)
      if (format.error !== undefined) return this.invalid(format.error.message, format.error.param, format.error.code)
      extraTokens += format.tokens
    }

    let promptTokens = 3 + extraTokens
    let prefixTokens = extraTokens
    const last = messages.length - 1
    for (let i = 0; i <= last; i++) {
      const message: unknown = messages[i]
      if (!isObject(message) || typeof message.role !== "string") {
        return this.invalid(
          `Invalid 'messages[${i}]': expected an object with a 'role'.`,
          `messages[${i}]`,
          "invalid_type"
        )
      }
      const t = this.messageTokens(message)
      promptTokens += t
      if (i < last) prefixTokens += t
    }
    let cachedTokens = 0
    if (prefixTokens >= CACHE_MIN_TOKENS) {
      let h = hashString(model)
      if (tools !== undefined) h = hashString(json(body.tools), h)
      for (let i = 0; i < last; i++) {
        const m = messages[i] as Json
        h = hashString(m.role as string, h)
        h = hashString(typeof m.content === "string" ? m.content : json(m.content ?? null), h)
      }
      if (this.seenPrefixes.has(h)) {
        cachedTokens = CACHE_MIN_TOKENS + Math.floor((prefixTokens - CACHE_MIN_TOKENS) / CACHE_STEP) * CACHE_STEP
      } else {
        if (this.seenPrefixes.size >= SEEN_MAX_ENTRIES) this.seenPrefixes.clear()
        this.seenPrefixes.add(h)
      }
    }

    const plan = this.plan(body, tools, format, (messages[last] as Json).role === "tool")
    if (plan._tag === "Invalid") return plan
    return {
      _tag: "Valid",
      value: {
        model,
        promptTokens,
        cachedTokens,
        maxTokens,
        n,
        plan: plan.plan,
        reasoning: REASONING_MODEL.test(model)
      }
    }
  }

  private plan(
    body: Json,
    tools: ToolEntry | undefined,
    format: FormatEntry | undefined,
    afterToolResult: boolean
  ): { readonly _tag: "Plan"; readonly plan: Plan } | { readonly _tag: "Invalid"; readonly outcome: Outcome } {
    const choice = body.tool_choice
    if (tools !== undefined && tools.tools.length > 0 && choice !== "none") {
      if (isObject(choice) && isObject(choice.function) && typeof choice.function.name === "string") {
        const name = choice.function.name
        const tool = tools.tools.find((t) => t.name === name)
        if (tool === undefined) {
          return this.invalid(
            `Invalid value for 'tool_choice': no function named '${name}' was specified in the 'tools' parameter.`,
            "tool_choice",
            "invalid_value"
          )
        }
        return { _tag: "Plan", plan: { _tag: "Tool", name, schema: tool.schema, named: true } }
      }
      if (choice === "required" || !afterToolResult) {
        const tool = tools.tools[0]!
        return { _tag: "Plan", plan: { _tag: "Tool", name: tool.name, schema: tool.schema, named: false } }
      }
    }
    if (format?.kind === "json_schema") return { _tag: "Plan", plan: { _tag: "Json", schema: format.schema! } }
    if (format?.kind === "json_object") return { _tag: "Plan", plan: { _tag: "JsonObject" } }
    return { _tag: "Plan", plan: { _tag: "Text" } }
  }

  private contentTokens(content: unknown): number {
    if (typeof content === "string") return this.count(content)
    if (!Array.isArray(content)) return 0
    let total = 0
    for (const part of content) {
      if (!isObject(part)) continue
      if (typeof part.text === "string") total += this.count(part.text)
      else if (typeof part.refusal === "string") total += this.count(part.refusal)
      else total += 85 // an image, audio or file part: a flat low-detail estimate
    }
    return total
  }

  private messageTokens(message: Json): number {
    let total = 4 + this.contentTokens(message.content)
    if (typeof message.name === "string") total += 1 + this.count(message.name)
    if (Array.isArray(message.tool_calls)) {
      for (const call of message.tool_calls) {
        if (isObject(call) && isObject(call.function)) {
          const fn = call.function
          total += 7 + this.count(String(fn.name ?? "")) + this.count(String(fn.arguments ?? ""))
        }
      }
    }
    return total
  }

  private toolEntry(tools: ReadonlyArray<unknown>): ToolEntry {
    const key = json(tools)
    const known = this.toolCache.get(key)
    if (known !== undefined) return known
    const compiled: Array<{ readonly name: string; readonly schema: CompiledSchema }> = []
    let entry: ToolEntry | undefined
    for (let i = 0; i < tools.length && entry === undefined; i++) {
      const tool = tools[i]
      const fn = isObject(tool) ? tool.function : undefined
      if (!isObject(fn) || typeof fn.name !== "string" || fn.name.length === 0) {
        entry = {
          tools: [],
          tokens: 0,
          error: {
            message: `Missing required parameter: 'tools[${i}].function.name'.`,
            param: `tools[${i}].function.name`,
            code: "missing_required_parameter"
          }
        }
        break
      }
      try {
        compiled.push({ name: fn.name, schema: compileSchema(fn.parameters ?? { type: "object", properties: {} }) })
      } catch (e) {
        entry = {
          tools: [],
          tokens: 0,
          error: {
            message: `Invalid schema for function '${fn.name}': ${e instanceof Error ? e.message : String(e)}.`,
            param: `tools[${i}].function.parameters`,
            code: "invalid_function_parameters"
          }
        }
      }
    }
    entry ??= { tools: compiled, tokens: this.count(key) }
    setCapped(this.toolCache, key, entry, CACHE_MAX_ENTRIES)
    return entry
  }

  private formatEntry(format: unknown): FormatEntry {
    const key = json(format)
    const known = this.formatCache.get(key)
    if (known !== undefined) return known
    let entry: FormatEntry
    if (isObject(format) && format.type === "json_schema") {
      const spec = format.json_schema
      if (!isObject(spec) || typeof spec.name !== "string") {
        entry = {
          kind: "text",
          tokens: 0,
          error: {
            message: "Missing required parameter: 'response_format.json_schema.name'.",
            param: "response_format.json_schema.name",
            code: "missing_required_parameter"
          }
        }
      } else {
        try {
          entry = {
            kind: "json_schema",
            schema: compileSchema(spec.schema ?? { type: "object", properties: {} }),
            tokens: this.count(key)
          }
        } catch (e) {
          entry = {
            kind: "text",
            tokens: 0,
            error: {
              message: `Invalid schema for response_format '${spec.name}': ${
                e instanceof Error ? e.message : String(e)
              }.`,
              param: "response_format",
              code: null
            }
          }
        }
      }
    } else if (isObject(format) && format.type === "json_object") {
      entry = { kind: "json_object", tokens: 0 }
    } else if (isObject(format) && format.type === "text") {
      entry = { kind: "text", tokens: 0 }
    } else {
      entry = {
        kind: "text",
        tokens: 0,
        error: {
          message: "Invalid value for 'response_format.type': expected one of 'text', 'json_object', 'json_schema'.",
          param: "response_format.type",
          code: "invalid_value"
        }
      }
    }
    setCapped(this.formatCache, key, entry, CACHE_MAX_ENTRIES)
    return entry
  }

  /** Builds the completion body. `rng` drives the content (stable per request), `attempt` the ids. */
  private answer(
    p: Prepared,
    mode: Mode,
    rng: Rng,
    attempt: Rng,
    created: number
  ): { readonly body: string; readonly completionTokens: number } {
    const choices: Array<unknown> = []
    let completionTokens = 0
    let reasoningTokens = 0
    for (let index = 0; index < p.n; index++) {
      const reasoning = p.reasoning ? 64 * rng.between(1, 8) : 0
      let visibleBudget = p.maxTokens === undefined ? Infinity : p.maxTokens - reasoning
      let choiceReasoning = reasoning
      if (visibleBudget < 0) {
        choiceReasoning = p.maxTokens!
        visibleBudget = 0
      }
      reasoningTokens += choiceReasoning
      if (mode === "refusal") {
        completionTokens += choiceReasoning + this.count(REFUSAL)
        choices.push({
          index,
          message: { role: "assistant", content: null, refusal: REFUSAL, annotations: [] },
          finish_reason: "stop",
          logprobs: null
        })
        continue
      }
      const plan = p.plan
      let text: string
      let isJson = true
      switch (plan._tag) {
        case "Tool":
        case "Json": {
          let value = plan.schema.generate(rng)
          if (mode === "invalid_output") value = plan.schema.spoil(value, rng) ?? value
          text = json(value)
          break
        }
        case "JsonObject":
          text = json({ answer: words(rng, rng.between(3, 12)) })
          break
        case "Text":
          text = paragraph(rng)
          isJson = false
          break
      }
      let tokens = this.count(text)
      let cut = false
      if (mode === "truncated") {
        const keep = Math.max(1, Math.floor(text.length * (0.3 + 0.4 * rng.next())))
        text = text.slice(0, isJson ? Math.min(keep, text.length - 1) : keep)
        tokens = p.maxTokens !== undefined ? Math.max(0, visibleBudget) : this.count(text)
        cut = true
      } else if (tokens > visibleBudget) {
        text = text.slice(0, Math.floor((text.length * visibleBudget) / tokens))
        tokens = visibleBudget
        cut = true
      }
      completionTokens += choiceReasoning + tokens
      if (plan._tag === "Tool") {
        completionTokens += 7 + this.count(plan.name)
        choices.push({
          index,
          message: {
            role: "assistant",
            content: null,
            refusal: null,
            tool_calls: [{
              id: "call_" + randomId(attempt, 24),
              type: "function",
              function: { name: plan.name, arguments: text }
            }],
            annotations: []
          },
          finish_reason: cut ? "length" : plan.named ? "stop" : "tool_calls",
          logprobs: null
        })
      } else {
        choices.push({
          index,
          message: { role: "assistant", content: text, refusal: null, annotations: [] },
          finish_reason: cut ? "length" : "stop",
          logprobs: null
        })
      }
    }
    const usage = {
      prompt_tokens: p.promptTokens,
      completion_tokens: completionTokens,
      total_tokens: p.promptTokens + completionTokens,
      prompt_tokens_details: { cached_tokens: p.cachedTokens, audio_tokens: 0 },
      completion_tokens_details: {
        reasoning_tokens: reasoningTokens,
        audio_tokens: 0,
        accepted_prediction_tokens: 0,
        rejected_prediction_tokens: 0
      }
    }
    const body = json({
      id: "chatcmpl-" + randomId(attempt, 29),
      object: "chat.completion",
      created,
      model: p.model,
      choices,
      usage,
      service_tier: "default",
      system_fingerprint: "fp_" + hashString(p.model).toString(16).padStart(8, "0").slice(0, 8) + "sim"
    })
    return { body, completionTokens }
  }
}
