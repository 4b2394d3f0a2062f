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
        return router
    }
}
