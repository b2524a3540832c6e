/**
 * The OpenAI simulator in a process of its own, for the Batch kill tests (the worker they kill must
 * not take the simulator with it): starts on 127.0.0.1 with the options given as JSON, prints
 * `url <url>`, and answers `stats` on stdin with one line of JSON (its batches).
 *
 * Run: node --import tsx --conditions=@keel/source packages/openai/test/utils/batchSimulator.ts '<json options>'
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Readline from "node:readline"
import * as Simulator from "../../src/Simulator.js"

const options = JSON.parse(process.argv[2] ?? "{}") as Simulator.Options

Effect.gen(function*() {
  const sim = yield* Simulator.Simulator
  const run = Effect.runPromise
  const lines = Readline.createInterface({ input: process.stdin })
  lines.on("line", (line) => {
    if (line.trim() === "stats") {
      void run(sim.stats).then((stats) => process.stdout.write(`stats ${JSON.stringify({ batches: stats.batches })}\n`))
    }
  })
  process.stdout.write(`url ${sim.url}\n`)
  yield* Effect.never
}).pipe(Effect.provide(Layer.orDie(Simulator.layer({ ...options, port: 0 }))), Effect.runPromise)
