/**
 * The `keel` binary: runs the command on the process's arguments under `NodeRuntime.runMain` (so
 * SIGINT and SIGTERM interrupt it and its finalizers run) and exits with the status `Cli.main` gives.
 *
 * It first asks V8 to grow the heap by at most 30% of what survives a full collection. A run's
 * live heap is flat in the item count (about 80 MB after a full collection: modules, the
 * tokenizer's tables, the calls in flight), but each item's pipeline promotes short-lived fiber state
 * to the old generation, and with its default growing factor (up to 4× the live heap when the heap
 * limit is large, 4 GB on a 24 GB machine) V8 let a `keel demo` reach 390–490 MB resident before
 * collecting. The flag is read each time V8 recomputes its heap limit, so setting it here works; it
 * caps nothing (a bigger task still gets the heap it needs). Measured on 3,000 listings: peak RSS
 * 392 → 215 MB, CPU per item +5% (BENCHMARKS.md, Scale). The rest is imported after the flag is
 * set (static imports would be evaluated before it), so loading the modules runs under it too.
 * Not for `keel worker`: a runner's live heap grows with the messages its shards hold, and with the
 * flag a lone worker spent a third of its time in full collections (1,500 items: 10 items/s with
 * it, 28 without; BENCHMARKS.md, Cluster).
 *
 * The command runs under `SlicedScheduler`, so the event loop turns at least every 10 ms however many
 * calls are in flight: at `--concurrency 1024`, 5,000 listings took 7% less CPU and the
 * same time, with latency p50 0.7 s instead of 2.7 s and half the retries (timeouts that fired late).
 */
import * as V8 from "node:v8"

if (process.argv[2] !== "worker") V8.setFlagsFromString("--heap-growing-percent=30")

const [NodeContext, NodeRuntime, Effect, SlicedScheduler, Cli] = await Promise.all([
  import("@effect/platform-node/NodeContext"),
  import("@effect/platform-node/NodeRuntime"),
  import("effect/Effect"),
  import("@keel/core/SlicedScheduler"),
  import("./Cli.js")
])

Cli.main(process.argv).pipe(
  Effect.flatMap((code) =>
    Effect.sync(() => {
      process.exitCode = code
    })
  ),
  Effect.provide(NodeContext.layer),
  Effect.withScheduler(SlicedScheduler.make()),
  NodeRuntime.runMain
)
