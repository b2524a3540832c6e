/**
 * Servers on 127.0.0.1 for the scope of a test: `http` answers with a Node request handler, `raw` hands each
 * TCP connection to a function (for answers no HTTP library would send: a body cut mid-way). Both give the
 * base URL (`http://127.0.0.1:<port>/v1`) and record the requests' method, path, headers and body.
 */
import * as Effect from "effect/Effect"
import * as Http from "node:http"
import type * as Net from "node:net"
import * as NetServer from "node:net"

export interface Seen {
  readonly method: string
  readonly path: string
  readonly headers: Http.IncomingHttpHeaders
  readonly body: string
}

const listen = <S extends Net.Server>(server: S) =>
  Effect.acquireRelease(
    Effect.async<S>((resume) => {
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (s) =>
      Effect.async<void>((resume) => {
        if (s instanceof Http.Server) s.closeAllConnections()
        s.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map((s) => `http://127.0.0.1:${(s.address() as Net.AddressInfo).port}/v1`))

/** An HTTP server: `handler` answers each request once its body has arrived. */
export const http = (handler: (seen: Seen, res: Http.ServerResponse) => void) => {
  const requests: Array<Seen> = []
  return Effect.map(
    listen(Http.createServer((req, res) => {
      let body = ""
      req.on("data", (chunk) => (body += chunk))
      req.on("end", () => {
        const seen: Seen = { method: req.method ?? "", path: req.url ?? "", headers: req.headers, body }
        requests.push(seen)
        handler(seen, res)
      })
    })),
    (url) => ({ url, requests })
  )
}

/** A TCP server: `onConnection` gets each socket and what it has received so far once a request's headers are in. */
export const raw = (onRequest: (socket: Net.Socket) => void) =>
  listen(NetServer.createServer((socket) => {
    let received = ""
    socket.on("data", (chunk) => {
      const before = received
      received += chunk.toString("latin1")
      if (!before.includes("\r\n\r\n") && received.includes("\r\n\r\n")) onRequest(socket)
    })
    socket.on("error", () => {})
  }))

/** Answers 200 with `content-length` of the whole `body`, sends the first half, then resets the connection. */
export const cutMidBody = (body: string, headers: Record<string, string> = {}) => (socket: Net.Socket) => {
  const half = body.slice(0, Math.floor(body.length / 2))
  const head = [
    "HTTP/1.1 200 OK",
    "content-type: application/json",
    `content-length: ${Buffer.byteLength(body)}`,
    ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`)
  ].join("\r\n")
  socket.write(`${head}\r\n\r\n${half}`, () => setTimeout(() => socket.resetAndDestroy(), 5))
}
