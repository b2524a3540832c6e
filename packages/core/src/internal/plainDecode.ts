/**
 * The hot path of `StrictSchema`'s decoder: most of what a model writes back is checked and copied by a
 * decoder compiled once from the Schema's AST instead of Effect's parser, which cost about 8 µs for a
 * small object (six fields, an array, a nested object), against about 2.5 µs here. It accepts only what
 * the Schema accepts and builds what the Schema builds (test/StrictSchemaFast.test.ts holds it to that
 * on generated answers); any answer it refuses is decoded again by the Schema, which stays the one source
 * of error messages.
 *
 * Compiled by hand: strings, numbers, booleans, literals, enums, unions (first member that takes the
 * value, as the Schema's own order), arrays, structs without index signatures (excess keys refused),
 * refinements (the Schema's own filter is called) and the wire form's optional fields (`null` → absent,
 * `absentFromNull`). Any other node (a transformation, a declaration, a template literal) is decoded by
 * Effect's parser for that node alone.
 */
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as AST from "effect/SchemaAST"
import { plain } from "./plainRequest.js"

/** What a decoder returns for a value it does not take. */
export const failed: unique symbol = Symbol.for("@keel/core/plainDecode/failed")
export type Decode = (input: unknown) => unknown

/** The wire form's decoding of an optional field: `null` is absent. */
export const absentFromNull = (o: Option.Option<unknown>): Option.Option<unknown> =>
  Option.isSome(o) && o.value === null ? Option.none() : o

/** The options `StrictSchema` decodes with; refinements are called with them. */
export const parseOptions: AST.ParseOptions = { errors: "first", onExcessProperty: "error" }

const byEffect = (ast: AST.AST): Decode => {
  const decode = ParseResult.decodeUnknownEither(Schema.make(ast), parseOptions)
  return (input) => {
    const result = decode(input)
    return result._tag === "Right" ? result.right : failed
  }
}

type Field = {
  readonly name: string
  readonly decode: Decode
  readonly optional: boolean
  readonly nullIsAbsent: boolean
}

const struct = (ast: AST.TypeLiteral, nullIsAbsent: ReadonlySet<string>, memo: Map<AST.AST, Decode>): Decode => {
  if (
    ast.indexSignatures.length > 0 || ast.propertySignatures.length === 0 ||
    ast.propertySignatures.some((ps) => typeof ps.name !== "string" || ps.name === "__proto__")
  ) return byEffect(ast)
  const fields: Array<Field> = ast.propertySignatures.map((ps) => ({
    name: ps.name as string,
    decode: compileNode(ps.type, memo),
    optional: ps.isOptional,
    nullIsAbsent: nullIsAbsent.has(ps.name as string)
  }))
  const names = new Set(fields.map((field) => field.name))
  return (input) => {
    if (!plain(input, names)) return failed
    const out: Record<string, unknown> = {}
    for (const field of fields) {
      if (!Object.prototype.hasOwnProperty.call(input, field.name)) {
        if (field.optional) continue
        return failed
      }
      const value = field.decode(input[field.name])
      if (value === failed) return failed
      if (value === null && field.nullIsAbsent) continue
      out[field.name] = value
    }
    return out
  }
}

/**
 * The wire form's optional fields: a struct whose `null`s decode to absent keys (see `StrictSchema`). Its
 * target side checks the decoded values again (as `any`, or as their own type), which they always pass.
 */
const isWireObject = (
  ast: AST.Transformation
): ast is AST.Transformation & {
  readonly from: AST.TypeLiteral
  readonly transformation: AST.TypeLiteralTransformation
} =>
  AST.isTypeLiteral(ast.from) && AST.isTypeLiteral(ast.to) &&
  AST.isTypeLiteralTransformation(ast.transformation) &&
  ast.transformation.propertySignatureTransformations.every((t) => t.decode === absentFromNull && t.from === t.to)

const compileNode = (ast: AST.AST, memo: Map<AST.AST, Decode>): Decode => {
  const known = memo.get(ast)
  if (known !== undefined) return known
  let decode: Decode
  switch (ast._tag) {
    case "StringKeyword":
      decode = (input) => typeof input === "string" ? input : failed
      break
    case "NumberKeyword":
      decode = (input) => typeof input === "number" ? input : failed
      break
    case "BooleanKeyword":
      decode = (input) => typeof input === "boolean" ? input : failed
      break
    case "Literal": {
      const literal = ast.literal
      decode = typeof literal === "bigint" ? byEffect(ast) : (input) => input === literal ? input : failed
      break
    }
    case "Enums": {
      const values = ast.enums.map(([, value]) => value)
      decode = (input) => values.includes(input as string | number) ? input : failed
      break
    }
    case "Union": {
      const members = ast.types.map((member) => compileNode(member, memo))
      decode = (input) => {
        for (const member of members) {
          const value = member(input)
          if (value !== failed) return value
        }
        return failed
      }
      break
    }
    case "Refinement": {
      const from = compileNode(ast.from, memo)
      const filter = ast.filter
      decode = (input) => {
        const value = from(input)
        return value !== failed && Option.isNone(filter(value, parseOptions, ast)) ? value : failed
      }
      break
    }
    case "TupleType": {
      if (ast.elements.length > 0 || ast.rest.length !== 1) {
        decode = byEffect(ast)
        break
      }
      const element = compileNode(ast.rest[0]!.type, memo)
      decode = (input) => {
        if (!Array.isArray(input)) return failed
        const out: Array<unknown> = []
        for (const item of input) {
          const value = element(item)
          if (value === failed) return failed
          out.push(value)
        }
        return out
      }
      break
    }
    case "TypeLiteral":
      decode = struct(ast, new Set(), memo)
      break
    case "Transformation":
      decode = isWireObject(ast)
        ? struct(
          ast.from,
          new Set(ast.transformation.propertySignatureTransformations.map((t) => t.from as string)),
          memo
        )
        : byEffect(ast)
      break
    case "Suspend": {
      // Compiled on first use: a recursive Schema meets this node again inside its own target.
      let target: Decode | undefined
      decode = (input) => (target ??= compileNode(ast.f(), memo))(input)
      break
    }
    default:
      decode = byEffect(ast)
  }
  memo.set(ast, decode)
  return decode
}

/** The decoder for a Schema's AST; it returns `failed` for what the Schema would refuse, or might. */
export const compile = (ast: AST.AST): Decode => compileNode(ast, new Map())
