import Foundation

/// ANSI colours for outcomes, only on a terminal and never with NO_COLOR.
public struct Colors: Sendable {
    public let enabled: Bool

    public init(enabled: Bool) {
        self.enabled = enabled
    }

    public static var forStandardOutput: Colors {
        Colors(enabled: isatty(1) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"].map(\.isEmpty) != false)
    }

    public func outcome(_ text: String) -> String {
        guard enabled else { return text }
        switch text.split(separator: "(").first.map(String.init) ?? text {
        case "succeeded": return "\u{1B}[32m\(text)\u{1B}[0m"
        case "failed", "timed_out", "signalled", "spawn_failed", "interrupted": return "\u{1B}[31m\(text)\u{1B}[0m"
        case "cancelled", "skipped": return "\u{1B}[33m\(text)\u{1B}[0m"
        case "running", "waiting": return "\u{1B}[34m\(text)\u{1B}[0m"
        default: return text
        }
    }

    /// Red: something an operator must look at.
    public func alert(_ text: String) -> String {
        enabled ? "\u{1B}[31m\(text)\u{1B}[0m" : text
    }

    public func dim(_ text: String) -> String {
        enabled ? "\u{1B}[2m\(text)\u{1B}[0m" : text
    }
}
