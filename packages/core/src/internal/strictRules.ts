/**
 * OpenAI's strict-mode rules for a JSON Schema (Structured Outputs guide, "Supported schemas";
 * openai-node's `toStrictJsonSchema`) and its documented size limits, written once for core:
 * `LlmRequest` holds a raw schema to them before sending, and `StrictSchema` holds the schema it built
 * to them. (The simulator keeps its own copy on purpose: it plays OpenAI, and tests hold keel to it.)
 */

/** OpenAI's rule for function and response-format names, and what a name that breaks it is told. */
export const namePattern = /^[a-zA-Z0-9_-]{1,64}$/
export const nameReason = "must be 1 to 64 letters, digits, underscores or dashes"

/** Keywords strict mode refuses (openai-node `JSON_SCHEMA_UNSUPPORTED_SCHEMA_KEYWORDS`). */
const unsupportedKeywords: ReadonlyArray<string> = [
  "$anchor",
  "$dynamicAnchor",
  "$dynamicRef",
  "$recursiveAnchor",
  "$recursiveRef",
  "allOf",
  "contains",
  "contentEncoding",
  "contentMediaType",
  "contentSchema",
  "dependentRequired",
  "dependentSchemas",
  "dependencies",
  "else",
  "if",
  "maxContains",
  "maxProperties",
  "minContains",
  "minProperties",
  "not",
  "patternProperties",
  "prefixItems",
  "propertyNames",
  "then",
  "unevaluatedItems",
  "unevaluatedProperties",
  "uniqueItems"
]

/** The limits on levels and counts, checked wherever a schema is checked. */
export interface CountLimits {
  readonly maxDepth: number
  readonly maxProperties: number
  readonly maxEnumValues: number
}

/** All of OpenAI's documented size limits for one strict schema. */
export interface Limits extends CountLimits {
  /** Characters of property names, definition names, enum and const values in all. */
  readonly maxStringLength: number
  /** A string enum with more values than `largeEnumValues` may hold at most `maxLargeEnumLength` characters. */
  readonly largeEnumValues: number
  readonly maxLargeEnumLength: number
}

/** The limits as the Structured Outputs guide gives them today (see `StrictSchema`'s header for the sources). */
export const defaultLimits: Limits = {
  maxDepth: 10,
  maxProperties: 5000,
  maxEnumValues: 1000,
  maxStringLength: 120_000,
  largeEnumValues: 250,
  maxLargeEnumLength: 15_000
}

/**
 * Where a schema breaks a rule: the path of keys inside the JSON Schema (`["properties", "a", "items"]`, empty for
 * the root) and the rule.
 */
export interface Violation {
  readonly path: ReadonlyArray<string>
  readonly reason: string
}

class Found {
  constructor(readonly path: ReadonlyArray<string>, readonly reason: string) {}
}

const isJsonObject = (u: unknown): u is Readonly<Record<string, unknown>> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

const isObjectType = (schema: Readonly<Record<string, unknown>>): boolean =>
  schema.type === "object" || (Array.isArray(schema.type) && schema.type.includes("object"))

/**
 * The first rule of strict mode that a JSON Schema breaks, or `undefined` when it follows them: the root is
 * `type: "object"` (not `anyOf`); every object has `additionalProperties: false` and lists each of its properties in
 * `required` (and nothing else); no unsupported keyword; and the size limits given. Depth is counted as openai-java's
 * `JsonSchemaValidator` counts it: the root is level 0 and each property, array item, `anyOf` branch and `$defs`
 * entry is one level deeper; a `$ref` is not followed. The character limits are checked only when given.
 */
export const firstViolation = (
  schema: unknown,
  limits: CountLimits & Partial<Limits>
): Violation | undefined => {
  let properties = 0
  let enumValues = 0
  let characters = 0
  const visit = (node: unknown, path: ReadonlyArray<string>, depth: number): void => {
    if (!isJsonObject(node)) throw new Found(path, "a schema must be a JSON object")
    if (depth > limits.maxDepth) {
      throw new Found(
        path,
        `nesting depth ${depth} exceeds the limit of ${limits.maxDepth} ` +
          "(each property, array item, anyOf branch and definition is a level)"
      )
    }
    if (typeof node.$ref === "string") return
    for (const keyword of unsupportedKeywords) {
      if (keyword in node) throw new Found(path, `"${keyword}" is not supported in strict mode`)
    }
    if (Array.isArray(node.enum)) {
      enumValues += node.enum.length
      if (enumValues > limits.maxEnumValues) {
        throw new Found(path, `${enumValues} enum values in all exceed the limit of ${limits.maxEnumValues}`)
      }
      let length = 0
      for (const value of node.enum) length += String(value).length
      characters += length
      if (
        node.type === "string" && limits.largeEnumValues !== undefined && limits.maxLargeEnumLength !== undefined &&
        node.enum.length > limits.largeEnumValues && length > limits.maxLargeEnumLength
      ) {
        throw new Found(
          path,
          `an enum of ${node.enum.length} strings totals ${length} characters, over the limit of ` +
            `${limits.maxLargeEnumLength} for enums of more than ${limits.largeEnumValues} values`
        )
      }
    }
    if (node.const !== undefined) characters += String(node.const).length
    if (isObjectType(node)) {
      if (node.additionalProperties !== false) {
        throw new Found(path, "an object must have additionalProperties: false")
      }
      const props = node.properties ?? {}
      if (!isJsonObject(props)) throw new Found(path, "properties must be an object")
      const names = Object.keys(props)
      const required = Array.isArray(node.required) ? node.required : []
      const missing = names.find((name) => !required.includes(name))
      if (missing !== undefined) {
        throw new Found(path, `every property must be in required, and "${missing}" is not`)
      }
      const extra = required.find((name) => typeof name !== "string" || !names.includes(name))
      if (extra !== undefined) {
        throw new Found(path, `required names ${JSON.stringify(extra)}, which is not a property`)
      }
      properties += names.length
      if (properties > limits.maxProperties) {
        throw new Found(path, `${properties} object properties in all exceed the limit of ${limits.maxProperties}`)
      }
      for (const name of names) {
        characters += name.length
        visit(props[name], [...path, "properties", name], depth + 1)
      }
    }
    if (node.items !== undefined) visit(node.items, [...path, "items"], depth + 1)
    if (Array.isArray(node.anyOf)) {
      node.anyOf.forEach((branch, i) => visit(branch, [...path, "anyOf", String(i)], depth + 1))
    }
    for (const table of ["$defs", "definitions"]) {
      const defs = node[table]
      if (isJsonObject(defs)) {
        for (const name of Object.keys(defs)) {
          characters += name.length
          visit(defs[name], [...path, table, name], depth + 1)
        }
      }
    }
  }
  try {
    if (!isJsonObject(schema) || schema.type !== "object" || schema.anyOf !== undefined) {
      throw new Found(
        [],
        `the root must be type: "object"${isJsonObject(schema) && schema.anyOf !== undefined ? ", not anyOf" : ""}`
      )
    }
    visit(schema, [], 0)
  } catch (e) {
    if (e instanceof Found) return { path: e.path, reason: e.reason }
    throw e
  }
  if (limits.maxStringLength !== undefined && characters > limits.maxStringLength) {
    return {
      path: [],
      reason: "property names, definition names and enum values total " +
        `${characters} characters, over the limit of ${limits.maxStringLength}`
    }
  }
  return undefined
}
