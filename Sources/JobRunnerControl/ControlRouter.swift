import JobRunnerAPI
import Foundation
import Hummingbird
import Logging

/// The routes of the control API, mapped onto a ``ControlHandler``.
enum ControlRouter {
    static func make(handler: some ControlHandler, metricsOnly: Bool = false) -> Router<ControlRequestContext> {
        let router = Router(context: ControlRequestContext.self)
        router.get("/metrics") { _, _ in
            var buffer = ByteBuffer()
            buffer.writeString(await handler.metrics())
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"], body: .init(byteBuffer: buffer))
        }
        if metricsOnly { return router }
        router.get("/v1/status") { _, _ in
            APIError.jsonResponse(status: .ok, body: await handler.status())
        }
        router.get("/v1/jobs") { _, _ in
            APIError.jsonResponse(status: .ok, body: JobsResponse(jobs: await handler.jobs()))
        }
        router.get("/v1/jobs/{name}") { _, context in
            let name = try context.parameters.require("name")
            guard let job = await handler.job(named: name) else {
                throw APIError.notFound("no job named '\(name)'")
            }
            return APIError.jsonResponse(status: .ok, body: job)
        }
        router.get("/v1/jobs/{name}/next") { request, context in
            let name = try context.parameters.require("name")
            let count = try request.uri.queryParameters.get("count").map { text -> Int in
                guard let value = Int(text), (1...1000).contains(value) else {
                    throw APIError.badRequest("count must be a whole number from 1 to 1000")
                }
                return value
            } ?? 10
            guard let next = await handler.nextFires(job: name, count: count) else {
                throw APIError.notFound("no job named '\(name)'")
            }
            return APIError.jsonResponse(status: .ok, body: next)
        }
        router.get("/v1/runs") { request, _ in
            let query = request.uri.queryParameters
            let limit = try query.get("limit").map { text -> Int in
                guard let value = Int(text), (1...10_000).contains(value) else {
                    throw APIError.badRequest("limit must be a whole number from 1 to 10000")
                }
                return value
            } ?? 50
            let runs = try await handler.runs(RunsQuery(job: query.get("job"), outcome: query.get("outcome"), before: query.get("before"),
                                                         since: query.get("since"), until: query.get("until"), limit: limit))
            return APIError.jsonResponse(status: .ok, body: RunsResponse(runs: runs))
        }
        router.get("/v1/output") { request, _ in
            // Every run's output, live: the same lines as a run's own, with "job" and "run".
            guard isSet(request.uri.queryParameters.get("follow")) else {
                throw APIError.badRequest("GET /v1/output needs follow=true (a run's kept output is at /v1/runs/{id}/output)")
            }
            return streamed(kept: [], more: await handler.followAllOutput())
        }
        router.get("/v1/runs/{id}/output") { request, context in
            let id = try await handler.resolveRun(context.parameters.require("id"))
            let follow = isSet(request.uri.queryParameters.get("follow"))
            guard let output = await handler.followOutput(run: id) else {
                throw APIError.notFound("no run with id '\(id)'")
            }
            let kept = output.kept
            guard follow, let more = output.more else {
                return Response(status: .ok, headers: [.contentType: "application/x-ndjson"],
                                body: .init(contentsOf: kept.map { encodedLine($0) }))
            }
            return streamed(kept: kept, more: more)
        }
        router.get("/v1/runs/{id}") { _, context in
            let id = try await handler.resolveRun(context.parameters.require("id"))
            guard let detail = await handler.run(id: id) else {
                throw APIError.notFound("no run with id '\(id)'")
            }
            return APIError.jsonResponse(status: .ok, body: detail)
        }
        for (action, paused) in [("pause", true), ("resume", false)] {
            router.post("/v1/jobs/{name}/\(action)") { request, context in
                try await authorize(request, context, handler: handler)
                let name = try context.parameters.require("name")
                guard let job = await handler.setPaused(job: name, paused) else {
                    throw APIError.notFound("no job named '\(name)'")
                }
                return APIError.jsonResponse(status: .ok, body: job)
            }
        }
        router.post("/v1/jobs/{name}/run") { request, context in
            try await authorize(request, context, handler: handler)
            let name = try context.parameters.require("name")
            // wait=true: until the fire's final outcome (retries included); wait=first: until
            // its first attempt ends.
            let waitText = request.uri.queryParameters.get("wait").map { String($0) }
            let firstAttempt = waitText == "first"
            let wait = firstAttempt || isSet(waitText)
            let node = request.uri.queryParameters.get("node").flatMap { $0.isEmpty ? nil : String($0) }
            let run = try await handler.runNow(job: name, wait: wait, firstAttempt: firstAttempt, node: node)
            return APIError.jsonResponse(status: wait ? .ok : .accepted, body: run)
        }
        router.post("/v1/reload") { request, context in
            try await authorize(request, context, handler: handler)
            let result = await handler.reload()
            return APIError.jsonResponse(status: .ok, body: result)
        }
        router.post("/v1/runs/{id}/cancel") { request, context in
            try await authorize(request, context, handler: handler)
            let id = try await handler.resolveRun(context.parameters.require("id"))
            let response = try await handler.cancel(run: id)
            return APIError.jsonResponse(status: response.result == "stopping" ? .accepted : .ok, body: response)
        }
        return router
    }

