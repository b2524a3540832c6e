/**
 * A first-come, first-served semaphore, with a lane that goes ahead of the queue.
 *
 * Why not Effect's `Semaphore`: in Effect 3 a release wakes every waiter, each of which then tries to
 * take the permit again, so a release costs as much as the queue is long. With thousands of waiters
 * (a worker's queued items, a burst of calls at one store) that is quadratic CPU; a CPU profile of a
 * `keel worker` holding 1,500 queued items showed it. A running fiber may also take a permit before
 * the waiters it woke, which on a busy store starves them. Here a freed permit is handed to the next
 * waiter in line, and only to it.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"

export interface Gate {
  /**
   * Runs `effect` holding a permit; `first` goes ahead of the fibers waiting in the ordinary lane.
   * Interrupted while it waits, a fiber leaves the queue (a permit handed to it as it was interrupted
   * is passed on); `effect` runs with the caller's interruptibility, and the permit is released
   * however it ends.
   */
  readonly withPermit: (first?: boolean) => <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

/** A gate of `permits` (a positive integer). */
export const unsafeMake = (permits: number): Gate => {
  let free = permits
  const urgent: Array<Deferred.Deferred<void>> = []
  const waiting: Array<Deferred.Deferred<void>> = []
  const release = Effect.sync(() => {
    const next = urgent.shift() ?? waiting.shift()
    if (next === undefined) free++
    else Deferred.unsafeDone(next, Exit.void)
  })
  const take = (first: boolean): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (free > 0) {
        free--
        return Effect.void
      }
      const turn = Deferred.unsafeMake<void>(FiberId.none)
      const queue = first ? urgent : waiting
      queue.push(turn)
      return Effect.onInterrupt(Deferred.await(turn), () =>
        Effect.suspend(() => {
          const index = queue.indexOf(turn)
          if (index >= 0) {
            queue.splice(index, 1)
            return Effect.void
          }
          return release // handed the permit as it was interrupted: pass it on
        }))
    })
  return {
    withPermit: (first = false) => (effect) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.zipRight(restore(take(first)), Effect.ensuring(restore(effect), release))
      )
  }
}

/** A gate of `permits` (a positive integer). */
export const make = (permits: number): Effect.Effect<Gate> => Effect.sync(() => unsafeMake(permits))
