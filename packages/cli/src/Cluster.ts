/**
 * keel on `@effect/cluster`: one run's items spread over the shards of many runner processes that
 * share Postgres (shard locks, runners, durable messages) and Redis (the provider quota).
 *
 * - `ChunkEntity`: a run's items travel in chunks of input lines (sized by `ClusterRun`), each a
 *   persisted message keyed by (run, first line) to one of the run's entities, one per shard
 *   (`shardEntities`); the cluster routes it to the runner holding its shard, and a dead runner's
 *   unprocessed messages are read again by whichever runner takes its shards. A chunk, not an item,
 *   per message: the cluster's own work per message (storing it, routing it, an entity, a reply) cost
 *   a worker more CPU than the item's call did.
 * - `Store`: the run's outcomes in Postgres, one row per (run, item), inserted once: a chunk that
 *   is delivered again calls only its items without a row. The call records of each run sit beside them.
 *   The submitter (`ClusterRun`) copies both into the output folder and marks them collected.
 * - `workerLayer`: a runner serving `ChunkEntity` over the full pipeline (router, budget on the same
 *   Postgres, rate limiter on Redis, breaker, retries), on a socket at the address it is given.
 * - `clientLayer`: the submitter's side, a client-only member of the same cluster.
 */
import * as ClusterSchema from "@effect/cluster/ClusterSchema"
import * as Entity from "@effect/cluster/Entity"
import * as EntityId from "@effect/cluster/EntityId"
import * as RunnerAddress from "@effect/cluster/RunnerAddress"
import * as RunnerHealth from "@effect/cluster/RunnerHealth"
import * as Runners from "@effect/cluster/Runners"
import * as Sharding from "@effect/cluster/Sharding"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as SocketRunner from "@effect/cluster/SocketRunner"
import * as SqlMessageStorage from "@effect/cluster/SqlMessageStorage"
import * as SqlRunnerStorage from "@effect/cluster/SqlRunnerStorage"
import * as NodeClusterSocket from "@effect/platform-node/NodeClusterSocket"
import * as Rpc from "@effect/rpc/Rpc"
import * as RpcSerialization from "@effect/rpc/RpcSerialization"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlConnection from "@effect/sql/SqlConnection"
import type { SqlError } from "@effect/sql/SqlError"
import * as Budget from "@keel/core/Budget"
import * as BudgetSql from "@keel/core/Budget/Sql"
import * as CallLog from "@keel/core/CallLog"
import * as CircuitBreaker from "@keel/core/CircuitBreaker"
import * as Gate from "@keel/core/Gate"
import * as Llm from "@keel/core/Llm"
import * as RateLimiter from "@keel/core/RateLimiter"
import * as RedisLimiter from "@keel/core/RateLimiter/Redis"
import * as RetryPolicy from "@keel/core/RetryPolicy"
import * as Router from "@keel/core/Router"
import * as OpenAiLanguageModel from "@keel/openai/OpenAiLanguageModel"
import * as OpenAiPricing from "@keel/openai/OpenAiPricing"
import * as OpenAiTokenizer from "@keel/openai/OpenAiTokenizer"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import { Redis } from "ioredis"
import * as Live from "./Live.js"
import * as Task from "./Task.js"

/** Postgres or Redis cannot be reached (or refused us): which, where and why. */
export class StoreUnreachable extends Schema.TaggedError<StoreUnreachable>("@keel/cli/Cluster/StoreUnreachable")(
  "StoreUnreachable",
  { store: Schema.Literal("Postgres", "Redis"), url: Schema.String, reason: Schema.String }
) {
  override get message() {
    return `${this.store} at ${this.url} is unreachable: ${this.reason}`
  }
}

/** A store operation of the cluster run failed (Postgres went away mid-run, a statement failed). */
export class StoreError extends Schema.TaggedError<StoreError>("@keel/cli/Cluster/StoreError")("StoreError", {
  operation: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `cluster store: ${this.operation} failed: ${this.reason}`
  }
}

/** The URL with its password hidden, for messages. */
export const redactUrl = (url: string): string => url.replace(/\/\/([^:/@]+):[^@/]*@/, "//$1:***@")

