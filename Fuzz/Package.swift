// swift-tools-version: 6.1
// libFuzzer targets for ptrain's parsers. Built and run by scripts/fuzz (it adds -sanitize=fuzzer).
import PackageDescription

let package = Package(
    name: "ptrain-fuzz",
    dependencies: [.package(name: "ptrain", path: "..")],
    targets: [.target(name: "FuzzSupport")] + ["FuzzIDX", "FuzzImages", "FuzzSafetensors", "FuzzSpec"].map {
        .executableTarget(name: $0, dependencies: ["FuzzSupport", .product(name: "PTrainKit", package: "ptrain")])
    },
    swiftLanguageModes: [.v6]
)
