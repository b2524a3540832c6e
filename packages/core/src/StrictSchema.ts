/**
 * Effect Schema → OpenAI strict JSON Schema, and the decoder for what the model writes back.
 *
 * `make(schema)` walks the Schema's AST once and returns the JSON Schema to send with `strict: true`
 * (as tool `parameters` or as a `json_schema` response format) together with a decoder built for the
 * wire form. Results are cached per Schema, so a call never rebuilds them.
 *
 * What is sent, following OpenAI's strict-mode subset (Structured Outputs guide, "Supported schemas"):
 * - The root is an object. Every object lists all its properties in `required` and has
 *   `additionalProperties: false`.
 * - An optional field (`Schema.optional`, `Schema.optionalWith`) is sent as required and nullable,
 *   `anyOf: [T, { type: "null" }]`; a `null` for it decodes back to "absent". An optional field whose
 *   own type already admits `null` therefore can only come back absent, never as an explicit `null`.
 * - Strings may carry `pattern` and a `format` in date-time, time, date, duration, email, hostname,
 *   ipv4, ipv6, uuid; numbers `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`,
 *   `multipleOf` and `type: "integer"`; arrays `minItems` and `maxItems`. Literals and enums are
 *   `enum`; unions are `anyOf`; `Schema.suspend` is a `$ref` into `$defs` (or `#` for the root), so
 *   recursive schemas work. Descriptions (`description` annotations) are sent, so the model sees
 *   the wording of constraints JSON Schema cannot carry.
 *
 * Enforced only by decoding (dropped from the JSON Schema, checked when the answer is decoded):
 * string `minLength`/`maxLength`/`length` and other formats; a second `pattern` or `multipleOf` on the
 * same value; a `pattern` whose RegExp has the `i`, `m`, `s` or `y` flag (JSON Schema patterns have
 * none); every custom `Schema.filter`; refinements on unions, structs and `$ref`s; refinements of a
 * transformed value (e.g. a bound on `NumberFromString`); everything on the decoded side of a
 * transformation (`Schema.Date` is sent as a plain string). A `jsonSchema` annotation is honoured only
 * on refinements, and only for the keywords above. A pattern is sent as its JavaScript source, unchecked
 * against the provider's regex dialect.
 *
 * Cannot be expressed, so `make` throws `UnsupportedSchema` naming the path (`orders[].sku`): a root
 * that is not an object (a union, an array, a `$ref`); records and index signatures (free keys);
 * tuples (fixed elements, several rest elements); `unknown`/`any`/`object`; `undefined`/`void` outside
 * an optional field; symbols, bigints and declarations (class instances, `DateFromSelf`: send their
 * encoded form instead).
 *
 * Size limits, checked on the final JSON Schema and configurable per call of `make` (`limits`):
 * nesting depth 10, 5,000 object properties in all, 1,000 enum values in all, 120,000 characters of
 * property names, definition names, enum and const values, and 15,000 characters for one string enum
 * with more than 250 values (OpenAI Structured Outputs guide, current text; the earlier text said
 * 5 levels, 100 properties, 500 enum values and 15,000 / 7,500 characters, and some models still
 * answered "6 levels of nesting exceeds limit of 5" in 2025: pass `limits: { maxDepth: 5 }` for them).
 * Depth is counted as openai-java's `JsonSchemaValidator` counts it: the root is level 0 and each
 * property, array item, `anyOf` branch and `$defs` entry is one level deeper; a `$ref` is not followed.
 */
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import type * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as AST from "effect/SchemaAST"
import { firstIssue } from "./internal/parseIssue.js"
import * as PlainDecode from "./internal/plainDecode.js"
import * as StrictRules from "./internal/strictRules.js"
import type * as LlmRequest from "./LlmRequest.js"

