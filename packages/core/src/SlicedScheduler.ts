/**
 * A scheduler for a process that starts thousands of calls at once: it runs the fibers' tasks in the
 * order they were scheduled for at most `sliceMillis` (default 10 ms) at a time, then lets the event
 * loop turn (timers, sockets) before it goes on.
 *
 * Effect's default scheduler runs every ready task, and the tasks those schedule, in one chain of
 * microtasks, and the event loop turns only when the chain runs dry. On 2 shared cores, 2,500 calls
 * started together kept a process's loop from turning for 4–6 s: no timer fired, so the budget's
 * reclaim and lease renewal, a caller's `Effect.timeout` and the rate limiter's pace all waited for the
 * start-up to end. Under this scheduler the same burst fired a 1 s timer at +1.0 s and reclaim ran every
 * second from the first (`bench/budget-burst.ts`, BENCHMARKS.md). Timers and sockets are served at
 * least once a slice; the tasks themselves still wait their turn in order. The `keel` binary runs
 * under it: 100,000 listings at 454/s and 2,504 µs of CPU each, against 347/s and 3,558 µs before.
 *
 * Hand-written because none of Effect's schedulers bounds a drain by time: `MixedScheduler` bounds it
 * by rounds of microtasks (each round runs every task ready at its start, thousands in a burst), and
 * `timer` gives each task a macrotask of its own. Fibers' scheduling priorities are not used.
 *
 *   program.pipe(Effect.withScheduler(SlicedScheduler.make()))   // or Layer: SlicedScheduler.layer()
 */
import type * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Scheduler from "effect/Scheduler"

export interface Options {
  /** The longest the scheduler runs tasks before the event loop gets a turn (0: after every task). Default 10 ms. */
  readonly sliceMillis?: number | undefined
}

class Sliced implements Scheduler.Scheduler {
  /** Tasks scheduled and not yet run, in order. A task that has run is held by nothing here. */
  private pending: Array<Scheduler.Task> = []
  private running = false

  constructor(private readonly sliceMillis: number) {}

  shouldYield(fiber: Fiber.RuntimeFiber<unknown, unknown>): number | false {
    return Scheduler.defaultScheduler.shouldYield(fiber)
  }

  scheduleTask(task: Scheduler.Task): void {
    this.pending.push(task)
    if (!this.running) {
      this.running = true
      queueMicrotask(this.drain)
    }
  }

  private readonly drain = (): void => {
    const start = performance.now()
    while (this.pending.length > 0) {
      const batch = this.pending
      this.pending = []
      for (let i = 0; i < batch.length; i++) {
        batch[i]!()
        if (performance.now() - start >= this.sliceMillis && (i + 1 < batch.length || this.pending.length > 0)) {
          // The rest of this batch goes before what its tasks scheduled; the event loop turns (timers, I/O) first.
          if (i + 1 < batch.length) this.pending = batch.slice(i + 1).concat(this.pending)
          setImmediate(this.drain)
          return
        }
      }
    }
    this.running = false
  }
}

/** A scheduler that gives the event loop a turn at least every `sliceMillis`. */
export const make = (options?: Options): Scheduler.Scheduler => new Sliced(options?.sliceMillis ?? 10)

/** Runs the effects built on this layer under `make(options)`. */
export const layer = (options?: Options): Layer.Layer<never> => Layer.setScheduler(make(options))
