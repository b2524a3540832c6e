/**
 * The call log as a JSON-lines file: one `CallRecord` per line, appended with synchronous writes, so
 * a line is in the operating system's hands before the call returns and a `kill -9` loses at most the
 * lines being written. The records of the calls that end in the same turn of the event loop go out
 * together, in one write at the end of that turn (one system call, ~15 µs, for many calls under load);
 * each call waits for it. The file is opened (and its folder created) when the layer is built, so an
 * unwritable path fails at start, naming the path.
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
  ).pipe(Effect.flatMap((fd) => {
    const name = `jsonl:${path}`
    // A write that failed part-way leaves a partial line; the next line starts on a fresh one.
    let partial = false
    const append = (text: string): void => {
      let written = 0
      try {
        written = Fs.writeSync(fd, text)
        if (written < Buffer.byteLength(text)) {
          // Short writes are rare on files: finish the text from its bytes.
          const bytes = Buffer.from(text, "utf8")
          while (written < bytes.length) written += Fs.writeSync(fd, bytes, written)
        }
      } catch (error) {
        partial = partial || written > 0
        throw error
      }
    }
    /** The lines of this turn, and the calls waiting for them. */
    let lines = ""
    let waiting: Array<(done: Effect.Effect<void, CallLog.SinkError>) => void> = []
    const flush = () => {
      if (waiting.length === 0) return
      const text = lines
      const resumes = waiting
      lines = ""
      waiting = []
      let done: Effect.Effect<void, CallLog.SinkError> = Effect.void
      try {
        if (partial) {
          append("\n" + text)
          partial = false
        } else {
          append(text)
        }
      } catch (error) {
        done = Effect.fail(new CallLog.SinkError({ sink: name, reason: reasonOf(error) }))
      }
      for (const resume of resumes) resume(done)
    }
    const sink: CallLog.Sink = {
      name,
      write: (record) =>
        Effect.async((resume) => {
          let line: string
          try {
            line = JSON.stringify(record) + "\n"
          } catch (error) {
            return resume(Effect.fail(new CallLog.SinkError({ sink: name, reason: reasonOf(error) })))
          }
          lines += line
          waiting.push(resume)
          if (waiting.length === 1) setImmediate(flush)
        })
    }
    // Closing writes what is still waiting before the file is closed.
    return Effect.as(Effect.addFinalizer(() => Effect.sync(flush)), sink)
  }))

/** A call log writing to one JSON-lines file. */
export const layer = (options: Options): Layer.Layer<CallLog.CallLog, CallLog.SinkUnavailable> =>
  CallLog.layer({ sinks: [sink(options.path)], content: options.content })

/** `layer` with options read from configuration, e.g. `{ path: Config.string("KEEL_CALL_LOG") }`. */
export const layerConfig = (
  options: Config.Config.Wrap<Options>
): Layer.Layer<CallLog.CallLog, CallLog.SinkUnavailable | ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(Config.unwrap(options), layer))
