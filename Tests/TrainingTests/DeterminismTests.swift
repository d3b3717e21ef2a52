// Training at any thread count gives the same bits: weights and every loss.
import Foundation
import Testing
import PTKernels
import PTModel
import PTTraining

/// The first `n` Fashion-MNIST training images (installed by scripts/setup).
func fashionSlice(_ n: Int) throws -> Dataset {
    try Dataset.load(directory: Dataset.defaultDirectory, split: .train).prefix(n)
}

func train(_ data: Dataset, spec: String, threads: Int, batch: Int, steps: Int,
           precision: Precision = .fp32) throws -> (weights: [UInt32], losses: [UInt32]) {
    var c = TrainConfig()
    c.spec = try ModelSpec(parsing: spec); c.threads = threads; c.batch = batch; c.seed = 123; c.optimizer.lr = 1e-3
    c.precision = precision
    let t = try Trainer(config: c, data: data)
    let losses = (0..<steps).map { _ in t.trainStep().bitPattern }
    let w = t.network.weights
    return ((0..<t.network.parameters.count).map { w[$0].bitPattern }, losses)
}

/// The first index where two bit-pattern arrays differ (nil when equal). Comparing with `==`
/// inside #expect would print both 6.5-million-element arrays on a failure.
func firstDifference(_ a: [UInt32], _ b: [UInt32]) -> Int? {
    if a.count != b.count { return min(a.count, b.count) }
    return a.indices.first { a[$0] != b[$0] }
}

let smallSpec = "conv(8,3) relu maxpool(2) conv(16,3) relu avgpool(2) fc(64) relu dropout(0.5) fc(10)"

@Test func smallNetworkIsBitIdenticalAcrossThreadCounts() throws {
    let data = try fashionSlice(1000)
    let one = try train(data, spec: smallSpec, threads: 1, batch: 50, steps: 25)
    // Training moves: the loss at the end is below the first.
    #expect(Float(bitPattern: one.losses.last!) < Float(bitPattern: one.losses.first!))
    for t in [2, 3, 4, 7, 16] {
        let other = try train(data, spec: smallSpec, threads: t, batch: 50, steps: 25)
        #expect(firstDifference(other.losses, one.losses) == nil, "losses differ at \(t) threads")
        #expect(firstDifference(other.weights, one.weights) == nil, "weights differ at \(t) threads")
    }
}

@Test func unevenBatchIsBitIdentical() throws {
    // 37 samples over 7 threads: shards and GEMM tiles fall unevenly.
    let data = try fashionSlice(600)
    let one = try train(data, spec: smallSpec, threads: 1, batch: 37, steps: 10)
    let seven = try train(data, spec: smallSpec, threads: 7, batch: 37, steps: 10)
    #expect(firstDifference(one.losses, seven.losses) == nil && firstDifference(one.weights, seven.weights) == nil)
}

/// The acceptance check: the reference network, 100 steps, dropout on.
@Test func referenceNetworkAfter100StepsIsBitIdentical() throws {
    let data = try fashionSlice(5000)
    let one = try train(data, spec: ModelSpec.reference, threads: 1, batch: 50, steps: 100)
    for t in [2, 5, 16] {
        let other = try train(data, spec: ModelSpec.reference, threads: t, batch: 50, steps: 100)
        #expect(firstDifference(other.losses, one.losses) == nil, "losses differ at \(t) threads")
        #expect(firstDifference(other.weights, one.weights) == nil, "weights differ at \(t) threads")
    }
}

@Test func evaluationCountsEveryImage() throws {
    let data = try fashionSlice(230)
    var c = TrainConfig()
    c.spec = try ModelSpec(parsing: smallSpec); c.threads = 2; c.batch = 50
    let t = try Trainer(config: c, data: data)
    let e = t.evaluate(data)  // 230 = 4 full chunks + 30
    #expect(e.count == 230 && e.correct >= 0 && e.correct <= 230 && e.loss.isFinite)
    #expect(e.accuracy == Double(e.correct) / 230)
}
