/**
 * Wire forms shared by the request builder (`OpenAiLanguageModel.toWire`) and the token estimate
 * (`OpenAiTokenizer`), which counts tools and response formats as the JSON that is sent.
 */
import type * as LlmRequest from "@keel/core/LlmRequest"
import type * as OpenAiClient from "../OpenAiClient.js"

/** A tool definition as Chat Completions takes it. */
export const tool = (t: LlmRequest.ToolDefinition): OpenAiClient.ChatCompletionTool => ({
  type: "function",
  function: t.description === undefined
    ? { name: t.name, parameters: t.parameters, strict: t.strict }
    : { name: t.name, description: t.description, parameters: t.parameters, strict: t.strict }
})

/** A response format as Chat Completions takes it. */
export const responseFormat = (f: LlmRequest.ResponseFormat): OpenAiClient.ResponseFormat => {
  switch (f._tag) {
    case "text":
      return { type: "text" }
    case "json_object":
      return { type: "json_object" }
    case "json_schema":
      return {
        type: "json_schema",
        json_schema: f.description === undefined
          ? { name: f.name, schema: f.schema, strict: f.strict }
          : { name: f.name, description: f.description, schema: f.schema, strict: f.strict }
      }
  }
}
