/**
 * The circuit-breaker stage of `Llm`. At round level, before the budget reserves anything, a round
 * to a model whose circuit is open fails at once with `CircuitOpen`. At attempt level, each attempt
 * (the first and every retry) goes through `protect`: it fails fast when the circuit opened in the
 * meantime, and its outcome is counted.
 */
import * as Effect from "effect/Effect"
import type * as CircuitBreaker from "../CircuitBreaker.js"
import type { CallState, Stage } from "./stage.js"

export const make = (breaker: CircuitBreaker.CircuitBreaker.Service): Stage => ({
  name: breaker.description,
  round: (state, round) => Effect.zipRight(Effect.suspend(() => breaker.check(state.request.model)), round),
  attempt: (state: CallState, attempt) => Effect.suspend(() => breaker.protect(state.request.model, attempt))
})
