/** The scoring request every benchmark sends: a system prompt, a job listing, and a strict tool's JSON Schema. */

/** The tool's parameters: integer bounds, an enum, a nullable field, array bounds, a nullable nested object with a pattern. */
export const scoreSchema = {
  type: "object",
  additionalProperties: false,
  required: ["score", "seniority", "remote", "skills", "salary", "summary"],
  properties: {
    score: { type: "integer", minimum: 0, maximum: 100 },
    seniority: { type: "string", enum: ["junior", "mid", "senior", "staff"] },
    remote: { type: ["boolean", "null"] },
    skills: { type: "array", items: { type: "string" }, minItems: 1, maxItems: 5 },
    salary: {
      anyOf: [{
        type: "object",
        additionalProperties: false,
        required: ["min", "max", "currency"],
        properties: {
          min: { type: "number", minimum: 0 },
          max: { type: "number", minimum: 0 },
          currency: { type: "string", pattern: "^[A-Z]{3}$" }
        }
      }, { type: "null" }]
    },
    summary: { type: "string" }
  }
}

export const systemPrompt = "You score job listings for fit with a senior TypeScript engineer. Call the tool."

export const listing =
  "Senior Backend Engineer (TypeScript, Node.js) at Acme Corp, Berlin. We are looking for an engineer with 5+ years of experience building distributed systems, APIs and data pipelines. You will own services end to end, work with Postgres and Redis, and mentor others. Salary 80-100k EUR. Remote friendly."
