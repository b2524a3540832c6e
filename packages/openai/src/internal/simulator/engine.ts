/**
 * The simulator's request handling without HTTP: a chat completion body in, an outcome out (an
 * answer after a delay, a hang, a reset, or an answer cut mid-body). Three steps: validate
 * (validate.ts), decide (decide.ts: outages, capacity, limits, faults) and answer (answer.ts).
 * Everything that varies is drawn from PRNGs seeded by (seed, request hash, how often that exact
 * request was seen), so a run with the same seed and requests gives the same answers and faults,
 * while a retried request gets a fresh fault draw. Time comes from `now` (the Effect clock).
 */
import {
  completion,
  type ErrorAnswer,
  faultError,
  limitExceeded,
  type Mode,
  overloaded,
  rateHeaders,
  serverError
} from "./answer.js"
import { type DecideOptions, Decider, FAULTS } from "./decide.js"
import { hashString, makeRng, type Rng } from "./random.js"
import type { CountTokens } from "./tokens.js"
import { badJson, json, type Refusal, setCapped, unknownModel, Validator } from "./validate.js"

export { FAULTS }
export type { Fault, FaultRates, Limits, Outage } from "./decide.js"

export interface EngineOptions extends Omit<DecideOptions, "startMs"> {
  readonly seed: number
  /** the current time in ms (the Effect clock) */
  readonly now: () => number
  /** mixed into `x-request-id`s only, so two runs with one seed do not repeat ids */
  readonly nonce: number
  readonly baseMs: number
  readonly perOutputTokenMs: number
  readonly jitterMs: number
  readonly retryAfterMs: number
  readonly models: ReadonlyArray<string>
}

export type Respond = {
  readonly _tag: "Respond"
  readonly status: number
  readonly headers: Record<string, string>
  readonly body: string
  readonly delayMs: number
}

export type Outcome =
  | Respond
  | { readonly _tag: "Hang" }
  | { readonly _tag: "Reset"; readonly delayMs: number }
  /** a 200 whose headers and first `sent` characters of `body` go out before the connection is destroyed */
  | (Omit<Respond, "_tag"> & { readonly _tag: "Cut"; readonly sent: number })

/** Request hashes remembered, for fault draws per attempt. */
const SEEN_MAX_ENTRIES = 200_000

/** An OpenAI `Model` object. */
export interface ModelObject {
  readonly id: string
  readonly object: "model"
  readonly created: number
  readonly owned_by: string
}

export class Engine {
  private readonly validator: Validator
  private readonly decider: Decider
  private readonly occurrences = new Map<number, number>()
  private readonly idRng: Rng
  private readonly models: ReadonlyMap<string, ModelObject>
  private readonly startMs: number
  private requests = 0
  private completions = 0
  private readonly statusCounts: Record<string, number> = {}

  constructor(private readonly options: EngineOptions, private readonly count: CountTokens) {
    this.startMs = options.now()
    this.idRng = makeRng(options.seed, 0x1d1d1d1d, options.nonce)
    const ids = new Set([
      ...options.models,
      ...Object.keys(options.limitsByModel),
      ...Object.keys(options.faultsByModel)
    ])
    this.models = new Map(
      [...ids].map((id) => [id, {
        id,
        object: "model",
        // a fixed date per model, so listings are stable: 2024-01-01 plus up to a year
        created: 1_704_067_200 + (hashString(id) % 31_536_000),
        owned_by: id.startsWith("ft:") ? "user" : "system"
      }])
    )
    this.validator = new Validator(count, new Set(ids))
    this.decider = new Decider({ ...options, startMs: this.startMs })
  }

  stats() {
    return {
      requests: this.requests,
      completions: this.completions,
      rateLimited: this.decider.rateLimited,
      outage: this.decider.outage,
      overloaded: this.decider.overloaded,
      faults: { ...this.decider.faultCounts },
      byStatus: { ...this.statusCounts },
      arrivals: this.decider.arrivalCounts()
    }
  }

  /** The served models, for `GET /v1/models`. */
  listModels(): ReadonlyArray<ModelObject> {
    return [...this.models.values()]
  }

