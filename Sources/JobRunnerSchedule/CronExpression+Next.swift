// MARK: - Next fire time

extension CronExpression {
    /// How far ahead to look before deciding an expression never fires again (like cronsim).
    static let searchYears = 50

    /// The first instant strictly after `instant` at which the expression fires in `zone`.
    ///
    /// DST rule (Debian cron's, as the `cronsim` package implements it): an expression whose
    /// minute and hour fields are both fixed runs at the first occurrence of a repeated local
    /// time and right after the gap for a skipped one; every other expression follows real
    /// elapsed time, so it fires in both passes of a repeated hour and not at all in a gap.
    public func next(after instant: Timestamp, in zone: TimeZoneRules) -> Timestamp? {
        let start = instant.seconds
        let result: Int64?
        if isFixedTime {
            result = nextFixedTime(after: start, zone: zone)
        } else {
            result = nextElapsed(after: start, zone: zone)
        }
        return result.map { Timestamp(seconds: $0) }
    }

    /// The next `count` fire times after `instant`.
    public func upcoming(after instant: Timestamp, in zone: TimeZoneRules, count: Int) -> [Timestamp] {
        var result: [Timestamp] = []
        var cursor = instant
        while result.count < count, let next = next(after: cursor, in: zone) {
            result.append(next)
            cursor = next
        }
        return result
    }

    /// Wall-clock appointments: search local time, then map it onto an instant.
    private func nextFixedTime(after start: Int64, zone: TimeZoneRules) -> Int64? {
        var local = start + Int64(zone.offset(at: start))
        let limit = LocalDateTime(secondsSinceEpoch: local).year + Self.searchYears
        while true {
            guard let candidate = nextLocal(atOrAfter: local + 1, yearLimit: limit) else { return nil }
            let instant = zone.firstInstant(localSeconds: candidate)
            if instant > start { return instant }
            // Only when `start` lies in the second pass of a repeated hour: the first pass is
            // already over, so look further.
            local = candidate
        }
    }

    /// Real elapsed time: walk the stretches of constant UTC offset.
    private func nextElapsed(after start: Int64, zone: TimeZoneRules) -> Int64? {
        var instant = start + 1
        let limit = LocalDateTime(secondsSinceEpoch: start).year + Self.searchYears
        while true {
            let offset = Int64(zone.offset(at: instant))
            let stretchEnd = zone.nextTransition(after: instant)?.at
            guard let local = nextLocal(atOrAfter: instant + offset, yearLimit: limit) else { return nil }
            let candidate = local - offset
            if let stretchEnd, candidate >= stretchEnd {
                instant = stretchEnd
                continue
            }
            return candidate
        }
    }

    /// The first local time (seconds since the local epoch) at or after `from` whose fields match.
    func nextLocal(atOrAfter from: Int64, yearLimit: Int) -> Int64? {
        var t = LocalDateTime(secondsSinceEpoch: from)
        var monthCache: (year: Int, month: Int, mask: UInt32)?

        while t.year <= yearLimit {
            // Month
            if months & (1 << UInt16(t.month)) == 0 {
                guard let month = nextBit(UInt64(months), from: t.month + 1, upTo: 12) else {
                    t = LocalDateTime(year: t.year + 1, month: 1, day: 1)
                    continue
                }
                t = LocalDateTime(year: t.year, month: month, day: 1)
            }
            // Day
            let dayMask: UInt32
            if let cache = monthCache, cache.year == t.year, cache.month == t.month {
                dayMask = cache.mask
            } else {
                dayMask = days.mask(year: t.year, month: t.month)
                monthCache = (t.year, t.month, dayMask)
            }
            if dayMask & (1 << UInt32(t.day)) == 0 {
                guard let day = nextBit(UInt64(dayMask), from: t.day + 1, upTo: 31) else {
                    t = t.startOfNextMonth()
                    continue
                }
                t = LocalDateTime(year: t.year, month: t.month, day: day)
            }
            // Hour
            if hours & (1 << UInt32(t.hour)) == 0 {
                guard let hour = nextBit(UInt64(hours), from: t.hour + 1, upTo: 23) else {
                    t = t.startOfNextDay()
                    continue
                }
                t.hour = hour
                t.minute = 0
                t.second = 0
            }
            // Minute
            if minutes & (1 << UInt64(t.minute)) == 0 {
                guard let minute = nextBit(minutes, from: t.minute + 1, upTo: 59) else {
                    t = advanceHour(t)
                    continue
                }
                t.minute = minute
                t.second = 0
            }
            // Second
            if seconds & (1 << UInt64(t.second)) == 0 {
                guard let second = nextBit(seconds, from: t.second + 1, upTo: 59) else {
                    t = advanceMinute(t)
                    continue
                }
                t.second = second
            }
            return t.secondsSinceEpoch
        }
        return nil
    }

    private func advanceHour(_ t: LocalDateTime) -> LocalDateTime {
        var next = t
        if t.hour == 23 { return t.startOfNextDay() }
        next.hour += 1
        next.minute = 0
        next.second = 0
        return next
    }

    private func advanceMinute(_ t: LocalDateTime) -> LocalDateTime {
        var next = t
        if t.minute == 59 { return advanceHour(t) }
        next.minute += 1
        next.second = 0
        return next
    }
}

/// The lowest set bit at position ≥ `from` and ≤ `upTo`.
@inline(__always)
func nextBit(_ mask: UInt64, from: Int, upTo: Int) -> Int? {
    guard from <= upTo, from < 64 else { return nil }
    let shifted = mask >> UInt64(from)
    guard shifted != 0 else { return nil }
    let position = from + shifted.trailingZeroBitCount
    return position <= upTo ? position : nil
}
