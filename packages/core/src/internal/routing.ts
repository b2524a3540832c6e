/**
 * The routing stage of `Llm`. `choose` picks the call's model and chain before the call starts (so
 * its span and record carry the routed model and the reason); the call-level wrapper then walks the
 * chain: each model is checked against the request's context need and skipped with a reason when it
 * cannot hold it, and when the call fails with an error the router falls back on, the call runs
 * again on the next model. Each round then reserves the budget at the price of the model it runs on.
 */
import * as Effect from "effect/Effect"
import type * as Budget from "../Budget.js"
import { InvalidRequest, type LlmError } from "../LlmError.js"
import type * as LlmRequest from "../LlmRequest.js"
import type * as Router from "../Router.js"
import type * as Tokenizer from "../Tokenizer.js"
import { type CallState, type RouteState, type Stage, withModel } from "./stage.js"

export interface Options {
  readonly router: Router.Router.Service
  readonly tokenizer: Tokenizer.Tokenizer.Service
  readonly budget: Budget.Budget.Service | undefined
}

/** A call's model, why it was chosen, and its way along the chain. */
export interface Chosen {
  readonly request: LlmRequest.Resolved
  readonly reason: string
  readonly route: RouteState
}

export interface Routing {
  readonly stage: Stage
  /** Chooses a call's model: `named` (from the request or `withModel`) with its chain, else the router's route. */
  readonly choose: (
    request: LlmRequest.LlmRequest,
    named: { readonly model: string; readonly reason: string } | undefined
  ) => Effect.Effect<Chosen, InvalidRequest>
}

const thousands = (n: number) => n.toLocaleString("en-US")

export const make = ({ budget, router, tokenizer }: Options): Routing => {
  /** The smallest share of a limit left in the scope and its ancestors; a failing store means no downgrade. */
  const budgetLeft = (scope: string | undefined): Router.Facts["budgetLeft"] =>
    budget === undefined
      ? Effect.succeed(undefined)
      : budget.status(scope).pipe(
        Effect.map((statuses) => {
          let least: { share: number; scope: string } | undefined
          for (const status of statuses) {
            if (status.limit === undefined) continue
            const left = status.limit - status.spent - status.reserved
            const share = status.limit === 0n ? 0 : Math.max(0, Number(left) / Number(status.limit))
            if (least === undefined || share < least.share) {
              least = { share, scope: status.window === "total" ? status.scope : `${status.scope} (${status.window})` }
            }
          }
          return least
        }),
        Effect.catchAll((error) =>
          Effect.as(Effect.logWarning("Router: budget status unreadable, no downgrade", error), undefined)
        )
      )

  const choose: Routing["choose"] = (request, named) => {
    if (named !== undefined) {
      return Effect.succeed({
        request: withModel(request, named.model),
        reason: named.reason,
        route: { chain: router.chainOf(named.model, request.tier), inputTokens: undefined, tried: [], hops: [] }
      })
    }
    return Effect.flatMap(tokenizer.input(request), (inputTokens) =>
      Effect.map(
        router.route(request, { inputTokens, budgetLeft: budgetLeft(request.scope) }),
        (route): Chosen => ({
          request: withModel(request, route.chain[0]!, route.tier),
          reason: route.reason,
          route: { chain: route.chain, inputTokens, tried: [], hops: [] }
        })
      ))
  }

  /** Why `model` cannot hold the request (its input plus its output allowance), or undefined when it can. */
  const tooSmall = (route: RouteState, request: LlmRequest.Resolved, model: string) => {
    const window = router.contextWindow(model)
    if (window === undefined) return Effect.succeed(undefined)
    const counted = route.inputTokens === undefined
      ? Effect.tap(tokenizer.input(request), (tokens) => {
        route.inputTokens = tokens
      })
      : Effect.succeed(route.inputTokens)
    return Effect.map(counted, (input) => {
      const output = request.maxOutputTokens ?? 0
      return input + output <= window ?
        undefined :
        `context window ${thousands(window)} tokens < ${thousands(input)} input${
          output === 0 ? "" : ` + ${thousands(output)} output`
        } tokens`
    })
  }

  const call = <A>(state: CallState, self: Effect.Effect<A, LlmError>): Effect.Effect<A, LlmError> => {
    const route = state.route
    if (route === undefined) return self
    const base = state.request
    const next = (index: number, last: LlmError | undefined): Effect.Effect<A, LlmError> => {
      if (index === route.chain.length) {
        return Effect.fail(
          last ?? new InvalidRequest({
            field: "messages",
            model: base.model,
            reason: `no model of the chain can hold the request: ${
              route.hops.map((hop) => `${hop.model} (${hop.reason})`).join("; ")
            }; shorten it or add a model with a larger context window`
          })
        )
      }
      const model = route.chain[index]!
      return Effect.flatMap(tooSmall(route, base, model), (skip) => {
        if (skip !== undefined) {
          route.hops.push({ model, reason: `skipped: ${skip}` })
          return next(index + 1, last)
        }
        state.request = model === base.model ? base : withModel(base, model)
        route.tried.push(model)
        if (index + 1 === route.chain.length) return self
        return Effect.catchIf(self, router.fallsBackOn, (error) => {
          route.hops.push({ model, reason: `${error._tag}: ${error.message}` })
          return Effect.zipRight(
            Effect.logDebug(`Router: ${model} failed (${error._tag}); trying ${route.chain[index + 1]}`),
            next(index + 1, error)
          )
        })
      })
    }
    return Effect.suspend(() => next(0, undefined))
  }

  return { stage: { name: router.description, call }, choose }
}