  /** A served model, or the 404 OpenAI answers for another one. */
  model(id: string): ModelObject | Respond {
    return this.models.get(id) ??
      this.refuse({ ...unknownModel(id), message: `The model '${id}' does not exist`, param: "model" })
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
  respond(status: number, body: string, extra?: Record<string, string>, delayMs = 0): Respond {
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
  ): Respond {
    return this.respond(status, json({ error: { message, type, param, code } }), extra, delayMs)
  }

  private refuse(r: Refusal | ErrorAnswer, delayMs = 0): Respond {
    return this.error(r.status, r.message, r.type, r.param, r.code, "headers" in r ? r.headers : undefined, delayMs)
  }

  /** Answers one `POST /v1/chat/completions` body, received now. */
  chat(text: string): Outcome {
    const now = this.options.now()
    this.requests++
    this.decider.arrive(now)
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch {
      return this.refuse(badJson)
    }
    const checked = this.validator.prepare(body)
    if (checked._tag === "Invalid") return this.refuse(checked.refusal)
    const p = checked.value
    const hash = hashString(text)
    const occurrence = this.occurrences.get(hash) ?? 0
    setCapped(this.occurrences, hash, occurrence + 1, SEEN_MAX_ENTRIES)
    const attemptRng = makeRng(this.options.seed, hash, occurrence + 1)
    const baseDelay = this.options.baseMs + (this.options.jitterMs > 0 ? attemptRng.next() * this.options.jitterMs : 0)
    const decision = this.decider.decide(p.model, now, p.promptTokens + (p.maxTokens ?? 0), attemptRng)
    switch (decision._tag) {
      case "Outage":
        return this.refuse(serverError(decision.status), baseDelay)
      case "Overloaded":
        return this.refuse(overloaded)
      case "Limited":
        return this.refuse(limitExceeded(p.model, decision.decision), baseDelay)
    }
    const fault = decision.fault
    switch (fault) {
      case "rate_limit":
      case "quota":
      case "500":
      case "502":
      case "503":
        return this.refuse(faultError(fault, p.model, decision.snapshot, this.options.retryAfterMs), baseDelay)
      case "hang":
        return { _tag: "Hang" }
      case "reset":
        return { _tag: "Reset", delayMs: baseDelay }
    }
    const mode: Mode = fault === "invalid_output" || fault === "truncated" || fault === "refusal" ? fault : "ok"
    const answerRng = makeRng(this.options.seed ^ 0x5bd1e995, hash, 0)
    const answer = completion(p, mode, answerRng, attemptRng, Math.floor(now / 1000), this.count)
    decision.limiter.charge(answer.completionTokens - (p.maxTokens ?? 0))
    this.completions++
    const delay = baseDelay + this.options.perOutputTokenMs * answer.completionTokens
    const out = fault === "malformed" ? answer.body.slice(0, Math.floor(answer.body.length / 2)) : answer.body
    const respond = this.respond(200, out, rateHeaders(decision.snapshot), delay)
    return fault === "cut" ? { ...respond, _tag: "Cut", sent: Math.floor(out.length / 2) } : respond
  }

  /** Whether `model` is served. */
  serves(model: string): boolean {
    return this.models.has(model)
  }

  /** The prompt tokens of a valid chat request body (undefined when invalid), without changing later answers. */
  promptTokens(body: unknown): number | undefined {
    const checked = this.validator.prepare(body, false)
    return checked._tag === "Valid" ? checked.value.promptTokens : undefined
  }

  /**
   * The answer to a chat request without limits, latency or HTTP faults, e.g. for a batch line: the same content
   * and usage as `chat` gives the same body, spoiled when `mode` says so.
   */
  complete(body: unknown, mode: Mode = "ok"): { readonly status: number; readonly body: unknown } {
    const checked = this.validator.prepare(body)
    if (checked._tag === "Invalid") {
      const r = checked.refusal
      return { status: r.status, body: { error: { message: r.message, type: r.type, param: r.param, code: r.code } } }
    }
    const hash = hashString(json(body))
    const answer = completion(
      checked.value,
      mode,
      makeRng(this.options.seed ^ 0x5bd1e995, hash, 0),
      makeRng(this.options.seed, hash, 0x7fffffff),
      Math.floor(this.options.now() / 1000),
      this.count
    )
    return { status: 200, body: JSON.parse(answer.body) }
  }
}
