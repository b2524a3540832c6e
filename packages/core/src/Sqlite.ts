/**
 * Sqlite: an `SqlClient` over a SQLite file that works on every Node keel supports. It uses Node's
 * built-in `node:sqlite` where that has what an `SqlClient` needs (Node 22.16 and later), and
 * otherwise `@effect/sql-sqlite-node` (better-sqlite3), imported only then. That way a Node that has
 * `node:sqlite` never loads better-sqlite3, and better-sqlite3 12's teardown abort on Node 24 never
 * happens.
 *
 * ```ts
 * BudgetSql.layer({ limits }).pipe(Layer.provide(Sqlite.layer({ filename: ".keel/budget.db" })))
 * ```
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as Statement from "@effect/sql/Statement"
import * as Config from "effect/Config"
import type { ConfigError } from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"

/** Which library talks to SQLite: `auto` takes `node:sqlite` when this Node has it, else better-sqlite3. */
export type Driver = "node:sqlite" | "better-sqlite3"

export interface Options {
  /** The database file (created when missing; its folder must exist), or `:memory:`. */
  readonly filename: string
  readonly readonly?: boolean | undefined
  /** Journal mode WAL (the default) lets readers in other processes work while one writes. */
  readonly disableWAL?: boolean | undefined
  /**
   * When a commit reaches the disk. `normal` (the default with WAL, as better-sqlite3 builds SQLite):
   * at checkpoints, so a crashed or killed process loses nothing committed, but a power cut or an
   * OS crash may lose the last commits. `full`: at every commit, about 2 ms more per write
   * transaction on this machine kind. Without WAL, SQLite's default (`full`) unless set.
   */
  readonly synchronous?: "normal" | "full" | undefined
  /** How long a statement waits for another connection's lock before failing with "database is locked"; 5 seconds by default. */
  readonly busyTimeout?: Duration.DurationInput | undefined
  /** Prepared statements kept per connection; 200 by default. */
  readonly prepareCacheSize?: number | undefined
  readonly driver?: Driver | "auto" | undefined
  readonly spanAttributes?: Record<string, unknown> | undefined
  readonly transformResultNames?: ((name: string) => string) | undefined
  readonly transformQueryNames?: ((name: string) => string) | undefined
}

/** The client, with the driver it runs on. Also provided as `SqlClient.SqlClient`. */
export class Sqlite extends Context.Tag("@keel/core/Sqlite")<Sqlite, Sqlite.Service>() {}

export declare namespace Sqlite {
  export interface Service extends SqlClient.SqlClient {
    readonly driver: Driver
  }
}

// The part of node:sqlite used here (its types are in @types/node 22 and later only).
interface StatementSync {
  all(...params: ReadonlyArray<unknown>): Array<any>
  run(
    ...params: ReadonlyArray<unknown>
  ): { readonly changes: number | bigint; readonly lastInsertRowid: number | bigint }
  columns(): ReadonlyArray<unknown>
  setReadBigInts(enabled: boolean): void
  setReturnArrays(enabled: boolean): void
}
interface DatabaseSync {
  prepare(sql: string): StatementSync
  exec(sql: string): void
  close(): void
}
interface NodeSqlite {
  readonly DatabaseSync: new(path: string, options?: { readonly readOnly?: boolean }) => DatabaseSync
  readonly StatementSync: { readonly prototype: object }
}

// A variable specifier: Node 20 has no `node:sqlite`, and TypeScript with @types/node 20 knows no such module.
const nodeSqliteSpecifier = "node:sqlite"
let nodeSqlite: Promise<NodeSqlite | undefined> | undefined
const loadNodeSqlite = (): Promise<NodeSqlite | undefined> =>
  nodeSqlite ??= import(nodeSqliteSpecifier).then(
    (module: NodeSqlite) =>
      ["all", "run", "columns", "setReadBigInts", "setReturnArrays"].every((method) =>
          typeof (module.StatementSync.prototype as Record<string, unknown>)[method] === "function"
        )
        ? module
        : undefined,
    () => undefined
  )

const detail = (cause: unknown): string =>
  cause instanceof Error ? cause.message : typeof cause === "string" ? cause : "unknown error"

const openError = (filename: string, cause: unknown) =>
  new SqlError({
    cause,
    message: `Cannot open the SQLite database ${filename}: ${
      detail(cause)
    } (check that the path's folder exists, is writable, and that the file is a SQLite database)`
  })