/** A schema that cannot be sent in strict mode; `path` names where (`orders[].sku`, or `(root)`). */
export class UnsupportedSchema
  extends Schema.TaggedError<UnsupportedSchema>("@keel/core/StrictSchema/UnsupportedSchema")("UnsupportedSchema", {
    path: Schema.String,
    reason: Schema.String
  })
{
  override get message() {
    return `Cannot express the schema in strict JSON Schema at ${this.path}: ${this.reason}`
  }
}

/** Why a model's output does not decode: the reason and the dotted path of the first problem ("" is the root). */
export interface Problem {
  readonly reason: string
  readonly path: string
}

/** OpenAI's documented size limits for one strict schema (see the module header for the sources). */
export type Limits = StrictRules.Limits

export const defaultLimits: Limits = StrictRules.defaultLimits

/** The string formats strict mode accepts. */
export const formats: ReadonlySet<string> = new Set([
  "date-time",
  "time",
  "date",
  "duration",
  "email",
  "hostname",
  "ipv4",
  "ipv6",
  "uuid"
])

export interface StrictSchema<A, I = A> {
  readonly schema: Schema.Schema<A, I, never>
  /** The strict JSON Schema to send. */
  readonly jsonSchema: LlmRequest.JsonSchema
  /** The schema of the wire form: what the model writes (optional fields as `null`) ⇄ `A`. */
  readonly wire: Schema.Schema<A, unknown, never>
  /** Decodes a parsed JSON value of the wire form; excess properties are an error. */
  readonly decodeUnknown: (u: unknown) => Either.Either<A, Problem>
  /** Parses and decodes the model's text. */
  readonly decodeJson: (text: string) => Either.Either<A, Problem>
  /** Encodes a value to the wire form (a JSON value), e.g. for examples and tests. */
  readonly encode: (a: A) => Either.Either<unknown, Problem>
}

export interface Options {
  readonly limits?: Partial<Limits>
}

type Json = { [key: string]: unknown }

class Unsupported {
  constructor(readonly path: ReadonlyArray<string>, readonly reason: string) {}
}

const formatPath = (path: ReadonlyArray<string>): string => {
  let out = ""
  for (const segment of path) {
    out = segment === "[]" ? `${out}[]` : out === "" ? segment : `${out}.${segment}`
  }
  return out === "" ? "(root)" : out
}

const nullJson: Json = { type: "null" }

const defaultDescriptions: ReadonlyMap<string, unknown> = new Map<string, unknown>([
  ["StringKeyword", AST.getDescriptionAnnotation(AST.stringKeyword).pipe(Option.getOrUndefined)],
  ["NumberKeyword", AST.getDescriptionAnnotation(AST.numberKeyword).pipe(Option.getOrUndefined)],
  ["BooleanKeyword", AST.getDescriptionAnnotation(AST.booleanKeyword).pipe(Option.getOrUndefined)]
])

/** A node's own description: keywords' built-in ones ("a string") are not worth sending. */
const ownDescription = (ast: AST.Annotated & { readonly _tag?: string }): string | undefined => {
  const description = Option.getOrUndefined(AST.getDescriptionAnnotation(ast))
  return description !== undefined && ast._tag !== undefined && defaultDescriptions.get(ast._tag) === description
    ? undefined
    : description
}

const describe = (json: Json, description: string | undefined): Json =>
  description === undefined ? json : { ...json, description }

const admitsNull = (json: Json): boolean =>
  json.type === "null" || (Array.isArray(json.anyOf) && json.anyOf.some((branch: Json) => branch.type === "null"))

const withoutUndefined = (ast: AST.AST): AST.AST =>
  AST.isUnion(ast) ? AST.Union.make(ast.types.filter((member) => !AST.isUndefinedKeyword(member))) : ast

/** Whether a refinement constrains a transformed (decoded) value rather than what the model writes. */
const refinesTransformation = (ast: AST.Refinement): boolean => {
  let from = ast.from
  while (AST.isRefinement(from)) from = from.from
  return AST.isTransformation(from)
}