const reasonOf = (error: unknown): string => {
  const cause = (error as { readonly cause?: unknown }).cause
  const inner = cause instanceof Error ? cause : error instanceof Error ? error : undefined
  if (inner === undefined) return String(error)
  const code = (inner as { readonly code?: unknown }).code
  return typeof code === "string" && !inner.message.includes(code) ? `${inner.message} (${code})` : inner.message
}

/** One item of a run, as it travels in a chunk. */
export const Item = Schema.Struct({
  id: Schema.String,
  tier: Schema.String,
  /** The input line, parsed but not decoded (the worker decodes it with the task's Schema). */
  input: Schema.Unknown
})
export type Item = typeof Item.Type

/** A chunk of a run's items, as it travels in a durable message. */
export const ChunkPayload = {
  /** The run's id (one per output folder). */
  run: Schema.String,
  /** The chunk's key in the run: the number of its first input line. */
  chunk: Schema.String,
  /** The task module, as the worker imports it: an absolute path or a package specifier. */
  task: Schema.String,
  /** The budget scope charged. */
  scope: Schema.String,
  items: Schema.Array(Item)
}

/** Process a chunk: persisted, so it survives the runner that holds it; keyed by run and chunk. */
export const Process = Rpc.make("Process", {
  payload: ChunkPayload,
  primaryKey: (chunk) => `${chunk.run}/${chunk.chunk}`
})
export type Chunk = typeof Process.payloadSchema.Type

/** The entity chunks are addressed to: one per shard and run (see `shardEntities`). */
export const ChunkEntity = Entity.make("KeelChunk", [Process]).annotateRpcs(ClusterSchema.Persisted, true)

/**
 * A run's entity ids, one on each shard, in shard order: the `n`th chunk goes to the entity of shard
 * `n mod shards`. So chunks are dealt evenly over the shards, and so over the runners, which hold an
 * even share of the shards each. Hashing one entity id per chunk instead left one of three workers
 * with 816 items of 3,000 and another with 1,112, and the run waited for the busiest. The ids are
 * found by trying suffixes (about 2,000 hashes for 300 shards); they depend only on the run's id, so
 * a reattached run addresses its chunks as before and the storage deduplicates them.
 */
export const shardEntities = Effect.gen(function*() {
  const sharding = yield* Sharding.Sharding
  const { shardsPerGroup } = yield* ShardingConfig.ShardingConfig
  return (run: string): ReadonlyArray<string> => {
    const ids = new Array<string>(shardsPerGroup)
    let found = 0
    for (let suffix = 0; found < shardsPerGroup; suffix++) {
      const id = EntityId.make(`${run}/${suffix}`)
      const shard = sharding.getShardId(id, ChunkEntity.getShardGroup(id)).id - 1
      if (ids[shard] === undefined) {
        ids[shard] = id
        found++
      }
    }
    return ids
  }
})

/** An item's outcome, as stored and as written to results.jsonl or errors.jsonl. */
export type Outcome =
  | { readonly kind: "result"; readonly line: { readonly id: string; readonly output: unknown } }
  | {
    readonly kind: "error"
    readonly line: { readonly id: string; readonly errorTag: string; readonly message: string }
  }

export interface StoreOptions {
  /** Prefix of the cluster's tables (messages, runners, results, calls). Default `keel_cluster`. */
  readonly prefix: string
}

export const defaultPrefix = "keel_cluster"

/** The call records of the item this fiber processes, stored with its outcome (see `callSink`). */
const currentRecords = FiberRef.unsafeMake<Array<string> | undefined>(undefined)

const typed = (operation: string) => <A, R>(effect: Effect.Effect<A, SqlError, R>) =>
  Effect.mapError(effect, (error) => new StoreError({ operation, reason: reasonOf(error) }))