const executeError = (cause: unknown) => new SqlError({ cause, message: "Failed to execute statement" })

/** Run on every new connection, in order (journal mode before synchronous, which depends on it). */
const pragmas = (options: Options, busyTimeout: number): ReadonlyArray<string> => {
  const wal = options.disableWAL !== true
  const synchronous = options.synchronous ?? (wal ? "normal" : undefined)
  return [
    `PRAGMA busy_timeout = ${busyTimeout}`,
    ...(wal ? ["PRAGMA journal_mode = WAL"] : []),
    ...(synchronous !== undefined ? [`PRAGMA synchronous = ${synchronous.toUpperCase()}`] : [])
  ]
}

interface Prepared {
  readonly statement: StatementSync
  readonly reader: boolean
  readBigInts: boolean
}

const makeNodeConnection = (sqlite: NodeSqlite, options: Options, busyTimeout: number) =>
  Effect.gen(function*() {
    const db = yield* Effect.acquireRelease(
      Effect.try({
        try: () => new sqlite.DatabaseSync(options.filename, { readOnly: options.readonly ?? false }),
        catch: (cause) => openError(options.filename, cause)
      }),
      (db) => Effect.sync(() => db.close())
    )
    yield* Effect.try({
      try: () => {
        for (const pragma of pragmas(options, busyTimeout)) db.exec(pragma)
      },
      catch: (cause) => openError(options.filename, cause)
    })

    // Least recently used statements leave first: a Map iterates in insertion order.
    const capacity = options.prepareCacheSize ?? 200
    const cache = new Map<string, Prepared>()
    const prepare = (sql: string): Prepared => {
      const statement = db.prepare(sql)
      const reader = statement.columns().length > 0
      // run() reports the connection's last insert rowid, whatever the statement: from Node 26 it
      // throws (after the statement ran) when that rowid is past 2^53, as @effect/cluster's Snowflake
      // ids are, unless it reads bigints. So statements without rows always read bigints.
      if (!reader) statement.setReadBigInts(true)
      return { statement, reader, readBigInts: !reader }
    }
    const cached = (sql: string): Prepared => {
      let prepared = cache.get(sql)
      if (prepared !== undefined) {
        cache.delete(sql)
      } else {
        prepared = prepare(sql)
        if (cache.size >= capacity) cache.delete(cache.keys().next().value!)
      }
      cache.set(sql, prepared)
      return prepared
    }

    const runPrepared = (
      prepare: () => Prepared,
      params: ReadonlyArray<unknown>,
      mode: "rows" | "raw" | "values"
    ): Effect.Effect<any, SqlError> =>
      Effect.withFiberRuntime((fiber) => {
        try {
          const prepared = prepare()
          const { reader, statement } = prepared
          const readBigInts = Context.get(fiber.currentContext, SqlClient.SafeIntegers)
          if (!reader) {
            const result = statement.run(...params)
            if (mode !== "raw") return Effect.succeed([])
            // As better-sqlite3 gives them: `changes` a number, the rowid a bigint under SafeIntegers only.
            return Effect.succeed({
              changes: Number(result.changes),
              lastInsertRowid: readBigInts ? result.lastInsertRowid : Number(result.lastInsertRowid)
            })
          }
          if (prepared.readBigInts !== readBigInts) {
            statement.setReadBigInts(readBigInts)
            prepared.readBigInts = readBigInts
          }
          if (mode !== "values") return Effect.succeed(statement.all(...params))
          statement.setReturnArrays(true)
          try {
            return Effect.succeed(statement.all(...params))
          } finally {
            statement.setReturnArrays(false)
          }
        } catch (cause) {
          return Effect.fail(executeError(cause))
        }
      })

    const rows = (sql: string, params: ReadonlyArray<unknown>) => runPrepared(() => cached(sql), params, "rows")
    const connection: Connection = {
      execute: (sql, params, transformRows) =>
        transformRows ? Effect.map(rows(sql, params), transformRows) : rows(sql, params),
      executeRaw: (sql, params) => runPrepared(() => cached(sql), params, "raw"),
      executeValues: (sql, params) => runPrepared(() => cached(sql), params, "values"),
      executeUnprepared: (sql, params, transformRows) => {
        const effect = runPrepared(() => prepare(sql), params ?? [], "rows")
        return transformRows ? Effect.map(effect, transformRows) : effect
      },
      executeStream: (sql, params, transformRows) =>
        Stream.fromIterableEffect(transformRows ? Effect.map(rows(sql, params), transformRows) : rows(sql, params))
    }
    return connection
  })