/**
 * A `Schema.pattern` whose RegExp has flags that change what it matches (`i`, `m`, `s`, `y`): JSON
 * Schema's `pattern` has no flags, so sending the bare source would ask for something else.
 */
const hasSemanticFlags = (ast: AST.Refinement): boolean => {
  const pattern = ast.annotations[Schema.PatternSchemaId] as { readonly regex?: unknown } | undefined
  return pattern?.regex instanceof RegExp && /[imsy]/.test(pattern.regex.flags)
}

/** Adds one refinement keyword where strict mode supports it; anything else stays a decode-only check. */
const applyKeyword = (out: Json, key: string, value: unknown): void => {
  const type = out.type
  if (type === "string") {
    if (key === "pattern" && typeof value === "string" && out.pattern === undefined) out.pattern = value
    if (key === "format" && typeof value === "string" && formats.has(value) && out.format === undefined) {
      out.format = value
    }
  } else if (type === "number" || type === "integer") {
    if (typeof value !== "number") {
      if (key === "type" && value === "integer") out.type = "integer"
      return
    }
    switch (key) {
      case "minimum":
      case "exclusiveMinimum":
        out[key] = typeof out[key] === "number" ? Math.max(out[key] as number, value) : value
        break
      case "maximum":
      case "exclusiveMaximum":
        out[key] = typeof out[key] === "number" ? Math.min(out[key] as number, value) : value
        break
      case "multipleOf":
        if (out.multipleOf === undefined) out.multipleOf = value
        break
    }
  } else if (type === "array" && typeof value === "number") {
    if (key === "minItems") out.minItems = typeof out.minItems === "number" ? Math.max(out.minItems, value) : value
    if (key === "maxItems") out.maxItems = typeof out.maxItems === "number" ? Math.min(out.maxItems, value) : value
  }
}

const sanitizeName = (name: string): string => name.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 64) || "Def"

interface Context {
  readonly roots: ReadonlySet<AST.AST>
  readonly defs: Map<AST.AST, string>
  readonly names: Set<string>
  readonly $defs: Record<string, Json>
}

const literalType = (value: AST.LiteralValue, path: ReadonlyArray<string>): string => {
  switch (typeof value) {
    case "string":
      return "string"
    case "number":
      if (!Number.isFinite(value)) throw new Unsupported(path, `the literal ${value} has no JSON form`)
      return "number"
    case "boolean":
      return "boolean"
    default:
      throw new Unsupported(path, "a bigint literal has no JSON form")
  }
}

/** Literal values grouped into one `enum` per JSON type in first-seen order; `null` is reported apart. */
const enumBranches = (
  values: ReadonlyArray<AST.LiteralValue>,
  path: ReadonlyArray<string>
): { readonly branches: Array<Json>; readonly hasNull: boolean } => {
  const groups = new Map<string, Array<unknown>>()
  let hasNull = false
  for (const value of values) {
    if (value === null) {
      hasNull = true
      continue
    }
    const type = literalType(value, path)
    const group = groups.get(type)
    if (group === undefined) groups.set(type, [value])
    else if (!group.includes(value)) group.push(value)
  }
  const branches: Array<Json> = []
  for (const [type, group] of groups) branches.push({ type, enum: group })
  return { branches, hasNull }
}

const anyOf = (branches: ReadonlyArray<Json>, path: ReadonlyArray<string>): Json => {
  const flat: Array<Json> = []
  for (const branch of branches) {
    if (Array.isArray(branch.anyOf) && Object.keys(branch).length === 1) flat.push(...(branch.anyOf as Array<Json>))
    else flat.push(branch)
  }
  if (flat.length === 0) throw new Unsupported(path, "a union with no members (never) cannot be expressed")
  return flat.length === 1 ? flat[0]! : { anyOf: flat }
}

