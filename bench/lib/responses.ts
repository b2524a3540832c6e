/**
 * A Responses API endpoint (`POST /v1/responses`) plugged into the simulator for `@effect/ai-openai`,
 * which speaks only that API: the request is translated to a Chat Completions body, answered by the
 * simulator's own engine (`EndpointContext.completeChat`: same tool-call arguments and usage as a chat
 * call), and translated back. Function tools and text only, no streaming; for benchmarks.
 */
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as Effect from "effect/Effect"
import * as Simulator from "../../packages/openai/src/Simulator.js"

interface ResponsesBody {
  readonly model?: string
  readonly instructions?: string | null
  readonly input?:
    | string
    | ReadonlyArray<{ readonly role?: string; readonly content?: unknown; readonly type?: string }>
  readonly tools?: ReadonlyArray<
    {
      readonly type: string
      readonly name: string
      readonly description?: string
      readonly parameters?: unknown
      readonly strict?: boolean
    }
  >
  readonly tool_choice?: string | { readonly type: string; readonly name?: string }
  readonly max_output_tokens?: number | null
}

const text = (content: unknown): string =>
  typeof content === "string"
    ? content
    : Array.isArray(content)
    ? content.map((part: { text?: string }) => part.text ?? "").join("")
    : ""

/** Responses request → Chat Completions request. */
export const toChat = (body: ResponsesBody) => {
  const messages: Array<{ role: string; content: string }> = []
  if (typeof body.instructions === "string") messages.push({ role: "system", content: body.instructions })
  if (typeof body.input === "string") messages.push({ role: "user", content: body.input })
  else {
    for (const item of body.input ?? []) {
      if (item.role !== undefined) {
        messages.push({ role: item.role === "developer" ? "system" : item.role, content: text(item.content) })
      }
    }
  }
  const tools = (body.tools ?? []).filter((t) => t.type === "function").map((t) => ({
    type: "function",
    function: {
      name: t.name,
      ...(t.description === undefined ? {} : { description: t.description }),
      parameters: t.parameters,
      ...(t.strict === undefined ? {} : { strict: t.strict })
    }
  }))
  const choice = body.tool_choice
  return {
    model: body.model,
    messages,
    ...(tools.length > 0 ? { tools } : {}),
    ...(choice === undefined
      ? {}
      : typeof choice === "string"
      ? { tool_choice: choice }
      : { tool_choice: { type: "function", function: { name: choice.name } } }),
    ...(typeof body.max_output_tokens === "number" ? { max_completion_tokens: body.max_output_tokens } : {})
  }
}

interface ChatAnswer {
  readonly id: string
  readonly created: number
  readonly model: string
  readonly choices: ReadonlyArray<{
    readonly message: {
      readonly content: string | null
      readonly tool_calls?: ReadonlyArray<{ id: string; function: { name: string; arguments: string } }>
    }
  }>
  readonly usage: {
    readonly prompt_tokens: number
    readonly completion_tokens: number
    readonly total_tokens: number
    readonly prompt_tokens_details?: { cached_tokens?: number }
    readonly completion_tokens_details?: { reasoning_tokens?: number }
  }
}

/** Chat Completions answer → Responses answer. */
export const fromChat = (chat: ChatAnswer) => {
  const message = chat.choices[0]!.message
  const output = message.tool_calls !== undefined && message.tool_calls.length > 0
    ? message.tool_calls.map((call) => ({
      type: "function_call",
      id: `fc_${call.id}`,
      call_id: call.id,
      name: call.function.name,
      arguments: call.function.arguments,
      status: "completed"
    }))
    : [{
      type: "message",
      id: `msg_${chat.id}`,
      role: "assistant",
      status: "completed",
      content: [{ type: "output_text", text: message.content ?? "", annotations: [] }]
    }]
  return {
    id: `resp_${chat.id}`,
    object: "response",
    created_at: chat.created,
    status: "completed",
    error: null,
    incomplete_details: null,
    instructions: null,
    model: chat.model,
    output,
    parallel_tool_calls: true,
    tool_choice: "auto",
    tools: [],
    metadata: {},
    temperature: 1,
    top_p: 1,
    text: { format: { type: "text" } },
    usage: {
      input_tokens: chat.usage.prompt_tokens,
      input_tokens_details: { cached_tokens: chat.usage.prompt_tokens_details?.cached_tokens ?? 0 },
      output_tokens: chat.usage.completion_tokens,
      output_tokens_details: { reasoning_tokens: chat.usage.completion_tokens_details?.reasoning_tokens ?? 0 },
      total_tokens: chat.usage.total_tokens
    }
  }
}

/** `POST /v1/responses`, for `Simulator.layer({ routes: [route] })`. */
export const route: Simulator.Route = HttpRouter.makeRoute(
  "POST",
  "/v1/responses",
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const endpoint = yield* Simulator.EndpointContext
    const body = (yield* Effect.orDie(request.json)) as ResponsesBody
    const answer = endpoint.completeChat(toChat(body))
    return answer.status === 200
      ? endpoint.json(200, fromChat(answer.body as ChatAnswer))
      : endpoint.json(answer.status, answer.body)
  })
)