const makeNodeClient = (sqlite: NodeSqlite, options: Options, busyTimeout: number) =>
  Effect.gen(function*() {
    const connection = yield* makeNodeConnection(sqlite, options, busyTimeout)
    // One connection: a statement outside a transaction waits for the transaction holding it.
    const semaphore = yield* Effect.makeSemaphore(1)
    const acquirer = semaphore.withPermits(1)(Effect.succeed(connection))
    const transactionAcquirer = Effect.uninterruptibleMask((restore) =>
      Effect.as(
        Effect.zipRight(
          restore(semaphore.take(1)),
          Effect.addFinalizer(() => semaphore.release(1))
        ),
        connection
      )
    )
    return yield* SqlClient.make({
      acquirer,
      transactionAcquirer,
      compiler: Statement.makeCompilerSqlite(options.transformQueryNames),
      spanAttributes: [
        ...(options.spanAttributes ? Object.entries(options.spanAttributes) : []),
        ["db.system.name", "sqlite"]
      ],
      transformRows: options.transformResultNames
        ? Statement.defaultTransforms(options.transformResultNames).array
        : undefined
    })
  })

const makeBetterSqlite3Client = (options: Options, busyTimeout: number) =>
  Effect.gen(function*() {
    const module = yield* Effect.tryPromise({
      try: () => import("@effect/sql-sqlite-node/SqliteClient"),
      catch: (cause) =>
        new SqlError({
          cause,
          message: `No SQLite driver for ${options.filename}: this Node (${process.version}) has no usable ` +
            `node:sqlite, and @effect/sql-sqlite-node could not be loaded (${detail(cause)}). ` +
            `Use Node 22.16 or later, or install @effect/sql-sqlite-node`
        })
    })
    // better-sqlite3 throws while opening (a missing folder, a file that is not a database, a build
    // for another Node): a typed error naming the file, not a defect.
    const client = yield* module.make(options).pipe(
      Effect.catchAllDefect((cause) => Effect.fail(openError(options.filename, cause)))
    )
    // It has switched to WAL already (unless disabled); the others run on its one connection.
    for (const pragma of pragmas(options, busyTimeout).filter((pragma) => !pragma.includes("journal_mode"))) {
      yield* Effect.mapError(client.unsafe(pragma), (cause) => openError(options.filename, cause))
    }
    return client
  })

/** Opens the database for the life of the scope. Fails with an `SqlError` naming the file when it cannot be opened. */
export const make = (options: Options): Effect.Effect<Sqlite.Service, SqlError, Scope.Scope | Reactivity.Reactivity> =>
  Effect.gen(function*() {
    const busyTimeout = Duration.toMillis(Duration.decode(options.busyTimeout ?? "5 seconds"))
    const wanted = options.driver ?? "auto"
    const sqlite = wanted === "better-sqlite3" ? undefined : yield* Effect.promise(loadNodeSqlite)
    if (sqlite === undefined && wanted === "node:sqlite") {
      return yield* new SqlError({
        cause: undefined,
        message: `node:sqlite is not usable on Node ${process.version} (it needs Node 22.16 or later): ` +
          `cannot open ${options.filename} with driver "node:sqlite"; use driver "auto"`
      })
    }
    const client = sqlite !== undefined
      ? yield* makeNodeClient(sqlite, options, busyTimeout)
      : yield* makeBetterSqlite3Client(options, busyTimeout)
    const driver: Driver = sqlite !== undefined ? "node:sqlite" : "better-sqlite3"
    return Object.assign(client, { driver })
  })

/** Provides `Sqlite` and `SqlClient.SqlClient`. */
export const layer = (options: Options): Layer.Layer<Sqlite | SqlClient.SqlClient, SqlError> =>
  Layer.scopedContext(
    Effect.map(make(options), (client) => Context.make(Sqlite, client).pipe(Context.add(SqlClient.SqlClient, client)))
  ).pipe(Layer.provide(Reactivity.layer))

/** `layer` with its options read from `Config`. */
export const layerConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<Sqlite | SqlClient.SqlClient, SqlError | ConfigError> =>
  Layer.unwrapEffect(Effect.map(Config.unwrap(config), layer))
