/**
 * The call log as a JSON-lines file: one `CallRecord` per line, appended with a synchronous write
 * per record, so a line is in the operating system's hands before the call returns and a
 * `kill -9` loses at most the line being written. The file is opened (and its folder created) when
 * the layer is built, so an unwritable path fails at start, naming the path.
 */
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as CallLog from "../CallLog.js"

export interface Options {
  /** The file to append to; created with its folder when missing. */
  readonly path: string
  /** Put the prompt messages and the answer into records. Default false. */
  readonly content?: boolean | undefined
}

const reasonOf = (error: unknown): string =>
  error instanceof Error ? ("code" in error ? `${String(error.code)}: ${error.message}` : error.message) : String(error)

/** Opens the file for appending; the sink closes it when the scope closes. */
export const sink = (path: string): Effect.Effect<CallLog.Sink, CallLog.SinkUnavailable, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.try({
      try: () => {
        Fs.mkdirSync(Path.dirname(path), { recursive: true })
        return Fs.openSync(path, "a")
      },
      catch: (error) => new CallLog.SinkUnavailable({ sink: "jsonl", target: path, reason: reasonOf(error) })
    }),
    (fd) => Effect.sync(() => Fs.closeSync(fd))
  ).pipe(Effect.map((fd) => {
    const name = `jsonl:${path}`
    // A write that failed part-way leaves a partial line; the next line starts on a fresh one.
    let partial = false
    const append = (line: string): void => {
      let written = 0
      try {
        written = Fs.writeSync(fd, line)
        if (written < Buffer.byteLength(line)) {
          // Short writes are rare on files: finish the line from its bytes.
          const bytes = Buffer.from(line, "utf8")
          while (written < bytes.length) written += Fs.writeSync(fd, bytes, written)
        }
      } catch (error) {
        partial = partial || written > 0
        throw error
      }
    }
    return {
      name,
      write: (record) =>
        Effect.try({
          try: () => {
            const line = JSON.stringify(record) + "\n"
            if (partial) {
              append("\n" + line)
              partial = false
            } else {
              append(line)
            }
          },
          catch: (error) => new CallLog.SinkError({ sink: name, reason: reasonOf(error) })
        })
    }
  }))

/** A call log writing to one JSON-lines file. */
export const layer = (options: Options): Layer.Layer<CallLog.CallLog, CallLog.SinkUnavailable> =>
  CallLog.layer({ sinks: [sink(options.path)], content: options.content })

/** `layer` with options read from configuration, e.g. `{ path: Config.string("KEEL_CALL_LOG") }`. */
export const layerConfig = (
  options: Config.Config.Wrap<Options>
): Layer.Layer<CallLog.CallLog, CallLog.SinkUnavailable | ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(Config.unwrap(options), layer))
