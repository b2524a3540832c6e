/**
 * `Effect.timeoutFail` for the hot path. Effect's version races the effect against a sleeping fiber
 * (two forks and an interruption per call, ~100 µs of CPU around a real HTTP attempt). On the live
 * clock this forks the effect once and arms a plain timer; under any other clock (`TestClock`) it
 * is `Effect.timeoutFail` itself, so virtual time still rules in tests.
 */
import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Runtime from "effect/Runtime"

const liveClock = Effect.runSync(Effect.clock)

export const timeoutFail = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  millis: number,
  onTimeout: () => E
): Effect.Effect<A, E, R> =>
  Effect.clockWith((clock: Clock.Clock) =>
    clock !== liveClock
      ? Effect.timeoutFail(self, { duration: Duration.millis(millis), onTimeout })
      : Effect.flatMap(Effect.runtime<R>(), (runtime) => {
        const fiber = Runtime.runFork(runtime, self, { immediate: true })
        return Effect.async<A, E>((resume) => {
          let done = false
          const timer = setTimeout(() => {
            if (done) return
            done = true
            fiber.removeObserver(observer)
            resume(Effect.zipRight(Fiber.interrupt(fiber), Effect.fail(onTimeout())))
          }, millis)
          const observer = (exit: Parameters<Parameters<typeof fiber.addObserver>[0]>[0]) => {
            if (done) return
            done = true
            clearTimeout(timer)
            resume(exit)
          }
          fiber.addObserver(observer)
          return Effect.suspend(() => {
            done = true
            clearTimeout(timer)
            fiber.removeObserver(observer)
            return Fiber.interrupt(fiber)
          })
        })
      })
  )
