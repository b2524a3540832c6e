/**
 * Compiles a JSON Schema (the Structured Outputs subset and a little more) once into a generator of
 * values that satisfy it, and into a spoiler that turns a valid value into a schema-invalid one (for
 * the `invalid_output` fault). Handles type (and type arrays), enum, const, string formats,
 * pattern, min/maxLength, number and integer bounds (exclusive too) and multipleOf, arrays
 * (items, prefixItems, min/maxItems, uniqueItems), objects (properties, required,
 * additionalProperties), anyOf/oneOf, allOf (merged), OpenAPI `nullable`, and $ref into $defs /
 * definitions / any JSON pointer, including recursive references, whose depth is bounded.
 */
import type { Rng } from "./random.js"
import { compilePattern } from "./regexGen.js"
import { word, words } from "./text.js"

/** A schema that cannot be compiled (a $ref that does not resolve, a malformed keyword). */
export class SchemaError extends Error {}

/** What the simulator needs from a compiled schema. */
export interface CompiledSchema {
  /** a value satisfying the schema */
  readonly generate: (rng: Rng) => unknown
  /** a value (valid JSON) that violates the schema, derived from a valid one; undefined if the schema accepts everything */
  readonly spoil: (value: unknown, rng: Rng) => unknown
}

type Json = Record<string, unknown>

/** Past this nesting depth, choices prefer the smallest value (null, fewest items, leaves). */
const SOFT_DEPTH = 5
/** Past this depth generation gives up and returns null (a schema with no finite instance). */
const HARD_DEPTH = 48

interface Node {
  readonly gen: (rng: Rng, depth: number) => unknown
  /** how large the smallest instance is: 0 null, 1 scalar, 2 array, 3 object, 4 reference */
  readonly rank: number
  readonly object?: ObjectInfo
  readonly types?: ReadonlyArray<string>
  readonly target?: () => Node
}

interface ObjectInfo {
  readonly properties: ReadonlyMap<string, Node>
  readonly required: ReadonlyArray<string>
  readonly closed: boolean
}

const isObject = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)

const pad2 = (n: number): string => (n < 10 ? "0" + n : String(n))
const hex = (rng: Rng, n: number): string => {
  let out = ""
  for (let i = 0; i < n; i++) out += "0123456789abcdef"[rng.int(16)]
  return out
}
const date = (rng: Rng): string =>
  `20${pad2(rng.between(20, 29))}-${pad2(rng.between(1, 12))}-${pad2(rng.between(1, 28))}`
const time = (rng: Rng): string => `${pad2(rng.int(24))}:${pad2(rng.int(60))}:${pad2(rng.int(60))}Z`

const FORMATS: Record<string, (rng: Rng) => string> = {
  date,
  "date-time": (rng) => `${date(rng)}T${time(rng)}`,
  time,
  "duration": (rng) => `P${rng.between(1, 30)}DT${rng.between(1, 23)}H`,
  "email": (rng) => `${word(rng)}.${word(rng)}${rng.int(100)}@example.com`,
  "idn-email": (rng) => `${word(rng)}${rng.int(100)}@example.com`,
  "hostname": (rng) => `${word(rng)}-${rng.int(100)}.example.com`,
  "idn-hostname": (rng) => `${word(rng)}.example.com`,
  "ipv4": (rng) => `${rng.between(1, 223)}.${rng.int(256)}.${rng.int(256)}.${rng.between(1, 254)}`,
  "ipv6": (rng) => `2001:db8:${hex(rng, 4)}:${hex(rng, 4)}::${hex(rng, 4)}`,
  "uuid": (rng) => `${hex(rng, 8)}-${hex(rng, 4)}-4${hex(rng, 3)}-${"89ab"[rng.int(4)]}${hex(rng, 3)}-${hex(rng, 12)}`,
  "uri": (rng) => `https://example.com/${word(rng)}/${rng.int(1000)}`,
  "iri": (rng) => `https://example.com/${word(rng)}`,
  "url": (rng) => `https://example.com/${word(rng)}/${rng.int(1000)}`,
  "uri-reference": (rng) => `/${word(rng)}/${rng.int(1000)}`,
  "iri-reference": (rng) => `/${word(rng)}`,
  "uri-template": (rng) => `https://example.com/${word(rng)}/{id}`,
  "json-pointer": (rng) => `/${word(rng)}/${rng.int(10)}`,
  "relative-json-pointer": (rng) => `${rng.int(3)}/${word(rng)}`,
  "regex": () => "^[a-z]+$",
  "byte": (rng) => Buffer.from(words(rng, 2)).toString("base64"),
  "binary": (rng) => words(rng, 1)
}