/** A union's JSON: its literals as enums first, then the other members, then `null` if admitted. */
const literals = (
  values: ReadonlyArray<AST.LiteralValue>,
  others: ReadonlyArray<Json>,
  path: ReadonlyArray<string>
): Json => {
  const { branches, hasNull } = enumBranches(values, path)
  return anyOf(hasNull ? [...branches, ...others, nullJson] : [...branches, ...others], path)
}

const go = (ast: AST.AST, path: ReadonlyArray<string>, ctx: Context): Json => {
  switch (ast._tag) {
    case "StringKeyword":
      return describe({ type: "string" }, ownDescription(ast))
    case "NumberKeyword":
      return describe({ type: "number" }, ownDescription(ast))
    case "BooleanKeyword":
      return describe({ type: "boolean" }, ownDescription(ast))
    case "Literal":
      return describe(literals([ast.literal], [], path), ownDescription(ast))
    case "Enums":
      return describe(literals(ast.enums.map(([, value]) => value), [], path), ownDescription(ast))
    case "TemplateLiteral":
      return describe({ type: "string", pattern: AST.getTemplateLiteralRegExp(ast).source }, ownDescription(ast))
    case "Union": {
      const values: Array<AST.LiteralValue> = []
      const others: Array<Json> = []
      for (const member of ast.types) {
        if (AST.isLiteral(member) && ownDescription(member) === undefined) values.push(member.literal)
        else others.push(go(member, path, ctx))
      }
      return describe(literals(values, others, path), ownDescription(ast))
    }
    case "TupleType":
      return array(ast, path, ctx)
    case "TypeLiteral":
      return object(ast, path, ctx)
    case "Refinement": {
      const base = go(ast.from, path, ctx)
      const out: Json = { ...base }
      if (!refinesTransformation(ast)) {
        const annotation = AST.getJSONSchemaAnnotation(ast)
        if (Option.isSome(annotation)) {
          const flagged = hasSemanticFlags(ast)
          for (const [key, value] of Object.entries(annotation.value)) {
            if (!(key === "pattern" && flagged)) applyKeyword(out, key, value)
          }
        }
      }
      const description = ownDescription(ast)
      if (description !== undefined) out.description = description
      return out
    }
    case "Transformation":
      return describe(withPropertyDescriptions(go(ast.from, path, ctx), ast.to), ownDescription(ast))
    case "Suspend":
      return reference(ast, path, ctx)
    case "Declaration":
      throw new Unsupported(
        path,
        `${String(ast)} is a declared type with no JSON form: use a schema with a JSON encoding ` +
          "(e.g. Schema.Date rather than Schema.DateFromSelf, a Schema.Class rather than a Schema.declare)"
      )
    case "UndefinedKeyword":
    case "VoidKeyword":
      throw new Unsupported(path, "undefined has no JSON form: make the field optional or use Schema.NullOr")
    case "NeverKeyword":
      throw new Unsupported(path, "never cannot be expressed")
    case "UnknownKeyword":
    case "AnyKeyword":
    case "ObjectKeyword":
      throw new Unsupported(path, `${String(ast)} cannot be expressed in strict mode: give the value a schema`)
    case "SymbolKeyword":
    case "UniqueSymbol":
      throw new Unsupported(path, "symbols have no JSON form")
    case "BigIntKeyword":
      throw new Unsupported(path, "bigint has no JSON form: use Schema.BigInt (sent as a string)")
  }
}

/**
 * A struct with defaults (`optionalWith`) is a transformation between two structs, and the
 * descriptions of its fields live on the decoded side: carry them over to the sent side.
 */
const withPropertyDescriptions = (json: Json, to: AST.AST): Json => {
  if (json.type !== "object" || !AST.isTypeLiteral(to)) return json
  const properties: Json = { ...(json.properties as Json) }
  let changed = false
  for (const ps of to.propertySignatures) {
    const description = Option.getOrUndefined(AST.getDescriptionAnnotation(ps))
    const property = typeof ps.name === "string" ? properties[ps.name] as Json | undefined : undefined
    if (description !== undefined && property !== undefined && property.description === undefined) {
      properties[ps.name as string] = { ...property, description }
      changed = true
    }
  }
  return changed ? { ...json, properties } : json
}

