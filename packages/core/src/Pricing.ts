/**
 * What a model call costs. A price table per model (input, cached input, output — reasoning tokens
 * are billed as output — and the Batch API's prices): a provider's table (`table`, e.g.
 * `@keel/openai`'s `OpenAiPricing.prices`) extended or overridden from options or a JSON file. Dated
 * snapshot names (`gpt-4o-2024-08-06`) resolve to their family. An unknown model is
 * `PricingUnknown`, never silently $0, unless a fallback price is configured (the price then says
 * `fallback: true`, so the call record can mark it).
 *
 * Prices are exact `Money` (pico-dollars per token): `cost` is integer arithmetic.
 *
 * File format (`layerFile`): `{ "models": { "<model>": { "input": "2.50", "cachedInput": "1.25",
 * "output": "10.00", "batchInput"?, "batchCachedInput"?, "batchOutput"?, "maxOutputTokens"?,
 * "source"?, "asOf"? } }, "fallback"?: { …same fields } }` with USD per 1M tokens as decimal strings
 * or numbers (at most 6 decimals). A malformed file fails with `PricingConfigError` naming the file,
 * the line and the field.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { PricingUnknown } from "./LlmError.js"
import * as Money from "./Money.js"
import type { Usage } from "./Usage.js"

/** Sync (standard) or Batch API prices. */
export type Mode = "sync" | "batch"

/** One model's prices, in pico-dollars per token. */
export interface ModelPrice {
  /** The name in the table (the family for a dated snapshot). */
  readonly model: string
  readonly input: Money.Money
  readonly cachedInput: Money.Money
  /** Output tokens, reasoning tokens included. */
  readonly output: Money.Money
  readonly batchInput: Money.Money
  readonly batchCachedInput: Money.Money
  readonly batchOutput: Money.Money
  /** The worst-case output used for a reservation when a request sets no `maxOutputTokens`. */
  readonly maxOutputTokens: number
  /** Where the price comes from, and when it was read. */
  readonly source: string
  readonly asOf: string
  /** True when the model was unknown and the configured fallback price was used. */
  readonly fallback: boolean
}

/** A bad price table: the file (when read from one), the line, the field and what is wrong. */
export class PricingConfigError
  extends Schema.TaggedError<PricingConfigError>("@keel/core/Pricing/PricingConfigError")("PricingConfigError", {
    file: Schema.optional(Schema.String),
    line: Schema.optional(Schema.Number),
    field: Schema.String,
    reason: Schema.String
  })
{
  override get message() {
    const where = this.file === undefined ? "" : `${this.file}${this.line === undefined ? "" : `:${this.line}`}: `
    return `${where}invalid pricing at ${this.field === "" ? "the root" : this.field}: ${this.reason}`
  }
}

const million = 1_000_000n

/** USD per 1M tokens (a decimal string or number) as exact pico-dollars per token. */
const PerMillion = Schema.transformOrFail(Schema.Union(Schema.String, Schema.Number), Schema.BigIntFromSelf, {
  strict: true,
  decode: (input, options, ast) =>
    ParseResult.flatMap(ParseResult.decodeUnknown(Money.FromUsd)(input, options), (perMillion) =>
      perMillion < 0n
        ? ParseResult.fail(new ParseResult.Type(ast, input, "must not be negative"))
        : perMillion % million !== 0n
        ? ParseResult.fail(new ParseResult.Type(ast, input, "must have at most 6 decimals (USD per 1M tokens)"))
        : ParseResult.succeed(perMillion / million)),
  encode: (perToken) => ParseResult.succeed(Money.format(perToken * million))
})

