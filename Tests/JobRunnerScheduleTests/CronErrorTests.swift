import JobRunnerSchedule
import Testing

@Suite struct CronErrorTests {
    struct Case: Sendable, CustomStringConvertible {
        var expression: String
        var field: Int?
        var message: String
        var description: String { expression }
    }

    static let cases: [Case] = [
        Case(expression: "0 0 32 * *", field: 3, message: "field 3 (day of month): 32 is out of range 1–31"),
        Case(expression: "60 * * * *", field: 1, message: "field 1 (minute): 60 is out of range 0–59"),
        Case(expression: "0 24 * * *", field: 2, message: "field 2 (hour): 24 is out of range 0–23"),
        Case(expression: "0 0 * 13 *", field: 4, message: "field 4 (month): 13 is out of range 1–12"),
        Case(expression: "0 0 * * 8", field: 5, message: "field 5 (day of week): 8 is out of range 0–7"),
        Case(expression: "0 0 * FOO *", field: 4, message: "field 4 (month): 'FOO' is not a number (use 1–12 or JAN–DEC)"),
        Case(expression: "*/0 * * * *", field: 1, message: "field 1 (minute): step '0' must be a positive number"),
        Case(expression: "5-1 * * * *", field: 1, message: "field 1 (minute): range 5-1 runs backwards"),
        Case(expression: "0 0 * * *  *  *", field: nil,
             message: "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, found 7"),
        Case(expression: "0 0 * * 1#6", field: 5, message: "field 5 (day of week): '6' after '#' must be 1–5"),
        Case(expression: "0 0 ? * ?", field: nil, message: ""),
        Case(expression: "60 0 0 * * *", field: 1, message: "field 1 (second): 60 is out of range 0–59"),
        Case(expression: "0 ? * * *", field: 2, message: "field 2 (hour): '?' is only allowed in the day fields"),
        Case(expression: "1,,2 * * * *", field: 1, message: "field 1 (minute): empty list item"),
    ]

    @Test(arguments: cases)
    func errorNamesTheField(_ testCase: Case) {
        do {
            _ = try CronExpression(parsing: testCase.expression)
            #expect(testCase.message.isEmpty, "expected an error")
        } catch {
            #expect(error.field == testCase.field)
            #expect(error.message == testCase.message)
        }
    }

    @Test func unknownMacro() {
        #expect(throws: CronError.self) { try CronSchedule(parsing: "@fortnightly") }
        #expect(throws: CronError.self) { try CronSchedule(parsing: "@every") }
        #expect(throws: CronError.self) { try CronSchedule(parsing: "@every 0s") }
    }

    @Test func namesAreCaseInsensitive() throws {
        let lower = try CronExpression(parsing: "0 0 * jan,feb mon-fri")
        let upper = try CronExpression(parsing: "0 0 * 1,2 1-5")
        let start = Timestamp(seconds: 1_767_225_600)  // 2026-01-01
        #expect(lower.upcoming(after: start, in: .utc, count: 10) == upper.upcoming(after: start, in: .utc, count: 10))
    }
}
