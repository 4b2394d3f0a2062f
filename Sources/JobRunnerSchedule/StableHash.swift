/// FNV-1a with a final avalanche: the same on every machine and in every process (Swift's
/// `Hasher` is seeded per process). For delays that must agree across restarts and nodes, and
/// for configuration fingerprints — not for security.
public enum StableHash {
    public static func of(_ text: String, seed: UInt64 = 0) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325 ^ seed
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        hash ^= hash >> 33
        hash = hash &* 0xff51_afd7_ed55_8ccd
        hash ^= hash >> 33
        return hash
    }

    /// 16 hex digits.
    public static func hex(_ text: String, seed: UInt64 = 0) -> String {
        let value = String(of(text, seed: seed), radix: 16)
        return String(repeating: "0", count: 16 - value.count) + value
    }
}
