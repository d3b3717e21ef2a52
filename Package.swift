// swift-tools-version: 6.1
import Foundation
import PackageDescription

// Release code must use the machine's FMA units: without a target CPU, Swift lowers
// SIMD `addingProduct` to a libm `fmaf` call per lane (~150x slower). PTRAIN_MARCH picks
// the target (default: this machine; `x86-64-v4` for a portable AVX-512 binary,
// `x86-64-v3` for AVX2).
let march = Context.environment["PTRAIN_MARCH"] ?? "native"
// The GEMM tile follows the vector registers: SIMD16 x 8 rows for AVX-512's 32 zmm registers,
// SIMD8 x 6 rows for AVX2's 16 ymm (SIMD16 tiles spill there).
let avx512: Bool = {
    switch march {
    case "native":
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        return cpuinfo.isEmpty || cpuinfo.contains(" avx512f")
    case "x86-64-v4", "sapphirerapids", "icelake-server", "skylake-avx512", "znver4", "znver5": return true
    default: return false
    }
}()
// Unsafe flags, each on the targets that need it (a package that uses them can be depended on by
// path or by branch/revision, not by version; README says how):
// - `-march` (kernels, and the model's elementwise loops): the FMA units and wide vectors;
// - `-fno-math-errno` (kernels): Adam's vector square root, which otherwise keeps an errno call;
// - `-O` in debug builds (kernels, model, pool): `swift run ptrain` and `swift test` build the
//   debug configuration, where -Onone runs the kernels ~1000x slower (SIMD types are generic
//   structs that only the optimiser turns into vector instructions). The CLI, data and checkpoint
//   code (PTTraining, ptrain) stay at -Onone there, so they can be debugged.
let vectorCode: [SwiftSetting] = [
    .unsafeFlags(["-Xcc", "-march=\(march)", "-Xcc", "-fno-math-errno"]),
    .unsafeFlags(["-O"], .when(configuration: .debug)),
] + (avx512 ? [] : [.define("PTRAIN_SIMD8")])
let optimizedInDebug: [SwiftSetting] = [.unsafeFlags(["-O"], .when(configuration: .debug))]

let package = Package(
    name: "ptrain",
    // Linux only (thread affinity, libnuma, /proc): no Apple platform is promised.
    products: [
        .executable(name: "ptrain", targets: ["ptrain"]),
        // For the fuzzing and benchmark packages beside this one (Fuzz/, Benchmarks/).
        .library(name: "PTrainKit", targets: ["PTTraining", "PTModel", "PTKernels", "PTRuntime"]),
    ],
    // `swift build --traits MPI` builds ptrain for `mpirun` (Open MPI: libopenmpi-dev). Without the
    // trait nothing needs mpi.h or links libmpi, and a run is one process.
    traits: [
        .trait(name: "MPI", description: "Run several processes under mpirun (Open MPI), the same bits at any ranks x threads."),
        .default(enabledTraits: []),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CPNG", path: "Sources/CPNG", providers: [.apt(["libpng-dev"])]),
        // JPEG through libjpeg-turbo (libjpeg62-turbo-dev), behind C that turns libjpeg's
        // longjmp-style errors into return values.
        .target(name: "CJPEG", cSettings: [.unsafeFlags(["-O2"])], linkerSettings: [.linkedLibrary("jpeg")]),
        // bf16 tile kernels (AMX, AVX512-BF16, portable): each path's instructions enabled per
        // function, chosen at run time; optimised in debug builds too.
        .target(name: "CBF16", cSettings: [.unsafeFlags(["-O2"])]),
        // SIMD loops on raw buffers: no allocation, no threads, no knowledge of layers.
        .target(name: "PTKernels", dependencies: ["CBF16"], swiftSettings: vectorCode),
        // Worker pool, NUMA placement, barriers; the processes of an mpirun job.
        .target(name: "CThreadSetup"),
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
        .target(name: "PTRuntime", dependencies: ["CThreadSetup", .target(name: "CMPI", condition: .when(traits: ["MPI"]))],
                swiftSettings: optimizedInDebug),
        // Spec parsing, layers, forward/backward over a worker pool.
        .target(name: "PTModel", dependencies: ["PTKernels", "PTRuntime"], swiftSettings: vectorCode),
        // Data, optimizer, the training loop, metrics.
        .target(name: "PTTraining", dependencies: ["PTModel", "PTRuntime", "PTKernels", "CZlib", "CPNG", "CJPEG"]),
        .executableTarget(
            name: "ptrain",
            dependencies: ["PTTraining", "PTModel", "PTRuntime", "PTKernels",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        // Naive twins of the kernels for the tests: built beside them, not in the PTrainKit product.
        .target(name: "PTTestSupport", dependencies: ["PTKernels", "PTModel", "CPNG", "CZlib", "PTTestJPEG"], path: "Tests/Support"),
        .target(name: "PTTestJPEG", path: "Tests/SupportJPEG", linkerSettings: [.linkedLibrary("jpeg")]),
        .testTarget(name: "KernelTests", dependencies: ["PTKernels", "PTTestSupport"]),
        .testTarget(name: "ModelTests", dependencies: ["PTModel", "PTRuntime", "PTKernels", "PTTestSupport"]),
        .testTarget(name: "TrainingTests", dependencies: ["PTTraining", "PTModel", "PTRuntime", "PTKernels", "PTTestSupport", "CZlib", "CPNG"],
                    exclude: ["pytorch-reference.safetensors", "pytorch-reference-resnet.safetensors"]),
        .testTarget(name: "CLITests", dependencies: ["ptrain", "PTTraining", "PTModel", "PTTestSupport", "CZlib", "CPNG"]),
    ],
    swiftLanguageModes: [.v6]
)
