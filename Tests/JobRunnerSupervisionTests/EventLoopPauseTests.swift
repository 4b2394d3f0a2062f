import JobRunnerCore
import JobRunnerSupervision
import Testing

/// The daemon's pause, on its event loops' timers: it lasts its duration, and a cancelled one
/// ends at once with `CancellationError`.
@Suite(.timeLimit(.minutes(1))) struct EventLoopPauseTests {
    @Test func aPauseLastsItsDuration() async throws {
        let start = ContinuousClock.now
        try await Pause.onEventLoop(.milliseconds(80))
        let took = ContinuousClock.now - start
        #expect(took >= .milliseconds(80))
        #expect(took < .seconds(5))
    }

    @Test func aCancelledPauseEndsAtOnceWithCancellationError() async throws {
        let pause = Task { () -> (any Error)? in
            do {
                try await Pause.onEventLoop(.seconds(600))
                return nil
            } catch {
                return error
            }
        }
        let start = ContinuousClock.now
        pause.cancel()
        let error = await pause.value
        #expect(error is CancellationError, "\(String(describing: error))")
        #expect(ContinuousClock.now - start < .seconds(5))
    }

    @Test func aPauseInATaskCancelledBeforeItStartsEndsAtOnce() async throws {
        let pause = Task { () -> (any Error)? in
            withUnsafeCurrentTask { $0?.cancel() }
            do {
                try await Pause.onEventLoop(.seconds(600))
                return nil
            } catch {
                return error
            }
        }
        #expect(await pause.value is CancellationError)
    }
}