/** One model's prices as written in options or a file: USD per 1M tokens. */
export const PriceInput = Schema.Struct({
  input: PerMillion,
  /** Default: the input price (no caching discount known). */
  cachedInput: Schema.optional(PerMillion),
  output: PerMillion,
  /** Default: half the sync price (batch cached input: the batch input price when no cached price is given). */
  batchInput: Schema.optional(PerMillion),
  batchCachedInput: Schema.optional(PerMillion),
  batchOutput: Schema.optional(PerMillion),
  maxOutputTokens: Schema.optional(Schema.Int.pipe(Schema.positive())),
  source: Schema.optional(Schema.String),
  asOf: Schema.optional(Schema.String)
}).annotations({ identifier: "PriceInput" })
export type PriceInput = typeof PriceInput.Encoded

/** A pricing file. */
export const PricingFile = Schema.Struct({
  models: Schema.optional(Schema.Record({ key: Schema.String, value: PriceInput })),
  fallback: Schema.optional(PriceInput)
}).annotations({ identifier: "PricingFile" })
export type PricingFile = typeof PricingFile.Encoded

const defaultMaxOutputTokens = 16_384

type Problem = { readonly field: string; readonly reason: string }

const batchPrice = (explicit: bigint | undefined, sync: bigint, field: string): Either.Either<bigint, Problem> =>
  explicit !== undefined
    ? Either.right(explicit)
    : sync % 2n === 0n
    ? Either.right(sync / 2n)
    : Either.left({ field, reason: "half of the sync price is finer than 10^-12 USD per token: give it explicitly" })

const toPrice = (
  model: string,
  entry: typeof PriceInput.Type,
  fallback: boolean
): Either.Either<ModelPrice, Problem> => {
  const cachedInput = entry.cachedInput ?? entry.input
  const batchInput = batchPrice(entry.batchInput, entry.input, "batchInput")
  return Either.map(
    Either.all({
      batchInput,
      // Without a cached price there is no caching discount, in batch either.
      batchCachedInput: entry.cachedInput === undefined && entry.batchCachedInput === undefined
        ? batchInput
        : batchPrice(entry.batchCachedInput, cachedInput, "batchCachedInput"),
      batchOutput: batchPrice(entry.batchOutput, entry.output, "batchOutput")
    }),
    (batch) => ({
      model,
      input: entry.input,
      cachedInput,
      output: entry.output,
      ...batch,
      maxOutputTokens: entry.maxOutputTokens ?? defaultMaxOutputTokens,
      source: entry.source ?? "configured",
      asOf: entry.asOf ?? "",
      fallback
    })
  )
}

const decodePrice = Schema.decodeUnknownEither(PriceInput, { errors: "first", onExcessProperty: "error" })
const decodeFile = Schema.decodeUnknownEither(PricingFile, { errors: "first", onExcessProperty: "error" })

const firstIssue = (error: ParseResult.ParseError) => {
  const [issue] = ParseResult.ArrayFormatter.formatErrorSync(error)
  return issue === undefined
    ? { path: [] as ReadonlyArray<PropertyKey>, reason: error.message }
    : { path: issue.path, reason: issue.message }
}

const snapshot = /-\d{4}-\d{2}-\d{2}$/

/** The family a dated snapshot belongs to: `gpt-4o-2024-08-06` → `gpt-4o`; other names unchanged. */
export const family = (model: string): string => model.replace(snapshot, "")

/** What a usage costs at a price: uncached input, cached input and output (reasoning included). */
export const costOf = (price: ModelPrice, usage: Usage, mode: Mode = "sync"): Money.Money => {
  const cached = BigInt(usage.cachedInputTokens)
  const uncached = BigInt(usage.inputTokens) - cached
  const output = BigInt(usage.outputTokens)
  return mode === "sync"
    ? uncached * price.input + cached * price.cachedInput + output * price.output
    : uncached * price.batchInput + cached * price.batchCachedInput + output * price.batchOutput
}

/** The most a request can cost: every input token uncached, and the whole output allowance. */
export const worstCase = (
  price: ModelPrice,
  inputTokens: number,
  maxOutputTokens: number,
  mode: Mode = "sync"
): Money.Money =>
  mode === "sync"
    ? BigInt(inputTokens) * price.input + BigInt(maxOutputTokens) * price.output
    : BigInt(inputTokens) * price.batchInput + BigInt(maxOutputTokens) * price.batchOutput

