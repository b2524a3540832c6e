/**
 * An independent checker of OpenAI's strict-mode JSON Schema rules, written from the documented
 * rules (../shared/reference/openai-api-facts.md §2 and the Structured Outputs guide), not from the
 * converter: root an object; every object closed and listing every property in `required`; only
 * the supported keywords per type; allowed string formats; `anyOf` not at the root; `$ref` only to
 * `#` or an existing `$defs` entry; and the size limits (depth counted as openai-java counts it).
 * Returns every violation as "path: message"; an empty list means the schema passes.
 */

export interface CheckLimits {
  readonly maxDepth: number
  readonly maxProperties: number
  readonly maxEnumValues: number
  readonly maxStringLength: number
}

export const documentedLimits: CheckLimits = {
  maxDepth: 10,
  maxProperties: 5000,
  maxEnumValues: 1000,
  maxStringLength: 120_000
}

const FORMATS = ["date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"]
const ANNOTATIONS = ["description", "title"]
const ALLOWED: Record<string, ReadonlyArray<string>> = {
  object: ["type", "properties", "required", "additionalProperties", ...ANNOTATIONS],
  array: ["type", "items", "minItems", "maxItems", ...ANNOTATIONS],
  string: ["type", "enum", "const", "pattern", "format", ...ANNOTATIONS],
  number: [
    "type",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    ...ANNOTATIONS
  ],
  boolean: ["type", "enum", "const", ...ANNOTATIONS],
  null: ["type", ...ANNOTATIONS]
}
ALLOWED.integer = ALLOWED.number!

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

const matchesType = (type: string, value: unknown): boolean => {
  switch (type) {
    case "string":
      return typeof value === "string"
    case "number":
      return typeof value === "number" && Number.isFinite(value)
    case "integer":
      return typeof value === "number" && Number.isInteger(value)
    case "boolean":
      return typeof value === "boolean"
    default:
      return false
  }
}

export const checkStrict = (root: unknown, limits: CheckLimits = documentedLimits): Array<string> => {
  const errors: Array<string> = []
  const fail = (path: string, message: string) => errors.push(`${path}: ${message}`)
  let properties = 0
  let enumValues = 0
  let stringLength = 0
  const defs = new Set<string>()

  if (!isRecord(root)) return ["#: the schema is not an object"]
  if (root.$defs !== undefined) {
    if (!isRecord(root.$defs)) fail("#/$defs", "must be an object")
    else for (const name of Object.keys(root.$defs)) defs.add(`#/$defs/${name}`)
  }

  const visit = (node: unknown, path: string, depth: number): void => {
    if (depth > limits.maxDepth) fail(path, `nesting depth ${depth} exceeds ${limits.maxDepth}`)
    if (!isRecord(node)) return void fail(path, "a sub-schema must be an object")
    const keys = Object.keys(node).filter((key) => depth > 0 || (key !== "$defs" && key !== "$schema"))
    const kinds = ["type", "anyOf", "$ref"].filter((key) => key in node)
    if (kinds.length !== 1) return void fail(path, `expected exactly one of type, anyOf, $ref; got ${kinds.join(", ")}`)
    if ("anyOf" in node) {
      if (depth === 0) fail(path, "anyOf at the root")
      for (const key of keys) if (key !== "anyOf" && !ANNOTATIONS.includes(key)) fail(path, `"${key}" beside anyOf`)
      if (!Array.isArray(node.anyOf) || node.anyOf.length === 0) {
        return void fail(path, "anyOf must be a non-empty array")
      }
      node.anyOf.forEach((branch, i) => visit(branch, `${path}/anyOf/${i}`, depth + 1))
      return
    }
    if ("$ref" in node) {
      if (depth === 0) fail(path, "$ref at the root")
      for (const key of keys) if (key !== "$ref" && !ANNOTATIONS.includes(key)) fail(path, `"${key}" beside $ref`)
      if (node.$ref !== "#" && !defs.has(String(node.$ref))) fail(path, `$ref ${String(node.$ref)} resolves to nothing`)
      return
    }
    const type = node.type
    if (typeof type !== "string" || ALLOWED[type] === undefined) {
      return void fail(path, `unsupported type ${String(type)}`)
    }
    if (depth === 0 && type !== "object") fail(path, "the root must be an object")
    for (const key of keys) if (!ALLOWED[type]!.includes(key)) fail(path, `"${key}" is not supported on ${type}`)
    if (node.description !== undefined && typeof node.description !== "string") fail(path, "description not a string")

    switch (type) {
      case "object": {
        if (node.additionalProperties !== false) fail(path, "additionalProperties must be false")
        if (!isRecord(node.properties)) return void fail(path, "properties missing")
        if (!Array.isArray(node.required)) return void fail(path, "required missing")
        const names = Object.keys(node.properties)
        const required = new Set(node.required)
        if (required.size !== node.required.length) fail(path, "required lists a name twice")
        for (const name of names) if (!required.has(name)) fail(path, `property "${name}" is not required`)
        for (const name of required) {
          if (!names.includes(String(name))) fail(path, `required "${String(name)}" has no property`)
        }
        for (const name of names) {
          properties++
          stringLength += name.length
          visit(node.properties[name], `${path}/properties/${name}`, depth + 1)
        }
        break
      }
      case "array": {
        if (node.items === undefined) fail(path, "items missing")
        else visit(node.items, `${path}/items`, depth + 1)
        for (const key of ["minItems", "maxItems"]) {
          const value = node[key]
          if (value !== undefined && !(Number.isInteger(value) && (value as number) >= 0)) {
            fail(path, `${key} must be a non-negative integer`)
          }
        }
        if (typeof node.minItems === "number" && typeof node.maxItems === "number" && node.minItems > node.maxItems) {
          fail(path, "minItems > maxItems")
        }
        break
      }
      case "string": {
        if (node.format !== undefined && !FORMATS.includes(String(node.format))) {
          fail(path, `format ${String(node.format)} is not supported`)
        }
        if (node.pattern !== undefined) {
          try {
            new RegExp(String(node.pattern))
          } catch {
            fail(path, "pattern is not a regular expression")
          }
        }
        break
      }
      case "number":
      case "integer": {
        for (const key of ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"]) {
          if (node[key] !== undefined && typeof node[key] !== "number") fail(path, `${key} must be a number`)
        }
        if (typeof node.multipleOf === "number" && node.multipleOf <= 0) fail(path, "multipleOf must be positive")
        break
      }
    }
    if (node.enum !== undefined) {
      if (!Array.isArray(node.enum) || node.enum.length === 0) fail(path, "enum must be a non-empty array")
      else {
        for (const value of node.enum) {
          enumValues++
          stringLength += String(value).length
          if (!matchesType(type, value)) fail(path, `enum value ${JSON.stringify(value)} is not a ${type}`)
        }
      }
    }
    if (node.const !== undefined) {
      stringLength += String(node.const).length
      if (!matchesType(type, node.const)) fail(path, `const is not a ${type}`)
    }
  }

  visit(root, "#", 0)
  if (isRecord(root.$defs)) {
    for (const [name, def] of Object.entries(root.$defs)) {
      stringLength += name.length
      visit(def, `#/$defs/${name}`, 1)
    }
  }
  if (properties > limits.maxProperties) fail("#", `${properties} properties exceed ${limits.maxProperties}`)
  if (enumValues > limits.maxEnumValues) fail("#", `${enumValues} enum values exceed ${limits.maxEnumValues}`)
  if (stringLength > limits.maxStringLength) {
    fail("#", `string length ${stringLength} exceeds ${limits.maxStringLength}`)
  }
  return errors
}
