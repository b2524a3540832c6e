/**
 * The budget and cost stage of `Llm`'s rounds. With a `Budget` in context, a round reserves its
 * worst case before its first attempt (failing fast with `BudgetExceeded`, nothing sent) and, however
 * it ends, settles what was billed or releases the reservation when nothing was. With only `Pricing`,
 * it computes the round's cost. With neither, it is not in the path at all.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Budget from "../Budget.js"
import { BudgetExceeded, type LlmError, PricingUnknown } from "../LlmError.js"
import type * as LlmRequest from "../LlmRequest.js"
import type * as Money from "../Money.js"
import * as Pricing from "../Pricing.js"
import * as Tokens from "../Tokens.js"
import type * as Usage from "../Usage.js"

/** The part of `Llm.CallState` this stage reads and writes. */
export interface Metered {
  usage: Usage.Usage
  cost?: Money.Money | undefined
  costEstimated?: boolean | undefined
  priceFallback?: boolean | undefined
  unansweredAttempts?: number | undefined
}

/**
 * Whether a failed attempt may have been billed with no usage to show for it: it timed out or was
 * interrupted after the request may have been sent, or the provider answered with an unreadable body.
 */
export const mayHaveBeenBilled = (cause: Cause.Cause<LlmError>): boolean => {
  if (Cause.isInterruptedOnly(cause)) return true
  const failure = Cause.failureOption(cause)
  return Option.isSome(failure) && (failure.value._tag === "Timeout" || failure.value._tag === "ProtocolError")
}

const subtract = (after: Usage.Usage, before: Usage.Usage): Usage.Usage => ({
  inputTokens: after.inputTokens - before.inputTokens,
  cachedInputTokens: after.cachedInputTokens - before.cachedInputTokens,
  outputTokens: after.outputTokens - before.outputTokens,
  reasoningTokens: after.reasoningTokens - before.reasoningTokens
})

export interface Meter {
  /** Wraps a round: reserve before, settle or release after (with a Budget); cost into the state. */
  readonly round: <A>(
    state: Metered,
    request: LlmRequest.Resolved,
    round: Effect.Effect<A, LlmError>
  ) => Effect.Effect<A, LlmError>
  /**
   * Wraps each attempt: counts one that may have been billed without an answer and, before a retry
   * after such an attempt, extends the round's reservation by another worst case (or fails with
   * `BudgetExceeded`, sending nothing), so a round never charges more than it holds.
   */
  readonly attempt: <A>(state: Metered, attempt: Effect.Effect<A, LlmError>) => Effect.Effect<A, LlmError>
}

/** A budgeted round in progress: its reservation and how many worst cases it holds. */
interface Round {
  reservation: Budget.Reservation
  readonly worst: Money.Money
  readonly unansweredBefore: number
  covered: number
}

let builtIn: Pricing.Pricing.Service | undefined