const num = (u: unknown): number | undefined => (typeof u === "number" && Number.isFinite(u) ? u : undefined)

/** Resolves a JSON pointer fragment (`#/$defs/Node`, `#`) against the root schema. */
const resolvePointer = (root: unknown, ref: string): unknown => {
  if (!ref.startsWith("#")) throw new SchemaError(`unsupported $ref ${ref}: only local references (#...) are allowed`)
  const pointer = ref.slice(1)
  if (pointer === "") return root
  if (!pointer.startsWith("/")) throw new SchemaError(`unsupported $ref ${ref}`)
  let current: unknown = root
  for (const raw of pointer.slice(1).split("/")) {
    const key = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~")
    if (isObject(current) && key in current) current = current[key]
    else if (Array.isArray(current) && /^\d+$/.test(key) && Number(key) < current.length) current = current[Number(key)]
    else throw new SchemaError(`$ref ${ref} does not resolve`)
  }
  return current
}

/** Picks uniformly among branches, null with a lower weight; past SOFT_DEPTH the smallest branch. */
const union = (branches: ReadonlyArray<Node>): Node => {
  if (branches.length === 1) return branches[0]!
  const nullBranch = branches.find((b) => b.rank === 0)
  const others = branches.filter((b) => b !== nullBranch)
  const smallest = branches.reduce((a, b) => (b.rank < a.rank ? b : a))
  const types = branches.flatMap((b) => b.types ?? [])
  return {
    rank: smallest.rank,
    types,
    gen: (rng, depth) => {
      if (depth > SOFT_DEPTH) return smallest.gen(rng, depth)
      if (nullBranch !== undefined && (others.length === 0 || rng.next() < 0.2)) return null
      return rng.pick(others).gen(rng, depth)
    },
    ...(others.length === 1 && others[0]!.object !== undefined ? { object: others[0]!.object } : {})
  }
}

const constant = (value: unknown): Node => {
  const text = JSON.stringify(value)
  const rank = value === null ? 0 : typeof value === "object" ? 3 : 1
  return { rank, gen: () => (typeof value === "object" && value !== null ? JSON.parse(text) : value) }
}

class Compiler {
  private readonly refs = new Map<string, Node>()

  constructor(private readonly root: unknown) {}

  compile(schema: unknown): Node {
    if (schema === true || schema === undefined) return this.any()
    if (schema === false) throw new SchemaError("a schema of `false` has no instances")
    if (!isObject(schema)) throw new SchemaError(`a schema must be an object, got ${JSON.stringify(schema)}`)

    if (typeof schema.$ref === "string") return this.ref(schema.$ref)
    if ("const" in schema) return constant(schema.const)
    if (Array.isArray(schema.enum)) {
      if (schema.enum.length === 0) throw new SchemaError("enum must not be empty")
      const values = schema.nullable === true && !schema.enum.includes(null) ? [...schema.enum, null] : schema.enum
      const nodes = values.map(constant)
      return { rank: Math.min(...nodes.map((n) => n.rank)), gen: (rng) => rng.pick(nodes).gen(rng, 0) }
    }
    const choices = Array.isArray(schema.anyOf) ? schema.anyOf : Array.isArray(schema.oneOf) ? schema.oneOf : undefined
    if (choices !== undefined) {
      if (choices.length === 0) throw new SchemaError("anyOf must not be empty")
      const branches = choices.map((branch) => this.compile(this.withSiblings(schema, branch)))
      if (schema.nullable === true) branches.push(constant(null))
      return union(branches)
    }
    if (Array.isArray(schema.allOf)) return this.compile(this.mergeAllOf(schema))

    const declared = schema.type
    let types: Array<string>
    if (typeof declared === "string") types = [declared]
    else if (Array.isArray(declared)) types = declared.filter((t): t is string => typeof t === "string")
    else types = this.inferTypes(schema)
    if (schema.nullable === true && !types.includes("null")) types = [...types, "null"]
    if (types.length === 0) return this.any()
    const nodes = types.map((type) => this.typed(type, schema))
    return union(nodes)
  }

