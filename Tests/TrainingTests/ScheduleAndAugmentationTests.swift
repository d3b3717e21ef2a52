// Learning-rate schedules, warmup and augmentation: their values, their text forms, and that a
// run using them gives the same bits at any thread count and when stopped and resumed mid-warmup.
import Foundation
import PTModel
import PTTestSupport
import PTTraining
import Testing

@Test func schedulesGiveTheirRatesStepByStep() throws {
    let eps = 1e-12
    // Warmup: t / W for t <= W, then the schedule from its start.
    #expect(LRSchedule.constant.factor(step: 1, warmup: 4) == 0.25 && LRSchedule.constant.factor(step: 4, warmup: 4) == 1)
    #expect(LRSchedule.constant.factor(step: 9, warmup: 4) == 1 && LRSchedule.constant.factor(step: 1, warmup: 0) == 1)
    // Cosine over 10 steps after 2 of warmup: 1 at step 3, 0.5 half way, near 0 at the end.
    let cosine = LRSchedule.cosine(steps: 12)
    #expect(cosine.factor(step: 2, warmup: 2) == 1 && abs(cosine.factor(step: 3, warmup: 2) - 1) < eps)
    #expect(abs(cosine.factor(step: 8, warmup: 2) - 0.5) < eps)
    #expect(abs(cosine.factor(step: 12, warmup: 2) - 0.5 * (1 + cos(Double.pi * 0.9))) < eps)
    #expect(cosine.factor(step: 40, warmup: 2) == 0)
    // Step decay: 3 steps at 1, 3 at 0.5, then 0.25.
    let step = LRSchedule.step(every: 3, factor: 0.5)
    #expect((1...7).map { step.factor(step: $0, warmup: 0) } == [1, 1, 1, 0.5, 0.5, 0.5, 0.25])
    // Text forms parse back; bad ones say why.
    for s in [LRSchedule.constant, .cosine(steps: 300), .step(every: 100, factor: 0.1)] {
        #expect(try LRSchedule.parse(s.description, totalSteps: 7).get() == s)
    }
    #expect(try LRSchedule.parse("cosine", totalSteps: 500).get() == .cosine(steps: 500))
    for bad in ["linear", "step:0:0.5", "step:10", "step:10:-1", "cosine:x", "constant:1"] {
        #expect(throws: SettingError.self, "\(bad)") { try LRSchedule.parse(bad, totalSteps: 5).get() }
    }
    #expect(try Augmentation.parse(["flip", "crop=4"]).get() == Augmentation(flip: true, crop: 4))
    #expect(try Augmentation.parse(["crop=2,flip"]).get().description == "flip,crop=2")
    #expect(try Augmentation.parse(["none"]).get() == .none && Augmentation.none.description == "none")
    for bad in ["mirror", "crop=0", "crop=x", "crop=65"] {
        #expect(throws: SettingError.self, "\(bad)") { try Augmentation.parse([bad]).get() }
    }
}

/// A data set of one image whose pixel (y, x, c) is 10 + 30y + 3x + c, read back through a
/// trainer's first batch with augmentation: every sample is the image shifted by some offset in
/// [-crop, crop]² (zero padding outside) and mirrored or not; across samples several offsets
/// and both mirrorings occur.
@Test func augmentedSamplesAreShiftedAndMirroredCopies() throws {
    let shape = Shape(h: 6, w: 5, c: 2), n = 64
    var image: [UInt8] = []
    for y in 0..<6 { for x in 0..<5 { for c in 0..<2 { image.append(UInt8(10 + 30 * y + 3 * x + c)) } } }
    let set = Dataset(count: n, shape: shape, pixels: Array((0..<n).map { _ in image }.joined()), labels: [Int32](repeating: 0, count: n),
                      classNames: ["a", "b"])
    var c = TrainConfig()
    c.spec = try ModelSpec(parsing: "fc(2)"); c.batch = n; c.threads = 2; c.augmentation = Augmentation(flip: true, crop: 2)
    c.normalization = .identity(channels: 2)
    let t = try Trainer(config: c, data: set)
    t.trainStep()
    var seen = Set<[Int]>()
    for s in 0..<n {
        let got = (0..<shape.count).map { t.network.input[s * shape.count + $0] }
        var match: [Int]?
        for mirror in [0, 1] { for dy in -2...2 { for dx in -2...2 {
            var want: [Float] = []
            for y in 0..<6 { for x in 0..<5 { for ch in 0..<2 {
                let sy = y + dy, sx = (mirror == 1 ? 4 - x : x) + dx
                let inside = (0..<6).contains(sy) && (0..<5).contains(sx)
                let byte: UInt8 = inside ? image[(sy * 5 + sx) * 2 + ch] : 0
                want.append(Float(byte) * (1 / 255))
            } } }
            if want.map({ $0.bitPattern }) == got.map({ $0.bitPattern }) { match = [mirror, dy, dx] }
        } } }
        #expect(match != nil, "sample \(s) is no shifted copy")
        if let match { seen.insert(match) }
    }
    #expect(seen.count >= 15 && Set(seen.map { $0[0] }).count == 2, "\(seen.count) variants")
}