const makeStore = (options: StoreOptions) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(options.prefix)) {
      return yield* new StoreError({
        operation: "open the tables",
        reason: `the table prefix ${options.prefix} must be letters, digits and underscores`
      })
    }
    const results = sql(`${options.prefix}_results`)
    const calls = sql(`${options.prefix}_calls`)
    yield* sql`CREATE TABLE IF NOT EXISTS ${results} (
      run_id TEXT NOT NULL, item_id TEXT NOT NULL, kind TEXT NOT NULL, line TEXT NOT NULL,
      collected BOOLEAN NOT NULL DEFAULT FALSE, created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
      PRIMARY KEY (run_id, item_id))`.pipe(
      // Which worker stored the outcome (see `workerName`): tables made before it lack the column.
      Effect.zipRight(sql`ALTER TABLE ${results} ADD COLUMN IF NOT EXISTS runner TEXT`),
      Effect.zipRight(sql`CREATE INDEX IF NOT EXISTS ${sql(`${options.prefix}_results_uncollected`)}
        ON ${results} (run_id) WHERE NOT collected`),
      Effect.zipRight(sql`CREATE TABLE IF NOT EXISTS ${calls} (
        seq BIGSERIAL PRIMARY KEY, run_id TEXT NOT NULL, item_id TEXT NOT NULL, record TEXT NOT NULL,
        collected BOOLEAN NOT NULL DEFAULT FALSE)`),
      Effect.zipRight(sql`CREATE INDEX IF NOT EXISTS ${sql(`${options.prefix}_calls_uncollected`)}
        ON ${calls} (run_id) WHERE NOT collected`),
      // Workers starting together race on CREATE … IF NOT EXISTS; the loser's statement is retried.
      Effect.retry(Schedule.intersect(Schedule.spaced("50 millis"), Schedule.recurs(5))),
      typed("create the tables")
    )

    return {
      /** Which of these items already have their outcome. */
      stored: (run: string, ids: ReadonlyArray<string>) =>
        sql<{ readonly item_id: string }>`SELECT item_id FROM ${results}
          WHERE run_id = ${run} AND item_id = ANY(CAST(${ids} AS TEXT[]))`.pipe(
          Effect.map((rows) => new Set(rows.map((row) => row.item_id))),
          typed("read outcomes")
        ),
      /**
       * Stores the item's outcome and its call records, all or nothing, unless it has an outcome
       * already; true when this call stored them. `runner` names the worker storing it. One statement
       * (one round trip, no transaction around it): the records are written only when the outcome is.
       */
      insertOnce: (run: string, outcome: Outcome, records: ReadonlyArray<string>, runner: string | null = null) =>
        sql<{ readonly item_id: string }>`
          WITH inserted AS (
            INSERT INTO ${results} (run_id, item_id, kind, line, runner)
            VALUES (${run}, ${outcome.line.id}, ${outcome.kind}, ${JSON.stringify(outcome.line)}, ${runner})
            ON CONFLICT (run_id, item_id) DO NOTHING RETURNING item_id
          ), recorded AS (
            INSERT INTO ${calls} (run_id, item_id, record)
            SELECT ${run}, inserted.item_id, r.record
            FROM inserted, unnest(CAST(${records} AS TEXT[])) WITH ORDINALITY AS r(record, n)
            ORDER BY r.n
          )
          SELECT item_id FROM inserted`.pipe(
          Effect.map((inserted) => inserted.length > 0),
          typed("store an outcome")
        ),
      /** Outcomes of the run not yet copied into its folder, oldest first. */
      uncollected: (run: string, limit: number) =>
        sql<{ readonly item_id: string; readonly kind: string; readonly line: string }>`
          SELECT item_id, kind, line FROM ${results} WHERE run_id = ${run} AND NOT collected
          ORDER BY created_at LIMIT ${limit}`.pipe(typed("read outcomes")),
      markCollected: (run: string, ids: ReadonlyArray<string>) =>
        ids.length === 0 ? Effect.void : sql`UPDATE ${results} SET collected = TRUE
          WHERE run_id = ${run} AND item_id IN ${sql.in(ids)}`.pipe(Effect.asVoid, typed("mark outcomes collected")),
      uncollectedCalls: (run: string, limit: number) =>
        sql<{ readonly seq: string; readonly record: string }>`
          SELECT seq, record FROM ${calls} WHERE run_id = ${run} AND NOT collected ORDER BY seq LIMIT ${limit}`
          .pipe(typed("read call records")),
      markCallsCollected: (seqs: ReadonlyArray<string>) =>
        seqs.length === 0 ? Effect.void : sql`UPDATE ${calls} SET collected = TRUE WHERE seq IN ${sql.in(seqs)}`
          .pipe(Effect.asVoid, typed("mark call records collected")),
      /** How many outcomes the run has in the store. */
      count: (run: string) =>
        sql<{ readonly n: string }>`SELECT count(*) AS n FROM ${results} WHERE run_id = ${run}`.pipe(
          Effect.map((rows) => Number(rows[0]?.n ?? 0)),
          typed("count outcomes")
        )
    }
  })