const array = (ast: AST.TupleType, path: ReadonlyArray<string>, ctx: Context): Json => {
  const [rest, ...trailing] = ast.rest
  if (rest === undefined) {
    throw new Unsupported(path, "tuples cannot be expressed in strict mode: use a struct or an array")
  }
  if (trailing.length > 0) {
    throw new Unsupported(path, "a tuple with elements after its rest cannot be expressed in strict mode")
  }
  // `NonEmptyArray(X)` is `[X, ...X[]]`: leading elements of the same schema become `minItems`.
  for (const element of ast.elements) {
    if (element.isOptional || element.type !== rest.type) {
      throw new Unsupported(path, "a tuple with typed leading elements cannot be expressed in strict mode")
    }
  }
  const out: Json = { type: "array", items: go(rest.type, [...path, "[]"], ctx) }
  if (ast.elements.length > 0) out.minItems = ast.elements.length
  return describe(out, ownDescription(ast))
}

const object = (ast: AST.TypeLiteral, path: ReadonlyArray<string>, ctx: Context): Json => {
  if (ast.indexSignatures.length > 0) {
    throw new Unsupported(
      path,
      "a record or index signature (free keys) cannot be expressed in strict mode: every key must be listed; " +
        "use a struct, or an array of key/value structs"
    )
  }
  const properties: Json = {}
  const required: Array<string> = []
  for (const ps of ast.propertySignatures) {
    if (typeof ps.name !== "string") {
      throw new Unsupported([...path, String(ps.name)], "only string keys can be expressed")
    }
    const at = [...path, ps.name]
    let json = go(ps.isOptional ? withoutUndefined(ps.type) : ps.type, at, ctx)
    if (ps.isOptional && !admitsNull(json)) json = { anyOf: [json, nullJson] }
    properties[ps.name] = describe(json, Option.getOrUndefined(AST.getDescriptionAnnotation(ps)))
    required.push(ps.name)
  }
  return describe(
    { type: "object", properties, required, additionalProperties: false },
    ownDescription(ast)
  )
}

const reference = (ast: AST.Suspend, path: ReadonlyArray<string>, ctx: Context): Json => {
  const target = ast.f()
  if (ctx.roots.has(target)) return { $ref: "#" }
  let name = ctx.defs.get(target)
  if (name === undefined) {
    const base = sanitizeName(
      Option.getOrUndefined(AST.getIdentifierAnnotation(ast)) ??
        Option.getOrUndefined(AST.getIdentifierAnnotation(target)) ?? "Def"
    )
    name = base
    for (let n = 2; ctx.names.has(name); n++) name = `${base}${n}`
    ctx.names.add(name)
    ctx.defs.set(target, name)
    ctx.$defs[name] = go(target, path, ctx)
  }
  return describe({ $ref: `#/$defs/${name}` }, ownDescription(ast))
}

/**
 * A path inside the JSON Schema (`properties.a.items`) as a path in the value (`a[]`): `anyOf` branches are not a
 * step, and a `$defs` entry is named by itself.
 */
const valuePath = (path: ReadonlyArray<string>): Array<string> => {
  const out: Array<string> = []
  for (let i = 0; i < path.length; i++) {
    switch (path[i]) {
      case "properties":
      case "$defs":
      case "definitions":
        out.push(path[++i]!)
        break
      case "items":
        out.push("[]")
        break
      case "anyOf":
        i++
        break
    }
  }
  return out
}

