/**
 * The provider port for bulk work at batch prices (OpenAI's Batch API and the simulator's): upload a
 * chunk of requests, create a batch over them tagged with metadata, follow it, read its results, one
 * per `customId`. Like `LanguageModel`, a provider only translates (requests → its file format,
 * its statuses and lines → these types, HTTP failures → `LlmError`); chunking, budgets, durability
 * and decoding live once, in core.
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type * as Either from "effect/Either"
import type { LlmError } from "./LlmError.js"
import type * as LlmRequest from "./LlmRequest.js"
import type { LlmResponse } from "./LlmResponse.js"

/** One request of a chunk, keyed by the item it answers. */
export interface Line {
  readonly customId: string
  readonly request: LlmRequest.Resolved
}

/** Where a batch is in its life (OpenAI's statuses). */
export type Status =
  | "validating"
  | "in_progress"
  | "finalizing"
  | "completed"
  | "failed"
  | "expired"
  | "cancelling"
  | "cancelled"

/** A status after which the batch changes no more. */
export const isFinal = (status: Status): boolean =>
  status === "completed" || status === "failed" || status === "expired" || status === "cancelled"

/** What the provider says of a batch. */
export interface Batch {
  readonly id: string
  readonly status: Status
  /** The metadata it was created with (e.g. run and chunk ids), to find it again after a crash. */
  readonly metadata: Readonly<Record<string, string>>
  readonly requestCounts: { readonly total: number; readonly completed: number; readonly failed: number }
  /** Why a `failed` batch failed (validation errors, `token_limit_exceeded`), as the provider said. */
  readonly errors: ReadonlyArray<{ readonly code: string; readonly message: string; readonly line?: number }>
  /** Epoch milliseconds. */
  readonly createdAt: number
  readonly inputFileId: string
  /** Set once results exist; an expired or cancelled batch keeps the lines it finished. */
  readonly outputFileId?: string | undefined
  readonly errorFileId?: string | undefined
}

/** One line of a batch's results: the answer, or why that line failed. */
export interface Result {
  readonly customId: string
  readonly result: Either.Either<LlmResponse, LlmError>
}

/** A line of a result file that could not be read at all (truncated, not JSON, no `custom_id`). */
export interface Unreadable {
  readonly line: number
  readonly reason: string
}

export class BatchProvider extends Context.Tag("@keel/core/BatchProvider")<BatchProvider, BatchProvider.Service>() {}

export declare namespace BatchProvider {
  export interface Service {
    /** The provider's name as in telemetry, e.g. "openai". */
    readonly provider: string
    /** Uploads a chunk's lines as one input file; returns the file's id. */
    readonly upload: (lines: ReadonlyArray<Line>) => Effect.Effect<string, LlmError>
    /** Creates a batch over an uploaded file, tagged with `metadata`. */
    readonly create: (
      fileId: string,
      metadata: Readonly<Record<string, string>>
    ) => Effect.Effect<Batch, LlmError>
    /** The batches created with all of `metadata`'s entries, newest first (to re-attach instead of creating twice). */
    readonly find: (metadata: Readonly<Record<string, string>>) => Effect.Effect<ReadonlyArray<Batch>, LlmError>
    readonly retrieve: (batchId: string) => Effect.Effect<Batch, LlmError>
    readonly cancel: (batchId: string) => Effect.Effect<Batch, LlmError>
    /**
     * The results of a final batch: every line of its output and error files, in the provider's order
     * (not the input's), plus the lines that could not be read.
     */
    readonly results: (
      batch: Batch
    ) => Effect.Effect<
      { readonly results: ReadonlyArray<Result>; readonly unreadable: ReadonlyArray<Unreadable> },
      LlmError
    >
    /** Deletes an uploaded file (input files once their batch is done). */
    readonly deleteFile: (fileId: string) => Effect.Effect<void, LlmError>
  }
}
