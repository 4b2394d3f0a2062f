/// The rules of one time zone, read from a TZif file of the system's zone database
/// (RFC 8536): the list of past transitions plus the POSIX TZ rule that extends it forever.
///
/// Conversion from UTC to local time is exact. Conversion from local to UTC reports the two
/// special cases DST creates: a local time that happens twice (clocks go back) and one that never
/// happens (clocks go forward), so schedule code can apply its own rule to each.
public struct TimeZoneRules: Sendable, Hashable, CustomStringConvertible {
    /// One local-time type of the zone: its offset east of UTC and whether it is daylight time.
    public struct LocalTimeType: Sendable, Hashable {
        public var utcOffset: Int
        public var isDaylightTime: Bool
        public var abbreviation: String
    }

    /// A change of offset at an instant.
    public struct Transition: Sendable, Hashable {
        /// The instant (seconds since the epoch, UTC) from which `offsetAfter` applies.
        public var at: Int64
        public var offsetBefore: Int
        public var offsetAfter: Int
    }

    /// How a wall-clock time maps onto instants in this zone.
    public enum Resolution: Sendable, Hashable {
        /// The local time happens exactly once.
        case unique(Int64)
        /// The local time happens twice (clocks went back): first and second occurrence.
        case repeated(first: Int64, second: Int64)
        /// The local time never happens (clocks went forward): the instant the gap ends.
        case skipped(gapEnd: Int64)
    }

    /// The zone's values, held once however many jobs keep the zone: a job holds one reference
    /// (8 bytes) where the values inline took 168.
    private final class Storage: Sendable, Hashable {
        let identifier: String
        let transitionTimes: [Int64]
        let transitionTypeIndices: [UInt8]
        let types: [LocalTimeType]
        let footer: PosixTimeZone?

        init(identifier: String, transitionTimes: [Int64], transitionTypeIndices: [UInt8], types: [LocalTimeType],
             footer: PosixTimeZone?) {
            self.identifier = identifier
            self.transitionTimes = transitionTimes
            self.transitionTypeIndices = transitionTypeIndices
            self.types = types
            self.footer = footer
        }

        static func == (lhs: Storage, rhs: Storage) -> Bool {
            lhs === rhs || (lhs.identifier == rhs.identifier && lhs.transitionTimes == rhs.transitionTimes
                && lhs.transitionTypeIndices == rhs.transitionTypeIndices && lhs.types == rhs.types && lhs.footer == rhs.footer)
        }

        func hash(into hasher: inout Hasher) {
            hasher.combine(identifier)
            hasher.combine(transitionTimes)
            hasher.combine(types)
        }
    }

    private let storage: Storage

    /// The zone's name, e.g. `Europe/Berlin` or `UTC`.
    public var identifier: String { storage.identifier }
    var transitionTimes: [Int64] { storage.transitionTimes }
    var transitionTypeIndices: [UInt8] { storage.transitionTypeIndices }
    var types: [LocalTimeType] { storage.types }
    var footer: PosixTimeZone? { storage.footer }

    /// Coordinated Universal Time.
    public static let utc = TimeZoneRules(fixedOffset: 0, identifier: "UTC")

    /// A zone with one fixed offset east of UTC and no transitions.
    public init(fixedOffset seconds: Int, identifier: String) {
        storage = Storage(identifier: identifier, transitionTimes: [], transitionTypeIndices: [],
                          types: [LocalTimeType(utcOffset: seconds, isDaylightTime: false, abbreviation: identifier)], footer: nil)
    }

    /// A zone defined by a POSIX TZ string only, e.g. `CET-1CEST,M3.5.0,M10.5.0/3`.
    public init(posixRule: String, identifier: String? = nil) throws(TimeZoneError) {
        guard let rule = PosixTimeZone(posixRule) else {
            throw TimeZoneError(message: "'\(posixRule)' is not a valid POSIX TZ rule")
        }
        storage = Storage(identifier: identifier ?? posixRule, transitionTimes: [], transitionTypeIndices: [],
                          types: [LocalTimeType(utcOffset: rule.standardOffset, isDaylightTime: false, abbreviation: rule.standardName)],
                          footer: rule)
    }

