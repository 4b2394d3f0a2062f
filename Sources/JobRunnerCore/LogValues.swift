import JobRunnerSchedule
import Logging

/// Typed log values: a JSON log writes them as numbers, a text log as plain decimals.
extension Logger.MetadataValue {
    /// A duration as seconds with up to six decimals (`0.005204`, `7.006857`, `30`).
    public static func seconds(_ duration: Duration) -> Logger.MetadataValue {
        .stringConvertible(Seconds(duration))
    }

    /// A whole number.
    public static func number(_ value: some BinaryInteger & Sendable) -> Logger.MetadataValue {
        .stringConvertible(Int64(value))
    }
}

/// A duration in seconds, for logs.
public struct Seconds: CustomStringConvertible, Sendable {
    public let microseconds: Int64

    public init(_ duration: Duration) {
        microseconds = duration.wholeMicroseconds
    }

    public var value: Double { Double(microseconds) / 1_000_000 }

    public var description: String {
        let sign = microseconds < 0 ? "-" : ""
        let magnitude = microseconds.magnitude
        let whole = magnitude / 1_000_000
        var fraction = String(magnitude % 1_000_000)
        guard fraction != "0" else { return sign + String(whole) }
        fraction = String(repeating: "0", count: 6 - fraction.count) + fraction
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return sign + String(whole) + "." + fraction
    }
}