  /** anyOf siblings (e.g. `description`, or constraints on every branch) are kept on each branch. */
  private withSiblings(parent: Json, branch: unknown): unknown {
    if (!isObject(branch)) return branch
    const { anyOf: _a, oneOf: _o, nullable: _n, description: _d, title: _t, ...rest } = parent
    return Object.keys(rest).length === 0 ? branch : { ...rest, ...branch }
  }

  private mergeAllOf(schema: Json): Json {
    const { allOf, ...rest } = schema
    let merged: Json = { ...rest }
    for (const part of allOf as ReadonlyArray<unknown>) {
      const resolved = isObject(part) && typeof part.$ref === "string" ? resolvePointer(this.root, part.$ref) : part
      if (!isObject(resolved)) continue
      const inner = Array.isArray(resolved.allOf) ? this.mergeAllOf(resolved) : resolved
      const properties = isObject(merged.properties) || isObject(inner.properties)
        ? { ...(merged.properties as Json | undefined), ...(inner.properties as Json | undefined) }
        : undefined
      const required = [
        ...new Set([
          ...((merged.required as ReadonlyArray<string> | undefined) ?? []),
          ...((inner.required as ReadonlyArray<string> | undefined) ?? [])
        ])
      ]
      merged = { ...merged, ...inner }
      if (properties !== undefined) merged.properties = properties
      if (required.length > 0) merged.required = required
    }
    return merged
  }

  private inferTypes(schema: Json): Array<string> {
    if (isObject(schema.properties) || "additionalProperties" in schema || Array.isArray(schema.required)) {
      return ["object"]
    }
    if ("items" in schema || "prefixItems" in schema) return ["array"]
    if (typeof schema.pattern === "string" || typeof schema.format === "string" || "minLength" in schema) {
      return ["string"]
    }
    if ("minimum" in schema || "maximum" in schema || "multipleOf" in schema) return ["number"]
    return []
  }

  private any(): Node {
    return { rank: 1, gen: (rng) => words(rng, 2) }
  }

  private ref(ref: string): Node {
    const known = this.refs.get(ref)
    if (known !== undefined) return known
    // registered before compiling its target, so a recursive reference finds it
    const cell: { target?: Node } = {}
    const node: Node = {
      rank: 4,
      gen: (rng, depth) => cell.target!.gen(rng, depth),
      target: () => cell.target!
    }
    this.refs.set(ref, node)
    cell.target = this.compile(resolvePointer(this.root, ref))
    return node
  }

  private typed(type: string, schema: Json): Node {
    switch (type) {
      case "null":
        return { rank: 0, types: ["null"], gen: () => null }
      case "boolean":
        return { rank: 1, types: ["boolean"], gen: (rng) => rng.next() < 0.5 }
      case "string":
        return this.string(schema)
      case "integer":
        return this.number(schema, true)
      case "number":
        return this.number(schema, false)
      case "array":
        return this.array(schema)
      case "object":
        return this.object(schema)
      default:
        throw new SchemaError(`unknown type ${JSON.stringify(type)}`)
    }
  }

  private string(schema: Json): Node {
    const minLength = num(schema.minLength) ?? 0
    const maxLength = num(schema.maxLength)
    const fit = (s: string, rng: Rng): string => {
      let out = s
      while (out.length < minLength) out += "abcdefghijklmnopqrstuvwxyz"[rng.int(26)]
      return maxLength !== undefined && out.length > maxLength ? out.slice(0, maxLength) : out
    }
    let base: (rng: Rng) => string
    const pattern = typeof schema.pattern === "string" ? compilePattern(schema.pattern) : undefined
    const format = typeof schema.format === "string" ? FORMATS[schema.format] : undefined
    if (pattern !== undefined) {
      base = pattern
    } else if (format !== undefined) {
      base = format
    } else {
      const target = maxLength !== undefined ? Math.min(maxLength, Math.max(minLength, 24)) : undefined
      base = (rng) => {
        const text = words(rng, rng.between(1, 4))
        return target !== undefined && text.length > target ? text.slice(0, target).trimEnd() : text
      }
    }
    return {
      rank: 1,
      types: ["string"],
      gen: pattern !== undefined || format !== undefined ? base : (rng) => fit(base(rng), rng)
    }
  }

