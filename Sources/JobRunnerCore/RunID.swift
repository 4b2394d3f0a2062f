import JobRunnerSchedule
import Synchronization

/// A run's identifier: a ULID (26 characters of Crockford base32, time first), so ids sort by
/// start time across restarts and never repeat.
public struct RunID: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    public let rawValue: String

    public init(rawValue: String) {
        self.rawValue = rawValue
    }

    /// An id read from outside (the API, the database, another node): 26 characters of the
    /// alphabet ids are made of, or nothing — so an id can name no path but its own.
    public init?(validating text: some StringProtocol) {
        let bytes = text.utf8
        guard bytes.count == 26, bytes.allSatisfy({ RunIDGenerator.alphabetSet.contains($0) }) else { return nil }
        rawValue = String(text)
    }

    /// Whether `text` can abbreviate ids: 4 to 25 characters of their alphabet.
    public static func isAbbreviation(_ text: some StringProtocol) -> Bool {
        (4..<26).contains(text.utf8.count) && text.utf8.allSatisfy { RunIDGenerator.alphabetSet.contains($0) }
    }

    public var description: String { rawValue }

    public static func < (lhs: RunID, rhs: RunID) -> Bool { lhs.rawValue < rhs.rawValue }

    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// Makes run ids; monotonic within one millisecond so ids made in a burst still sort in order.
public final class RunIDGenerator: Sendable {
    private static let alphabet = Array("0123456789abcdefghjkmnpqrstvwxyz".utf8)
    static let alphabetSet = Set(alphabet)
    private let state = Mutex<(millisecond: Int64, random: (UInt64, UInt16))>((0, (0, 0)))

    public init() {}

    /// A new id for an instant.
    public func next(at now: Timestamp) -> RunID {
        let millisecond = now.microseconds / 1000
        let (ms, random) = state.withLock { state -> (Int64, (UInt64, UInt16)) in
            if millisecond <= state.millisecond {
                // Same millisecond (or the clock went back): increment the random part.
                var (high, low) = state.random
                let (sum, overflow) = high.addingReportingOverflow(1)
                high = sum
                if overflow { low &+= 1 }
                state.random = (high, low)
            } else {
                state.millisecond = millisecond
                state.random = (UInt64.random(in: 0...UInt64.max >> 1), UInt16.random(in: 0...UInt16.max))
            }
            return (state.millisecond, state.random)
        }
        // 48 bits of time, then 80 bits of randomness: 130 bits in 26 characters (top 2 zero).
        var bytes = [UInt8](repeating: 0, count: 26)
        var time = UInt64(max(0, ms))
        for index in stride(from: 9, through: 0, by: -1) {
            bytes[index] = Self.alphabet[Int(time & 31)]
            time >>= 5
        }
        var high = random.0
        var low = UInt64(random.1)
        // 80 random bits: low 16 bits + 64 high bits, 16 characters.
        for index in stride(from: 25, through: 10, by: -1) {
            bytes[index] = Self.alphabet[Int(low & 31)]
            low = (low >> 5) | ((high & 31) << 11)
            high >>= 5
        }
        return RunID(rawValue: String(decoding: bytes, as: UTF8.self))
    }
}
