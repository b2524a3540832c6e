/**
 * The Structured Outputs rules OpenAI applies to a `strict: true` schema, with its messages: every
 * object closed (`additionalProperties: false`) and listing every property in `required`, no
 * keyword outside the supported subset (the list openai-node's `toStrictJsonSchema` refuses), a
 * root of `type: "object"`, and the size limits of the Structured Outputs guide (nesting depth 10,
 * 5,000 properties, 1,000 enum values; depth counted as openai-java's validator counts it).
 */

type Json = Record<string, unknown>
const isObject = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)

/** Keywords a strict schema may not use (openai-node `JSON_SCHEMA_UNSUPPORTED_SCHEMA_KEYWORDS`, allOf aside). */
const UNSUPPORTED = [
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

export const MAX_DEPTH = 10
export const MAX_PROPERTIES = 5_000
export const MAX_ENUM_VALUES = 1_000

/** Python's tuple repr, as OpenAI prints a schema path: `()`, `('properties', 'a')`. */
const context = (path: ReadonlyArray<string>): string =>
  path.length === 0 ? "()" : path.length === 1 ? `('${path[0]}',)` : `(${path.map((p) => `'${p}'`).join(", ")})`

const typeName = (schema: Json): string =>
  typeof schema.type === "string" ? schema.type : Array.isArray(schema.type) ? JSON.stringify(schema.type) : "None"

const isObjectType = (schema: Json): boolean =>
  schema.type === "object" || (Array.isArray(schema.type) && schema.type.includes("object"))

class Violation extends Error {}

/** The reason OpenAI gives for refusing `schema` in strict mode, or undefined when it is accepted. */
export const strictViolation = (schema: unknown): string | undefined => {
  if (!isObject(schema) || schema.type !== "object" || Array.isArray(schema.anyOf)) {
    return `schema must be a JSON Schema of 'type: "object"', got 'type: "${
      isObject(schema) ? typeName(schema) : "None"
    }"'.`
  }
  let properties = 0
  let enumValues = 0
  const visit = (node: unknown, path: ReadonlyArray<string>, depth: number): void => {
    if (!isObject(node)) return
    if (depth > MAX_DEPTH) throw new Violation(`${depth} levels of nesting exceeds limit of ${MAX_DEPTH}.`)
    if (typeof node.$ref === "string") return
    for (const keyword of UNSUPPORTED) {
      if (keyword in node) throw new Violation(`In context=${context(path)}, '${keyword}' is not permitted.`)
    }
    if (Array.isArray(node.enum)) {
      enumValues += node.enum.length
      if (enumValues > MAX_ENUM_VALUES) {
        throw new Violation(`${enumValues} enum values in all exceeds limit of ${MAX_ENUM_VALUES}.`)
      }
    }
    if (isObjectType(node)) {
      if (!isObject(node.properties)) {
        throw new Violation(`In context=${context(path)}, object schema missing properties.`)
      }
      if (node.additionalProperties !== false) {
        throw new Violation(
          `In context=${context(path)}, 'additionalProperties' is required to be supplied and to be false.`
        )
      }
      const keys = Object.keys(node.properties)
      const required = Array.isArray(node.required) ? node.required : []
      const missing = keys.find((key) => !required.includes(key))
      if (missing !== undefined || (keys.length > 0 && !Array.isArray(node.required))) {
        throw new Violation(
          `In context=${
            context(path)
          }, 'required' is required to be supplied and to be an array including every key in properties. Missing '${
            missing ?? keys[0]
          }'.`
        )
      }
      const extra = required.find((key) => typeof key !== "string" || !keys.includes(key))
      if (extra !== undefined) {
        throw new Violation(`In context=${context(path)}, Extra required key '${extra}' supplied.`)
      }
      properties += keys.length
      if (properties > MAX_PROPERTIES) {
        throw new Violation(`${properties} object properties in all exceeds limit of ${MAX_PROPERTIES}.`)
      }
      for (const key of keys) visit(node.properties[key], [...path, "properties", key], depth + 1)
    }
    if (isObject(node.items)) visit(node.items, [...path, "items"], depth + 1)
    if (Array.isArray(node.anyOf)) node.anyOf.forEach((b, i) => visit(b, [...path, "anyOf", String(i)], depth + 1))
    for (const defs of ["$defs", "definitions"]) {
      const table = node[defs]
      if (isObject(table)) {
        for (const [name, sub] of Object.entries(table)) visit(sub, [...path, defs, name], depth + 1)
      }
    }
  }
  try {
    visit(schema, [], 0)
    return undefined
  } catch (e) {
    if (e instanceof Violation) return e.message
    throw e
  }
}