    /// A followed output stream: the kept lines, then each event until the sequence ends. Each
    /// write waits until the client has taken the last one (backpressure), so what a slow client
    /// has not read waits in the follower's bounded buffer; an idle tick writes an empty line.
    static func streamed(kept: [OutputLineInfo], more: any AsyncSequence<OutputEvent, Never> & Sendable) -> Response {
        Response(status: .ok, headers: [.contentType: "application/x-ndjson"], body: .init { writer in
            for line in kept { try await writer.write(encodedLine(line)) }
            for await event in more {
                switch event {
                case .line(let line): try await writer.write(encodedLine(line))
                case .dropped(let count): try await writer.write(encodedLine(DroppedLinesInfo(dropped: count)))
                case .idle: try await writer.write(ByteBuffer(string: "\n"))
                }
            }
            try await writer.finish(nil)
        })
    }

    /// A query flag given as `true`, `1` or `yes`.
    static func isSet(_ value: String?) -> Bool {
        value.map { ["true", "1", "yes"].contains($0) } ?? false
    }

    /// One JSON object and a newline: `{"stream": "stdout", "text": "..."}` or `{"dropped": N}`.
    @Sendable static func encodedLine(_ value: some Encodable) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeBytes((try? APICoding.encoder().encode(value)) ?? Data())
        buffer.writeString("\n")
        return buffer
    }

    /// Mutations need uid 0, the daemon's uid, or an allowed uid or group (SO_PEERCRED).
    static func authorize(_ request: Request, _ context: ControlRequestContext, handler: some ControlHandler) async throws(APIError) {
        guard let peer = await context.peerCredentials() else {
            throw APIError.forbidden("cannot tell who is asking (no peer credentials)")
        }
        guard handler.mayMutate(peer) else {
            context.logger.warning("control request denied", metadata: [
                "peer_uid": .stringConvertible(peer.uid), "peer_pid": .stringConvertible(peer.pid), "method": "\(request.method)", "path": "\(request.uri.path)",
            ])
            throw APIError.forbidden("permission denied: \(request.method) \(request.uri.path) needs root, the daemon's user, or an allowed user or group (daemon.control)")
        }
        // Who asked for a run, a cancel, a pause or a reload is on record.
        context.logger.notice("control request", metadata: [
            "peer_uid": .stringConvertible(peer.uid), "peer_pid": .stringConvertible(peer.pid), "method": "\(request.method)",
            "path": "\(request.uri.path)",
        ])
    }
}
