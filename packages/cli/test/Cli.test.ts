import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Schedule from "effect/Schedule"
import * as Net from "node:net"
import * as Cli from "../src/Cli.js"

const keel = (...args: Array<string>) => Cli.run(["node", "keel", ...args]).pipe(Effect.provide(NodeContext.layer))

const freePort = Effect.async<number>((resume) => {
  const server = Net.createServer().listen(0, "127.0.0.1", () => {
    const { port } = server.address() as Net.AddressInfo
    server.close(() => resume(Effect.succeed(port)))
  })
})

describe("keel simulate", () => {
  it.live("serves the simulator with the faults asked for", () =>
    Effect.gen(function*() {
      const port = yield* freePort
      const server = yield* Effect.fork(keel("simulate", "--port", String(port), "--faults", "503=1"))
      const response = yield* Effect.tryPromise(() =>
        fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
          method: "POST",
          headers: { authorization: "Bearer sk-any", "content-type": "application/json" },
          body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] })
        })
      ).pipe(Effect.retry(Schedule.spaced("50 millis").pipe(Schedule.upTo("10 seconds"))))
      assert.strictEqual(response.status, 503)
      yield* Fiber.interrupt(server)
    }))

  it.effect("a bad --faults value is a ValidationError that lists the valid names", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(keel("simulate", "--faults", "explode=0.5"))
      assert.isTrue(ValidationError.isValidationError(error) && ValidationError.isInvalidValue(error))
      assert.match(JSON.stringify(error), /unknown fault \\"explode\\".*rate_limit/)
    }))

  it.effect("a non-positive --rpm is refused", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(keel("simulate", "--rpm", "0"))
      assert.match(JSON.stringify(error), /--rpm must be a positive integer/)
    }))
})