/** The run's outcomes and call records in Postgres. */
export class Store extends Context.Tag("@keel/cli/Cluster/Store")<
  Store,
  Effect.Effect.Success<ReturnType<typeof makeStore>>
>() {
  static readonly layer = (options: StoreOptions) => Layer.effect(Store, makeStore(options))
}

/** The Postgres client for a URL; an unreachable or refusing server is a `StoreUnreachable`. */
export const postgres = (url: string, applicationName = "keel") =>
  PgClient.layer({ url: Redacted.make(url), connectTimeout: "5 seconds", applicationName }).pipe(
    Layer.catchAllCause((cause) =>
      Layer.fail(
        new StoreUnreachable({ store: "Postgres", url: redactUrl(url), reason: reasonOf(Cause.squash(cause)) })
      )
    )
  )

/**
 * Fails with `StoreUnreachable` unless Redis answers PING within 2 s. (The limiter's store never
 * fails to start, it falls back to process memory; a worker must not start on a quota it cannot share.)
 */
export const checkRedis = (url: string): Effect.Effect<void, StoreUnreachable> =>
  Effect.acquireUseRelease(
    Effect.map(Live.redisOptions(url), (options) => {
      const client = new Redis({
        ...options,
        lazyConnect: true,
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        connectTimeout: 2_000,
        retryStrategy: () => null
      })
      // ioredis reports "Connection is closed" to the command; the socket's own error says why.
      const seen: { error?: unknown } = {}
      client.on("error", (error) => {
        seen.error = error
      })
      return { client, seen }
    }),
    ({ client, seen }) =>
      Effect.tryPromise({
        try: () => client.connect().then(() => client.ping()),
        catch: (error) =>
          new StoreUnreachable({ store: "Redis", url: redactUrl(url), reason: reasonOf(seen.error ?? error) })
      }),
    ({ client }) => Effect.sync(() => client.disconnect())
  ).pipe(Effect.asVoid)

export interface ClusterOptions extends StoreOptions {
  /** How often runners read due messages from storage and refresh shard assignments. */
  readonly pollInterval?: number | undefined
}

const shardingConfig = (options: ClusterOptions, address: Option.Option<RunnerAddress.RunnerAddress>) =>
  ShardingConfig.layer({
    runnerAddress: address,
    entityMessagePollInterval: options.pollInterval ?? 1_000,
    entityReplyPollInterval: 200,
    refreshAssignmentsInterval: 1_000,
    runnerHealthCheckInterval: "3 seconds",
    // Shard locks are Postgres advisory locks: a killed runner's connection closes and frees them at once.
    shardLockRefreshInterval: "2 seconds",
    shardLockExpiration: "10 seconds",
    entityMailboxCapacity: "unbounded"
  })

/**
 * The cluster's message and runner storage. Runners starting together on a new database race on
 * its tables' migrations (a duplicate type on CREATE TABLE, raised as a defect): the loser builds again.
 */
const storage = (options: ClusterOptions) =>
  Layer.mergeAll(
    SqlMessageStorage.layerWith({ prefix: options.prefix }),
    SqlRunnerStorage.layerWith({ prefix: options.prefix })
  ).pipe(
    Layer.catchAllCause((cause) => Layer.fail(Cause.squash(cause))),
    Layer.retry(Schedule.intersect(Schedule.spaced("250 millis"), Schedule.recurs(8))),
    Layer.orDie
  )

