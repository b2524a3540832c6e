import { assert, describe, expect, it } from "@effect/vitest"
import * as Gate from "@keel/core/Gate"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"

/** Forks a fiber that waits at the gate, records its name once through, and holds its permit until `done`. */
const holder = (gate: Gate.Gate, order: Array<string>, name: string, done: Deferred.Deferred<void>, first = false) =>
  Effect.fork(gate.withPermit(first)(Effect.zipRight(Effect.sync(() => order.push(name)), Deferred.await(done))))

describe("Gate", () => {
  it.effect("hands each freed permit to the next waiter in line, the first lane ahead", () =>
    Effect.gen(function*() {
      const gate = yield* Gate.make(1)
      const order: Array<string> = []
      const done = yield* Deferred.make<void>()
      const fibers = [yield* holder(gate, order, "holder", done)]
      yield* Effect.yieldNow()
      for (const name of ["a", "b", "c"]) {
        fibers.push(yield* holder(gate, order, name, done))
        yield* Effect.yieldNow()
      }
      fibers.push(yield* holder(gate, order, "urgent", done, true))
      yield* Effect.yieldNow()
      expect(order).toEqual(["holder"])
      yield* Deferred.succeed(done, undefined)
      yield* Fiber.joinAll(fibers)
      expect(order).toEqual(["holder", "urgent", "a", "b", "c"])
    }))

  it.effect("a fiber interrupted while it waits leaves the line, and the permit goes on to the next", () =>
    Effect.gen(function*() {
      const gate = yield* Gate.make(1)
      const order: Array<string> = []
      const done = yield* Deferred.make<void>()
      const holding = yield* holder(gate, order, "holder", done)
      yield* Effect.yieldNow()
      const leaving = yield* holder(gate, order, "leaving", done)
      const next = yield* holder(gate, order, "next", done)
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(leaving)
      yield* Deferred.succeed(done, undefined)
      yield* Fiber.join(holding)
      yield* Fiber.join(next)
      expect(order).toEqual(["holder", "next"])
      // Every permit came back: two fibers pass at once through a gate of one, in turn.
      const again = yield* Deferred.make<void>()
      const later = [yield* holder(gate, order, "x", again), yield* holder(gate, order, "y", again)]
      yield* Deferred.succeed(again, undefined)
      yield* Fiber.joinAll(later)
      expect(order).toEqual(["holder", "next", "x", "y"])
    }))

  it.effect("a waiter interrupted as the permit is handed to it passes the permit on", () =>
    Effect.gen(function*() {
      const gate = yield* Gate.make(1)
      const order: Array<string> = []
      const done = yield* Deferred.make<void>()
      const [handed, next] = yield* gate.withPermit()(Effect.gen(function*() {
        const handed = yield* holder(gate, order, "handed", done)
        const next = yield* holder(gate, order, "next", done)
        yield* Effect.yieldNow()
        // `handed` is told of its interruption now; the release that ends this block hands it the permit
        // before it runs, so it learns of both at once.
        yield* Fiber.interruptAsFork(handed, FiberId.none)
        return [handed, next] as const
      }))
      yield* Deferred.succeed(done, undefined)
      assert.isTrue(Exit.isInterrupted(yield* Fiber.await(handed)))
      yield* Fiber.join(next)
      expect(order).toEqual(["next"])
    }))

  it.effect("10,000 waiters pass through a gate of 8, each once, in order", () =>
    Effect.gen(function*() {
      const gate = yield* Gate.make(8)
      const order: Array<number> = []
      let inside = 0
      let most = 0
      yield* Effect.forEach(
        Array.from({ length: 10_000 }, (_, i) => i),
        (i) =>
          gate.withPermit()(Effect.gen(function*() {
            inside++
            most = Math.max(most, inside)
            order.push(i)
            yield* Effect.yieldNow()
            inside--
          })),
        { concurrency: "unbounded", discard: true }
      )
      expect(most).toBe(8)
      expect(order).toEqual(Array.from({ length: 10_000 }, (_, i) => i))
    }))
})
