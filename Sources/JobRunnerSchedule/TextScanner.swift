/// A cursor over the UTF-8 bytes of a short text, for the small hand-written parsers of this
/// module (RFC 3339, durations, calendar events). Works on bytes so parsing never allocates.
struct TextScanner {
    let bytes: [UInt8]
    var index: Int = 0

    init(_ text: some StringProtocol) {
        self.bytes = Array(text.utf8)
    }

    var isAtEnd: Bool { index >= bytes.count }

    var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

    /// The rest of the input as a string.
    var rest: String { String(decoding: bytes[min(index, bytes.count)...], as: UTF8.self) }

    /// Consumes `literal` if the input continues with it.
    mutating func take(_ literal: String) -> Bool {
        let literalBytes = Array(literal.utf8)
        guard index + literalBytes.count <= bytes.count,
            bytes[index..<(index + literalBytes.count)].elementsEqual(literalBytes)
        else { return false }
        index += literalBytes.count
        return true
    }

    /// Consumes exactly `count` ASCII digits.
    mutating func fixedDigits(_ count: Int) -> Int? {
        guard index + count <= bytes.count else { return nil }
        var value = 0
        for offset in 0..<count {
            let byte = bytes[index + offset]
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        index += count
        return value
    }

    /// Consumes one or more ASCII digits; returns the value and how many digits there were.
    /// Values beyond 18 digits are rejected rather than overflowing.
    mutating func digits() -> (value: Int, count: Int)? {
        var value = 0
        var count = 0
        while let byte = peek, byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") {
            guard count < 18 else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
            count += 1
            index += 1
        }
        return count > 0 ? (value, count) : nil
    }

    /// Consumes ASCII letters.
    mutating func letters() -> String {
        let start = index
        while let byte = peek, (byte | 0x20) >= UInt8(ascii: "a"), (byte | 0x20) <= UInt8(ascii: "z") {
            index += 1
        }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }
}
