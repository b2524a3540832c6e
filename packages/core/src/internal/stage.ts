/**
 * The one shape every pipeline stage of `Llm` takes: optional wrappers at three levels, composed once
 * when the `Llm` layer is built.
 *
 * - `call`: around one logical call (observation; the router chooses and falls back here);
 * - `round`: around one ask of the model with its retries (the budget's reservation; the circuit
 *   breaker);
 * - `attempt`: around one HTTP attempt (the budget's extension, attempt spans; the rate limiter).
 *
 * The first stage of the list is the outermost at each level. A stage that wraps nothing at a level
 * is not in that level's path at all, and a level no stage wraps costs nothing.
 */
import type * as Effect from "effect/Effect"
import type { LlmError } from "../LlmError.js"
import type * as LlmRequest from "../LlmRequest.js"
import type { LlmResponse } from "../LlmResponse.js"
import type * as Money from "../Money.js"
import type * as Usage from "../Usage.js"

/**
 * What one logical call accumulates across its rounds (a repair re-ask is a second round) and their
 * attempts. Stages write to it as they go; the call log reads it once, when the call ends.
 */
export interface CallState {
  /** The request of the latest round, model chosen. A call-level stage may replace it before the rounds run. */
  request: LlmRequest.Resolved
  /** HTTP attempts over all rounds. */
  attempts: number
  /** Tokens billed over all attempts that returned an answer. */
  usage: Usage.Usage
  /** The latest answer, when one arrived. */
  response: LlmResponse | undefined
  /** Settled cost of all rounds (pico-dollars); undefined when no price was known (no `Pricing`). */
  cost: Money.Money | undefined
  /** True when part of `cost` is an estimate: an attempt that may have been billed returned no usage. */
  costEstimated: boolean
  /** True when the model's price is the configured fallback price, not a known one. */
  priceFallback: boolean
  /** Attempts that may have been billed without an answer (timed out, cut, interrupted or unreadable). */
  unansweredAttempts: number
  /** What the rounds settled above what they had reserved (an estimate that undercounted); 0 when none. */
  overrun: Money.Money
  /** Repair re-asks sent after invalid output (each one a round of its own). */
  repairs: number
  /** Why the model was chosen: "request" (named in it), "withModel", "default", or a router's reason. */
  routeReason: string
  /** The router's chain and hops; undefined without a router. */
  route: RouteState | undefined
}

/** A routed call's way along its chain. */
export interface RouteState {
  /** The models the call may go to, in order; the first is the routed `request.model`. */
  readonly chain: ReadonlyArray<string>
  /** The request's input tokens, once counted (the context-window check needs them). */
  inputTokens: number | undefined
  /** The models the call was sent on to, in order (the last one is the record's `model`). */
  readonly tried: Array<string>
  /** Each model passed over, and why: skipped before it was tried, or failed with an error the chain falls back on. */
  readonly hops: Array<{ readonly model: string; readonly reason: string }>
}

/** Wraps an effect of one level; reads and writes the call's state. */
export type Wrap = <A>(state: CallState, self: Effect.Effect<A, LlmError>) => Effect.Effect<A, LlmError>

/** Wraps one attempt. */
export type WrapAttempt = (
  state: CallState,
  self: Effect.Effect<LlmResponse, LlmError>
) => Effect.Effect<LlmResponse, LlmError>

export interface Stage {
  /** How the stage is named in the line `Llm` logs when it is built, e.g. "budget (memory store)". */
  readonly name: string
  readonly call?: Wrap | undefined
  readonly round?: Wrap | undefined
  readonly attempt?: WrapAttempt | undefined
}

export interface Composed {
  readonly call: Wrap
  readonly round: Wrap
  readonly attempt: WrapAttempt
  /** Whether any stage wraps calls (else the call's body can run as it is). */
  readonly wrapsCalls: boolean
}

const identity: Wrap = (_state, self) => self

const nest = <W extends Wrap | WrapAttempt>(wraps: ReadonlyArray<W>): W => {
  if (wraps.length === 0) return identity as W
  if (wraps.length === 1) return wraps[0]!
  return wraps.reduceRight(
    (inner, outer) => ((state: CallState, self: Effect.Effect<any, LlmError>) => outer(state, inner(state, self))) as W
  )
}

/** Composes stages once: the first stage of the list is the outermost at every level. */
export const compose = (stages: ReadonlyArray<Stage>): Composed => ({
  wrapsCalls: stages.some((stage) => stage.call !== undefined),
  call: nest(stages.flatMap((stage) => stage.call === undefined ? [] : [stage.call])),
  round: nest(stages.flatMap((stage) => stage.round === undefined ? [] : [stage.round])),
  attempt: nest(stages.flatMap((stage) => stage.attempt === undefined ? [] : [stage.attempt]))
})

/**
 * The request sent to `model` (and under `tier`, when given). `Object.assign`, not a spread: V8 clones a request
 * built key by key (as decoding builds it) on its slow path for a spread, ~1.5 µs against ~0.2 µs.
 */
export const withModel = (
  request: LlmRequest.LlmRequest,
  model: string,
  tier?: LlmRequest.LlmRequest["tier"]
): LlmRequest.Resolved => Object.assign({}, request, tier === undefined ? { model } : { model, tier })
