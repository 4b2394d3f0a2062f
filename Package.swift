// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "jobrunner",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "jobrunnerd", targets: ["jobrunnerd"]),
        .executable(name: "jobrunnerctl", targets: ["jobrunnerctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        // MARK: - C shims
        .systemLibrary(
            name: "CSystemd",
            pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]
        ),
        .target(name: "CLinuxSupport"),

        // MARK: - Libraries
        .target(name: "JobRunnerSchedule", swiftSettings: strict),
        .target(
            name: "JobRunnerConfig",
            dependencies: [
                "JobRunnerSchedule",
                // To name the second reader's thread.
                "CLinuxSupport",
                // For the libyaml it carries (CYaml): the configuration is composed from
                // libyaml's events directly (YAMLNode.swift), without Yams' node tree.
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "JobRunnerCore",
            dependencies: [
                "JobRunnerConfig",
                "JobRunnerSchedule",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "OrderedCollections", package: "swift-collections"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "JobRunnerSupervision",
            dependencies: [
                "CLinuxSupport",
                "JobRunnerConfig",
                "JobRunnerCore",
                "JobRunnerSchedule",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "JobRunnerHistory",
            dependencies: [
                "JobRunnerConfig",
                "JobRunnerCore",
                "JobRunnerSchedule",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "JobRunnerStore",
            dependencies: [
                "JobRunnerCore",
                "JobRunnerHistory",
                "JobRunnerSchedule",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "JobRunnerCluster",
            dependencies: [
                "JobRunnerConfig",
                "JobRunnerCore",
                "JobRunnerHistory",
                "JobRunnerSchedule",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "JobRunnerAPI",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "JobRunnerControl",
            dependencies: [
                "CLinuxSupport",
                "JobRunnerAPI",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "Systemd",
            dependencies: [
                "CSystemd",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "JobRunnerDaemon",
            dependencies: [
                "CLinuxSupport",
                "JobRunnerAPI",
                "JobRunnerCluster",
                "JobRunnerConfig",
                "JobRunnerCore",
                "JobRunnerControl",
                "JobRunnerHistory",
                "JobRunnerSchedule",
                "JobRunnerStore",
                "JobRunnerSupervision",
                "Systemd",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),

        // MARK: - Executables
        .executableTarget(
            name: "jobrunnerd",
            dependencies: [
                "JobRunnerAPI",
                "JobRunnerDaemon",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .target(name: "CFuzzDriver"),
        .target(
            name: "JobRunnerFuzzing",
            dependencies: ["JobRunnerCLI", "JobRunnerConfig", "JobRunnerCore", "JobRunnerSchedule"],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "jobrunner-fuzz",
            dependencies: ["CFuzzDriver", "JobRunnerFuzzing"],
            swiftSettings: strict
        ),
        .target(
            name: "JobRunnerCLI",
            dependencies: ["JobRunnerAPI", "JobRunnerSchedule"],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "jobrunnerctl",
            dependencies: [
                "JobRunnerAPI",
                "JobRunnerCLI",
                "JobRunnerConfig",
                "JobRunnerSchedule",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),

        // MARK: - Tests
        .target(
            name: "TestSupport",
            dependencies: [
                "CLinuxSupport", "JobRunnerAPI", "JobRunnerConfig", "JobRunnerControl", "JobRunnerCore", "JobRunnerSchedule",
                "JobRunnerSupervision",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Tests/TestSupport",
            swiftSettings: strict
        ),
        .testTarget(name: "JobRunnerScheduleTests", dependencies: ["JobRunnerSchedule"], swiftSettings: strict),
        .testTarget(name: "JobRunnerConfigTests", dependencies: ["JobRunnerConfig", "TestSupport"], swiftSettings: strict),
        .testTarget(
            name: "JobRunnerCoreTests",
            dependencies: ["JobRunnerCore", "JobRunnerConfig", "JobRunnerSupervision", "TestSupport", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "JobRunnerSupervisionTests",
            dependencies: ["JobRunnerSupervision", "JobRunnerCore", "JobRunnerConfig", "TestSupport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "JobRunnerStoreTests",
            dependencies: ["JobRunnerStore", "JobRunnerHistory", "JobRunnerCore", "JobRunnerConfig", "TestSupport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "JobRunnerControlTests",
            dependencies: ["JobRunnerControl", "JobRunnerAPI", "TestSupport", .product(name: "HummingbirdTesting", package: "hummingbird")],
            swiftSettings: strict
        ),
        .testTarget(name: "JobRunnerCLITests", dependencies: ["JobRunnerCLI", "JobRunnerAPI", "JobRunnerSchedule"], swiftSettings: strict),
        .testTarget(
            name: "SystemdTests",
            dependencies: ["Systemd", "TestSupport", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        // The regression inputs are read from the source tree (#filePath), not bundled.
        .testTarget(name: "FuzzRegressionTests", dependencies: ["JobRunnerFuzzing"], exclude: ["regressions"], swiftSettings: strict),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["JobRunnerAPI", "JobRunnerSchedule", "TestSupport"],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)
