import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Ref from "effect/Ref"
import * as Timeout from "../src/internal/timeout.js"

// The fast path only runs on the live clock, so these use it.live with timers of a millisecond or two.
describe("internal/timeout on the live clock", () => {
  it.live("passes the effect's value and error through", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* Timeout.timeoutFail(Effect.succeed(1), 1_000, () => "late"), 1)
      assert.strictEqual(yield* Effect.flip(Timeout.timeoutFail(Effect.fail("bad"), 1_000, () => "late")), "bad")
      const slow = Effect.as(Effect.sleep("2 millis"), 2)
      assert.strictEqual(yield* Timeout.timeoutFail(slow, 1_000, () => "late"), 2)
    }))

  it.live("a hang is interrupted (its finalizers run) and fails with the timeout error", () =>
    Effect.gen(function*() {
      const finalized = yield* Ref.make(false)
      const hang = Effect.never.pipe(Effect.ensuring(Ref.set(finalized, true)))
      assert.strictEqual(yield* Effect.flip(Timeout.timeoutFail(hang, 1, () => "late")), "late")
      assert.isTrue(yield* Ref.get(finalized))
    }))

  it.live("interrupting the caller interrupts the effect", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const finalized = yield* Ref.make(false)
      const hang = Deferred.succeed(started, undefined).pipe(
        Effect.zipRight(Effect.never),
        Effect.ensuring(Ref.set(finalized, true))
      )
      const caller = yield* Effect.fork(Timeout.timeoutFail(hang, 60_000, () => "late"))
      yield* Deferred.await(started)
      yield* Fiber.interrupt(caller)
      assert.isTrue(yield* Ref.get(finalized))
    }))
})