    /// Parses the contents of a TZif file (versions 1–4).
    public init(tzif bytes: [UInt8], identifier: String) throws(TimeZoneError) {
        var reader = TZifReader(bytes: bytes)
        let first = try reader.header()
        var parsed = try reader.block(header: first, timeSize: 4)
        if first.version >= 2 {
            let second = try reader.header()
            parsed = try reader.block(header: second, timeSize: 8)
            parsed.footer = reader.footer()
        }
        guard !parsed.types.isEmpty else {
            throw TimeZoneError(message: "zone '\(identifier)' has no local time types")
        }
        storage = Storage(identifier: identifier, transitionTimes: parsed.times, transitionTypeIndices: parsed.typeIndices,
                          types: parsed.types, footer: parsed.footer.flatMap { $0.isEmpty ? nil : PosixTimeZone($0) })
    }

    public var description: String { identifier }

    // MARK: - UTC → local

    /// The offset east of UTC, in seconds, in force at an instant.
    public func offset(at seconds: Int64) -> Int {
        localTimeType(at: seconds).utcOffset
    }

    /// The local-time type in force at an instant.
    public func localTimeType(at seconds: Int64) -> LocalTimeType {
        if let last = transitionTimes.last, seconds >= last, let footer {
            return footer.localTimeType(at: seconds)
        }
        if transitionTimes.isEmpty {
            if let footer { return footer.localTimeType(at: seconds) }
            return types[0]
        }
        // The last transition at or before `seconds`.
        var low = 0
        var high = transitionTimes.count
        while low < high {
            let mid = (low + high) / 2
            if transitionTimes[mid] <= seconds { low = mid + 1 } else { high = mid }
        }
        if low == 0 { return types[0] }
        return types[Int(transitionTypeIndices[low - 1])]
    }

    /// The wall-clock time at an instant.
    public func localDateTime(at timestamp: Timestamp) -> LocalDateTime {
        let offset = offset(at: timestamp.seconds)
        return LocalDateTime(secondsSinceEpoch: timestamp.seconds + Int64(offset),
                             microsecond: Int(timestamp.subsecondMicroseconds))
    }

    /// RFC 3339 text of an instant with this zone's offset at that instant.
    public func rfc3339(_ timestamp: Timestamp) -> String {
        timestamp.rfc3339(offsetSeconds: offset(at: timestamp.seconds))
    }

    // MARK: - Transitions

    /// The first transition strictly after an instant, if any (searching at most ~400 years).
    public func nextTransition(after seconds: Int64) -> Transition? {
        if let last = transitionTimes.last, seconds < last {
            var low = 0
            var high = transitionTimes.count
            while low < high {
                let mid = (low + high) / 2
                if transitionTimes[mid] <= seconds { low = mid + 1 } else { high = mid }
            }
            // Skip recorded transitions that do not change the offset (abbreviation-only changes).
            var index = low
            while index < transitionTimes.count {
                let at = transitionTimes[index]
                let before = offset(at: at - 1)
                let after = types[Int(transitionTypeIndices[index])].utcOffset
                if before != after { return Transition(at: at, offsetBefore: before, offsetAfter: after) }
                index += 1
            }
        }
        guard let footer else { return nil }
        let from = max(seconds, (transitionTimes.last ?? Int64.min) - 1)
        guard let next = footer.nextTransition(after: from) else { return nil }
        if let last = transitionTimes.last, next.at <= last { return nil }
        return next
    }

    // MARK: - Local → UTC

    /// The instants at which a wall-clock time (whole seconds since the local epoch) happens.
    public func resolve(localSeconds: Int64) -> Resolution {
        // At most one transition lies within a day of any local time in every real zone, so the
        // offsets a day either side bound the candidates.
        let before = offset(at: localSeconds - 86_400 - 14 * 3600)
        let after = offset(at: localSeconds + 86_400 + 14 * 3600)
        let candidates = Set([before, after, offset(at: localSeconds - Int64(before)), offset(at: localSeconds - Int64(after))])
        var matches: [Int64] = []
        for candidate in candidates {
            let instant = localSeconds - Int64(candidate)
            if offset(at: instant) == candidate { matches.append(instant) }
        }
        matches.sort()
        if matches.count >= 2 {
            return .repeated(first: matches.first!, second: matches.last!)
        }
        if let only = matches.first {
            return .unique(only)
        }
        // In a gap: the gap ends at the transition that follows the instant read with the old offset.
        let probe = localSeconds - Int64(max(before, after))
        if let transition = nextTransition(after: probe - 1) {
            return .skipped(gapEnd: transition.at)
        }
        return .skipped(gapEnd: localSeconds - Int64(after))
    }

