import JobRunnerSchedule
import Testing

/// Expected values checked with `systemd-analyze calendar` on systemd 252.
@Suite struct CalendarEventTests {
    static let zones = TimeZoneDatabase.system

    func next(_ text: String, after start: String, zone: String = "UTC", count: Int = 3) throws -> [String] {
        let event = try CalendarEvent(parsing: text, zones: Self.zones)
        let rules = try Self.zones.zone(named: zone)
        let effective = event.zone ?? rules
        return event.upcoming(after: try #require(Timestamp(rfc3339: start)), in: rules, count: count).map { effective.rfc3339($0) }
    }

    struct Case: Sendable, CustomStringConvertible {
        var expression: String
        var normalized: String
        var start = "2026-01-01T00:00:00Z"
        var zone = "UTC"
        var expected: [String]
        var description: String { expression }
    }

    static let cases: [Case] = [
        Case(expression: "Mon..Fri 02:00", normalized: "Mon..Fri *-*-* 02:00:00",
             expected: ["2026-01-01T02:00:00Z", "2026-01-02T02:00:00Z", "2026-01-05T02:00:00Z"]),
        Case(expression: "weekly", normalized: "Mon *-*-* 00:00:00",
             expected: ["2026-01-05T00:00:00Z", "2026-01-12T00:00:00Z", "2026-01-19T00:00:00Z"]),
        Case(expression: "quarterly", normalized: "*-01,04,07,10-01 00:00:00",
             expected: ["2026-04-01T00:00:00Z", "2026-07-01T00:00:00Z", "2026-10-01T00:00:00Z"]),
        Case(expression: "semiannually", normalized: "*-01,07-01 00:00:00",
             expected: ["2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z", "2027-07-01T00:00:00Z"]),
        Case(expression: "minutely", normalized: "*-*-* *:*:00",
             expected: ["2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z", "2026-01-01T00:03:00Z"]),
        Case(expression: "*-02~03", normalized: "*-02~03 00:00:00",
             expected: ["2026-02-26T00:00:00Z", "2027-02-26T00:00:00Z", "2028-02-27T00:00:00Z"]),
        Case(expression: "Mon *-05~07/1", normalized: "Mon *-05~07/1 00:00:00",
             expected: ["2026-05-25T00:00:00Z", "2027-05-31T00:00:00Z", "2028-05-29T00:00:00Z"]),
        Case(expression: "*-05~1..3", normalized: "*-05~01..03 00:00:00",
             expected: ["2026-05-29T00:00:00Z", "2026-05-30T00:00:00Z", "2026-05-31T00:00:00Z"]),
        Case(expression: "*-*-1,15/3", normalized: "*-*-01,15/3 00:00:00",
             expected: ["2026-01-15T00:00:00Z", "2026-01-18T00:00:00Z", "2026-01-21T00:00:00Z"]),
        Case(expression: "*-1..3-1/10 0:0", normalized: "*-01..03-01/10 00:00:00",
             expected: ["2026-01-11T00:00:00Z", "2026-01-21T00:00:00Z", "2026-01-31T00:00:00Z"]),
        Case(expression: "0..23/6:00", normalized: "*-*-* 00..18/6:00:00",
             expected: ["2026-01-01T06:00:00Z", "2026-01-01T12:00:00Z", "2026-01-01T18:00:00Z"]),
        Case(expression: "*:*:0/20", normalized: "*-*-* *:*:00/20",
             expected: ["2026-01-01T00:00:20Z", "2026-01-01T00:00:40Z", "2026-01-01T00:01:00Z"]),
        Case(expression: "*:*:0/0.25", normalized: "*-*-* *:*:00/0.250000",
             expected: ["2026-01-01T00:00:00.25Z", "2026-01-01T00:00:00.5Z", "2026-01-01T00:00:00.75Z"]),
        Case(expression: "12:00:00.5", normalized: "*-*-* 12:00:00.500000",
             expected: ["2026-01-01T12:00:00.5Z", "2026-01-02T12:00:00.5Z", "2026-01-03T12:00:00.5Z"]),
        Case(expression: "2/3-*-* 00:00", normalized: "2002/3-*-* 00:00:00",
             expected: ["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z"]),
        Case(expression: "*-2-29", normalized: "*-02-29 00:00:00",
             expected: ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z", "2036-02-29T00:00:00Z"]),
        Case(expression: "mon,wed..fri 1..5:*:0/20", normalized: "Mon,Wed..Fri *-*-* 01..05:*:00/20",
             expected: ["2026-01-01T01:00:00Z", "2026-01-01T01:00:20Z", "2026-01-01T01:00:40Z"]),
        Case(expression: "Sat,Sun 10:00 Europe/Berlin", normalized: "Sat,Sun *-*-* 10:00:00 Europe/Berlin",
             expected: ["2026-01-03T10:00:00+01:00", "2026-01-04T10:00:00+01:00", "2026-01-10T10:00:00+01:00"]),
        Case(expression: "@1800000000", normalized: "2027-01-15 08:00:00 UTC", expected: ["2027-01-15T08:00:00Z"]),
        // DST (Europe/Berlin): a time in the skipped hour does not elapse that day…
        Case(expression: "*-*-* 02:30:00", normalized: "*-*-* 02:30:00", start: "2026-03-28T12:00:00Z", zone: "Europe/Berlin",
             expected: ["2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00", "2026-04-01T02:30:00+02:00"]),
        // …and a repeated one elapses once, at its first occurrence.
        Case(expression: "*:00/30", normalized: "*-*-* *:00/30:00", start: "2026-10-24T22:10:00Z", zone: "Europe/Berlin",
             expected: ["2026-10-25T00:30:00+02:00", "2026-10-25T01:00:00+02:00", "2026-10-25T01:30:00+02:00",
                        "2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-25T03:00:00+01:00"]),
    ]

    @Test(arguments: cases)
    func elapses(_ testCase: Case) throws {
        let event = try CalendarEvent(parsing: testCase.expression, zones: Self.zones)
        #expect(event.normalized == testCase.normalized)
        #expect(try next(testCase.expression, after: testCase.start, zone: testCase.zone, count: testCase.expected.count) == testCase.expected)
    }

    static let invalid: [(String, String)] = [
        ("Sat..Mon", "weekday range 'Sat..Mon' runs backwards (write e.g. Mon..Fri, or Sat,Sun)"),
        ("Mon..Fri..Sun", "'Mon..Fri..Sun' is not a weekday or weekday range (e.g. Mon, Mon..Fri)"),
        ("Funday", "'Funday' is not a weekday (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"),
        ("24:00", "hour: 24 is out of range 0–23"),
        ("*-*-32", "day: 32 is out of range 1–31"),
        ("2300-01-01", "year: 2300 is out of range 1970–2199"),
        ("00:00:60", "second: 60 is out of range 0–59"),
        ("12:00 Europe/Nowhere", "unknown time zone 'Europe/Nowhere'"),
        ("*-*-1..31/0", "day: repetition '/0' must be a positive number"),
        ("*:57/13", "minute: '57/13' never repeats within 0–59"),
        ("*-*-* 12:00:00 UTC extra", "unexpected 'UTC' (expected [weekdays] [date] [time] [time zone])"),
        ("*-02-30", "'*-02-30' never elapses"),
        ("*:*:56..56", "second: '56..56' covers less than one repetition"),
    ]

    @Test func invalidEventsSayWhy() {
        for (text, message) in Self.invalid {
            do {
                _ = try CalendarEvent(parsing: text, zones: Self.zones)
                Issue.record("'\(text)' was accepted")
            } catch {
                #expect(error.message == message, "\(text)")
            }
        }
    }

    @Test func expressionKindsAreDetected() throws {
        #expect(try ScheduleExpression.parse("0 3 * * *").normalized == "0 3 * * *")
        #expect(try ScheduleExpression.parse("@daily").normalized == "0 0 * * *")
        #expect(try ScheduleExpression.parse("90s").normalized == "every 1m30s")
        #expect(try ScheduleExpression.parse("every 5m").normalized == "every 5m")
        #expect(try ScheduleExpression.parse("daily").normalized == "*-*-* 00:00:00")
        #expect(try ScheduleExpression.parse("Mon 12:00").normalized == "Mon *-*-* 12:00:00")
        #expect(try ScheduleExpression.parse("*-*-* *:*:00", kind: .calendar).normalized == "*-*-* *:*:00")
        #expect(throws: ScheduleExpression.ParseError.self) { try ScheduleExpression.parse("Mon 12:00", kind: .cron) }
        // Dates with a zone and no time stay calendar events.
        #expect(try ScheduleExpression.parse("*-*-* UTC").normalized == "*-*-* 00:00:00 UTC")
        #expect(try ScheduleExpression.parse("*-*-01 UTC").normalized == "*-*-01 00:00:00 UTC")
        // A cron expression with a field too few or too many is answered as cron.
        for typo in ["*/5 * * *", "0 3 * * * * *"] {
            let error = #expect(throws: ScheduleExpression.ParseError.self) { try ScheduleExpression.parse(typo) }
            #expect(error?.message.hasPrefix("cron: expected 5 fields") == true, "\(typo): \(error?.message ?? "")")
        }
    }
}
