/**
 * The cost stage of `Llm`, at round and attempt level. With a `Budget`, a round reserves its worst
 * case before its first attempt (`BudgetExceeded` with nothing sent) and, however it ends, settles
 * what was billed or releases the reservation when nothing was. With only `Pricing`, it computes the
 * round's cost. Either way an attempt that may have been billed with no usage to show for it
 * (`mayHaveBeenBilled`: it timed out, its body was cut, it was unreadable, or it was interrupted; or
 * it answered without `usage`) is charged at its estimate.
 *
 * Every failure of the budget path is `BudgetUnavailable`: the call fails closed, and nothing more is
 * sent. A settle above the round's reservation is kept as the call's `overrun`.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Budget from "../Budget.js"
import { BudgetExceeded, BudgetUnavailable, type LlmError, mayHaveBeenBilled, PricingUnknown } from "../LlmError.js"
import type * as LlmRequest from "../LlmRequest.js"
import type { LlmResponse } from "../LlmResponse.js"
import type * as Money from "../Money.js"
import * as Pricing from "../Pricing.js"
import * as RetryPolicy from "../RetryPolicy.js"
import type * as Tokenizer from "../Tokenizer.js"
import type * as Usage from "../Usage.js"
import type { CallState, Stage } from "./stage.js"

/** Whether a failed attempt may have been billed with no usage to show for it. */
const unanswered = (cause: Cause.Cause<LlmError>): boolean => {
  if (Cause.isInterruptedOnly(cause)) return true
  const failure = Cause.failureOption(cause)
  return Option.isSome(failure) && mayHaveBeenBilled(failure.value)
}

const subtract = (after: Usage.Usage, before: Usage.Usage): Usage.Usage => ({
  inputTokens: after.inputTokens - before.inputTokens,
  cachedInputTokens: after.cachedInputTokens - before.cachedInputTokens,
  outputTokens: after.outputTokens - before.outputTokens,
  reasoningTokens: after.reasoningTokens - before.reasoningTokens
})

/** The key for the next reservation of the work in this fiber: `undefined` outside `Budget.withCallKeys`. */
const nextCallKey = (keys: Budget.CallKeys | undefined): string | undefined =>
  keys === undefined ? undefined : `${keys.prefix}/${keys.next++}`

const storeFailure = (model: string) => (error: Budget.BudgetStoreError) =>
  new BudgetUnavailable({ model, operation: error.operation, reason: error.reason })

/** A budgeted round in progress: its reservation and how many worst cases it holds. */
interface Round {
  reservation: Budget.Reservation
  readonly worst: Money.Money
  readonly unansweredBefore: number
  covered: number
}

export interface Options {
  readonly budget: Budget.Budget.Service | undefined
  readonly pricing: Pricing.Pricing.Service
  readonly tokenizer: Tokenizer.Tokenizer.Service
  /** The pipeline's retry policy: a reservation waits for other calls' at most its deadline. */
  readonly policy: RetryPolicy.RetryPolicy.Service
}