    /// The instant of a wall-clock time, taking the first occurrence of a repeated time and the end
    /// of the gap for a skipped one (Debian cron's rule for fixed-time jobs).
    public func firstInstant(localSeconds: Int64) -> Int64 {
        switch resolve(localSeconds: localSeconds) {
        case .unique(let instant): return instant
        case .repeated(let first, _): return first
        case .skipped(let gapEnd): return gapEnd
        }
    }
}

/// A zone could not be loaded or parsed.
public struct TimeZoneError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

// MARK: - TZif reader

private struct TZifReader {
    struct Header {
        var version: Int
        var isutcnt: Int
        var isstdcnt: Int
        var leapcnt: Int
        var timecnt: Int
        var typecnt: Int
        var charcnt: Int
    }

    struct Block {
        var times: [Int64] = []
        var typeIndices: [UInt8] = []
        var types: [TimeZoneRules.LocalTimeType] = []
        var footer: String?
    }

    let bytes: [UInt8]
    var offset = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    mutating func need(_ count: Int) throws(TimeZoneError) {
        guard count >= 0, offset + count <= bytes.count else {
            throw TimeZoneError(message: "truncated TZif data")
        }
    }

    mutating func uint32() throws(TimeZoneError) -> UInt32 {
        try need(4)
        defer { offset += 4 }
        return bytes[offset..<offset + 4].reduce(0) { $0 << 8 | UInt32($1) }
    }

    mutating func int64() throws(TimeZoneError) -> Int64 {
        try need(8)
        defer { offset += 8 }
        return Int64(bitPattern: bytes[offset..<offset + 8].reduce(0) { $0 << 8 | UInt64($1) })
    }

    mutating func header() throws(TimeZoneError) -> Header {
        try need(44)
        guard bytes[offset..<offset + 4].elementsEqual(Array("TZif".utf8)) else {
            throw TimeZoneError(message: "not a TZif file")
        }
        let versionByte = bytes[offset + 4]
        let version = versionByte == 0 ? 1 : Int(versionByte) - Int(UInt8(ascii: "0"))
        offset += 20
        let counts = try (0..<6).map { _ throws(TimeZoneError) in Int(try uint32()) }
        return Header(version: version, isutcnt: counts[0], isstdcnt: counts[1], leapcnt: counts[2],
                      timecnt: counts[3], typecnt: counts[4], charcnt: counts[5])
    }

    mutating func block(header: Header, timeSize: Int) throws(TimeZoneError) -> Block {
        var block = Block()
        for _ in 0..<header.timecnt {
            block.times.append(timeSize == 4 ? Int64(Int32(bitPattern: try uint32())) : try int64())
        }
        try need(header.timecnt)
        block.typeIndices = Array(bytes[offset..<offset + header.timecnt])
        offset += header.timecnt
        var rawTypes: [(Int, Bool, Int)] = []
        for _ in 0..<header.typecnt {
            let utoff = Int(Int32(bitPattern: try uint32()))
            try need(2)
            rawTypes.append((utoff, bytes[offset] != 0, Int(bytes[offset + 1])))
            offset += 2
        }
        try need(header.charcnt)
        let chars = Array(bytes[offset..<offset + header.charcnt])
        offset += header.charcnt
        block.types = rawTypes.map { utoff, isDST, index in
            var end = index
            while end < chars.count, chars[end] != 0 { end += 1 }
            let name = index < chars.count ? String(decoding: chars[index..<end], as: UTF8.self) : ""
            return .init(utcOffset: utoff, isDaylightTime: isDST, abbreviation: name)
        }
        guard block.typeIndices.allSatisfy({ Int($0) < block.types.count }) else {
            throw TimeZoneError(message: "TZif data refers to a missing local time type")
        }
        let skip = header.leapcnt * (timeSize + 4) + header.isstdcnt + header.isutcnt
        try need(skip)
        offset += skip
        return block
    }

    mutating func footer() -> String? {
        guard offset < bytes.count, bytes[offset] == UInt8(ascii: "\n") else { return nil }
        var end = offset + 1
        while end < bytes.count, bytes[end] != UInt8(ascii: "\n") { end += 1 }
        return String(decoding: bytes[(offset + 1)..<end], as: UTF8.self)
    }
}
