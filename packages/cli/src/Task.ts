/**
 * The task contract of `keel run --task MODULE`: what an item is (the input Schema and its id), which
 * tier it goes to (the tier rule), what is asked (the prompt builder) and what must come back (an
 * output Schema per tier). A task module exports one as `task` (or as its default export):
 *
 * ```ts
 * export const task = Task.make({
 *   name: "summarise",
 *   input: Schema.Struct({ id: Schema.String, text: Schema.String }),
 *   id: (input) => input.id,
 *   outputs: { simple: Schema.Struct({ summary: Schema.String }) },
 *   tier: () => "simple",
 *   prompt: (input) => ({ messages: [{ role: "user", content: `Summarise: ${input.text}` }], maxOutputTokens: 200 })
 * })
 * ```
 */
import type * as Batch from "@keel/core/Batch"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as Url from "node:url"

export interface Task<In, Tiers extends string = string> {
  /** Names the task in call records and batch workflows: letters, digits, `_` and `-`. */
  readonly name: string
  /** Each input line is decoded with it; a line that does not decode goes to errors.jsonl with its number. */
  readonly input: Schema.Schema<In, any, never>
  /** The item's key in results.jsonl and errors.jsonl: unique within the input. */
  readonly id: (input: In) => string
  /** The Schema each tier's answer must decode with (sent as a strict tool). */
  readonly outputs: { readonly [T in Tiers]: Schema.Schema<any, any, never> }
  /** The tier rule: which tier (a key of `outputs`, a Router tier) an item goes to. */
  readonly tier: (input: In) => Tiers
  /** The prompt builder: messages and request fields for an item in its tier. */
  readonly prompt: (input: In, tier: Tiers) => Batch.RequestFields
}

/** Any task, as the runner holds it. */
export type Any = Task<any, any>

/** Builds a task, inferring its types. */
export const make = <In, Tiers extends string>(task: Task<In, Tiers>): Task<In, Tiers> => task

/** A task module that cannot be used: which module and why. */
export class TaskLoadError extends Schema.TaggedError<TaskLoadError>("@keel/cli/Task/TaskLoadError")("TaskLoadError", {
  module: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `--task ${this.module}: ${this.reason}`
  }
}

const isTask = (value: unknown): value is Any =>
  typeof value === "object" && value !== null && typeof (value as Any).name === "string" &&
  Schema.isSchema((value as Any).input) && typeof (value as Any).outputs === "object" &&
  typeof (value as Any).id === "function" && typeof (value as Any).tier === "function" &&
  typeof (value as Any).prompt === "function"

/**
 * Imports a task module (a path, relative to the working directory — `./` optional when the file
 * exists — or a package specifier) and takes its `task` or default export. TypeScript modules load when keel runs under `tsx`.
 */
export const load = (module: string): Effect.Effect<Any, TaskLoadError> =>
  Effect.tryPromise({
    try: () => {
      const path = Path.resolve(module)
      const specifier = module.startsWith(".") || Path.isAbsolute(module) || Fs.existsSync(path)
        ? Url.pathToFileURL(path).href
        : module
      return import(specifier) as Promise<Record<string, unknown>>
    },
    catch: (error) =>
      new TaskLoadError({
        module,
        reason: `cannot import it (${error instanceof Error ? error.message.split("\n")[0] : String(error)})`
      })
  }).pipe(Effect.flatMap((exports) => {
    const task = exports.task ?? exports.default
    return isTask(task) ? Effect.succeed(task) : Effect.fail(
      new TaskLoadError({
        module,
        reason:
          "exports no task: export `task` (or a default) made with Task.make({ name, input, id, outputs, tier, prompt })"
      })
    )
  }))
