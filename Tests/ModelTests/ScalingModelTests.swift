// The scaling model's parts: the pool's hand-out policy replayed, a prediction built from a
// recorded step, and the recording itself (which must not change a bit).
import Testing
import PTModel
import PTRuntime
import PTKernels

/// Free workers take the next item in order: [3, 1, 1, 1] on 2 workers is 3 (one takes the 3,
/// the other the three 1s); more workers than items is the longest item.
@Test func makespanReplaysThePoolsPolicy() {
    #expect(ScalingModel.makespan([3, 1, 1, 1], workers: 1) == 6)
    #expect(ScalingModel.makespan([3, 1, 1, 1], workers: 2) == 3)
    #expect(ScalingModel.makespan([1, 1, 1, 3], workers: 2) == 4)  // the 3 comes last: 1+3 beside 1+1
    #expect(ScalingModel.makespan([5, 2, 2], workers: 8) == 5)
    #expect(ScalingModel.makespan([2, 2, 2, 2, 2, 2, 2, 2], workers: 4) == 4)
    #expect(ScalingModel.makespan([], workers: 4) == 0)
}

@Test func predictionAddsRegionsSerialPartBandwidthAndRegionCost() {
    let regions = [
        RegionRecorder.Region(label: "a", job: "J", start: 0, end: 400, firstItem: 0, items: 4, bytes: 0),
        RegionRecorder.Region(label: "b", job: "K", start: 500, end: 600, firstItem: 4, items: 1, bytes: 1000),
    ]
    let items: [UInt64] = [100, 100, 100, 100, 100]
    let free = ScalingModel.Target(bandwidth: 1e15, regionCost2: 0)
    // One worker: the recorded wall time (regions, plus 100 ns between them and 400 after: serial).
    #expect(ScalingModel.predict(regions, items: items, wall: 1000, workers: 1, target: free).stepNanos == 1000)
    // Four workers: region a in 100, region b (one item) 100, serial 500.
    let four = ScalingModel.predict(regions, items: items, wall: 1000, workers: 4, target: free)
    #expect(four.stepNanos == 700)
    #expect(four.limiting.hasPrefix("serial part"))
    // Region b streams 1000 bytes: at 1 GB/s that is 1000 ns, more than its item.
    let slow = ScalingModel.Target(bandwidth: 1e9, regionCost2: 10)
    let limited = ScalingModel.predict(regions, items: items, wall: 1000, workers: 4, target: slow)
    #expect(limited.stepNanos == 100 + 30 + 1000 + 500)  // a + its start/finish at 4 workers, b's floor (one item: no region), serial
    #expect(limited.limiting == "b (K)")
    // The ceiling splits each region's one-worker time perfectly: b's one item as 4 quarters
    // (25 each) without a floor; with one, b stays at its 1000 ns floor, a is split evenly already.
    #expect(four.ceilingNanos == 100 + 25 + 500)
    #expect(limited.ceilingNanos == limited.stepNanos)
    // A region cut unevenly is above its ceiling: [300, 50, 50] on 4 workers takes 300, split 100.
    let uneven = [RegionRecorder.Region(label: "c", job: "J", start: 0, end: 400, firstItem: 0, items: 3, bytes: 0)]
    let p = ScalingModel.predict(uneven, items: [300, 50, 50], wall: 400, workers: 4, target: free)
    #expect(p.stepNanos == 300 && p.ceilingNanos == 100)
}

/// A job with no stored properties runs on a pool of several workers (its address may be null).
struct NothingJob: ParallelJob { func run(_ item: Int, _ worker: Int) {} }
@Test func aJobWithNoStateRunsOnSeveralWorkers() {
    let pool = WorkerPool(threads: 2, scratchFloats: 16)
    for _ in 0..<2000 { pool.run(items: 2, NothingJob()) }
}

/// Recording a step (one worker, items timed, regions cut for 7 or 64 workers) gives the bits of
/// an unrecorded step, and records every region with its items.
@Test(arguments: [7, 64])
func recordingAStepChangesNoBit(_ split: Int) throws {
    let spec = try ModelSpec(parsing: "conv(8,3) relu maxpool(2) conv(16,3) relu fc(40) relu dropout(0.5) fc(10)")
    func run(record: Bool) throws -> ([UInt32], RegionRecorder?) {
        let net = try Network(spec: spec, input: Shape(h: 12, w: 12, c: 1), classes: 10, capacity: 13, threads: 1, seed: 5)
        var r = SplitMix64(seed: 1)
        for i in 0..<(13 * 144) { net.input[i] = Float(r.nextUnit()) }
        for s in 0..<13 { net.labels[s] = Int32(s % 10) }
        let recorder = record ? RegionRecorder() : nil
        net.pool.recorder = recorder
        if record { net.pool.splitCount = split }
        net.forward(count: 13, training: true, step: 1, seed: 2)
        _ = net.lossAndGradient(count: 13)
        _ = net.backward(count: 13, adam: AdamStep(lr: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, t: 1))
        return ((0..<net.parameters.count).map { net.weights[$0].bitPattern }, recorder)
    }
    let (plain, _) = try run(record: false)
    let (recorded, recorder) = try run(record: true)
    #expect(plain == recorded)
    let rec = try #require(recorder)
    #expect(rec.regions.count > 5)
    #expect(rec.itemNanos.count == rec.regions.reduce(0) { $0 + $1.items })
    #expect(rec.regions.contains { $0.job == "ConvForwardJob" && $0.items == 13 && $0.label.hasPrefix("conv 3x3 1->8") })
    #expect(rec.regions.contains { $0.job == "DenseUpdateJob" && $0.bytes > 0 })
}
