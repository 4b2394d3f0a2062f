/// What a `schedule:` value can say: a cron expression, a macro that stands for one, `@reboot`
/// (once when the daemon starts) or `@every <duration>` (a fixed interval).
public enum CronSchedule: Sendable, Hashable, CustomStringConvertible {
    case expression(CronExpression)
    case reboot
    case every(Duration)

    /// The macros and the expressions they stand for.
    public static let macros: [String: String] = [
        "@yearly": "0 0 1 1 *",
        "@annually": "0 0 1 1 *",
        "@monthly": "0 0 1 * *",
        "@weekly": "0 0 * * 0",
        "@daily": "0 0 * * *",
        "@midnight": "0 0 * * *",
        "@hourly": "0 * * * *",
    ]

    /// Parses a `schedule:` value.
    public init(parsing raw: String) throws(CronError) {
        let text = raw.trimmingASCIISpaces()
        guard text.hasPrefix("@") else {
            self = .expression(try CronExpression(parsing: text))
            return
        }
        let parts = text.split(separator: " ", maxSplits: 1).map { String($0) }
        let macro = parts[0].lowercased()
        if macro == "@every" {
            guard parts.count == 2 else {
                throw CronError(field: nil, message: "@every needs a duration, e.g. '@every 90s'")
            }
            let duration: Duration
            do {
                duration = try DurationText.parse(parts[1])
            } catch {
                throw CronError(field: nil, message: "@every: \(error.message)")
            }
            guard duration > .zero else {
                throw CronError(field: nil, message: "@every needs a positive duration")
            }
            self = .every(duration)
            return
        }
        guard parts.count == 1 else {
            throw CronError(field: nil, message: "\(parts[0]) takes no fields after it")
        }
        if macro == "@reboot" {
            self = .reboot
            return
        }
        guard let expansion = Self.macros[macro] else {
            let known = (Self.macros.keys.sorted() + ["@reboot", "@every"]).joined(separator: " ")
            throw CronError(field: nil, message: "unknown macro '\(parts[0])' (known: \(known))")
        }
        self = .expression(try CronExpression(parsing: expansion))
    }

    /// The canonical text: macros expanded, `@every` with a normalized duration.
    public var description: String {
        switch self {
        case .expression(let expression): expression.text
        case .reboot: "@reboot"
        case .every(let duration): "@every \(DurationText.format(duration))"
        }
    }
}
