// Regions cut finer than a sample or a tile range when there are more workers than items (a
// sample's conv work by blocks of channels, a GEMM along both dimensions, a pack by panels): the
// cuts must change no bit, whether the pieces run on real threads or are recorded one by one.
import Testing
import PTKernels
import PTModel
import PTRuntime
import PTKernels

/// Two training steps of a network that takes every cut at 64 workers: the one-channel conv's
/// forward by output rows, the Winograd conv's forward by output rows (of 2x2 tiles; with
/// `f4`, a 16x16 input, of 4x4 tiles) and its backward by input channels, fc1's forward along
/// both dimensions.
func twoSteps(threads: Int, split: Int, recorder: RegionRecorder? = nil, precision: Precision = .fp32, f4: Bool = false) throws -> [UInt32] {
    let spec = try ModelSpec(parsing: "conv(64,3) relu maxpool(2) conv(64,3) relu maxpool(2) fc(64) relu dropout(0.5) fc(10)")
    let n = 13, side = f4 ? 32 : 8
    let net = try Network(spec: spec, input: Shape(h: side, w: side, c: 1), classes: 10, capacity: n, threads: threads, seed: 3,
                          precision: precision)
    net.pool.splitCount = split
    net.pool.recorder = recorder
    var r = SplitMix64(seed: 9)
    for step in 1...2 {
        for i in 0..<(n * side * side) { net.input[i] = Float(r.nextUnit()) }
        for s in 0..<n { net.labels[s] = Int32((s + step) % 10) }
        net.forward(count: n, training: true, step: step, seed: 2)
        _ = net.lossAndGradient(count: n)
        _ = net.backward(count: n, adam: AdamStep(lr: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, t: step))
    }
    net.pool.recorder = nil
    return (0..<net.parameters.count).map { net.weights[$0].bitPattern }
}

@Test(arguments: [2, 3], [false, true])
func cuttingWorkForManyWorkersChangesNoBit(_ threads: Int, _ f4: Bool) throws {
    let plain = try twoSteps(threads: 1, split: 1, f4: f4)
    // Real threads running the pieces cut for 64 workers.
    #expect(try twoSteps(threads: threads, split: 64, f4: f4) == plain)
}

/// In bf16 (no Winograd: the GEMMs along both dimensions, the packs by panels, fc1's rounded
/// input by rows), on every bf16 path this CPU has.
@Test(arguments: BF16Path.available)
func cuttingBF16WorkForManyWorkersChangesNoBit(_ path: BF16Path) throws {
    let plain = try twoSteps(threads: 1, split: 1, precision: .bf16(path))
    #expect(try twoSteps(threads: 3, split: 64, precision: .bf16(path)) == plain)
    #expect(try twoSteps(threads: 1, split: 64, precision: .bf16(path)) == plain)
}

@Test(arguments: [false, true])
func aRecordingCutForManyWorkersShowsTheCutsAndChangesNoBit(_ f4: Bool) throws {
    let plain = try twoSteps(threads: 1, split: 1, f4: f4)
    let recorder = RegionRecorder()
    #expect(try twoSteps(threads: 1, split: 64, recorder: recorder, f4: f4) == plain)
    func items(_ job: String, _ label: String) -> Int? {
        recorder.regions.last { $0.job == job && $0.label.hasPrefix(label) }?.items
    }
    // 13 samples (13 shards of one) on 64 workers: each is cut into parts (forward, rows; backward,
    // channels).
    #expect((items("ConvForwardJob", "conv 3x3 1->64") ?? 0) > 13)
    #expect((items("ConvForwardJob", "conv 3x3 64->64") ?? 0) > 13)
    #expect((items("ConvBackwardJob", "conv 3x3 64->64") ?? 0) > 13)
    // fc1: 13 x 64 outputs have fewer column tiles than 64 workers, so its rows are cut too.
    let columnTiles = (64 + Gemm.nr - 1) / Gemm.nr
    #expect((items("SplitGemm", f4 ? "fc 4096->64" : "fc 256->64") ?? 0) > columnTiles)
}
