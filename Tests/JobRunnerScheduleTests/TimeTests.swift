import JobRunnerSchedule
import Testing

@Suite struct TimeTests {
    @Test func durations() throws {
        #expect(try DurationText.parse("500ms") == .milliseconds(500))
        #expect(try DurationText.parse("30s") == .seconds(30))
        #expect(try DurationText.parse("1h30m") == .seconds(5400))
        #expect(try DurationText.parse("2d") == .seconds(172_800))
        #expect(try DurationText.parse("1h 30m") == .seconds(5400))
        #expect(try DurationText.parse("1.5s") == .milliseconds(1500))
        #expect(DurationText.format(.seconds(5400)) == "1h30m")
        #expect(DurationText.format(.milliseconds(250)) == "250ms")
        #expect(DurationText.format(.milliseconds(1500)) == "1.5s")
        #expect(DurationText.approximate(.seconds(4 * 60 + 3)) == "4m3s")
        #expect(DurationText.approximate(.seconds(3 * 3600 + 60 * 10 + 9)) == "3h10m")
    }

    @Test func badDurations() {
        for text in ["", "30", "10x", "abc", "5m-", "1.s"] {
            #expect(throws: DurationText.ParseError.self, "\(text)") { try DurationText.parse(text) }
        }
        do {
            _ = try DurationText.parse("10x")
        } catch {
            #expect(error.message == "'10x' is not a duration: unknown unit 'x' (use ms, s, m, h, d or w)")
        }
    }

    @Test func rfc3339RoundTrip() throws {
        let instant = try #require(Timestamp(rfc3339: "2026-03-29T03:00:00+02:00"))
        #expect(instant.description == "2026-03-29T01:00:00Z")
        #expect(Timestamp(rfc3339: "2026-02-30T00:00:00Z") == nil)
        #expect(Timestamp(rfc3339: "2026-01-01T00:00:00.25Z")?.description == "2026-01-01T00:00:00.25Z")
    }

    @Test func zoneTransitionsOfBerlin() throws {
        let berlin = try TimeZoneDatabase.system.zone(named: "Europe/Berlin")
        // 2026-03-29 02:30 local does not exist; the gap ends at 01:00Z.
        let gap = LocalDateTime(year: 2026, month: 3, day: 29, hour: 2, minute: 30)
        #expect(berlin.resolve(localSeconds: gap.secondsSinceEpoch) == .skipped(gapEnd: Timestamp(rfc3339: "2026-03-29T01:00:00Z")!.seconds))
        // 2026-10-25 02:30 local happens twice.
        let repeated = LocalDateTime(year: 2026, month: 10, day: 25, hour: 2, minute: 30)
        #expect(berlin.resolve(localSeconds: repeated.secondsSinceEpoch) == .repeated(
            first: Timestamp(rfc3339: "2026-10-25T00:30:00Z")!.seconds, second: Timestamp(rfc3339: "2026-10-25T01:30:00Z")!.seconds))
        // Far beyond the file's table, the POSIX rule still knows DST.
        #expect(berlin.offset(at: Timestamp(rfc3339: "2090-07-01T00:00:00Z")!.seconds) == 7200)
        #expect(berlin.offset(at: Timestamp(rfc3339: "2090-01-01T00:00:00Z")!.seconds) == 3600)
    }

    @Test func southernAndHalfHourZones() throws {
        let lordHowe = try TimeZoneDatabase.system.zone(named: "Australia/Lord_Howe")
        #expect(lordHowe.offset(at: Timestamp(rfc3339: "2080-01-15T00:00:00Z")!.seconds) == 11 * 3600)
        #expect(lordHowe.offset(at: Timestamp(rfc3339: "2080-07-15T00:00:00Z")!.seconds) == 10 * 3600 + 1800)
        let santiago = try TimeZoneDatabase.system.zone(named: "America/Santiago")
        #expect(santiago.offset(at: Timestamp(rfc3339: "2080-01-15T00:00:00Z")!.seconds) == -3 * 3600)
        #expect(santiago.offset(at: Timestamp(rfc3339: "2080-07-15T00:00:00Z")!.seconds) == -4 * 3600)
    }

    @Test func unknownZone() {
        #expect(throws: TimeZoneError.self) { try TimeZoneDatabase.system.zone(named: "Mars/Olympus") }
        #expect(throws: TimeZoneError.self) { try TimeZoneDatabase.system.zone(named: "../etc/passwd") }
    }
}
