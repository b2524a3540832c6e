import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as V8 from "node:v8"
import * as Vm from "node:vm"
import * as SlicedScheduler from "../src/SlicedScheduler.js"

const busyFor = (millis: number) => {
  const end = performance.now() + millis
  while (performance.now() < end) {
    // spin: a call's CPU-bound start (prompt, tokens, schemas)
  }
}

/**
 * Starts `fibers` fibers at once, each busy for 1 ms, and says how many had finished when a timer due at
 * once, set just before, fired: how long the event loop waited for its turn.
 */
const finishedWhenTimerFired = (fibers: number) =>
  Effect.gen(function*() {
    let finished = 0
    let seen = -1
    const fired = new Promise<void>((resolve) =>
      setTimeout(() => {
        seen = finished
        resolve()
      }, 0)
    )
    yield* Effect.forEach(
      Array.from({ length: fibers }),
      () =>
        Effect.sync(() => {
          busyFor(1)
          finished++
        }),
      { concurrency: "unbounded", discard: true }
    )
    yield* Effect.promise(() => fired)
    return seen
  })

describe("SlicedScheduler", () => {
  it.live("the default scheduler runs a whole burst before a due timer fires; sliced, the timer fires after one slice", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* finishedWhenTimerFired(200), 200)
      const sliced = yield* finishedWhenTimerFired(200).pipe(Effect.withScheduler(SlicedScheduler.make()))
      // 10 ms slices of 1 ms tasks: about 10 had run; well under the 200 whatever the machine's load.
      assert.isAtMost(sliced, 50)
      const everyTask = yield* finishedWhenTimerFired(200).pipe(
        Effect.withScheduler(SlicedScheduler.make({ sliceMillis: 0 }))
      )
      assert.isAtMost(everyTask, 2)
    }))

  it.live("as a layer it schedules what is built on it", () =>
    Effect.gen(function*() {
      assert.isAtMost(yield* finishedWhenTimerFired(200), 50)
    }).pipe(Effect.provide(SlicedScheduler.layer())))

  it.live("results, arrival order, timeouts and interruption are as under the default scheduler", () =>
    Effect.gen(function*() {
      const values = yield* Effect.forEach(
        Array.from({ length: 2_000 }, (_, i) => i),
        (i) => Effect.as(Effect.yieldNow(), i),
        { concurrency: "unbounded" }
      )
      assert.strictEqual(values.reduce((a, b) => a + b, 0), 1_999_000)

      const order: Array<number> = []
      yield* Effect.forEach([0, 1, 2, 3, 4], (i) => Effect.sync(() => order.push(i)), {
        concurrency: "unbounded",
        discard: true
      })
      assert.deepStrictEqual(order, [0, 1, 2, 3, 4])

      const timedOut = yield* Effect.exit(Effect.timeout(Effect.never, 20))
      assert.isTrue(Exit.isFailure(timedOut) && Cause.isTimeoutException(Cause.squash(timedOut.cause)))

      const fiber = yield* Effect.fork(Effect.never)
      const interrupted = yield* Fiber.interrupt(fiber)
      assert.isTrue(Exit.isInterrupted(interrupted))
    }).pipe(Effect.withScheduler(SlicedScheduler.make({ sliceMillis: 1 }))))

  it.live("a task that has run is not kept, though the scheduler never runs dry", () =>
    Effect.promise(async () => {
      V8.setFlagsFromString("--expose-gc")
      const gc = Vm.runInNewContext("gc") as () => void
      const scheduler = SlicedScheduler.make({ sliceMillis: 1 })
      // Keeps the queue from ever emptying, as a long run under load does.
      let spinning = true
      const spin = () => {
        busyFor(0.2)
        if (spinning) scheduler.scheduleTask(spin, 0, undefined as never)
      }
      scheduler.scheduleTask(spin, 0, undefined as never)
      const refs: Array<WeakRef<object>> = []
      let ran = 0
      for (let i = 0; i < 1_000; i++) {
        const held = { payload: new Array(100).fill(i) }
        refs.push(new WeakRef(held))
        scheduler.scheduleTask(
          () => {
            ran += held.payload.length > 0 ? 1 : 0
          },
          0,
          undefined as never
        )
      }
      await new Promise((resolve) => setTimeout(resolve, 200))
      gc()
      await new Promise((resolve) => setTimeout(resolve, 0))
      spinning = false
      assert.strictEqual(ran, 1_000)
      assert.strictEqual(refs.filter((ref) => ref.deref() !== undefined).length, 0)
    }))
})