export class Pricing extends Context.Tag("@keel/core/Pricing")<Pricing, Pricing.Service>() {}

export declare namespace Pricing {
  export interface Service {
    /** The price of a model (a snapshot resolves to its family; the fallback when configured), or undefined. */
    readonly lookup: (model: string) => ModelPrice | undefined
    /** The price of a model, or `PricingUnknown`. */
    readonly price: (model: string) => Effect.Effect<ModelPrice, PricingUnknown>
    /** What a usage of the model costs. */
    readonly cost: (model: string, usage: Usage, mode?: Mode) => Effect.Effect<Money.Money, PricingUnknown>
    /** Every price in the table, by name. */
    readonly prices: ReadonlyMap<string, ModelPrice>
  }
}

export interface Options {
  /** The table to start from, usually a provider's (`OpenAiPricing.prices`). Default: empty. */
  readonly table?: Readonly<Record<string, PriceInput>>
  /** Prices added to, or replacing, the table's (USD per 1M tokens). */
  readonly models?: Readonly<Record<string, PriceInput>>
  /** The price used for a model in no table; marked `fallback: true`. Default: none (unknown is an error). */
  readonly fallback?: PriceInput
}

const configError = (
  path: ReadonlyArray<PropertyKey>,
  reason: string,
  source?: { readonly file: string; readonly text: string }
) =>
  new PricingConfigError({
    field: path.map(String).join("."),
    reason,
    ...(source === undefined ? {} : { file: source.file, line: lineOf(source.text, path) })
  })

/** Builds the table from options, validating every price; a bad one is `PricingConfigError` naming its field. */
export const make = (options: Options = {}): Effect.Effect<Pricing.Service, PricingConfigError> =>
  build(options, ["models"], ["fallback"])

const build = (
  options: Options,
  modelsPath: ReadonlyArray<PropertyKey>,
  fallbackPath: ReadonlyArray<PropertyKey>,
  source?: { readonly file: string; readonly text: string }
): Effect.Effect<Pricing.Service, PricingConfigError> =>
  Effect.suspend(() => {
    const prices = new Map<string, ModelPrice>()
    const entry = (model: string, input: unknown, path: ReadonlyArray<PropertyKey>, fallback: boolean) =>
      Either.flatMap(
        Either.mapLeft(decodePrice(input), (error) => {
          const issue = firstIssue(error)
          return configError([...path, ...issue.path], issue.reason, source)
        }),
        (decoded) =>
          Either.mapLeft(
            toPrice(model, decoded, fallback),
            ({ field, reason }) => configError([...path, field], reason, source)
          )
      )
    for (const [model, input] of Object.entries(options.table ?? {})) {
      const price = entry(model, input, ["table", model], false)
      if (Either.isLeft(price)) return Effect.fail(price.left)
      prices.set(model, price.right)
    }
    for (const [model, input] of Object.entries(options.models ?? {})) {
      if (model.trim() === "" || /\s/.test(model)) {
        return Effect.fail(
          configError([...modelsPath, model], "a model name must be non-empty, without spaces", source)
        )
      }
      const price = entry(model, input, [...modelsPath, model], false)
      if (Either.isLeft(price)) return Effect.fail(price.left)
      prices.set(model, price.right)
    }
    let fallback: ModelPrice | undefined
    if (options.fallback !== undefined) {
      const price = entry("fallback", options.fallback, fallbackPath, true)
      if (Either.isLeft(price)) return Effect.fail(price.left)
      fallback = price.right
    }
    const resolved = new Map<string, ModelPrice | undefined>()
    const lookup = (model: string): ModelPrice | undefined => {
      let price = resolved.get(model)
      if (price === undefined && !resolved.has(model)) {
        price = prices.get(model) ?? prices.get(family(model))
        if (price === undefined && fallback !== undefined) price = { ...fallback, model }
        if (resolved.size < 10_000) resolved.set(model, price)
      }
      return price
    }
    const price = (model: string) => {
      const found = lookup(model)
      return found === undefined ? Effect.fail(new PricingUnknown({ model })) : Effect.succeed(found)
    }
    return Effect.succeed(Pricing.of({
      lookup,
      price,
      cost: (model, usage, mode) => Effect.map(price(model), (found) => costOf(found, usage, mode)),
      prices
    }))
  })