  private number(schema: Json, integer: boolean): Node {
    const minimum = num(schema.minimum)
    const maximum = num(schema.maximum)
    // draft 6+: exclusiveMinimum is a number; draft 4: a boolean modifying minimum
    const exMin = num(schema.exclusiveMinimum) ?? (schema.exclusiveMinimum === true ? minimum : undefined)
    const exMax = num(schema.exclusiveMaximum) ?? (schema.exclusiveMaximum === true ? maximum : undefined)
    const multipleOf = num(schema.multipleOf)
    const lowInclusive = schema.exclusiveMinimum === true ? undefined : minimum
    const highInclusive = schema.exclusiveMaximum === true ? undefined : maximum
    const step = integer ? 1 : 0.01
    let lo = Math.max(lowInclusive ?? -Infinity, exMin !== undefined ? exMin + step : -Infinity)
    let hi = Math.min(highInclusive ?? Infinity, exMax !== undefined ? exMax - step : Infinity)
    if (integer) {
      lo = Math.ceil(lo)
      hi = Math.floor(hi)
    }
    if (lo === -Infinity && hi === Infinity) {
      lo = 0
      hi = 100
    } else if (lo === -Infinity) lo = hi - 100
    else if (hi === Infinity) hi = lo + 100
    if (lo > hi) {
      // an interval narrower than our step: its midpoint
      const a = Math.max(minimum ?? -Infinity, exMin ?? -Infinity)
      const b = Math.min(maximum ?? Infinity, exMax ?? Infinity)
      const mid = (a + b) / 2
      return { rank: 1, types: [integer ? "integer" : "number"], gen: () => mid }
    }
    const inRange = (v: number): boolean =>
      (minimum === undefined || v >= minimum) && (maximum === undefined || v <= maximum) &&
      (exMin === undefined || v > exMin) && (exMax === undefined || v < exMax) && (!integer || Number.isInteger(v))
    if (multipleOf !== undefined && multipleOf > 0) {
      const kLo = Math.ceil(lo / multipleOf)
      const kHi = Math.floor(hi / multipleOf)
      const isMultiple = (v: number): boolean => {
        const q = v / multipleOf
        return q === Math.trunc(q)
      }
      return {
        rank: 1,
        types: [integer ? "integer" : "number"],
        gen: (rng) => {
          for (let attempt = 0; attempt < 16 && kLo <= kHi; attempt++) {
            const v = Number((rng.between(kLo, kHi) * multipleOf).toPrecision(12))
            if (isMultiple(v) && inRange(v)) return v
          }
          return inRange(0) ? 0 : kLo * multipleOf
        }
      }
    }
    if (integer) return { rank: 1, types: ["integer"], gen: (rng) => rng.between(lo, hi) }
    return {
      rank: 1,
      types: ["number"],
      gen: (rng) => {
        const v = Math.round((lo + rng.next() * (hi - lo)) * 100) / 100
        return inRange(v) ? v : inRange(lo) ? lo : (lo + hi) / 2
      }
    }
  }

