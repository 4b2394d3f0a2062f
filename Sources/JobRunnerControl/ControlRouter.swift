import Foundation
import Hummingbird

/// The routes of the control API, mapped onto a ``ControlHandler``.
enum ControlRouter {
    static func make(handler: some ControlHandler) -> Router<ControlRequestContext> {
        let router = Router(context: ControlRequestContext.self)
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
        return router
    }
}
