// Training in bf16 keeps the promises on each path this CPU has: the same bits at any thread count
// (the cuts for 64 workers: WorkCuttingTests; resume: PrecisionCLITests), and it is bf16 (not
// fp32's bits), and it learns.
import Foundation
import PTKernels
import PTModel
import PTTestSupport
import PTTraining
import Testing

/// The bf16 paths to train on here; a log line for each path this CPU lacks.
let trainingPaths: [BF16Path] = {
    for p in BF16Path.allCases where !BF16Path.available.contains(p) {
        print("skipped: no \(p == .amx ? "AMX" : "AVX512-BF16") on this CPU (bf16 training tests of that path)")
    }
    return BF16Path.available
}()

@Test(arguments: trainingPaths)
func bf16TrainingIsBitIdenticalAcrossThreadCounts(_ path: BF16Path) throws {
    let data = try fashionSlice(1000)
    let one = try train(data, spec: smallSpec, threads: 1, batch: 50, steps: 25, precision: .bf16(path))
    #expect(Float(bitPattern: one.losses.last!) < Float(bitPattern: one.losses.first!))
    let fp32 = try train(data, spec: smallSpec, threads: 1, batch: 50, steps: 25)
    #expect(firstDifference(fp32.weights, one.weights) != nil, "bf16 gave fp32's bits")
    for t in [2, 3, 4, 7, 16] {
        let other = try train(data, spec: smallSpec, threads: t, batch: 50, steps: 25, precision: .bf16(path))
        #expect(firstDifference(other.losses, one.losses) == nil, "\(path): losses differ at \(t) threads")
        #expect(firstDifference(other.weights, one.weights) == nil, "\(path): weights differ at \(t) threads")
    }
    // 37 samples over 7 threads: shards and GEMM tiles fall unevenly.
    let uneven = try train(data, spec: smallSpec, threads: 1, batch: 37, steps: 6, precision: .bf16(path))
    let seven = try train(data, spec: smallSpec, threads: 7, batch: 37, steps: 6, precision: .bf16(path))
    #expect(firstDifference(uneven.losses, seven.losses) == nil && firstDifference(uneven.weights, seven.weights) == nil)
}

/// The reference network on the fastest path, dropout on: 30 steps at 1, 2, 5 and 16 threads.
@Test func bf16ReferenceNetworkIsBitIdenticalAcrossThreadCounts() throws {
    let data = try fashionSlice(2000), precision = Precision.bf16(.best)
    let one = try train(data, spec: ModelSpec.reference, threads: 1, batch: 50, steps: 30, precision: precision)
    for t in [2, 5, 16] {
        let other = try train(data, spec: ModelSpec.reference, threads: t, batch: 50, steps: 30, precision: precision)
        #expect(firstDifference(other.losses, one.losses) == nil, "losses differ at \(t) threads")
        #expect(firstDifference(other.weights, one.weights) == nil, "weights differ at \(t) threads")
    }
}
