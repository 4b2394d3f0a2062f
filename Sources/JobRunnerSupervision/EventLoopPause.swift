import JobRunnerCore
import NIOCore
import NIOPosix

extension Pause {
    /// A pause on a timer of the daemon's event loops (SwiftNIO's), for ``Pause/install(_:)``:
    /// unlike `Task.sleep`, it leaves libdispatch's global pool unstarted. Throws
    /// `CancellationError` as soon as the waiting task is cancelled.
    public static func onEventLoop(_ duration: Duration) async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.any()
        let (seconds, attoseconds) = duration.components
        let timer = loop.scheduleTask(in: .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)) {}
        do {
            try await withTaskCancellationHandler {
                try await timer.futureResult.get()
            } onCancel: {
                timer.cancel()
            }
        } catch is EventLoopError {
            throw CancellationError()
        }
    }
}