/** Holds the final JSON Schema to the strict rules and size limits (`internal/strictRules`). */
const checkRules = (root: Json, limits: Limits): void => {
  const violation = StrictRules.firstViolation(root, limits)
  if (violation !== undefined) throw new Unsupported(valuePath(violation.path), violation.reason)
}

const toJsonSchema = (root: AST.AST, limits: Limits): Json => {
  const roots = new Set<AST.AST>([root])
  let unwrapped = root
  while (AST.isSuspend(unwrapped)) {
    unwrapped = unwrapped.f()
    roots.add(unwrapped)
  }
  const ctx: Context = { roots, defs: new Map(), names: new Set(), $defs: {} }
  const json = go(unwrapped, [], ctx)
  if (json.type !== "object") {
    throw new Unsupported(
      [],
      json.anyOf !== undefined
        ? "the root must be an object, and a union at the root cannot be expressed: wrap it in a struct field"
        : "the root must be an object: wrap the value in a struct field"
    )
  }
  const out = Object.keys(ctx.$defs).length === 0 ? json : { ...json, $defs: ctx.$defs }
  checkRules(out, limits)
  return out
}

// ---------------------------------------------------------------------------------------------------
// The wire form: the same Schema, with every optional property made required and nullable on the
// encoded side (`null` ⇄ absent), so decoding what the model wrote yields exactly the Schema's type.
// ---------------------------------------------------------------------------------------------------

const nullLiteral = new AST.Literal(null)

interface Wire {
  readonly memo: Map<AST.AST, AST.AST>
  /**
   * For the decoder only: the decoded side of a struct with optional fields is not checked again
   * (its fields were fully decoded on the way in), which makes decoding about twice as fast. The
   * schema used to encode keeps the full checks, which unions need to pick their member.
   */
  readonly decodeOnly: boolean
}

const toWire = (ast: AST.AST, wire: Wire): AST.AST => {
  const cached = wire.memo.get(ast)
  if (cached !== undefined) return cached
  let out: AST.AST = ast
  switch (ast._tag) {
    case "TypeLiteral":
      out = wireObject(ast, wire)
      break
    case "Union": {
      const types = ast.types.map((member) => toWire(member, wire))
      if (types.some((member, i) => member !== ast.types[i])) out = AST.Union.make(types, ast.annotations)
      break
    }
    case "TupleType": {
      const elements = ast.elements.map((e) => {
        const type = toWire(e.type, wire)
        return type === e.type ? e : new AST.OptionalType(type, e.isOptional, e.annotations)
      })
      const rest = ast.rest.map((r) => {
        const type = toWire(r.type, wire)
        return type === r.type ? r : new AST.Type(type, r.annotations)
      })
      if (elements.some((e, i) => e !== ast.elements[i]) || rest.some((r, i) => r !== ast.rest[i])) {
        out = new AST.TupleType(elements, rest, ast.isReadonly, ast.annotations)
      }
      break
    }
    case "Refinement": {
      const from = toWire(ast.from, wire)
      if (from !== ast.from) out = new AST.Refinement(from, ast.filter, ast.annotations)
      break
    }
    case "Transformation": {
      const from = toWire(ast.from, wire)
      if (from !== ast.from) out = new AST.Transformation(from, ast.to, ast.transformation, ast.annotations)
      break
    }
    case "Suspend":
      // Lazy, like the original: the target's rewrite meets this node again and finds it in `memo`.
      out = new AST.Suspend(() => toWire(ast.f(), wire), ast.annotations)
      break
  }
  wire.memo.set(ast, out)
  return out
}

const nullFromAbsent = (o: Option.Option<unknown>): Option.Option<unknown> =>
  Option.isNone(o) || o.value === undefined ? Option.some(null) : o

