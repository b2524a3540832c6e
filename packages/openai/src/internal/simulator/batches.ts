/**
 * The simulator's Files and Batches without HTTP. A batch's life is a function of the clock: validating for
 * `validatingMs`, in progress for `inProgressMs` (its lines finish one after another, in a shuffled order),
 * finalizing for `finalizingMs`, then completed; it expires at `windowMs` after creation when it cannot finish by
 * then (the lines done by then are kept, the rest fail `batch_expired`); a cancel makes it `cancelling` for
 * `cancellingMs`, then `cancelled` with the lines done when it was asked. Each request reads the state at "now",
 * so a batch moves with `TestClock`. An invalid input file fails after validation with OpenAI's per-line codes, and
 * a batch whose input tokens would take its model's enqueued total past the allowance fails with
 * `token_limit_exceeded`; a batch's tokens count from its creation until it is final. Lines are answered, once the
 * batch is final, by the engine's answer for a chat body (the same content and usage as a synchronous call), with
 * per-line faults drawn per occurrence of the body, so a resubmitted line can succeed.
 */
import type { Mode } from "./answer.js"
import { serverError } from "./answer.js"
import { hashString, makeRng, randomId, type Rng } from "./random.js"
import { isObject, type Json, json, setCapped } from "./validate.js"

/** The faults a batch line can get: an HTTP error in its `response`, or a spoiled 200. */
export const LINE_FAULTS = ["500", "502", "503", "invalid_output", "truncated", "refusal"] as const
export type LineFault = typeof LINE_FAULTS[number]

export interface BatchOptions {
  readonly validatingMs: number
  readonly inProgressMs: number
  readonly finalizingMs: number
  readonly cancellingMs: number
  /** the completion window ("24h" on the wire) */
  readonly windowMs: number
  readonly lineFaults: Partial<Record<LineFault, number>>
  /** input tokens a model may have enqueued in batches at once; undefined: no limit */
  readonly enqueuedTokens: number | undefined
  readonly enqueuedTokensByModel: Readonly<Record<string, number>>
}

/** What the store needs of the chat engine. */
export interface LineEngine {
  readonly now: () => number
  readonly serves: (model: string) => boolean
  readonly promptTokens: (body: unknown) => number | undefined
  readonly complete: (body: unknown, mode: Mode) => { readonly status: number; readonly body: unknown }
  readonly requestId: () => string
}

/** An answer for the HTTP layer: JSON (an error when it has `error`), or a file's content. */
export type Answer =
  | { readonly _tag: "Json"; readonly status: number; readonly body: unknown }
  | { readonly _tag: "Content"; readonly text: string }

