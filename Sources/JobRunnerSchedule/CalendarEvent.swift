/// A systemd calendar event (systemd.time(7)): `[weekdays] [date] [time] [zone]`, e.g.
/// `Mon..Fri *-*-* 02:00:00`, `*-02~03`, `Sat,Sun 10:00 Europe/Berlin`, `*:0/15`, the
/// shorthands `minutely` … `semiannually`, or `@1700000000` for one instant.
///
/// Each date and time field is a list of values, ranges `a..b` and repetitions `a/r`,
/// `a..b/r`; `~` before the day counts from the end of the month; seconds may have a fraction.
/// Weekdays and the date must both match.
public struct CalendarEvent: Sendable, Hashable, CustomStringConvertible {
    /// One value, range or repetition of a field (seconds in microseconds).
    struct Component: Sendable, Hashable {
        var start: Int
        var stop: Int?
        var step: Int

        /// The smallest value of this component that is ≥ `value` and ≤ `maximum`.
        func next(atOrAfter value: Int, maximum: Int) -> Int? {
            let limit = min(stop ?? maximum, maximum)
            if value <= start { return start <= limit ? start : nil }
            guard step > 0 else { return nil }
            let k = (value - start + step - 1) / step
            let candidate = start + k * step
            return candidate <= limit ? candidate : nil
        }
    }

    /// A field: nil components means "any value".
    struct Field: Sendable, Hashable {
        var components: [Component]?

        func next(atOrAfter value: Int, maximum: Int) -> Int? {
            guard let components else { return value <= maximum ? value : nil }
            var best: Int?
            for component in components {
                if let candidate = component.next(atOrAfter: value, maximum: maximum), best == nil || candidate < best! {
                    best = candidate
                }
            }
            return best
        }

        func matches(_ value: Int) -> Bool {
            next(atOrAfter: value, maximum: value) == value
        }
    }

    /// The expression as written.
    public let text: String
    /// The expression in systemd's normal form (`Mon..Fri *-*-* 02:00:00`).
    public let normalized: String
    /// The zone named in the expression, if any (it overrides the job's zone).
    public let zone: TimeZoneRules?

    let weekdays: UInt8  // bit 0 = Sunday … bit 6 = Saturday
    let year: Field
    let month: Field
    let day: Field
    let endOfMonth: Bool
    let hour: Field
    let minute: Field
    let second: Field  // microseconds within the minute
    let instant: Timestamp?

    static let minimumYear = 1970
    static let maximumYear = 2199

    public var description: String { normalized }

    init(text: String, weekdays: UInt8, year: Field, month: Field, day: Field, endOfMonth: Bool, hour: Field, minute: Field,
         second: Field, zone: TimeZoneRules?, zoneName: String?) {
        self.text = text
        self.weekdays = weekdays
        self.year = year
        self.month = month
        self.day = day
        self.endOfMonth = endOfMonth
        self.hour = hour
        self.minute = minute
        self.second = second
        self.zone = zone
        self.instant = nil
        self.normalized = CalendarEvent.format(weekdays: weekdays, year: year, month: month, day: day, endOfMonth: endOfMonth,
                                               hour: hour, minute: minute, second: second, zoneName: zoneName)
    }

    init(text: String, instant: Timestamp) {
        self.text = text
        self.instant = instant
        self.zone = .utc
        self.weekdays = 0x7f
        self.year = Field(components: nil)
        self.month = Field(components: nil)
        self.day = Field(components: nil)
        self.endOfMonth = false
        self.hour = Field(components: nil)
        self.minute = Field(components: nil)
        self.second = Field(components: nil)
        let local = LocalDateTime(secondsSinceEpoch: instant.seconds)
        self.normalized = local.isoDate + " " + local.isoTime(includeFraction: false) + " UTC"
    }
}

/// An error in a calendar event.
public struct CalendarError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

// MARK: - Next elapse

extension CalendarEvent {
    /// The first instant strictly after `instant` at which the event elapses, in the event's own
    /// zone if it names one, else in `zone`.
    ///
    /// DST follows systemd: local times are walked forwards; a local time in a gap does not
    /// exist and is skipped (the search continues after the gap); a repeated local time
    /// elapses once, at its first occurrence (at its second when the search starts between them).
    public func next(after instant: Timestamp, in zone: TimeZoneRules) -> Timestamp? {
        if let fixed = self.instant { return fixed > instant ? fixed : nil }
        let rules = self.zone ?? zone
        let start = instant.advanced(by: .microseconds(1))
        var cursor = rules.localDateTime(at: start)
        while true {
            guard let local = nextLocal(atOrAfter: cursor) else { return nil }
            let seconds = local.secondsSinceEpoch
            let micros = Int64(local.microsecond)
            switch rules.resolve(localSeconds: seconds) {
            case .unique(let at):
                let candidate = Timestamp(microseconds: at * 1_000_000 + micros)
                if candidate > instant { return candidate }
            case .repeated(let first, let second):
                // The first occurrence, unless the search starts between the two (as systemd
                // does: the start's own offset decides).
                let early = Timestamp(microseconds: first * 1_000_000 + micros)
                if early > instant { return early }
                let late = Timestamp(microseconds: second * 1_000_000 + micros)
                if late > instant { return late }
            case .skipped(let gapEnd):
                // The local time does not exist: search on from the first local time after the gap.
                cursor = rules.localDateTime(at: Timestamp(seconds: gapEnd))
                continue
            }
            cursor = LocalDateTime(secondsSinceEpoch: seconds + (local.microsecond == 999_999 ? 1 : 0),
                                   microsecond: (local.microsecond + 1) % 1_000_000)
        }
    }