const wireObject = (ast: AST.TypeLiteral, wire: Wire): AST.AST => {
  let changed = false
  const from = ast.propertySignatures.map((ps) => {
    if (ps.isOptional) {
      changed = true
      const type = AST.Union.make([toWire(withoutUndefined(ps.type), wire), nullLiteral])
      return new AST.PropertySignature(ps.name, type, false, ps.isReadonly, ps.annotations)
    }
    const type = toWire(ps.type, wire)
    if (type === ps.type) return ps
    changed = true
    return new AST.PropertySignature(ps.name, type, false, ps.isReadonly, ps.annotations)
  })
  if (!changed) return ast
  const optional = ast.propertySignatures.filter((ps) => ps.isOptional)
  if (optional.length === 0) return new AST.TypeLiteral(from, ast.indexSignatures, ast.annotations)
  const to = ast.propertySignatures.map((ps) =>
    new AST.PropertySignature(
      ps.name,
      wire.decodeOnly ? AST.anyKeyword : AST.typeAST(ps.type),
      ps.isOptional,
      ps.isReadonly
    )
  )
  return new AST.Transformation(
    new AST.TypeLiteral(from, []),
    new AST.TypeLiteral(to, [], ast.annotations),
    new AST.TypeLiteralTransformation(
      optional.map((ps) =>
        new AST.PropertySignatureTransformation(ps.name, ps.name, PlainDecode.absentFromNull, nullFromAbsent)
      )
    )
  )
}

const problem = (error: ParseResult.ParseError): Problem => {
  const { path, reason } = firstIssue(error)
  return { path, reason }
}

const build = <A, I>(schema: Schema.Schema<A, I, never>, limits: Limits): StrictSchema<A, I> => {
  const jsonSchema = toJsonSchema(schema.ast, limits)
  const wire = Schema.make<A, unknown, never>(toWire(schema.ast, { memo: new Map(), decodeOnly: false }))
  const decoder = Schema.make<A, unknown, never>(toWire(schema.ast, { memo: new Map(), decodeOnly: true }))
  const decode = Schema.decodeUnknownEither(decoder, PlainDecode.parseOptions)
  const encode = Schema.encodeEither(wire, { errors: "first" })
  const plain = PlainDecode.compile(decoder.ast)
  const decodeUnknown = (u: unknown): Either.Either<A, Problem> => {
    const value = plain(u)
    return value === PlainDecode.failed ? Either.mapLeft(decode(u), problem) : Either.right(value as A)
  }
  return {
    schema,
    jsonSchema,
    wire,
    decodeUnknown,
    decodeJson: (text) => {
      let parsed: unknown
      try {
        parsed = JSON.parse(text)
      } catch (error) {
        return Either.left({ path: "", reason: `not valid JSON: ${(error as Error).message}` })
      }
      return decodeUnknown(parsed)
    },
    encode: (a) => Either.mapLeft(encode(a), problem)
  }
}

const cache = new WeakMap<AST.AST, StrictSchema<any, any>>()

/**
 * Converts a Schema once (cached per Schema when no options are given). Throws `UnsupportedSchema`
 * naming the path when strict mode cannot express it: call it where the schema is defined.
 */
export const make = <A, I>(schema: Schema.Schema<A, I, never>, options?: Options): StrictSchema<A, I> =>
  Either.getOrThrowWith(makeEither(schema, options), (error) => error)

/** `make` as an `Either`, for callers that report the failure instead of throwing it. */
export const makeEither = <A, I>(
  schema: Schema.Schema<A, I, never>,
  options?: Options
): Either.Either<StrictSchema<A, I>, UnsupportedSchema> => {
  const cacheable = options?.limits === undefined
  const cached = cacheable ? cache.get(schema.ast) : undefined
  if (cached !== undefined) return Either.right(cached)
  try {
    const out = build(schema, { ...defaultLimits, ...options?.limits })
    if (cacheable) cache.set(schema.ast, out)
    return Either.right(out)
  } catch (error) {
    if (error instanceof Unsupported) {
      return Either.left(new UnsupportedSchema({ path: formatPath(error.path), reason: error.reason }))
    }
    throw error
  }
}