export const ENDPOINT = "/v1/chat/completions"
const MAX_LINES = 50_000
const MAX_ERRORS = 1_000
const SEEN_MAX_ENTRIES = 200_000
const PURPOSES: ReadonlyArray<string> = ["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]

interface StoredFile {
  readonly id: string
  readonly filename: string
  readonly purpose: string
  readonly createdAt: number
  readonly content: string
}

interface BatchErrorWire {
  readonly code: string
  readonly message: string
  readonly param: string | null
  readonly line: number | null
}

interface Line {
  readonly customId: string
  readonly body: Json
  /** undefined when the body is not a valid chat request: the line then fails with the engine's 400 */
  readonly tokens: number | undefined
  readonly fault: LineFault | undefined
}

interface Usage {
  input: number
  cached: number
  output: number
  reasoning: number
}

interface Results {
  readonly outputFileId: string | undefined
  readonly errorFileId: string | undefined
  readonly completed: number
  readonly failed: number
  readonly usage: Usage
}

interface BatchRecord {
  readonly id: string
  readonly seq: number
  readonly inputFileId: string
  readonly model: string | undefined
  readonly metadata: Readonly<Record<string, string>> | null
  readonly createdAt: number
  readonly lines: ReadonlyArray<Line>
  /** line indexes in the order they finish */
  readonly order: ReadonlyArray<number>
  readonly tokens: number
  readonly failure: ReadonlyArray<BatchErrorWire> | undefined
  cancelAt: number | undefined
  results: Results | undefined
}

type Status =
  | "validating"
  | "failed"
  | "in_progress"
  | "finalizing"
  | "completed"
  | "expired"
  | "cancelling"
  | "cancelled"

const isFinal = (status: Status) =>
  status === "completed" || status === "failed" || status === "expired" || status === "cancelled"

/** A batch as created, for the stats. */
export interface BatchSummary {
  readonly id: string
  readonly status: Status
  readonly model: string | undefined
  readonly metadata: Readonly<Record<string, string>>
  readonly inputFileId: string
  readonly createdAt: number
  readonly requestCounts: { readonly total: number; readonly completed: number; readonly failed: number }
}

const error = (status: number, message: string, param: string | null = null, code: string | null = null): Answer => ({
  _tag: "Json",
  status,
  body: { error: { message, type: "invalid_request_error", param, code } }
})
const ok = (body: unknown): Answer => ({ _tag: "Json", status: 200, body })
const seconds = (ms: number) => Math.floor(ms / 1000)
const thousands = (n: number) => n.toLocaleString("en-US")

const EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
const DUPLICATE_MESSAGE =
  "The custom_id for this request is a duplicate of another request. The custom_id parameter must be unique for each request in a batch."

export class BatchStore {
  private readonly files = new Map<string, StoredFile>()
  private readonly batches = new Map<string, BatchRecord>()
  private readonly occurrences = new Map<number, number>()
  private readonly idRng: Rng
  private readonly faultTable: ReadonlyArray<readonly [LineFault, number]>
  private seq = 0

  constructor(
    private readonly options: BatchOptions,
    private readonly seed: number,
    nonce: number,
    private readonly engine: LineEngine
  ) {
    this.idRng = makeRng(seed, 0xf11e5, nonce)
    let cumulative = 0
    const table: Array<readonly [LineFault, number]> = []
    for (const fault of LINE_FAULTS) {
      const rate = options.lineFaults[fault] ?? 0
      if (rate > 0) table.push([fault, cumulative += rate])
    }
    this.faultTable = table
  }

  // -------------------------------------------------------------------------------------------------------------
  // Files
  // -------------------------------------------------------------------------------------------------------------

  upload(purpose: string | undefined, file: { readonly filename: string; readonly content: string } | undefined) {
    if (file === undefined) {
      return error(400, "Missing required parameter: 'file'.", "file", "missing_required_parameter")
    }
    if (purpose === undefined) {
      return error(400, "Missing required parameter: 'purpose'.", "purpose", "missing_required_parameter")
    }
    if (!PURPOSES.includes(purpose)) {
      return error(
        400,
        `Invalid value for 'purpose': '${purpose}'. Supported values are: ${PURPOSES.map((p) => `'${p}'`).join(", ")}.`,
        "purpose",
        "invalid_value"
      )
    }
    return ok(this.fileObject(this.store(file.filename, purpose, file.content)))
  }

  file(id: string): Answer {
    const file = this.files.get(id)
    return file === undefined ? this.noFile(id) : ok(this.fileObject(file))
  }

  content(id: string): Answer {
    const file = this.files.get(id)
    return file === undefined ? this.noFile(id) : { _tag: "Content", text: file.content }
  }

  deleteFile(id: string): Answer {
    if (!this.files.delete(id)) return this.noFile(id)
    return ok({ id, object: "file", deleted: true })
  }

  private noFile(id: string, param = "file_id"): Answer {
    return error(404, `No such File object: ${id}`, param)
  }

  private store(filename: string, purpose: string, content: string): StoredFile {
    const file = { id: "file-" + randomId(this.idRng, 22), filename, purpose, createdAt: this.engine.now(), content }
    this.files.set(file.id, file)
    return file
  }

  private fileObject(file: StoredFile) {
    return {
      id: file.id,
      object: "file",
      bytes: Buffer.byteLength(file.content),
      created_at: seconds(file.createdAt),
      expires_at: null,
      filename: file.filename,
      purpose: file.purpose,
      status: "processed",
      status_details: null
    }
  }

  // -------------------------------------------------------------------------------------------------------------
  // Batches
  // -------------------------------------------------------------------------------------------------------------

  create(body: unknown): Answer {
    if (!isObject(body)) return error(400, "The request body must be a JSON object.")
    const { completion_window, endpoint, input_file_id, metadata } = body
    if (typeof input_file_id !== "string") {
      return error(400, "Missing required parameter: 'input_file_id'.", "input_file_id", "missing_required_parameter")
    }
    if (endpoint !== ENDPOINT) {
      return error(
        400,
        `Invalid value for 'endpoint': ${json(endpoint ?? null)}. The simulator serves batches for '${ENDPOINT}' only.`,
        "endpoint",
        "invalid_value"
      )
    }
    if (completion_window !== "24h") {
      return error(
        400,
        `Invalid value for 'completion_window': ${json(completion_window ?? null)}. Supported values are: '24h'.`,
        "completion_window",
        "invalid_value"
      )
    }
    const badMetadata = checkMetadata(metadata)
    if (badMetadata !== undefined) return error(400, badMetadata, "metadata", "invalid_value")
    const file = this.files.get(input_file_id)
    if (file === undefined) return this.noFile(input_file_id, "input_file_id")
    if (file.purpose !== "batch") {
      return error(
        400,
        `Invalid 'input_file_id': ${input_file_id} was uploaded with purpose '${file.purpose}'; a batch's input file must have purpose 'batch'.`,
        "input_file_id",
        "invalid_value"
      )
    }
    const now = this.engine.now()
    const parsed = this.parse(file.content)
    let failure = parsed.errors.length > 0 ? parsed.errors : undefined
    const model = parsed.model
    const tokens = parsed.lines.reduce((sum, line) => sum + (line.tokens ?? 0), 0)
    const limit = model === undefined
      ? undefined
      : this.options.enqueuedTokensByModel[model] ?? this.options.enqueuedTokens
    if (failure === undefined && limit !== undefined && this.enqueued(model!, now) + tokens > limit) {
      failure = [{
        code: "token_limit_exceeded",
        message: `Enqueued token limit reached for ${model} in organization org-simulator. Limit: ${
          thousands(limit)
        } enqueued tokens. Please try again once some in_progress batches have been completed.`,
        param: null,
        line: null
      }]
    }
    const seq = ++this.seq
    const order = parsed.lines.map((_, i) => i)
    const shuffle = makeRng(this.seed, 0xba7c4, seq)
    for (let i = order.length - 1; i > 0; i--) {
      const j = shuffle.int(i + 1)
      ;[order[i], order[j]] = [order[j]!, order[i]!]
    }
    const record: BatchRecord = {
      id: "batch_" + hex(this.idRng),
      seq,
      inputFileId: input_file_id,
      model,
      metadata: isObject(metadata) ? (metadata as Record<string, string>) : null,
      createdAt: now,
      lines: failure === undefined ? parsed.lines : [],
      order: failure === undefined ? order : [],
      tokens: failure === undefined ? tokens : 0,
      failure,
      cancelAt: undefined,
      results: undefined
    }
    this.batches.set(record.id, record)
    return ok(this.batchObject(record, now))
  }

  retrieve(id: string): Answer {
    const record = this.batches.get(id)
    return record === undefined ? this.noBatch(id) : ok(this.batchObject(record, this.engine.now()))
  }

  cancel(id: string): Answer {
    const record = this.batches.get(id)
    if (record === undefined) return this.noBatch(id)
    const now = this.engine.now()
    const status = this.status(record, now)
    if (isFinal(status) || status === "cancelling") {
      return error(409, `Cannot cancel a batch with status '${status}'.`, null, "batch_not_cancellable")
    }
    record.cancelAt = now
    return ok(this.batchObject(record, now))
  }

  list(after: string | undefined, limitText: string | undefined): Answer {
    const limit = limitText === undefined ? 20 : Number(limitText)
    if (!(Number.isInteger(limit) && limit >= 1 && limit <= 100)) {
      return error(
        400,
        `Invalid 'limit': ${json(limitText)}. Expected an integer between 1 and 100.`,
        "limit",
        "invalid_value"
      )
    }
    const all = [...this.batches.values()].reverse()
    let start = 0
    if (after !== undefined) {
      const at = all.findIndex((b) => b.id === after)
      if (at < 0) return this.noBatch(after, "after")
      start = at + 1
    }
    const now = this.engine.now()
    const page = all.slice(start, start + limit).map((b) => this.batchObject(b, now))
    return ok({
      object: "list",
      data: page,
      first_id: page[0]?.id ?? null,
      last_id: page[page.length - 1]?.id ?? null,
      has_more: start + limit < all.length
    })
  }

  /** Every batch created, oldest first, as it is now. */
  summaries(): ReadonlyArray<BatchSummary> {
    const now = this.engine.now()
    return [...this.batches.values()].map((b) => {
      const o = this.batchObject(b, now)
      return {
        id: b.id,
        status: o.status,
        model: b.model,
        metadata: b.metadata ?? {},
        inputFileId: b.inputFileId,
        createdAt: b.createdAt,
        requestCounts: o.request_counts
      }
    })
  }

  private noBatch(id: string, param = "batch_id"): Answer {
    return error(404, `No batch found with id '${id}'.`, param)
  }

  /** Reads and checks an input file as OpenAI's validation does. */
  private parse(content: string) {
    const errors: Array<BatchErrorWire> = []
    const lines: Array<Line> = []
    const seen = new Set<string>()
    let model: string | undefined
    const fail = (line: number, code: string, message: string, param: string | null = null) => {
      if (errors.length < MAX_ERRORS) errors.push({ code, message, param, line })
    }
    const texts = content.split("\n")
    if (texts.length > 0 && texts[texts.length - 1]!.trim() === "") texts.pop()
    if (texts.length === 0) {
      errors.push({ code: "empty_file", message: "The batch input file is empty.", param: null, line: null })
    }
    if (texts.length > MAX_LINES) {
      errors.push({
        code: "too_many_tasks",
        message: `The batch input file has ${texts.length} requests; a batch takes at most ${MAX_LINES}.`,
        param: null,
        line: null
      })
    }
    texts.forEach((text, i) => {
      const n = i + 1
      let value: unknown
      try {
        value = JSON.parse(text)
      } catch {
        return fail(n, "invalid_json_line", "This line is not parseable as valid JSON.")
      }
      if (!isObject(value)) return fail(n, "invalid_json_line", "This line is not a JSON object.")
      const { body, custom_id, method, url } = value
      if (typeof custom_id !== "string" || custom_id === "") {
        return fail(n, "invalid_request", "Missing required parameter: 'custom_id'.", "custom_id")
      }
      if (method !== "POST") {
        return fail(
          n,
          "invalid_request",
          `Invalid value for 'method': ${json(method ?? null)}. Only POST is supported.`,
          "method"
        )
      }
      if (url !== ENDPOINT) {
        return fail(
          n,
          "url_mismatch",
          `The URL ${json(url ?? null)} of this request does not match the batch's endpoint '${ENDPOINT}'.`,
          "url"
        )
      }
      if (!isObject(body)) return fail(n, "invalid_request", "Missing required parameter: 'body'.", "body")
      if (typeof body.model !== "string") {
        return fail(n, "invalid_request", "Missing required parameter: 'body.model'.", "body.model")
      }
      if (!this.engine.serves(body.model)) {
        return fail(
          n,
          "model_not_found",
          `The model '${body.model}' does not exist or you do not have access to it.`,
          "body.model"
        )
      }
      if (model === undefined) model = body.model
      else if (body.model !== model) {
        return fail(
          n,
          "model_mismatch",
          `The model '${body.model}' of this request does not match the model '${model}' of the batch's first request: a batch uses one model.`,
          "body.model"
        )
      }
      if (seen.has(custom_id)) return fail(n, "duplicate_custom_id", DUPLICATE_MESSAGE, "custom_id")
      seen.add(custom_id)
      lines.push({ customId: custom_id, body, tokens: this.engine.promptTokens(body), fault: this.drawFault(body) })
    })
    return { errors, lines, model }
  }

  private drawFault(body: Json): LineFault | undefined {
    if (this.faultTable.length === 0) return undefined
    const hash = hashString(json(body))
    const occurrence = this.occurrences.get(hash) ?? 0
    setCapped(this.occurrences, hash, occurrence + 1, SEEN_MAX_ENTRIES)
    const u = makeRng(this.seed ^ 0x0ba7c4, hash, occurrence).next()
    for (const [fault, upTo] of this.faultTable) if (u < upTo) return fault
    return undefined
  }

  /** Input tokens of `model`'s batches that are not final at `now`. */
  private enqueued(model: string, now: number): number {
    let total = 0
    for (const b of this.batches.values()) {
      if (b.model === model && b.failure === undefined && !isFinal(this.status(b, now))) total += b.tokens
    }
    return total
  }

  private timeline(b: BatchRecord) {
    const o = this.options
    const inProgressAt = b.createdAt + o.validatingMs
    const finalizingAt = inProgressAt + o.inProgressMs
    const completedAt = finalizingAt + o.finalizingMs
    const expiresAt = b.createdAt + o.windowMs
    return { inProgressAt, finalizingAt, completedAt, expiresAt, expires: finalizingAt > expiresAt }
  }

  private status(b: BatchRecord, now: number): Status {
    const t = this.timeline(b)
    if (b.failure !== undefined) return now < t.inProgressAt ? "validating" : "failed"
    if (b.cancelAt !== undefined && now >= b.cancelAt) {
      return now < b.cancelAt + this.options.cancellingMs ? "cancelling" : "cancelled"
    }
    if (t.expires && now >= t.expiresAt) return "expired"
    if (now < t.inProgressAt) return "validating"
    if (now < t.finalizingAt) return "in_progress"
    return now < t.completedAt ? "finalizing" : "completed"
  }

  /** How many lines (in `order`) are done at `at`. */
  private doneBy(b: BatchRecord, at: number): number {
    const n = b.lines.length
    const { inProgressAt } = this.timeline(b)
    if (at < inProgressAt) return 0
    const ms = this.options.inProgressMs
    return ms === 0 ? n : Math.min(n, Math.floor(((at - inProgressAt) * n) / ms))
  }

  private lineFails(line: Line): boolean {
    return line.tokens === undefined || line.fault === "500" || line.fault === "502" || line.fault === "503"
  }

  /** Answers the done lines and writes the output and error files, once, when the batch is final. */
  private finish(b: BatchRecord, status: Status): Results {
    if (b.results !== undefined) return b.results
    const t = this.timeline(b)
    const doneAt = status === "expired" ? t.expiresAt : status === "cancelled" ? b.cancelAt! : t.finalizingAt
    const done = this.doneBy(b, doneAt)
    const output: Array<string> = []
    const errors: Array<string> = []
    const usage: Usage = { input: 0, cached: 0, output: 0, reasoning: 0 }
    let completed = 0
    let failed = 0
    for (let k = 0; k < done; k++) {
      const line = b.lines[b.order[k]!]!
      const answer = this.answerLine(line)
      const id = "batch_req_" + randomId(this.idRng, 24)
      const text = json({
        id,
        custom_id: line.customId,
        response: { status_code: answer.status, request_id: this.engine.requestId(), body: answer.body },
        error: null
      })
      if (answer.status === 200) {
        completed++
        output.push(text)
        const u = (answer.body as { usage?: any }).usage
        if (u !== undefined) {
          usage.input += u.prompt_tokens
          usage.cached += u.prompt_tokens_details?.cached_tokens ?? 0
          usage.output += u.completion_tokens
          usage.reasoning += u.completion_tokens_details?.reasoning_tokens ?? 0
        }
      } else {
        failed++
        errors.push(text)
      }
    }
    if (status === "expired") {
      for (let k = done; k < b.order.length; k++) {
        failed++
        errors.push(json({
          id: "batch_req_" + randomId(this.idRng, 24),
          custom_id: b.lines[b.order[k]!]!.customId,
          response: null,
          error: { code: "batch_expired", message: EXPIRED_MESSAGE }
        }))
      }
    }
    const write = (kind: string, lines: Array<string>) =>
      lines.length === 0
        ? undefined
        : this.store(`${b.id}_${kind}.jsonl`, "batch_output", lines.join("\n") + "\n").id
    b.results = { outputFileId: write("output", output), errorFileId: write("error", errors), completed, failed, usage }
    return b.results
  }

  private answerLine(line: Line): { readonly status: number; readonly body: unknown } {
    switch (line.fault) {
      case "500":
      case "502":
      case "503": {
        const e = serverError(Number(line.fault))
        return { status: e.status, body: { error: { message: e.message, type: e.type, param: e.param, code: e.code } } }
      }
      case undefined:
        return this.engine.complete(line.body, "ok")
      default:
        return this.engine.complete(line.body, line.fault)
    }
  }

  private batchObject(b: BatchRecord, now: number) {
    const status = this.status(b, now)
    const t = this.timeline(b)
    const final = isFinal(status)
    const results = final && b.failure === undefined ? this.finish(b, status) : undefined
    let counts = { total: b.lines.length, completed: 0, failed: 0 }
    if (results !== undefined) {
      counts = { total: b.lines.length, completed: results.completed, failed: results.failed }
    } else {
      const done = this.doneBy(b, b.cancelAt !== undefined ? Math.min(now, b.cancelAt) : now)
      for (let k = 0; k < done; k++) {
        if (this.lineFails(b.lines[b.order[k]!]!)) counts.failed++
        else counts.completed++
      }
    }
    const at = (ms: number, reached: boolean) => (reached ? seconds(ms) : null)
    const cancelled = b.cancelAt !== undefined && now >= b.cancelAt
    const started = b.failure === undefined && now >= t.inProgressAt &&
      (b.cancelAt === undefined || b.cancelAt > t.inProgressAt)
    const usage = results?.usage
    return {
      id: b.id,
      object: "batch",
      endpoint: ENDPOINT,
      model: b.model ?? null,
      errors: b.failure === undefined || status !== "failed" ? null : { object: "list", data: b.failure },
      input_file_id: b.inputFileId,
      completion_window: "24h",
      status,
      output_file_id: results?.outputFileId ?? null,
      error_file_id: results?.errorFileId ?? null,
      created_at: seconds(b.createdAt),
      in_progress_at: at(t.inProgressAt, started),
      expires_at: seconds(t.expiresAt),
      finalizing_at: at(
        t.finalizingAt,
        !cancelled && status !== "expired" && now >= t.finalizingAt && b.failure === undefined
      ),
      completed_at: at(t.completedAt, status === "completed"),
      failed_at: at(t.inProgressAt, status === "failed"),
      expired_at: at(t.expiresAt, status === "expired"),
      cancelling_at: b.cancelAt === undefined ? null : at(b.cancelAt, cancelled),
      cancelled_at: b.cancelAt === undefined
        ? null
        : at(b.cancelAt + this.options.cancellingMs, status === "cancelled"),
      request_counts: counts,
      usage: usage === undefined ? null : {
        input_tokens: usage.input,
        input_tokens_details: { cached_tokens: usage.cached },
        output_tokens: usage.output,
        output_tokens_details: { reasoning_tokens: usage.reasoning },
        total_tokens: usage.input + usage.output
      },
      metadata: b.metadata
    }
  }
}

const hex = (rng: Rng): string =>
  rng.u32().toString(16).padStart(8, "0") + rng.u32().toString(16).padStart(8, "0") +
  rng.u32().toString(16).padStart(8, "0") + rng.u32().toString(16).padStart(8, "0")

/** OpenAI's `Metadata` rules: at most 16 string pairs, keys ≤ 64 and values ≤ 512 characters. */
const checkMetadata = (metadata: unknown): string | undefined => {
  if (metadata === undefined || metadata === null) return undefined
  if (!isObject(metadata)) return "Invalid type for 'metadata': expected an object."
  const entries = Object.entries(metadata)
  if (entries.length > 16) return `Invalid 'metadata': ${entries.length} pairs, more than the 16 allowed.`
  for (const [key, value] of entries) {
    if (key.length > 64) return `Invalid 'metadata': the key '${key.slice(0, 64)}…' is longer than 64 characters.`
    if (typeof value !== "string") return `Invalid 'metadata.${key}': expected a string.`
    if (value.length > 512) return `Invalid 'metadata.${key}': the value is longer than 512 characters.`
  }
  return undefined
}
