/** The first issue of a Schema parse error as a dotted path and its message, for errors that name a field. */
import * as ParseResult from "effect/ParseResult"

export const firstIssue = (error: ParseResult.ParseError): { readonly path: string; readonly reason: string } => {
  const [issue] = ParseResult.ArrayFormatter.formatErrorSync(error)
  return issue === undefined
    ? { path: "", reason: error.message }
    : { path: issue.path.map(String).join("."), reason: issue.message }
}
