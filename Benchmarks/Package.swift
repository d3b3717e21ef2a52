// swift-tools-version: 6.1
// ordo-one/benchmark suites for ptrain's kernels and training step, in a package of their own so
// the main build and CI do not compile the benchmark framework. Run from this folder:
//   swift package --disable-sandbox benchmark
import PackageDescription

let package = Package(
    name: "ptrain-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(name: "ptrain", path: ".."),
    ],
    targets: [
        .executableTarget(
            name: "PTrainBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "PTrainKit", package: "ptrain"),
            ],
            path: "Benchmarks/PTrainBenchmarks",
            swiftSettings: [.unsafeFlags(["-Xcc", "-march=native"])],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]),
    ],
    swiftLanguageModes: [.v6]
)