private func configured(threads: Int, optimizer: OptimizerKind, schedule: LRSchedule, warmup: Int, augment: Augmentation) throws -> Trainer {
    var c = TrainConfig()
    c.spec = try ModelSpec(parsing: "conv(4,3) relu maxpool(2) fc(16) relu fc(10)")
    c.threads = threads; c.batch = 10; c.seed = 11; c.augmentation = augment
    c.optimizer.kind = optimizer; c.optimizer.lr = 0.01; c.optimizer.weightDecay = 0.01; c.optimizer.schedule = schedule; c.optimizer.warmup = warmup
    return try Trainer(config: c, data: Bench.synthetic(count: 50, rows: 8, cols: 8, seed: 6))
}

private let runs: [(OptimizerKind, LRSchedule, Int, Augmentation)] = [
    (.adam, .cosine(steps: 12), 5, .none),
    (.adamw, .step(every: 3, factor: 0.5), 4, Augmentation(flip: true, crop: 0)),
    (.sgd, .cosine(steps: 12), 6, Augmentation(flip: true, crop: 2)),
]

/// Each optimizer, schedule and augmentation gives the same bits at 1, 2 and 3 threads; and a run
/// stopped at step 3 (inside warmup) and resumed from its checkpoint ends with the file an
/// unbroken run writes.
@Test(arguments: 0..<runs.count)
func schedulesAndAugmentationResumeExactlyAndIgnoreThreads(_ k: Int) throws {
    let (optimizer, schedule, warmup, augment) = runs[k]
    let dir = tempDir()
    defer { Scratch.remove(dir) }
    let testSet = Bench.synthetic(count: 20, rows: 8, cols: 8, seed: 8)
    var files: [Data] = []
    for threads in [1, 2, 3] {
        let whole = try configured(threads: threads, optimizer: optimizer, schedule: schedule, warmup: warmup, augment: augment)
        _ = try whole.run(RunSettings(steps: 12, checkpoint: dir + "/whole\(threads).st"), test: testSet)
        files.append(FileManager.default.contents(atPath: dir + "/whole\(threads).st")!)
    }
    #expect(files[0] == files[1] && files[0] == files[2])

    let first = try configured(threads: 2, optimizer: optimizer, schedule: schedule, warmup: warmup, augment: augment)
    var asked = 0
    _ = try first.run(RunSettings(steps: 12, checkpoint: dir + "/part.st"), test: testSet, stopRequested: { asked += 1; return asked == 3 ? SIGTERM : 0 })
    let (state, tensors) = try Checkpoint.load(dir + "/part.st")
    #expect(state.step == 3 && state.optimizer == first.config.optimizer && state.augmentation == augment)
    #expect(state.optimizer.kind == optimizer && state.optimizer.schedule == schedule && state.optimizer.warmup == warmup)
    // Resumed from what the checkpoint says, not from the configuration above.
    var c = try TrainConfig(resuming: state)
    c.threads = 1
    let second = try Trainer(config: c, data: Bench.synthetic(count: 50, rows: 8, cols: 8, seed: 6))
    try Checkpoint.restore(second.network, from: tensors, path: dir + "/part.st", optimizer: state)
    second.restore(step: state.step)
    _ = try second.run(RunSettings(steps: 12, checkpoint: dir + "/resumed.st"), test: testSet)
    #expect(FileManager.default.contents(atPath: dir + "/resumed.st") == files[0])
}
