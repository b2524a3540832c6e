/**
 * Chooses the model of each call, and where it goes when that model cannot take it. Tiers name model
 * chains (by default `simple`: gpt-4o-mini then gpt-4.1-mini, `complex`: gpt-4.1 then gpt-4o). A call
 * is routed, first match wins, by:
 *
 * 1. the model it names (in the request or with `Llm.withModel`): that model, then the rest of the
 *    first chain holding it (the request's tier first), else that model alone;
 * 2. the tier it names (`tier`);
 * 3. its task's rule (`tasks: { classify: "simple" }`);
 * 4. the `classifier`, when one is configured (any Effect, e.g. a call to a cheap model); if it fails
 *    or names no tier, the heuristics decide and the reason says so;
 * 5. the complexity heuristics: input tokens, reasoning markers, multi-step instructions, tools,
 *    requested output size and code add up to a score; at `heuristics.threshold` (default 2) or more
 *    the call goes to the complex tier.
 *
 * Budget-aware downgrade (`downgrade`): when the share of a limit left in the call's budget scope (or
 * an ancestor) is below `downgrade.below`, a call routed to the complex tier goes to the simple one.
 *
 * With `Router` provided to `Llm.layer`, the pipeline falls back along the chain: when a model's
 * circuit is open or its call ends in an error of `fallbackOn` (default CircuitOpen,
 * ProviderUnavailable, Timeout, Transport, RateLimited, each after its retries), the next model takes
 * the call, reserving its budget at its own price. An error another model cannot fix (invalid
 * request, authentication, quota, refusal, budget) ends the call. Before a model is tried, its
 * context window is checked against the request's input tokens plus `maxOutputTokens` (counted with
 * the pipeline's `Tokenizer`, which errs high); a model it cannot hold is skipped with the reason. A
 * call never leaves its chain. Every decision and hop is in the call record (`route`) and the span.
 *
 * The defaults name OpenAI models, with their context windows (tokens, input and output together,
 * from OpenAI's model pages as read 2026-12; gpt-5.4 from third-party pages): override `tiers` and
 * `models` for other providers.
 */
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { InvalidRequest, LlmError } from "./LlmError.js"
import type * as LlmRequest from "./LlmRequest.js"

/** A tier's chain: the model it sends to, then its fallbacks in order. */
export interface Tier {
  readonly model: string
  readonly fallbacks?: ReadonlyArray<string>
}

/** What the router knows of a model. */
export interface ModelInfo {
  /** Tokens the model holds, input and output together. */
  readonly contextWindow: number
}

export interface Heuristics {
  /** A score at or above this routes to `complexTier`. Default 2: two distinct signals (e.g. a reasoning ask and code). */
  readonly threshold?: number
  /** Default "simple". */
  readonly simpleTier?: string
  /** Default "complex". */
  readonly complexTier?: string
}

export interface Downgrade {
  /** Route down when less than this share of a limit is left, in (0, 1], e.g. 0.2. */
  readonly below: number
  /** Default the heuristics' complex tier. */
  readonly from?: string
  /** Default the heuristics' simple tier. */
  readonly to?: string
}

/** A classifier's verdict: a tier, and optionally why. */
export interface Classification {
  readonly tier: string
  readonly reason?: string
}

/** Decides a call's tier instead of the heuristics; given their assessment too. */
export type Classifier = (
  request: LlmRequest.LlmRequest,
  assessment: Assessment
) => Effect.Effect<Classification, unknown>

export interface Options {
  /** Tier name → chain. Default `defaultTiers`; when given, it replaces the default tiers. */
  readonly tiers?: Readonly<Record<string, Tier>>
  /** Task name → tier. */
  readonly tasks?: Readonly<Record<string, string>>
  readonly heuristics?: Heuristics
  readonly classifier?: Classifier
  readonly downgrade?: Downgrade
  /** Context windows, over `defaultModels`. A model without one is not checked. */
  readonly models?: Readonly<Record<string, ModelInfo>>
  /** The errors after which the call moves to the next model of its chain. Default `defaultFallbackOn`. */
  readonly fallbackOn?: ReadonlyArray<LlmError["_tag"]>
}

