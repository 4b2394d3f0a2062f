#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// The system's IANA time zone database (`/usr/share/zoneinfo`, or `$TZDIR`), with a cache so
/// thousands of jobs in one zone share one parsed copy.
///
/// Reading a zone touches the file system: call it while validating configuration (on the
/// thread pool), never on the scheduler's path.
public final class TimeZoneDatabase: Sendable {
    /// The database at `$TZDIR` or `/usr/share/zoneinfo`.
    public static let system = TimeZoneDatabase(directory: getenv("TZDIR").map { String(cString: $0) } ?? "/usr/share/zoneinfo")

    /// Where the TZif files live.
    public let directory: String
    private let cache = Mutex<[String: TimeZoneRules]>([:])

    /// A database rooted at `directory`.
    public init(directory: String) {
        self.directory = directory
    }

    /// The rules of an IANA zone such as `Europe/Berlin`; `UTC` always works.
    @available(*, noasync, message: "reads the zone file; call from the thread pool")
    public func zone(named identifier: String) throws(TimeZoneError) -> TimeZoneRules {
        if let cached = cache.withLock({ $0[identifier] }) { return cached }
        let rules = try load(identifier)
        cache.withLock { $0[identifier] = rules }
        return rules
    }

    private func load(_ identifier: String) throws(TimeZoneError) -> TimeZoneRules {
        if identifier == "UTC" || identifier == "Etc/UTC" || identifier == "Z" {
            return TimeZoneRules(fixedOffset: 0, identifier: identifier == "Z" ? "UTC" : identifier)
        }
        let valid = !identifier.isEmpty && !identifier.hasPrefix("/") && !identifier.split(separator: "/").contains("..")
            && identifier.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || ((byte | 0x20) >= 0x61 && (byte | 0x20) <= 0x7a)
                    || byte == UInt8(ascii: "/") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "+")
            }
        guard valid else {
            throw TimeZoneError(message: "'\(identifier)' is not a time zone name (expected e.g. Europe/Berlin or UTC)")
        }
        guard let bytes = readFile(directory + "/" + identifier) else {
            throw TimeZoneError(message: "unknown time zone '\(identifier)' (not in \(directory))")
        }
        do {
            return try TimeZoneRules(tzif: bytes, identifier: identifier)
        } catch {
            throw TimeZoneError(message: "time zone '\(identifier)': \(error.message)")
        }
    }

    /// The machine's own zone: `$TZ` if set, else `/etc/localtime`, else UTC.
    @available(*, noasync, message: "reads the zone file; call from the thread pool")
    public func systemZone() -> TimeZoneRules {
        if let tz = getenv("TZ").map({ String(cString: $0) }), !tz.isEmpty {
            let name = tz.hasPrefix(":") ? String(tz.dropFirst()) : tz
            if name.hasPrefix("/"), let bytes = readFile(name), let rules = try? TimeZoneRules(tzif: bytes, identifier: name) {
                return rules
            }
            if let rules = try? zone(named: name) { return rules }
            if let rules = try? TimeZoneRules(posixRule: name) { return rules }
        }
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink("/etc/localtime", &buffer, buffer.count - 1)
        if length > 0 {
            let target = String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if let name = target.components(after: "zoneinfo/"), let rules = try? zone(named: name) {
                return rules
            }
        }
        if let bytes = readFile("/etc/localtime"), let rules = try? TimeZoneRules(tzif: bytes, identifier: "localtime") {
            return rules
        }
        return .utc
    }
}

/// Reads a whole (small) file, or nil when it cannot be read.
private func readFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var result: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16_384)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 {
            if errno == EINTR { continue }
            return nil
        }
        if count == 0 { break }
        result.append(contentsOf: chunk[0..<count])
        if result.count > 1 << 20 { return nil }
    }
    return result
}

extension String {
    /// The text after the first occurrence of `marker`, if it occurs.
    fileprivate func components(after marker: String) -> String? {
        let bytes = Array(utf8)
        let needle = Array(marker.utf8)
        guard bytes.count >= needle.count else { return nil }
        for start in 0...(bytes.count - needle.count) where bytes[start..<(start + needle.count)].elementsEqual(needle) {
            return String(decoding: bytes[(start + needle.count)...], as: UTF8.self)
        }
        return nil
    }
}