  private array(schema: Json): Node {
    const prefix = Array.isArray(schema.prefixItems)
      ? schema.prefixItems.map((s) => this.compile(s))
      : Array.isArray(schema.items)
      ? schema.items.map((s) => this.compile(s))
      : []
    const itemSchema = Array.isArray(schema.items) ? schema.additionalItems : schema.items
    const items = itemSchema === false ? undefined : this.compile(itemSchema)
    const minItems = Math.max(num(schema.minItems) ?? 0, 0)
    const maxItems = num(schema.maxItems) ??
      (items === undefined ? prefix.length : Math.max(minItems, prefix.length) + 3)
    const unique = schema.uniqueItems === true
    return {
      rank: minItems === 0 ? 2 : 3,
      types: ["array"],
      gen: (rng, depth) => {
        if (depth > HARD_DEPTH) return []
        const wanted = depth > SOFT_DEPTH
          ? minItems
          : rng.between(Math.min(Math.max(minItems, 1), maxItems), maxItems)
        const out: Array<unknown> = []
        const seen = unique ? new Set<string>() : undefined
        for (let i = 0; i < wanted; i++) {
          const node = i < prefix.length ? prefix[i]! : items
          if (node === undefined) break
          let value = node.gen(rng, depth + 1)
          if (seen !== undefined) {
            let key = JSON.stringify(value)
            for (let retry = 0; retry < 8 && seen.has(key); retry++) {
              value = node.gen(rng, depth + 1)
              key = JSON.stringify(value)
            }
            if (seen.has(key)) break
            seen.add(key)
          }
          out.push(value)
        }
        return out
      }
    }
  }

  private object(schema: Json): Node {
    const declared = isObject(schema.properties) ? schema.properties : {}
    const required = Array.isArray(schema.required)
      ? schema.required.filter((k): k is string => typeof k === "string")
      : []
    const properties = new Map<string, Node>()
    for (const [key, sub] of Object.entries(declared)) properties.set(key, this.compile(sub))
    for (const key of required) if (!properties.has(key)) properties.set(key, this.any())
    const requiredSet = new Set(required)
    const entries = [...properties.entries()].map(([key, node]) => ({ key, node, required: requiredSet.has(key) }))
    const additional = schema.additionalProperties
    const extra = properties.size === 0 && isObject(additional) ? this.compile(additional) : undefined
    const minProperties = num(schema.minProperties) ?? 0
    const info: ObjectInfo = { properties, required, closed: additional === false }
    return {
      rank: 3,
      types: ["object"],
      object: info,
      gen: (rng, depth) => {
        const out: Record<string, unknown> = {}
        if (depth > HARD_DEPTH) return out
        const deep = depth > SOFT_DEPTH
        let count = 0
        for (const entry of entries) {
          if (entry.required || (!deep && rng.next() < 0.7) || count < minProperties) {
            out[entry.key] = entry.node.gen(rng, depth + 1)
            count++
          }
        }
        if (extra !== undefined) {
          const n = Math.max(minProperties, deep ? 0 : rng.between(1, 2))
          for (let i = 0; i < n; i++) out[`${word(rng)}_${i + 1}`] = extra.gen(rng, depth + 1)
        }
        return out
      }
    }
  }
}

const follow = (node: Node): Node => {
  let current = node
  for (let i = 0; i < 16 && current.target !== undefined; i++) current = current.target()
  return current
}

/** A value of a type the node does not accept. */
const wrongValue = (node: Node): unknown => {
  const types = follow(node).types ?? []
  if (!types.includes("integer") && !types.includes("number")) return 12345
  if (!types.includes("string")) return "not-a-number"
  return { unexpected: true }
}

/** Compiles `schema` (its own `$defs`/`definitions` and `#` references resolve against it). */
export const compileSchema = (schema: unknown): CompiledSchema => {
  const root = new Compiler(schema).compile(schema)
  const rootNode = follow(root)
  return {
    generate: (rng) => root.gen(rng, 0),
    spoil: (value, rng) => {
      const info = rootNode.object
      if (info !== undefined && isObject(value)) {
        const present = info.required.filter((key) => key in value)
        const copy: Record<string, unknown> = { ...value }
        if (present.length > 0) {
          delete copy[rng.pick(present)]
          return copy
        }
        const keys = Object.keys(value).filter((key) => info.properties.has(key))
        if (keys.length > 0) {
          const key = rng.pick(keys)
          copy[key] = wrongValue(info.properties.get(key)!)
          return copy
        }
        if (info.closed) return { ...copy, unexpected_property: true }
        return [copy]
      }
      const types = rootNode.types
      if (types === undefined || types.length === 0) return undefined
      return wrongValue(rootNode)
    }
  }
}