/** The default tiers. */
export const defaultTiers: Readonly<Record<string, Tier>> = {
  simple: { model: "gpt-4o-mini", fallbacks: ["gpt-4.1-mini"] },
  complex: { model: "gpt-4.1", fallbacks: ["gpt-4o"] }
}

/** Context windows of OpenAI's models (tokens, input and output together). */
export const defaultModels: Readonly<Record<string, ModelInfo>> = {
  "gpt-4o": { contextWindow: 128_000 },
  "gpt-4o-mini": { contextWindow: 128_000 },
  "gpt-4.1": { contextWindow: 1_047_576 },
  "gpt-4.1-mini": { contextWindow: 1_047_576 },
  "gpt-4.1-nano": { contextWindow: 1_047_576 },
  "o3": { contextWindow: 200_000 },
  "o4-mini": { contextWindow: 200_000 },
  "gpt-5": { contextWindow: 400_000 },
  "gpt-5-mini": { contextWindow: 400_000 },
  "gpt-5-nano": { contextWindow: 400_000 },
  "gpt-5.1": { contextWindow: 400_000 },
  "gpt-5.2": { contextWindow: 400_000 },
  "gpt-5.4": { contextWindow: 1_050_000 }
}

/** Errors after which a call moves on to the next model of its chain. */
export const defaultFallbackOn: ReadonlyArray<LlmError["_tag"]> = [
  "CircuitOpen",
  "ProviderUnavailable",
  "Timeout",
  "Transport",
  "RateLimited"
]

/** A bad router configuration, rejected when the layer is built: the field and why. */
export class RouterConfigError extends Schema.TaggedError<RouterConfigError>("@keel/core/Router/RouterConfigError")(
  "RouterConfigError",
  { field: Schema.String, reason: Schema.String }
) {
  override get message() {
    return `Invalid router configuration at ${this.field}: ${this.reason}`
  }
}

/** The heuristics' view of a request: a score and the signals that made it. */
export interface Assessment {
  readonly score: number
  readonly signals: ReadonlyArray<string>
}

/** Where a call goes and why. */
export interface Route {
  readonly tier: string
  /** The models, in order: the first is tried first. */
  readonly chain: ReadonlyArray<string>
  readonly reason: string
}

/** What the pipeline tells the router about a call. */
export interface Facts {
  /** The request's input tokens, as the pipeline's `Tokenizer` counts them. */
  readonly inputTokens: number
  /**
   * The smallest share of a limit left in the call's scope and its ancestors (undefined without a
   * budget or a limit); run only when a downgrade could apply.
   */
  readonly budgetLeft: Effect.Effect<{ readonly share: number; readonly scope: string } | undefined>
}

export class Router extends Context.Tag("@keel/core/Router")<Router, Router.Service>() {}

export declare namespace Router {
  export interface Service {
    /** Tier → chain. */
    readonly tiers: ReadonlyMap<string, ReadonlyArray<string>>
    /** Every model a tier names, with the option field naming it (for checks when `Llm` is built). */
    readonly models: ReadonlyArray<{ readonly model: string; readonly field: string }>
    /** Routes a request whose model is not named (steps 2 to 5 of the module header). */
    readonly route: (request: LlmRequest.LlmRequest, facts: Facts) => Effect.Effect<Route, InvalidRequest>
    /** The chain of a request that names its model (step 1). */
    readonly chainOf: (model: string, tier?: string | undefined) => Route["chain"]
    /** The model's context window, when known. */
    readonly contextWindow: (model: string) => number | undefined
    /** Whether the call moves on to the next model after this error. */
    readonly fallsBackOn: (error: LlmError) => boolean
    /** One line saying what the router does, for logs. */
    readonly description: string
  }
}