/** A runner of the cluster on a socket at `host:port`, over the `SqlClient` in context. */
export const runnerLayer = (options: ClusterOptions & { readonly host: string; readonly port: number }) =>
  SocketRunner.layer.pipe(
    Layer.provide(RunnerHealth.layerPing.pipe(
      Layer.provide(Runners.layerRpc),
      Layer.provide(NodeClusterSocket.layerClientProtocol)
    )),
    Layer.provide([NodeClusterSocket.layerSocketServer, NodeClusterSocket.layerClientProtocol]),
    Layer.provideMerge(storage(options)),
    Layer.provide(shardingConfig(options, Option.some(RunnerAddress.make(options.host, options.port)))),
    Layer.provide(RpcSerialization.layerMsgPack)
  )

/** A client-only member of the cluster (sends messages, runs no entities), over the `SqlClient` in context. */
export const clientLayer = (options: ClusterOptions) =>
  SocketRunner.layerClientOnly.pipe(
    Layer.provide(NodeClusterSocket.layerClientProtocol),
    Layer.provideMerge(storage(options)),
    Layer.provideMerge(shardingConfig(options, Option.none())),
    Layer.provide(RpcSerialization.layerMsgPack)
  )

export interface WorkerOptions extends ClusterOptions {
  readonly postgresUrl: string
  readonly redisUrl: string
  readonly host: string
  readonly port: number
  /** Items this worker processes at once. */
  readonly concurrency: number
  readonly backend: Live.Backend
  readonly modelSimple: string
  readonly modelComplex: string
  /** A spend limit (USD) on a scope, the same on every worker. */
  readonly budget: Option.Option<{ readonly scope: string; readonly usd: number }>
  /** The provider's requests/min shared by every worker through Redis; learned from headers when unset. */
  readonly requestsPerMinute: Option.Option<number>
  /** Budget tables prefix (default the budget's own, `keel_budget`). */
  readonly budgetPrefix?: string | undefined
}

/**
 * A call-log sink keeping each record with the item being processed, to be stored with its outcome:
 * a worker killed before the outcome is stored leaves no record of a call whose item is done again.
 */
const callSink: CallLog.Sink = {
  name: "cluster",
  write: (record) =>
    Effect.flatMap(FiberRef.get(currentRecords), (records) =>
      Effect.sync(() => {
        records?.push(JSON.stringify(record))
      }))
}

/**
 * The worker's name in the store: its address and process id. It owns the worker's reservations in
 * the budget ledger and is kept with each outcome it stores, so a run's charges can be traced to the
 * worker that made them (the cluster tests and bench/cluster.ts --kill do).
 */
export const workerName = (options: { readonly host: string; readonly port: number }) =>
  `${options.host}:${options.port}#${process.pid}`

/** The pipeline a worker runs items through: the budget on the worker's Postgres, the quota on Redis. */
const pipeline = (options: WorkerOptions) => {
  const simulated = options.backend._tag === "Simulator"
  const stages = Layer.mergeAll(
    OpenAiPricing.layer(),
    OpenAiTokenizer.layer,
    BudgetSql.layer({
      limits: Option.match(options.budget, {
        onNone: () => [],
        onSome: ({ scope, usd }) => [{ scope, limit: String(usd) }]
      }),
      ...(options.budgetPrefix === undefined ? {} : { tablePrefix: options.budgetPrefix }),
      owner: workerName(options),
      concurrency: 8
    }),
    CallLog.layer({ sinks: [callSink] }),
    Router.layer({ tiers: Live.tiers(options) }),
    CircuitBreaker.layer(),
    Layer.succeed(
      RetryPolicy.RetryPolicy,
      RetryPolicy.make(simulated ? { attemptTimeout: "10 seconds", deadline: "1 minute" } : {})
    ),
    RateLimiter.layer({
      limits: Option.match(options.requestsPerMinute, {
        onNone: () => ({}),
        onSome: (requestsPerMinute) => ({ requestsPerMinute })
      })
    }).pipe(Layer.provide(Layer.unwrapEffect(Effect.map(Live.redisOptions(options.redisUrl), RedisLimiter.layerStore))))
  )
  const model = OpenAiLanguageModel.layer().pipe(Layer.provide(Live.client(options.backend)))
  return Llm.layer({
    defaultModel: options.modelSimple,
    require: ["budget", "pricing", "callLog", "router", "rateLimiter"]
  }).pipe(Layer.provideMerge(Layer.merge(model, stages)))
}

