/**
 * An HTTP receiver on 127.0.0.1 that answers 200 to every request and keeps each request's path and
 * body (gunzipped when sent gzip-encoded): stands in for a Sentry envelope endpoint or an OTLP
 * collector. Closed when the scope closes.
 */
import * as Effect from "effect/Effect"
import * as Http from "node:http"
import type * as Net from "node:net"
import * as Zlib from "node:zlib"

export interface Received {
  readonly path: string
  readonly headers: Http.IncomingHttpHeaders
  readonly body: Buffer
}

export interface Collector {
  readonly port: number
  readonly received: ReadonlyArray<Received>
}

export const collector = Effect.map(
  Effect.acquireRelease(
    Effect.async<{ readonly server: Http.Server; readonly received: Array<Received> }>((resume) => {
      const received: Array<Received> = []
      const server = Http.createServer((req, res) => {
        const chunks: Array<Buffer> = []
        req.on("data", (chunk: Buffer) => chunks.push(chunk))
        req.on("end", () => {
          const raw = Buffer.concat(chunks)
          received.push({
            path: req.url ?? "",
            headers: req.headers,
            body: req.headers["content-encoding"] === "gzip" ? Zlib.gunzipSync(raw) : raw
          })
          res.writeHead(200, { "content-type": "application/json" }).end("{}")
        })
      })
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ server, received })))
    }),
    ({ server }) =>
      Effect.async<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  ),
  ({ received, server }): Collector => ({ port: (server.address() as Net.AddressInfo).port, received })
)
