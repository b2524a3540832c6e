/**
 * The durable engine `Batch` runs its chunk workflows on: `@effect/cluster`'s workflow engine on a
 * single SQL-backed runner (what `SingleRunner` builds, with its configuration given here rather than
 * read from the environment). `layerSqlite` keeps everything in one SQLite file (the embedded
 * default); `layer` takes the `SqlClient` in context (e.g. Postgres). Workflow payloads, activity
 * results and durable clocks live in the cluster's tables, so a process that dies mid-chunk resumes
 * the chunk after its last recorded activity when it starts again.
 */
import * as ClusterWorkflowEngine from "@effect/cluster/ClusterWorkflowEngine"
import * as RunnerHealth from "@effect/cluster/RunnerHealth"
import * as Runners from "@effect/cluster/Runners"
import * as RunnerStorage from "@effect/cluster/RunnerStorage"
import * as Sharding from "@effect/cluster/Sharding"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as SqlMessageStorage from "@effect/cluster/SqlMessageStorage"
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type { WorkflowEngine } from "@effect/workflow/WorkflowEngine"
import * as Layer from "effect/Layer"
import * as Sqlite from "../Sqlite.js"

export interface Options {
  /** How often the runner reads messages that are due (durable clocks, resumed workflows), in ms. Default 500. */
  readonly pollInterval?: number | undefined
}

/** The workflow engine over the `SqlClient` in context. */
export const layer = (options: Options = {}): Layer.Layer<WorkflowEngine, never, SqlClient.SqlClient> =>
  ClusterWorkflowEngine.layer.pipe(
    Layer.provide(Sharding.layer),
    Layer.provide(Runners.layerNoop),
    Layer.provideMerge(Layer.orDie(SqlMessageStorage.layer)),
    Layer.provide([RunnerStorage.layerMemory, RunnerHealth.layerNoop]),
    Layer.provide(ShardingConfig.layer({ entityMessagePollInterval: options.pollInterval ?? 500 }))
  )

/** The workflow engine on a SQLite file (created when missing; its folder must exist). */
export const layerSqlite = (
  options: Options & { readonly filename: string }
): Layer.Layer<WorkflowEngine, SqlError> =>
  layer(options).pipe(Layer.provide(Sqlite.layer({ filename: options.filename })))