/** The stage for the services in context: `undefined` when there is nothing to meter. */
export const make: Effect.Effect<Meter | undefined> = Effect.gen(function*() {
  const budget = Option.getOrUndefined(yield* Effect.serviceOption(Budget.Budget))
  let pricing = Option.getOrUndefined(yield* Effect.serviceOption(Pricing.Pricing))
  if (budget === undefined && pricing === undefined) return undefined
  if (pricing === undefined) pricing = builtIn ??= yield* Effect.orDie(Pricing.make())
  // Reservations count tokens: load the encoder now, off the first call's path.
  if (budget !== undefined) yield* Effect.forkDaemon(Tokens.load)
  const prices = pricing

  /** The worst case of one attempt: every input token uncached and the whole output allowance. */
  const estimate = (request: LlmRequest.Resolved, price: Pricing.ModelPrice) =>
    Effect.map(
      Tokens.input(request),
      (input) => Pricing.worstCase(price, input, request.maxOutputTokens ?? price.maxOutputTokens)
    )

  /** What the round billed: its usage at the price, plus the estimate for each unanswered billed attempt. */
  const charge = (state: Metered, before: Usage.Usage, unansweredBefore: number, price: Pricing.ModelPrice) => {
    const unanswered = (state.unansweredAttempts ?? 0) - unansweredBefore
    const usage = subtract(state.usage, before)
    return {
      cost: Pricing.costOf(price, usage, "sync"),
      unanswered,
      billed: unanswered > 0 || usage.inputTokens + usage.outputTokens > 0
    }
  }

  const record = (state: Metered, cost: Money.Money, estimated: boolean, price: Pricing.ModelPrice) => {
    state.cost = (state.cost ?? 0n) + cost
    if (estimated) state.costEstimated = true
    if (price.fallback) state.priceFallback = true
  }

  const rounds = new WeakMap<Metered, Round>()

  const track = <A>(state: Metered, attempt: Effect.Effect<A, LlmError>) =>
    Effect.onError(attempt, (cause) =>
      mayHaveBeenBilled(cause)
        ? Effect.sync(() => {
          state.unansweredAttempts = (state.unansweredAttempts ?? 0) + 1
        })
        : Effect.void)

  const attempt: Meter["attempt"] = (state, attempt) => {
    const tracked = track(state, attempt)
    if (budget === undefined) return tracked
    return Effect.suspend(() => {
      const round = rounds.get(state)
      if (round === undefined) return tracked
      const needed = (state.unansweredAttempts ?? 0) - round.unansweredBefore + 1
      if (needed <= round.covered) return tracked
      return budget.extend(round.reservation, BigInt(needed - round.covered) * round.worst).pipe(
        Effect.catchTag("BudgetStoreError", (error) => Effect.die(error)),
        Effect.flatMap((reservation) => {
          round.reservation = reservation
          round.covered = needed
          return tracked
        })
      )
    })
  }

  const meterRound: Meter["round"] = <A>(
    state: Metered,
    request: LlmRequest.Resolved,
    round: Effect.Effect<A, LlmError>
  ) =>
    Effect.suspend(() => {
      const price = prices.lookup(request.model)
      if (price === undefined) return Effect.fail(new PricingUnknown({ model: request.model }))
      const before = state.usage
      const unansweredBefore = state.unansweredAttempts ?? 0
      state.cost ??= 0n

      if (budget === undefined) {
        return Effect.onExit(round, () =>
          Effect.suspend(() => {
            const billed = charge(state, before, unansweredBefore, price)
            if (billed.unanswered === 0) return Effect.sync(() => record(state, billed.cost, false, price))
            return Effect.map(
              estimate(request, price),
              (worst) => record(state, billed.cost + BigInt(billed.unanswered) * worst, true, price)
            )
          }))
      }

      return Effect.flatMap(estimate(request, price), (worst) =>
        Effect.acquireUseRelease(
          budget.reserve(request.scope, worst).pipe(
            Effect.catchTags({
              BudgetExceeded: (error) => Effect.fail(new BudgetExceeded({ ...error, model: request.model })),
              BudgetStoreError: (error) => Effect.die(error) // fail closed: no budget check, no call
            })
          ),
          (reservation) => {
            rounds.set(state, { reservation, worst, unansweredBefore, covered: 1 })
            return round
          },
          (first, exit) =>
            Effect.suspend(() => {
              const reservation = rounds.get(state)?.reservation ?? first
              rounds.delete(state)
              const billed = charge(state, before, unansweredBefore, price)
              const cost = billed.cost + BigInt(billed.unanswered) * worst
              const estimated = billed.unanswered > 0
              record(state, cost, estimated, price)
              const done = billed.billed
                ? budget.settle(reservation, cost, { estimated })
                : budget.release(reservation)
              // The reservation stays open if the store fails now; its lease expiry charges it in full.
              return Effect.catchAll(done, (error) =>
                Effect.logWarning(
                  "Budget: settling failed; the reservation will be reclaimed at its full amount when its lease expires",
                  error,
                  Exit.isSuccess(exit) ? "call succeeded" : "call failed"
                ))
            })
        ))
    })

  return { round: meterRound, attempt }
})
