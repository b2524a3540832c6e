/**
 * The `keel` binary: runs the command on the process's arguments under `NodeRuntime.runMain` (so
 * SIGINT and SIGTERM interrupt it and its finalizers run) and exits with the status `Cli.main` gives.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as Cli from "./Cli.js"

Cli.main(process.argv).pipe(
  Effect.flatMap((code) =>
    Effect.sync(() => {
      process.exitCode = code
    })
  ),
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain
)
