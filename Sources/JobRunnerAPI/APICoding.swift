import Foundation

/// The encoder and decoder every side of the API uses. Field names are fixed by each type's
/// `CodingKeys` (snake_case), so the wire format does not depend on a key strategy.
public enum APICoding {
    public static func encoder(pretty: Bool = false) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        return decoder
    }
}