    /// The next `count` elapses after `instant`.
    public func upcoming(after instant: Timestamp, in zone: TimeZoneRules, count: Int) -> [Timestamp] {
        var result: [Timestamp] = []
        var cursor = instant
        while result.count < count, let next = next(after: cursor, in: zone) {
            result.append(next)
            cursor = next
        }
        return result
    }

    /// The first local time at or after `from` that matches every field.
    func nextLocal(atOrAfter from: LocalDateTime) -> LocalDateTime? {
        var t = from
        var dayCache: (year: Int, month: Int, mask: UInt32)?
        while true {
            guard t.year <= Self.maximumYear else { return nil }
            if t.year < Self.minimumYear { t = LocalDateTime(year: Self.minimumYear, month: 1, day: 1) }
            // Year
            if !year.matches(t.year) {
                guard let next = year.next(atOrAfter: t.year + 1, maximum: Self.maximumYear) else { return nil }
                t = LocalDateTime(year: next, month: 1, day: 1)
            }
            // Month
            if !month.matches(t.month) {
                guard let next = month.next(atOrAfter: t.month + 1, maximum: 12) else {
                    t = LocalDateTime(year: t.year + 1, month: 1, day: 1)
                    continue
                }
                t = LocalDateTime(year: t.year, month: next, day: 1)
            }
            // Day and weekday
            let mask: UInt32
            if let cache = dayCache, cache.year == t.year, cache.month == t.month {
                mask = cache.mask
            } else {
                mask = dayMask(year: t.year, month: t.month)
                dayCache = (t.year, t.month, mask)
            }
            if mask & (1 << UInt32(t.day)) == 0 {
                guard let next = nextBit(UInt64(mask), from: t.day + 1, upTo: 31) else {
                    t = t.startOfNextMonth()
                    continue
                }
                t = LocalDateTime(year: t.year, month: t.month, day: next)
            }
            // Hour
            if !hour.matches(t.hour) {
                guard let next = hour.next(atOrAfter: t.hour + 1, maximum: 23) else {
                    t = t.startOfNextDay()
                    continue
                }
                t = LocalDateTime(year: t.year, month: t.month, day: t.day, hour: next)
            }
            // Minute
            if !minute.matches(t.minute) {
                guard let next = minute.next(atOrAfter: t.minute + 1, maximum: 59) else {
                    t = t.hour == 23 ? t.startOfNextDay() : LocalDateTime(year: t.year, month: t.month, day: t.day, hour: t.hour + 1)
                    continue
                }
                t = LocalDateTime(year: t.year, month: t.month, day: t.day, hour: t.hour, minute: next)
            }
            // Second (with microseconds)
            let value = t.second * 1_000_000 + t.microsecond
            guard let next = second.next(atOrAfter: value, maximum: 59_999_999) else {
                let minuteStart = LocalDateTime(year: t.year, month: t.month, day: t.day, hour: t.hour, minute: t.minute)
                t = LocalDateTime(secondsSinceEpoch: minuteStart.secondsSinceEpoch + 60)
                continue
            }
            t.second = next / 1_000_000
            t.microsecond = next % 1_000_000
            return t
        }
    }

    /// Bit d set (1…31) for each day of the month that matches the day field and the weekdays.
    func dayMask(year: Int, month: Int) -> UInt32 {
        let length = daysIn(month: month, year: year)
        let firstWeekday = weekdayOf(days: days(fromCivil: year, month, 1))
        var mask: UInt32 = 0
        let field: Field
        if endOfMonth, let components = day.components {
            // Count from the end: ~1 is the last day; a range ~a..b covers the last a…b days.
            field = Field(components: components.map { component in
                let start = length + 1 - component.start
                if let stop = component.stop {
                    return Component(start: length + 1 - stop, stop: start, step: max(component.step, 1))
                }
                return Component(start: start, stop: nil, step: component.step)
            })
        } else {
            field = day
        }
        for dayOfMonth in 1...length where field.matches(dayOfMonth) {
            let weekday = (firstWeekday + dayOfMonth - 1) % 7
            if weekdays & (1 << UInt8(weekday)) != 0 { mask |= 1 << UInt32(dayOfMonth) }
        }
        return mask
    }
}
