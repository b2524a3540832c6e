/**
 * Reading the lines of a batch's output and error files into the port's results. A line answers one
 * `custom_id`: a 2xx `response` whose body is a chat completion (checked by the same reader as a synchronous
 * answer) is the answer; a non-2xx `response.status_code`, an `error` inside `response.body`, or the line's own
 * `error` (non-HTTP: `batch_expired`, `batch_cancelled`) is an `LlmError` from the same edge mapping as an HTTP
 * failure (an error body under a 2xx status maps as a 400, or a 500 for `server_error`). The line's own errors map as a 408 (the request was not run in the time it had: retryable, never
 * billed); unknown codes as a 500. A line that is not JSON or has no `custom_id` is `Unreadable`; a `custom_id`
 * seen before is reported and the first line kept. Output order is the provider's: callers match by `custom_id`.
 */
import type * as BatchProvider from "@keel/core/BatchProvider"
import type * as LlmError from "@keel/core/LlmError"
import type { LlmResponse } from "@keel/core/LlmResponse"
import * as Either from "effect/Either"
import { fromWire } from "../OpenAiLanguageModel.js"
import { decode } from "./decode.js"
import * as Errors from "./errors.js"

type Json = Record<string, unknown>
const isObject = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)
const text = (u: unknown): string | undefined => (typeof u === "string" ? u : undefined)

/** Line errors that mean "not run in time" rather than "failed". */
const notRun: ReadonlySet<string> = new Set(["batch_expired", "batch_cancelled"])

/** Collects the results of one batch over its files, line by line. */
export class Collector {
  readonly results: Array<BatchProvider.Result> = []
  readonly unreadable: Array<BatchProvider.Unreadable> = []
  private readonly seen = new Map<string, string>()

  /** `now` (epoch ms) resolves an HTTP-date `retry-after`, as for a synchronous answer. */
  constructor(private readonly now: number) {}

  /** Reads line `line` (1-based) of `where` (e.g. "output file file-abc"); blank lines are skipped. */
  add(raw: string, where: string, line: number): void {
    if (raw.trim() === "") return
    const at = `${where}, line ${line}`
    const unreadable = (reason: string) =>
      this.unreadable.push({ line, reason: Errors.cut(Errors.scrub(`${at}: ${reason}`)) })
    let value: unknown
    try {
      value = JSON.parse(raw)
    } catch (cause) {
      return void unreadable(`not JSON (${(cause as Error).message}), perhaps cut: ${JSON.stringify(raw)}`)
    }
    if (!isObject(value)) return void unreadable(`not a JSON object: ${JSON.stringify(raw)}`)
    const customId = text(value.custom_id)
    if (customId === undefined) return void unreadable(`no custom_id, so it answers no item: ${JSON.stringify(raw)}`)
    const first = this.seen.get(customId)
    if (first !== undefined) {
      return void unreadable(
        `custom_id ${JSON.stringify(customId)} appears again (first at ${first}); this line is ignored`
      )
    }
    this.seen.set(customId, at)
    this.results.push({ customId, result: this.read(value, customId) })
  }

  private read(value: Json, customId: string): Either.Either<LlmResponse, LlmError.LlmError> {
    const { error, response } = value
    const requestId = isObject(response) ? text(response.request_id) : undefined
    const body = isObject(response) ? response.body : undefined
    const context: Errors.Context = { model: isObject(body) ? text(body.model) : undefined }
    const headers = requestId === undefined ? {} : { "x-request-id": requestId }
    if (isObject(error)) {
      const code = text(error.code) ?? "unknown"
      const message = text(error.message) ?? "no message"
      return Either.left(Errors.fromResponse(context, {
        status: notRun.has(code) ? 408 : 500,
        headers,
        body: JSON.stringify({ error: { message: `${code}: ${message}`, type: "batch_error", code } })
      }, this.now))
    }
    if (!isObject(response) || typeof response.status_code !== "number") {
      return Either.left(
        Errors.protocol(context, `custom_id ${JSON.stringify(customId)}: the line has neither a response nor an error`)
      )
    }
    const status = response.status_code
    const bodyError = isObject(body) && isObject(body.error) ? body.error : undefined
    if (status < 200 || status >= 300 || bodyError !== undefined) {
      const httpStatus = status >= 200 && status < 300
        ? (bodyError?.type === "server_error" ? 500 : 400)
        : status
      return Either.left(
        Errors.fromResponse(context, { status: httpStatus, headers, body: JSON.stringify(body ?? null) }, this.now)
      )
    }
    const decoded = decode(JSON.stringify(body ?? null))
    if ("error" in decoded) {
      return Either.left(Errors.protocol(context, `custom_id ${JSON.stringify(customId)}: ${decoded.error}`, requestId))
    }
    return Either.right(fromWire({ body: decoded, headers }))
  }
}