/** The stage for a `Budget` (with its `Pricing`) or `Pricing` alone. */
export const make = ({ budget, policy, pricing, tokenizer }: Options): Stage => {
  /** The worst case of one attempt: every input token uncached and the whole output allowance. */
  const estimate = (request: LlmRequest.Resolved, price: Pricing.ModelPrice) =>
    Effect.map(
      tokenizer.input(request),
      (input) => Pricing.worstCase(price, input, request.maxOutputTokens ?? price.maxOutputTokens)
    )

  /** What the round billed: its usage at the price, plus how many attempts may have been billed unanswered. */
  const charge = (state: CallState, before: Usage.Usage, unansweredBefore: number, price: Pricing.ModelPrice) => {
    const usage = subtract(state.usage, before)
    const count = state.unansweredAttempts - unansweredBefore
    return {
      cost: Pricing.costOf(price, usage, "sync"),
      unanswered: count,
      billed: count > 0 || usage.inputTokens + usage.outputTokens > 0
    }
  }

  const record = (state: CallState, cost: Money.Money, estimated: boolean, price: Pricing.ModelPrice) => {
    state.cost = (state.cost ?? 0n) + cost
    if (estimated) state.costEstimated = true
    if (price.fallback) state.priceFallback = true
  }

  const rounds = new WeakMap<CallState, Round>()

  /** Counts an attempt that may have been billed with no usage to show: failed so, or answered without `usage`. */
  const track = (state: CallState, attempt: Effect.Effect<LlmResponse, LlmError>) =>
    Effect.onExit(attempt, (exit) =>
      (Exit.isSuccess(exit) ? exit.value.usageMissing === true : unanswered(exit.cause))
        ? Effect.sync(() => {
          state.unansweredAttempts++
        })
        : Effect.void)

  /**
   * Before a retry that follows an attempt which may have been billed unanswered, extends the round's
   * reservation by another worst case (or fails with `BudgetExceeded`, sending nothing), so a round
   * never charges more than it holds.
   */
  const attempt = (state: CallState, attempt: Effect.Effect<LlmResponse, LlmError>) => {
    const tracked = track(state, attempt)
    if (budget === undefined) return tracked
    return Effect.suspend(() => {
      const round = rounds.get(state)
      if (round === undefined) return tracked
      const needed = state.unansweredAttempts - round.unansweredBefore + 1
      if (needed <= round.covered) return tracked
      return budget.extend(round.reservation, BigInt(needed - round.covered) * round.worst).pipe(
        Effect.mapError((error) =>
          error._tag === "BudgetStoreError"
            ? storeFailure(state.request.model)(error)
            : new BudgetExceeded({ ...error, model: state.request.model })
        ),
        Effect.flatMap((reservation) => {
          round.reservation = reservation
          round.covered = needed
          return tracked
        })
      )
    })
  }

  const priced = <A>(state: CallState, round: Effect.Effect<A, LlmError>) =>
    Effect.suspend(() => {
      const request = state.request
      const price = pricing.lookup(request.model)
      if (price === undefined) return Effect.fail(new PricingUnknown({ model: request.model }))
      const before = state.usage
      const unansweredBefore = state.unansweredAttempts
      state.cost ??= 0n
      return Effect.onExit(round, () =>
        Effect.suspend(() => {
          const billed = charge(state, before, unansweredBefore, price)
          if (billed.unanswered === 0) return Effect.sync(() => record(state, billed.cost, false, price))
          return Effect.map(
            estimate(request, price),
            (worst) => record(state, billed.cost + BigInt(billed.unanswered) * worst, true, price)
          )
        }))
    })

  const budgeted = (budget: Budget.Budget.Service) => <A>(state: CallState, round: Effect.Effect<A, LlmError>) =>
    Effect.withFiberRuntime<A, LlmError>((fiber) => {
      const request = state.request
      // Under `Budget.withCallKeys` (an item of a run, local or on the cluster), the round's key across processes.
      const key = nextCallKey(fiber.getFiberRef(Budget.currentCallKeys))
      const price = pricing.lookup(request.model)
      if (price === undefined) return Effect.fail(new PricingUnknown({ model: request.model }))
      const before = state.usage
      const unansweredBefore = state.unansweredAttempts
      state.cost ??= 0n
      return Effect.flatMap(
        Effect.zip(estimate(request, price), RetryPolicy.current(policy)),
        ([worst, policy]) =>
          Effect.acquireUseRelease(
            // While only other calls' reservations stand in the way, wait for them (interruptibly).
            budget.reserve(request.scope, worst, { maxWait: policy.deadline, key }).pipe(
              Effect.catchTags({
                BudgetExceeded: (error) => Effect.fail(new BudgetExceeded({ ...error, model: request.model })),
                BudgetStoreError: (error) => Effect.fail(storeFailure(request.model)(error))
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
                // A reservation adopted from a dead process's attempt charges that attempt too, as an estimate.
                const adopted = reservation.adopted ?? 0n
                record(state, cost + adopted, estimated || adopted > 0n, price)
                const done = billed.billed
                  ? Effect.map(budget.settle(reservation, cost, { estimated }), (settled) => {
                    state.overrun += settled.overrun
                  })
                  : budget.release(reservation)
                // A close the store refuses now is retried by the Budget until it lands; a reservation
                // reclaimed meanwhile was charged in full, never less.
                return Effect.catchAll(done, (error) =>
                  Effect.logWarning(
                    "Budget: closing the call's reservation failed",
                    error,
                    Exit.isSuccess(exit) ? "call succeeded" : "call failed"
                  ))
              })
          )
      )
    })

  return budget === undefined
    ? { name: "pricing", round: priced, attempt: track }
    : { name: "budget", round: budgeted(budget), attempt }
}