/** Decodes an item with its task and runs it through the pipeline into its outcome. */
const processItem = (task: Task.Any, scope: string, item: Item) =>
  Effect.gen(function*() {
    const decoded = Schema.decodeUnknownEither(task.input)(item.input)
    if (decoded._tag === "Left") {
      return {
        kind: "error",
        line: {
          id: item.id,
          errorTag: "InputInvalid",
          message: ParseResult.TreeFormatter.formatErrorSync(decoded.left)
        }
      } satisfies Outcome
    }
    const schema = task.outputs[item.tier]
    if (schema === undefined) {
      return {
        kind: "error",
        line: { id: item.id, errorTag: "InputInvalid", message: `the task has no output Schema for tier ${item.tier}` }
      } satisfies Outcome
    }
    return yield* Llm.generateObject({
      ...task.prompt(decoded.right, item.tier),
      schema,
      tier: item.tier,
      task: task.name,
      scope
    }).pipe(
      Effect.map((output): Outcome => ({ kind: "result", line: { id: item.id, output } })),
      Effect.catchAll((error) =>
        Effect.succeed<Outcome>({ kind: "error", line: { id: item.id, errorTag: error._tag, message: error.message } })
      )
    )
  })

/**
 * The store may be down for a while (Postgres restarting): its operations are retried, so the message
 * stays unprocessed, never answered with a failure, and is read again when the store is back.
 */
const persistently = <A, R>(effect: Effect.Effect<A, StoreError, R>): Effect.Effect<A, never, R> =>
  Effect.retry(
    Effect.tapError(effect, (error) => Effect.logWarning(`${error.message}; retrying`)),
    Schedule.exponential("200 millis").pipe(Schedule.union(Schedule.spaced("5 seconds")))
  ).pipe(Effect.orDie) // the schedule never ends: no error is left to die with

/**
 * Per-chunk claims: a Postgres advisory lock per (run, chunk), held on one connection of this worker's
 * own for as long as the chunk's items are being called.
 *
 * Why: when a runner dies, the cluster reassigns every shard (bounded-load consistent hashing over the
 * healthy runners), so shards also move between the survivors. A survivor that loses a shard asks its
 * entities to end and waits `entityTerminationTimeout` (15 s) before interrupting them and releasing the
 * shard; the new owner then reads the message again. Without a claim, a call cut off there (charged
 * at its estimate, its record lost) or still running would be called a second time. With the claim,
 * the calls are never cut off (they run on, detached from the entity, until their outcomes are stored)
 * and a second delivery of the chunk waits while another live worker holds its claim, then finds the
 * outcomes.
 *
 * Why an advisory lock rather than a claims table with leases: it needs no heartbeat and no expiry to
 * tune, and a killed worker's connection closes with it, so its claims are free at once and its chunks
 * run again elsewhere without waiting for a lease (as the cluster's own shard locks do). The two-key
 * form keeps these locks apart from the cluster's shard locks (one bigint key). If the connection is
 * lost (Postgres restarting), its locks go with it: a new one is taken for the next claims.
 */
