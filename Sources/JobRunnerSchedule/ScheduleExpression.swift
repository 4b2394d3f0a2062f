/// Any schedule text a person may type: a cron expression or macro, a systemd calendar event,
/// or an interval (`90s`, `every 5m`). Used by `jobrunnerctl next` to answer offline.
public enum ScheduleExpression: Sendable, Hashable {
    case cron(CronSchedule)
    case calendar(CalendarEvent)
    case interval(Duration)

    /// Which grammar to read the text with.
    public enum Kind: String, Sendable, CaseIterable {
        /// Detect: `@…` macros and 5/6-field expressions are cron, durations are intervals,
        /// everything else is a calendar event.
        case auto
        case cron
        case calendar
    }

    /// Why the text is not a schedule.
    public struct ParseError: Error, Sendable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// Reads a schedule.
    @available(*, noasync, message: "may read the zone database; call from the thread pool")
    public static func parse(_ raw: String, kind: Kind = .auto, zones: TimeZoneDatabase = .system) throws(ParseError) -> ScheduleExpression {
        let text = raw.trimmingASCIISpaces()
        switch kind {
        case .cron:
            do { return .cron(try CronSchedule(parsing: text)) } catch { throw ParseError(message: "cron: \(error.message)") }
        case .calendar:
            do { return .calendar(try CalendarEvent(parsing: text, zones: zones)) } catch {
                throw ParseError(message: "calendar event: \(error.message)")
            }
        case .auto:
            var intervalText = text
            if intervalText.lowercased().hasPrefix("every ") { intervalText = String(intervalText.dropFirst(6)) }
            if let interval = try? DurationText.parse(intervalText), interval > .zero {
                return .interval(interval)
            }
            let fields = text.split(whereSeparator: { $0 == " " || $0 == "\t" })
            let cronLike = (text.hasPrefix("@") && !text.dropFirst().allSatisfy(\.isNumber))
                || ((fields.count == 5 || fields.count == 6) && !text.contains(":") && !text.contains(".."))
            if cronLike {
                do { return .cron(try CronSchedule(parsing: text)) } catch { throw ParseError(message: "cron: \(error.message)") }
            }
            do { return .calendar(try CalendarEvent(parsing: text, zones: zones)) } catch {
                // Not a calendar event either. Several fields without `:` or `..`, the first a cron
                // minute field, is cron with a field too many or too few (`*/5 * * *`): say that.
                let cronShaped = fields.count >= 2 && !text.contains(":") && !text.contains("..")
                    && fields[0].allSatisfy { "0123456789*/,-".contains($0) }
                if cronShaped, let cronError = Self.cronError(text) { throw ParseError(message: "cron: \(cronError)") }
                throw ParseError(message: "not a cron expression, interval or calendar event: \(error.message)")
            }
        }
    }

    /// Why `text` is not a cron expression, if it is not.
    private static func cronError(_ text: String) -> String? {
        do {
            _ = try CronSchedule(parsing: text)
            return nil
        } catch {
            return error.message
        }
    }

    /// The normal form (`0 0 * * *` for `@daily`, systemd's form for calendar events).
    public var normalized: String {
        switch self {
        case .cron(let cron): cron.description
        case .calendar(let event): event.normalized
        case .interval(let interval): "every \(DurationText.format(interval))"
        }
    }

    /// The zone fixed by the expression itself (a calendar event may name one).
    public var ownZone: TimeZoneRules? {
        if case .calendar(let event) = self { return event.zone }
        return nil
    }

    /// The next `count` fire times after `instant` (an interval counts from `instant`).
    public func upcoming(after instant: Timestamp, in zone: TimeZoneRules, count: Int) -> [Timestamp] {
        switch self {
        case .cron(.expression(let expression)):
            return expression.upcoming(after: instant, in: zone, count: count)
        case .cron(.every(let interval)), .interval(let interval):
            return (1...max(1, count)).prefix(count).map { instant.advanced(by: interval * $0) }
        case .cron(.reboot):
            return []
        case .calendar(let event):
            return event.upcoming(after: instant, in: zone, count: count)
        }
    }
}
