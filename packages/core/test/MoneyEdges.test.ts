/**
 * The edges of `Money` that a mutation run found unguarded: what `parse` refuses and says, whole
 * dollars only in `usd`, every exponent form a JSON number can take, and the `FromUsd` codec's errors
 * and encoding.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import * as Money from "../src/Money.js"

const reason = (text: string) => Either.getLeft(Money.parse(text)).pipe((o) => o._tag === "Some" ? o.value : "")

describe("Money edges", () => {
  it("parse accepts surrounding spaces and refuses anything but a plain decimal, saying why", () => {
    assert.deepStrictEqual(Money.parse(" 1.5 "), Either.right(1_500_000_000_000n))
    assert.deepStrictEqual(Money.parse("0.000000000001"), Either.right(1n))
    for (const text of ["x1", "1x", "1.", ".5", "1.2.3", "--1", "+1", "1.x", "", "one"]) {
      assert.strictEqual(reason(text), `"${text}" is not a decimal number of US dollars`, text)
    }
    assert.strictEqual(
      reason("0.0000000000001"),
      "\"0.0000000000001\" has more than 12 decimals (the smallest unit is 10^-12 USD)"
    )
    const thrown = (() => {
      try {
        return Money.unsafeParse("ten")
      } catch (error) {
        return error
      }
    })()
    assert.instanceOf(thrown, RangeError)
    assert.strictEqual((thrown as RangeError).message, "\"ten\" is not a decimal number of US dollars")
  })

  it("usd takes whole dollars only", () => {
    assert.strictEqual(Money.usd(3), 3n * Money.perUsd)
    assert.strictEqual(Money.usd(3n), 3n * Money.perUsd)
    assert.throws(
      () => Money.usd(1.5),
      RangeError,
      "Money.usd takes whole dollars, got 1.5: use Money.parse for decimals"
    )
    assert.throws(() => Money.usd(2 ** 60), RangeError)
  })

  it("FromUsd reads every exponent form exactly, and fails naming the bad input", () => {
    const decode = Schema.decodeUnknownSync(Money.FromUsd)
    // String(n) of these: "1e-7", "1.5e-7", "0.0000125", "-2e-7", "1.5e+21", "1.23e+21", "123.456"
    assert.strictEqual(decode(1e-7), 100_000n)
    assert.strictEqual(decode(1.5e-7), 150_000n)
    assert.strictEqual(decode(-2e-7), -200_000n)
    assert.strictEqual(decode(1.5e21), 1_500_000_000_000_000_000_000n * Money.perUsd)
    assert.strictEqual(decode(1.23e21), 1_230_000_000_000_000_000_000n * Money.perUsd)
    assert.strictEqual(decode(123.456), 123_456_000_000_000n)
    assert.strictEqual(decode("2.50"), 2_500_000_000_000n)
    const error = Either.getLeft(Schema.decodeUnknownEither(Money.FromUsd)("2,50"))
    assert.isTrue(error._tag === "Some" && error.value.message.includes("\"2,50\" is not a decimal number"))
    // Exponents are read from JSON numbers only: the string "1e+5" (as String(1e5) would write it) is not a decimal.
    assert.isTrue(Either.isLeft(Schema.decodeUnknownEither(Money.FromUsd)("1e+5")))
    // 1e-13 is finer than a pico-dollar.
    assert.isTrue(Either.isLeft(Schema.decodeUnknownEither(Money.FromUsd)(1e-13)))
    assert.strictEqual(Schema.encodeSync(Money.FromUsd)(1_230_000_000n), "0.00123")
  })
})
