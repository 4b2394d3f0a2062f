import JobRunnerSchedule
import Testing

/// Next-fire tables; expected values were computed with the `cronsim` package (Debian cron's
/// rules), not by this code.
@Suite struct CronNextTests {
    static let zones = TimeZoneDatabase.system

    func next(_ expression: String, after start: String, zone: String = "UTC", count: Int = 3) throws -> [String] {
        let rules = try Self.zones.zone(named: zone)
        guard case .expression(let cron) = try CronSchedule(parsing: expression) else {
            Issue.record("not an expression")
            return []
        }
        let startInstant = try #require(Timestamp(rfc3339: start + (start.hasSuffix("Z") ? "" : "Z")))
        // The start is a wall-clock time in the zone: convert it.
        let local = LocalDateTime(secondsSinceEpoch: startInstant.seconds)
        let instant = Timestamp(seconds: rules.firstInstant(localSeconds: local.secondsSinceEpoch))
        return cron.upcoming(after: instant, in: rules, count: count).map { rules.rfc3339($0) }
    }

    struct Case: Sendable, CustomStringConvertible {
        var expression: String
        var start: String
        var zone = "UTC"
        var expected: [String]
        var description: String { "\(expression) after \(start) in \(zone)" }
    }

    static let cases: [Case] = [
        Case(expression: "0 0 29 2 *", start: "2026-01-01T00:00:00",
             expected: ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z", "2036-02-29T00:00:00Z"]),
        Case(expression: "*/15 * * * *", start: "2026-01-31T23:50:00",
             expected: ["2026-02-01T00:00:00Z", "2026-02-01T00:15:00Z", "2026-02-01T00:30:00Z"]),
        Case(expression: "0 12 * * MON-FRI", start: "2026-11-27T13:00:00",
             expected: ["2026-11-30T12:00:00Z", "2026-12-01T12:00:00Z", "2026-12-02T12:00:00Z"]),
        // Both day fields restricted: either matches (Vixie cron).
        Case(expression: "0 0 1 * 0", start: "2026-02-01T00:00:00",
             expected: ["2026-02-08T00:00:00Z", "2026-02-15T00:00:00Z", "2026-02-22T00:00:00Z"]),
        Case(expression: "0 9 1-7 * 1", start: "2026-11-27T00:00:00",
             expected: ["2026-11-30T09:00:00Z", "2026-12-01T09:00:00Z", "2026-12-02T09:00:00Z"]),
        Case(expression: "0 0 L * *", start: "2024-01-15T00:00:00",
             expected: ["2024-01-31T00:00:00Z", "2024-02-29T00:00:00Z", "2024-03-31T00:00:00Z"]),
        Case(expression: "0 0 * * 5L", start: "2026-01-01T00:00:00",
             expected: ["2026-01-30T00:00:00Z", "2026-02-27T00:00:00Z", "2026-03-27T00:00:00Z"]),
        Case(expression: "0 0 * * 1#2", start: "2026-01-01T00:00:00",
             expected: ["2026-01-12T00:00:00Z", "2026-02-09T00:00:00Z", "2026-03-09T00:00:00Z"]),
        // Months without a 31st are skipped.
        Case(expression: "0 0 31 * *", start: "2026-01-31T00:00:00",
             expected: ["2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z", "2026-07-31T00:00:00Z"]),
        Case(expression: "59 23 31 12 *", start: "2026-12-31T23:59:00",
             expected: ["2027-12-31T23:59:00Z", "2028-12-31T23:59:00Z", "2029-12-31T23:59:00Z"]),
        // Weekday 7 is Sunday.
        Case(expression: "0 0 * * 7", start: "2026-11-27T00:00:00",
             expected: ["2026-11-29T00:00:00Z", "2026-12-06T00:00:00Z", "2026-12-13T00:00:00Z"]),
        // DST, Europe/Berlin: a fixed time in the skipped hour runs right after the gap…
        Case(expression: "30 2 * * *", start: "2026-03-28T12:00:00", zone: "Europe/Berlin",
             expected: ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]),
        // …and once, at the first occurrence, in the repeated hour.
        Case(expression: "30 2 * * *", start: "2026-10-24T12:00:00", zone: "Europe/Berlin",
             expected: ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00", "2026-10-27T02:30:00+01:00"]),
        // A wildcard job follows real elapsed time: both passes of the repeated hour.
        Case(expression: "*/30 * * * *", start: "2026-10-25T00:10:00", zone: "Europe/Berlin",
             expected: ["2026-10-25T00:30:00+02:00", "2026-10-25T01:00:00+02:00", "2026-10-25T01:30:00+02:00",
                        "2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-25T02:00:00+01:00"]),
        // Six fields: seconds first.
        Case(expression: "*/20 * * * * *", start: "2026-01-01T00:00:50",
             expected: ["2026-01-01T00:01:00Z", "2026-01-01T00:01:20Z", "2026-01-01T00:01:40Z"]),
        Case(expression: "@monthly", start: "2026-12-15T00:00:00",
             expected: ["2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z", "2027-03-01T00:00:00Z"]),
        Case(expression: "0 0 15W * *", start: "2026-11-01T00:00:00",
             // 2026-11-15 is a Sunday → Monday 16th; Dec 15 is a Tuesday; 2027-01-15 a Friday.
             expected: ["2026-11-16T00:00:00Z", "2026-12-15T00:00:00Z", "2027-01-15T00:00:00Z"]),
        Case(expression: "0 0 LW * *", start: "2026-01-01T00:00:00",
             // Jan 31 2026 is a Saturday → Friday 30th; Feb 28 a Saturday → 27th; Mar 31 a Tuesday.
             expected: ["2026-01-30T00:00:00Z", "2026-02-27T00:00:00Z", "2026-03-31T00:00:00Z"]),
    ]

    @Test(arguments: cases)
    func nextFireTimes(_ testCase: Case) throws {
        let actual = try next(testCase.expression, after: testCase.start, zone: testCase.zone, count: testCase.expected.count)
        #expect(actual == testCase.expected)
    }

    @Test func neverFiringExpressionIsRejected() {
        #expect(throws: CronError.self) { try CronExpression(parsing: "0 0 30 2 *") }
        do {
            _ = try CronExpression(parsing: "0 0 31 4,6 *")
        } catch {
            #expect(error.field == 3)
            #expect(error.message == "field 3 (day of month): day 31 never occurs in APR, JUN")
        }
    }

    @Test func everyAndRebootMacros() throws {
        #expect(try CronSchedule(parsing: "@every 90s") == .every(.seconds(90)))
        #expect(try CronSchedule(parsing: "@reboot") == .reboot)
        #expect(try CronSchedule(parsing: "@daily").description == "0 0 * * *")
    }
}