const makeClaims = (options: { readonly postgresUrl: string; readonly prefix: string }) =>
  Effect.gen(function*() {
    const layerScope = yield* Effect.scope
    // A pool of its own, so the claims' connection takes nothing from the worker's pool.
    const sql = Context.get(
      yield* Layer.build(postgres(options.postgresUrl, "keel-claims")),
      SqlClient.SqlClient
    )
    const opening = yield* Effect.makeSemaphore(1)
    /** One statement at a time on the connection (node-postgres would queue them, deprecated). */
    const serial = yield* Effect.makeSemaphore(1)
    let current: { readonly connection: SqlConnection.Connection; readonly scope: Scope.CloseableScope } | undefined
    /** Chunks claimed by this process (a session's advisory locks are re-entrant, so it must not ask twice). */
    const held = new Set<string>()
    const connection = opening.withPermits(1)(Effect.suspend(() => {
      if (current !== undefined) return Effect.succeed(current)
      return Effect.gen(function*() {
        const scope = yield* Scope.fork(layerScope, ExecutionStrategy.sequential)
        const connection = yield* sql.reserve.pipe(
          Scope.extend(scope),
          Effect.tapError(() => Scope.close(scope, Exit.void))
        )
        // Unlock before the connection goes back to the pool (a broken one is discarded).
        yield* Scope.addFinalizer(
          scope,
          connection.executeRaw("SELECT pg_advisory_unlock_all()", []).pipe(Effect.timeout("2 seconds"), Effect.ignore)
        )
        current = { connection, scope }
        return current
      })
    }))
    /** One statement on the claims' connection; a connection that no longer answers is dropped. */
    const statement = (text: string, params: ReadonlyArray<unknown>) =>
      Effect.flatMap(connection, (entry) =>
        serial.withPermits(1)(entry.connection.executeValues(text, params)).pipe(
          Effect.tapError(() =>
            serial.withPermits(1)(entry.connection.executeValues("SELECT 1", [])).pipe(
              Effect.timeout("2 seconds"),
              Effect.catchAllCause(() =>
                Effect.suspend(() => {
                  if (current !== entry) return Effect.void
                  current = undefined
                  return Scope.close(entry.scope, Exit.void)
                })
              )
            )
          )
        )).pipe(Effect.uninterruptible) // never cancelled half-way: its outcome is always known
    const keys = (run: string, chunk: string) => [`${options.prefix}/${run}`, chunk]
    return {
      /** Claims the chunk unless another worker, or this one, holds it; false on a store error too. */
      tryClaim: (run: string, chunk: string) =>
        Effect.suspend(() => {
          const key = `${run}\u0000${chunk}`
          if (held.has(key)) return Effect.succeed(false)
          held.add(key)
          return statement("SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))", keys(run, chunk)).pipe(
            Effect.map((rows) => rows[0]?.[0] === true),
            Effect.catchAll((error) =>
              Effect.as(Effect.logWarning(`cluster store: claim a chunk failed: ${reasonOf(error)}`), false)
            ),
            Effect.tap((claimed) => claimed ? Effect.void : Effect.sync(() => held.delete(key)))
          )
        }),
      release: (run: string, chunk: string) =>
        statement("SELECT pg_advisory_unlock(hashtext($1), hashtext($2))", keys(run, chunk)).pipe(
          Effect.catchAll((error) => Effect.logWarning(`cluster store: release a chunk failed: ${reasonOf(error)}`)),
          Effect.ensuring(Effect.sync(() => held.delete(`${run}\u0000${chunk}`))),
          Effect.asVoid
        )
    }
  })

/** How often a delivery whose chunk another worker is calling looks again for its outcomes or its claim. */
const claimPollInterval = "500 millis"

/**
 * The handlers of `ChunkEntity`, made once per process (an entity instance per chunk shares them): at
 * most `concurrency` items in the pipeline at once, whatever their chunks, each task module imported
 * once.
 *
 * A handler calls only once it holds the chunk's claim (see `makeClaims`), and only the chunk's items
 * without an outcome, read after the claim is taken. The calls run in a fiber of their own that
 * outlives the handler: an entity interrupted because its shard moved leaves them to finish and store
 * their outcomes, and the delivery on the shard's new owner waits for them. On shutdown no new call
 * starts and the calls in flight are given a minute to end; the chunk's message stays unanswered, so
 * the items left are called by whichever runner reads it next.
 */
