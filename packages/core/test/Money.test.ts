import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FastCheck from "effect/FastCheck"
import * as Schema from "effect/Schema"
import * as Money from "../src/Money.js"
import * as Pricing from "../src/Pricing.js"
import * as TestPrices from "./utils/prices.js"

/**
 * Adds non-negative decimal strings digit by digit into a fixed-point digit array: an independent
 * check on the bigint arithmetic (no bigint, no float).
 */
const makeDecimalAdder = (fractionDigits: number, wholeDigits = 30) => {
  const digits = new Uint8Array(wholeDigits + fractionDigits)
  const add = (text: string) => {
    const point = text.indexOf(".")
    const whole = point === -1 ? text : text.slice(0, point)
    const fraction = point === -1 ? "" : text.slice(point + 1)
    let carry = 0
    for (let i = digits.length - 1; i >= 0; i--) {
      const position = i - wholeDigits // >= 0: fraction digit index; < 0: whole digit from the right
      const char = position >= 0
        ? fraction.charCodeAt(position)
        : whole.charCodeAt(whole.length + position)
      const digit = (Number.isNaN(char) ? 0 : char - 48) + digits[i]! + carry
      digits[i] = digit % 10
      carry = digit >= 10 ? 1 : 0
      if (position < 0 && whole.length + position < 0 && carry === 0) break
    }
  }
  const text = () => {
    const all = Array.from(digits).join("")
    const whole = all.slice(0, wholeDigits).replace(/^0+(?=\d)/, "")
    const fraction = all.slice(wholeDigits).replace(/0+$/, "")
    return fraction === "" ? whole : `${whole}.${fraction}`
  }
  return { add, text }
}

describe("Money", () => {
  it("formats amounts as USD decimals without trailing zeros", () => {
    assert.strictEqual(Money.format(0n), "0")
    assert.strictEqual(Money.format(123_000_000n), "0.000123")
    assert.strictEqual(Money.format(Money.usd(2)), "2")
    assert.strictEqual(Money.format(1n), "0.000000000001")
    assert.strictEqual(Money.format(-1_500_000_000_000n), "-1.5")
  })

  it("parses decimals exactly and rejects what is not a finite USD amount", () => {
    assert.deepStrictEqual(Money.parse("0.15"), Either.right(150_000_000_000n))
    assert.deepStrictEqual(Money.parse("-3"), Either.right(-3_000_000_000_000n))
    assert.isTrue(Either.isLeft(Money.parse("abc")))
    assert.isTrue(Either.isLeft(Money.parse("1e3")))
    assert.isTrue(Either.isLeft(Money.parse("0.0000000000001")))
  })

  it("format and parse are inverse for any amount", () =>
    FastCheck.assert(
      FastCheck.property(FastCheck.bigInt({ min: -(10n ** 24n), max: 10n ** 24n }), (amount) => {
        assert.deepStrictEqual(Money.parse(Money.format(amount)), Either.right(amount))
      })
    ))

  it("reads JSON numbers through their decimal text, so 0.1 + 0.2 is exactly 0.3", () => {
    const decode = Schema.decodeUnknownSync(Money.FromUsd)
    assert.strictEqual(decode(0.1) + decode(0.2), decode("0.3"))
    assert.strictEqual(decode(1.5e-7), 150_000n)
    assert.strictEqual(decode(2e21), 2_000_000_000_000_000_000_000n * Money.perUsd)
  })

  it("1,000,000 call costs sum exactly, matching an independent computation", () => {
    const prices = Array.from(Effect.runSync(Pricing.make({ table: TestPrices.table })).prices.values())
    let state = 42
    const random = (n: number) => {
      state = (state * 1_103_515_245 + 12_345) % 2_147_483_648
      return state % n
    }
    const costs: Array<Money.Money> = []
    // Independent total: tokens aggregated per model and category first, priced once at the end.
    const tokens = prices.map(() => ({ uncached: 0n, cached: 0n, output: 0n }))
    let floatTotal = 0
    for (let i = 0; i < 1_000_000; i++) {
      const which = random(prices.length)
      const inputTokens = 1 + random(5000)
      const cachedInputTokens = random(inputTokens)
      const outputTokens = random(2000)
      const reasoningTokens = random(outputTokens + 1)
      const cost = Pricing.costOf(prices[which]!, { inputTokens, cachedInputTokens, outputTokens, reasoningTokens })
      costs.push(cost)
      floatTotal += Number(Money.format(cost))
      const bucket = tokens[which]!
      bucket.uncached += BigInt(inputTokens - cachedInputTokens)
      bucket.cached += BigInt(cachedInputTokens)
      bucket.output += BigInt(outputTokens)
    }
    const total = Money.sum(costs)
    const independent = prices.reduce(
      (sum, price, i) =>
        sum + tokens[i]!.uncached * price.input + tokens[i]!.cached * price.cachedInput +
        tokens[i]!.output * price.output,
      0n
    )
    assert.strictEqual(total, independent)
    // And the decimal strings of the records, added as text, give the same figure.
    const adder = makeDecimalAdder(Money.scale)
    for (const cost of costs) adder.add(Money.format(cost))
    assert.strictEqual(Money.format(total), adder.text())
    // Floats would not: the point of integer amounts.
    assert.notStrictEqual(String(floatTotal), adder.text())
  })
})