const errorTags: ReadonlySet<string> = new Set(LlmError.members.map((member) => member._tag))

// ---------------------------------------------------------------------------------------------------
// Heuristics
// ---------------------------------------------------------------------------------------------------

/** Words that ask for reasoning rather than recall or classification; each distinct one scores 1 (at most 3). */
const reasoningMarkers: ReadonlyArray<readonly [string, RegExp]> = [
  ["step by step", /\bstep[- ]by[- ]step\b/],
  ["prove", /\b(prove|proof|derive|derivation)\b/],
  ["analyse", /\b(analy[sz]e|analysis)\b/],
  ["compare", /\b(compare|contrast|trade-?offs?|pros and cons)\b/],
  ["explain why", /\bexplain (why|how)\b/],
  ["reason", /\b(reason about|reasoning|think through|justify)\b/],
  ["plan", /\b(plan|design|architect|strategy)\b/],
  ["evaluate", /\b(evaluate|assess|critique)\b/],
  ["solve", /\b(solve|calculate|compute)\b/]
]
const numberedStep = /^\s*\d+[.)]\s/gm
const sequence = /\bfirst\b[\s\S]*\bthen\b[\s\S]*\b(finally|lastly)\b/
const code = /```|\bfunction\s+\w+\s*\(|\bdef \w+\(|\bclass \w+[\s({:]|=>\s*[{(]|#include\s*<|\bSELECT\b[\s\S]+\bFROM\b/
/** Only the start of a long prompt is scanned for markers: its size already scores. */
const scanned = 32_000

const promptText = (request: LlmRequest.LlmRequest): string => {
  let text = ""
  for (const message of request.messages) {
    if (message.role === "tool" || message.content === undefined) continue
    text += message.content + "\n"
    if (text.length >= scanned) break
  }
  return text.length > scanned ? text.slice(0, scanned) : text
}

const thousands = (n: number) => n.toLocaleString("en-US")

/** Scores a request's complexity from its input tokens, wording, tools, output size and code. */
export const assess = (request: LlmRequest.LlmRequest, inputTokens: number): Assessment => {
  const signals: Array<string> = []
  let score = 0
  if (inputTokens >= 8_000) {
    score += 2
    signals.push(`input ${thousands(inputTokens)} tokens`)
  } else if (inputTokens >= 2_000) {
    score += 1
    signals.push(`input ${thousands(inputTokens)} tokens`)
  }
  const raw = promptText(request)
  const text = raw.toLowerCase()
  const markers = reasoningMarkers.filter(([, pattern]) => pattern.test(text)).map(([name]) => name)
  if (markers.length > 0) {
    score += Math.min(3, markers.length)
    signals.push(`reasoning: ${markers.join(", ")}`)
  }
  const steps = raw.match(numberedStep)?.length ?? 0
  if (steps >= 3) {
    score += 1
    signals.push(`${steps} numbered steps`)
  } else if (sequence.test(text)) {
    score += 1
    signals.push("first/then/finally steps")
  }
  const tools = request.tools?.length ?? 0
  if (tools >= 3) {
    score += tools >= 8 ? 2 : 1
    signals.push(`${tools} tools`)
  }
  const output = request.maxOutputTokens ?? 0
  if (output >= 2_000) {
    score += output >= 8_000 ? 2 : 1
    signals.push(`up to ${thousands(output)} output tokens`)
  }
  if (code.test(raw)) {
    score += 1
    signals.push("code")
  }
  return { score, signals }
}

// ---------------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------------

const percent = (share: number) => `${Math.round(share * 1000) / 10}%`

/** Builds a router; bad options fail with `RouterConfigError` naming the field. */
export const make = (options: Options = {}): Effect.Effect<Router.Service, RouterConfigError> =>
  Effect.gen(function*() {
    const fail = (field: string, reason: string) => Effect.fail(new RouterConfigError({ field, reason }))
    const tierOptions = options.tiers ?? defaultTiers
    const tiers = new Map<string, ReadonlyArray<string>>()
    const models: Array<{ readonly model: string; readonly field: string }> = []
    for (const [name, tier] of Object.entries(tierOptions)) {
      if (typeof tier?.model !== "string" || tier.model.trim() === "") {
        return yield* fail(`tiers.${name}.model`, "a tier needs a model to send to")
      }
      const chain = [tier.model]
      models.push({ model: tier.model, field: `tiers.${name}.model` })
      for (const [index, model] of (tier.fallbacks ?? []).entries()) {
        const field = `tiers.${name}.fallbacks[${index}]`
        if (typeof model !== "string" || model.trim() === "") return yield* fail(field, "must name a model")
        if (chain.includes(model)) {
          return yield* fail(field, `"${model}" is already in the chain ${chain.join(" → ")}: a fallback cycle`)
        }
        chain.push(model)
        models.push({ model, field })
      }
      tiers.set(name, chain)
    }
    if (tiers.size === 0) return yield* fail("tiers", "at least one tier is needed")
    const known = `the tiers are ${Array.from(tiers.keys()).join(", ")}`
    const tierField = (field: string, name: string | undefined, fallback: string) => {
      const tier = name ?? fallback
      return tiers.has(tier) ? Effect.succeed(tier) : fail(field, `no tier "${tier}": ${known}`)
    }
    const simpleTier = yield* tierField("heuristics.simpleTier", options.heuristics?.simpleTier, "simple")
    const complexTier = yield* tierField("heuristics.complexTier", options.heuristics?.complexTier, "complex")
    const threshold = options.heuristics?.threshold ?? 2
    if (!Number.isFinite(threshold) || threshold <= 0) {
      return yield* fail("heuristics.threshold", `${threshold}: must be a score above 0`)
    }
    const tasks = new Map<string, string>()
    for (const [task, tier] of Object.entries(options.tasks ?? {})) {
      tasks.set(task, yield* tierField(`tasks.${task}`, tier, tier))
    }
    const downgrade = options.downgrade
    let downgradeFrom: string | undefined
    let downgradeTo: string | undefined
    if (downgrade !== undefined) {
      if (!(downgrade.below > 0 && downgrade.below <= 1)) {
        return yield* fail(
          "downgrade.below",
          `${downgrade.below}: must be a share in (0, 1], e.g. 0.2 to route down when less than 20% is left`
        )
      }
      downgradeFrom = yield* tierField("downgrade.from", downgrade.from, complexTier)
      downgradeTo = yield* tierField("downgrade.to", downgrade.to, simpleTier)
    }
    const windows = new Map<string, number>()
    for (const [model, info] of Object.entries({ ...defaultModels, ...options.models })) {
      const window = info?.contextWindow
      if (typeof window !== "number" || !Number.isInteger(window) || window <= 0) {
        return yield* fail(`models.${model}.contextWindow`, `${window}: must be a whole number of tokens above 0`)
      }
      windows.set(model, window)
    }
    const fallbackTags = options.fallbackOn ?? defaultFallbackOn
    for (const [index, tag] of fallbackTags.entries()) {
      if (!errorTags.has(tag)) {
        return yield* fail(
          `fallbackOn[${index}]`,
          `"${tag}" is not an LlmError tag (${Array.from(errorTags).join(", ")})`
        )
      }
    }
    const fallbackOn: ReadonlySet<string> = new Set(fallbackTags)
    const classifier = options.classifier

    const routeTo = (tier: string, reason: string): Route => ({ tier, chain: tiers.get(tier)!, reason })

    /** Applies the budget-aware downgrade to a route to `downgradeFrom`. */
    const withBudget = (route: Route, facts: Facts): Effect.Effect<Route> =>
      downgrade === undefined || route.tier !== downgradeFrom
        ? Effect.succeed(route)
        : Effect.map(facts.budgetLeft, (left) =>
          left === undefined || left.share >= downgrade.below
            ? route
            : routeTo(
              downgradeTo!,
              `${route.reason}; downgraded ${route.tier} → ${downgradeTo}: budget ${left.scope} has ${
                percent(left.share)
              } left (below ${percent(downgrade.below)})`
            ))

    const byHeuristics = (assessment: Assessment, prefix: string): Route => {
      const complex = assessment.score >= threshold
      const signals = assessment.signals.length === 0 ? "" : ` (${assessment.signals.join("; ")})`
      return routeTo(
        complex ? complexTier : simpleTier,
        `${prefix}heuristics: score ${assessment.score} ${complex ? "≥" : "<"} ${threshold}${signals}`
      )
    }

    const decide = (request: LlmRequest.LlmRequest, facts: Facts): Effect.Effect<Route, InvalidRequest> => {
      if (request.tier !== undefined) {
        return tiers.has(request.tier)
          ? Effect.succeed(routeTo(request.tier, `tier "${request.tier}" named in the request`))
          : Effect.fail(new InvalidRequest({ field: "tier", reason: `no tier "${request.tier}": ${known}` }))
      }
      const ruled = request.task === undefined ? undefined : tasks.get(request.task)
      if (ruled !== undefined) return Effect.succeed(routeTo(ruled, `task "${request.task}" → ${ruled}`))
      const assessment = assess(request, facts.inputTokens)
      if (classifier === undefined) return Effect.succeed(byHeuristics(assessment, ""))
      return Effect.flatMap(Effect.exit(Effect.suspend(() => classifier(request, assessment))), (exit) => {
        let why: string
        if (Exit.isSuccess(exit)) {
          const { reason, tier } = exit.value
          if (tiers.has(tier)) {
            return Effect.succeed(routeTo(tier, `classifier → ${tier}${reason ? `: ${reason}` : ""}`))
          }
          why = `it named no tier "${String(tier)}" (${known})`
        } else {
          const error = Cause.squash(exit.cause)
          why = `it failed: ${error instanceof Error ? error.message : String(error)}`
        }
        return Effect.as(
          Effect.logWarning(`Router: the classifier did not decide, so the heuristics do: ${why}`),
          byHeuristics(assessment, "classifier did not decide; ")
        )
      })
    }

    const chainOf = (model: string, tier?: string | undefined): Route["chain"] => {
      const named = tier === undefined ? undefined : tiers.get(tier)
      const holding = named?.includes(model) ? named : Array.from(tiers.values()).find((chain) => chain.includes(model))
      return holding === undefined ? [model] : holding.slice(holding.indexOf(model))
    }

    return Router.of({
      tiers,
      models,
      route: (request, facts) => Effect.flatMap(decide(request, facts), (route) => withBudget(route, facts)),
      chainOf,
      contextWindow: (model) => windows.get(model),
      fallsBackOn: (error) => fallbackOn.has(error._tag),
      description: `router (${Array.from(tiers, ([name, chain]) => `${name}: ${chain.join(" → ")}`).join("; ")}${
        classifier === undefined ? "" : "; classifier"
      }${downgrade === undefined ? "" : `; downgrade below ${percent(downgrade.below)}`})`
    })
  })

/** A router with the given options; provide it to `Llm.layer`. */
export const layer = (options: Options = {}): Layer.Layer<Router, RouterConfigError> =>
  Layer.effect(Router, make(options))

/**
 * A router whose options are read from `Config` (the application says where from); a classifier,
 * being code, is passed beside it.
 */
export const layerConfig = (
  config: Config.Config.Wrap<Omit<Options, "classifier">>,
  options: { readonly classifier?: Classifier } = {}
): Layer.Layer<Router, RouterConfigError | ConfigError.ConfigError> =>
  Layer.effect(
    Router,
    Effect.flatMap(Config.unwrap(config), (config) =>
      make(options.classifier === undefined ? config : { ...config, classifier: options.classifier }))
  )
