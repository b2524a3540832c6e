/**
 * Exact amounts of money. An amount is a `bigint` count of pico-dollars (10⁻¹² USD): a price of up
 * to 6 decimals per 1M tokens is a whole number of pico-dollars per token, so price × tokens and
 * every sum of costs is exact; no float is ever accumulated. In files, logs and errors an amount is
 * a decimal USD string (`"0.000123"`), which `format` writes and `parse` reads back exactly.
 */
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"

/** An amount in pico-dollars (10⁻¹² USD). */
export type Money = bigint

/** Decimal places of the unit: 1 USD = 10^12 pico-dollars. */
export const scale = 12

/** Pico-dollars in one US dollar. */
export const perUsd: Money = 1_000_000_000_000n

/** Nothing. */
export const zero: Money = 0n

const decimal = /^(-)?(\d+)(?:\.(\d+))?$/

/**
 * Reads a decimal USD amount ("1.25", "0.000123", "-3") exactly. Fails with a reason when the text
 * is not a plain decimal number or has more than 12 decimals (finer than a pico-dollar).
 */
export const parse = (text: string): Either.Either<Money, string> => {
  const match = decimal.exec(text.trim())
  if (match === null) return Either.left(`"${text}" is not a decimal number of US dollars`)
  const [, sign, whole, fraction = ""] = match
  if (fraction.length > scale) {
    return Either.left(`"${text}" has more than ${scale} decimals (the smallest unit is 10^-12 USD)`)
  }
  const amount = BigInt(whole!) * perUsd + BigInt(fraction.padEnd(scale, "0"))
  return Either.right(sign === undefined ? amount : -amount)
}

/** Like `parse`, throwing on bad input: for literals in code. */
export const unsafeParse = (text: string): Money =>
  Either.getOrThrowWith(parse(text), (reason) => new RangeError(reason))

/** Whole US dollars as an amount; use `parse("0.5")` for decimals. */
export const usd = (dollars: number | bigint): Money => {
  if (typeof dollars === "number" && !Number.isSafeInteger(dollars)) {
    throw new RangeError(`Money.usd takes whole dollars, got ${dollars}: use Money.parse for decimals`)
  }
  return BigInt(dollars) * perUsd
}

/** The decimal USD text of an amount, without trailing zeros: 1_230_000_000n → "0.00123", 2n * perUsd → "2". */
export const format = (amount: Money): string => {
  const negative = amount < 0n
  const abs = negative ? -amount : amount
  const whole = abs / perUsd
  const fraction = (abs % perUsd).toString().padStart(scale, "0").replace(/0+$/, "")
  return `${negative ? "-" : ""}${whole}${fraction === "" ? "" : `.${fraction}`}`
}

/** The exact sum of many amounts. */
export const sum = (amounts: Iterable<Money>): Money => {
  let total = 0n
  for (const amount of amounts) total += amount
  return total
}

/**
 * A USD amount written as a decimal string or a JSON number (`"0.15"` or `0.15`). A number is read
 * through its shortest decimal text, so `0.15` means exactly 15 cents.
 */
export const FromUsd: Schema.Schema<Money, string | number> = Schema.transformOrFail(
  Schema.Union(Schema.String, Schema.Number),
  Schema.BigIntFromSelf,
  {
    strict: true,
    decode: (input, _, ast) => {
      const text = typeof input === "number" ? numberText(input) : input
      return Either.match(parse(text), {
        onLeft: (reason) => ParseResult.fail(new ParseResult.Type(ast, input, reason)),
        onRight: ParseResult.succeed
      })
    },
    encode: (amount) => ParseResult.succeed(format(amount))
  }
).annotations({ identifier: "Usd" })

/** The plain decimal text of a number's shortest representation, without exponent: 1.5e-7 → "0.00000015". */
const numberText = (n: number): string => {
  const text = String(n)
  const match = /^(-?)(\d+)(?:\.(\d+))?e([+-]\d+)$/i.exec(text)
  if (match === null) return text
  const [, sign, whole, fraction = "", exp] = match
  const digits = whole! + fraction
  const point = whole!.length + Number(exp)
  if (point <= 0) return `${sign}0.${"0".repeat(-point)}${digits}`
  // JavaScript writes an exponent only below 1e-6 or from 1e21, where the point lies past every digit.
  return `${sign}${digits}${"0".repeat(point - digits.length)}`
}