/**
 * Reads a pricing file's text. A JSON syntax error names the line; a bad value names the line and
 * the field (`models.gpt-x.input`).
 */
export const parseFile = (
  file: string,
  text: string,
  options: Omit<Options, "models" | "fallback"> = {}
): Effect.Effect<Pricing.Service, PricingConfigError> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause)
    return Effect.fail(
      new PricingConfigError({ file, line: syntaxErrorLine(text, reason), field: "", reason: `not JSON: ${reason}` })
    )
  }
  const decoded = decodeFile(json)
  if (Either.isLeft(decoded)) {
    // Report the first bad field with the path into the raw JSON (the decoded prices are checked in `build`).
    const issue = firstIssue(decoded.left)
    return Effect.fail(configError(issue.path, issue.reason, { file, text }))
  }
  const raw = json as PricingFile
  return build(
    {
      ...options,
      ...(raw.models === undefined ? {} : { models: raw.models }),
      ...(raw.fallback === undefined ? {} : { fallback: raw.fallback })
    },
    ["models"],
    ["fallback"],
    { file, text }
  )
}

/** The options' table, extended or overridden by their models. */
export const layer = (options: Options = {}): Layer.Layer<Pricing, PricingConfigError> =>
  Layer.effect(Pricing, make(options))

/** The options' table extended or overridden by a JSON pricing file (see the module header). */
export const layerFile = (
  file: string,
  options: Omit<Options, "models" | "fallback"> = {}
): Layer.Layer<Pricing, PricingConfigError, FileSystem.FileSystem> =>
  Layer.effect(
    Pricing,
    Effect.flatMap(FileSystem.FileSystem, (fs) =>
      fs.readFileString(file).pipe(
        Effect.mapError((error) => new PricingConfigError({ file, field: "", reason: error.message })),
        Effect.flatMap((text) => parseFile(file, text, options))
      ))
  )

/** The price of a model in the table in context. */
export const price = (model: string): Effect.Effect<ModelPrice, PricingUnknown, Pricing> =>
  Effect.flatMap(Pricing, (pricing) => pricing.price(model))

/** What a usage of the model costs, at sync or batch prices. */
export const cost = (
  model: string,
  usage: Usage,
  mode: Mode = "sync"
): Effect.Effect<Money.Money, PricingUnknown, Pricing> =>
  Effect.flatMap(Pricing, (pricing) => pricing.cost(model, usage, mode))

/** The 1-based line of a JSON syntax error, from V8's "at position N" or "(line L column C)". */
const syntaxErrorLine = (text: string, reason: string): number => {
  const line = /line (\d+) column \d+/.exec(reason)
  if (line !== null) return Number(line[1])
  const position = /at position (\d+)/.exec(reason)
  const offset = position === null ? text.length : Number(position[1])
  return lineAt(text, offset)
}

const lineAt = (text: string, offset: number): number => {
  let line = 1
  for (let i = 0; i < offset && i < text.length; i++) if (text.charCodeAt(i) === 10) line++
  return line
}

/** The line of the key at the end of `path` in JSON text, found by following the keys in order. */
const lineOf = (text: string, path: ReadonlyArray<PropertyKey>): number => {
  let offset = 0
  for (const key of path) {
    const quoted = JSON.stringify(String(key)).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
    const match = new RegExp(`${quoted}\\s*:`, "g")
    match.lastIndex = offset
    const found = match.exec(text)
    if (found === null) break
    offset = found.index
  }
  return lineAt(text, offset)
}