const handlers = (options: WorkerOptions) =>
  Effect.gen(function*() {
    const store = yield* Store
    const claims = yield* makeClaims(options)
    // Every queued item of every chunk the worker holds waits here: a gate, not Effect's Semaphore (see `Gate`).
    const permits = yield* Gate.make(options.concurrency)
    const context = yield* Effect.context<Llm.Llm | Budget.Budget>()
    const calls = yield* FiberSet.make<void>()
    let closing = false
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closing = true
        return FiberSet.awaitEmpty(calls).pipe(Effect.timeoutOption("1 minute"), Effect.asVoid)
      })
    )
    const tasks = new Map<string, Effect.Effect<Task.Any, Task.TaskLoadError>>()
    const loadTask = (module: string) =>
      Effect.suspend(() => {
        const cached = tasks.get(module)
        if (cached !== undefined) return cached
        return Effect.flatMap(Effect.cached(Task.load(module)), (load) => {
          tasks.set(module, load)
          return load
        })
      })
    /** Calls the item and stores its outcome. */
    const call = (chunk: Chunk, item: Item) =>
      Effect.gen(function*() {
        const records: Array<string> = []
        const outcome = yield* loadTask(chunk.task).pipe(
          Effect.flatMap((task) => processItem(task, chunk.scope, item)),
          Effect.catchTag("TaskLoadError", (error) =>
            Effect.succeed<Outcome>({
              kind: "error",
              line: { id: item.id, errorTag: error._tag, message: error.message }
            })),
          Effect.locally(currentRecords, records),
          // The same keys on whichever worker calls the item: a redo adopts what a dead worker left open.
          Budget.withCallKeys(`${chunk.run}/${item.id}`),
          Effect.provide(context)
        )
        yield* persistently(store.insertOnce(chunk.run, outcome, records, workerName(options)))
      })
    /** The chunk's items without an outcome in the store. */
    const pending = (chunk: Chunk) =>
      Effect.map(
        persistently(store.stored(chunk.run, chunk.items.map((item) => item.id))),
        (stored) => chunk.items.filter((item) => !stored.has(item.id))
      )
    /** Calls each item still pending, each with a permit; once closing, starts none. */
    const callPending = (chunk: Chunk) =>
      Effect.flatMap(pending(chunk), (items) =>
        Effect.forEach(
          items,
          (item) => permits.withPermit()(Effect.suspend(() => closing ? Effect.void : call(chunk, item))),
          { concurrency: "unbounded", discard: true }
        ))
    /** Claims the chunk and starts its calls; `undefined` when another worker holds it. */
    const start = (chunk: Chunk) =>
      Effect.uninterruptible(Effect.gen(function*() {
        const claimed = !closing && (yield* claims.tryClaim(chunk.run, chunk.chunk))
        if (!claimed) return undefined
        return yield* FiberSet.run(
          calls,
          Effect.interruptible(callPending(chunk)).pipe(Effect.ensuring(claims.release(chunk.run, chunk.chunk)))
        )
      }))
    return ChunkEntity.of({
      Process: ({ payload: chunk }) =>
        Effect.gen(function*() {
          for (;;) {
            const fiber = yield* start(chunk)
            if (fiber !== undefined) yield* Fiber.join(fiber)
            if ((yield* pending(chunk)).length === 0) return
            if (fiber === undefined) yield* Effect.sleep(claimPollInterval)
          }
        })
    })
  })

/**
 * A worker: the runner, the pipeline and the entity, on Postgres and Redis. Postgres and Redis are
 * checked first, so an unreachable one fails the layer with `StoreUnreachable`.
 */
export const workerLayer = (options: WorkerOptions) => {
  const sql = postgres(options.postgresUrl)
  const store = Store.layer(options)
  // `toLayer` would run an Effect of handlers once per entity instance: they are built here, once.
  const entity = Layer.unwrapScoped(
    Effect.map(handlers(options), (built) =>
      ChunkEntity.toLayer(built, {
        concurrency: "unbounded",
        mailboxCapacity: "unbounded",
        maxIdleTime: "10 seconds"
      }))
  )
  return entity.pipe(
    Layer.provide(pipeline(options)),
    Layer.provide(runnerLayer(options)),
    Layer.provideMerge(store),
    Layer.provide(sql),
    Layer.provide(Layer.effectDiscard(checkRedis(options.redisUrl)))
  )
}
