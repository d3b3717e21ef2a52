// The training step: seeded per-epoch shuffling, the batch assembled (and augmented) on the
// worker pool, one forward/backward over the whole batch, and one optimizer step at the
// scheduled rate (taken by the backward pass, see `Network.backward(count:optimizer:)`).
import Foundation
import PTKernels
import PTModel
import PTRuntime

/// A training run's settings. Their defaults here are the only ones: the command line's flags
/// fall back to them, and its help text prints them.
public struct TrainConfig: Sendable {
    /// Steps a run trains for when neither steps nor epochs are given.
    public static let defaultSteps = 3000
    public var spec = ModelSpec.referenceModel
    public var threads = 1
    public var batch = 50
    public var optimizer = OptimizerSettings()
    public var augmentation = Augmentation.none
    public var seed: UInt64 = 1
    /// The arithmetic of convolutions and dense layers.
    public var precision = Precision.fp32
    /// What inputs are normalised with: nil for the training set's per-channel mean and std
    /// (`Normalization.of`); a resumed run passes its checkpoint's.
    public var normalization: Normalization?
    /// Image folders' images made this size (square) as they load; recorded in checkpoints so that
    /// eval and predict load images the same way.
    public var resize: Int?
    public init() {}
}

extension TrainConfig {
    /// The settings a checkpoint was trained with, to continue it exactly (the thread count is
    /// the caller's: it changes no bit). Throws the spec's `SpecError` if it does not parse.
    public init(resuming s: CheckpointState) throws {
        self.init()
        spec = try ModelSpec(parsing: s.spec)
        batch = s.batch; seed = s.seed; normalization = s.normalization
        optimizer = s.optimizer; augmentation = s.augmentation; precision = s.precision; resize = s.resize
    }
}

/// Training stopped because the loss or a gradient stopped being a finite number.
public struct TrainingDiverged: Error, CustomStringConvertible {
    public var step: Int
    public var loss: Float
    /// The first parameter tensor whose gradient was not finite, if one was.
    public var tensor: String?
    public init(step: Int, loss: Float, tensor: String?) { self.step = step; self.loss = loss; self.tensor = tensor }
    public var description: String {
        "training diverged: the loss became \(loss) at step \(step)" + (tensor.map { ", first non-finite gradient in \($0)" } ?? "")
    }
}

public struct Evaluation: Sendable {
    public var loss: Double
    public var accuracy: Double
    public var correct: Int
    public var count: Int
}

public final class Trainer {
    public let config: TrainConfig
    public let network: Network
    public let data: Dataset
    /// Applied to every input, in training and in `evaluate` (and saved in checkpoints).
    public let normalization: Normalization
    /// `normalization.table` and the epoch's sample order, held as raw buffers for the batch job.
    private let inputTable: UnsafeMutableBufferPointer<Float>
    /// Optimizer steps taken so far.
    public private(set) var step = 0
    private let order: UnsafeMutableBufferPointer<Int32>
    /// False when the last step's gradients held a NaN or an infinity.
    public private(set) var gradientsFinite = true
    private var orderEpoch = -1
    /// With `network.profile.enabled`: time spent in the loss (nanoseconds).
    public var lossNanos: UInt64 = 0

    public var stepsPerEpoch: Int { data.count / config.batch }

    /// `group`: the processes the batch is split across (see `Network.group`).
    public init(config: TrainConfig, data: Dataset, evalCapacity: Int = 0, group: ProcessGroup = .single) throws {
        guard config.batch >= 1 else { throw ShapeError(message: "a batch must hold at least 1 sample, not \(config.batch)") }
        guard config.batch <= data.count else {
            throw ShapeError(message: "a batch of \(config.batch) is larger than the training set (\(data.count) images)")
        }
        let spec = config.spec
        self.config = config
        self.data = data
        normalization = config.normalization ?? .of(data)
        guard normalization.channels == data.shape.c else {
            throw ShapeError(message: "the normalisation has \(normalization.channels) channels but the images have \(data.shape.c)")
        }
        if let bn = try NetworkPlan(spec: spec, input: data.shape, classes: data.classes).batchNormWithOneValue(batch: config.batch) {
            throw ShapeError(message: "a batch of \(config.batch) gives \(bn) one value per channel to normalise: batch norm needs a batch of at least 2 there")
        }
        network = try Network(spec: spec, input: data.shape, classes: data.classes,
                              capacity: max(config.batch, evalCapacity), threads: config.threads, seed: config.seed,
                              precision: config.precision, group: group, secondMoment: config.optimizer.kind != .sgd)
        // (After the last throw: a failed init would not free them.)
        inputTable = .allocate(capacity: 256 * normalization.channels)
        _ = inputTable.initialize(from: normalization.table)
        order = .allocate(capacity: data.count)
        order.initialize(repeating: 0)
    }

    deinit {
        inputTable.deallocate()
        order.deallocate()
    }

    /// Continues from a checkpoint's step (its weights and moments restored by `Checkpoint.restore`).
    public func restore(step: Int) { self.step = step }

    public var checkpointState: CheckpointState {
        CheckpointState(spec: network.spec.text, input: network.inputShape, classNames: data.classNames,
                        normalization: normalization, step: step,
                        seed: config.seed, batch: config.batch, trainCount: data.count,
                        optimizer: config.optimizer, augmentation: config.augmentation, precision: config.precision,
                        resize: config.resize)
    }

    /// The name of the first parameter tensor whose gradient is not finite, if any.
    public func nonFiniteGradient() -> String? { network.nonFiniteGradient() }

    /// The dataset index of position `i` in the batch of step `t` (0-based): epoch e uses a
    /// permutation seeded by (seed, e), and a partial batch at an epoch's end is skipped.
    private func prepareOrder(epoch: Int) {
        if orderEpoch == epoch { return }
        for i in 0..<order.count { order[i] = Int32(i) }
        var rng = SplitMix64(seed: Dropout.hash(config.seed, 0x5348_5546, UInt64(epoch), 0))
        var i = order.count - 1
        while i > 0 {
            let j = Int(rng.next() % UInt64(i + 1))
            order.swapAt(i, j)
            i -= 1
        }
        orderEpoch = epoch
    }

    /// One optimizer step; returns the batch's mean loss.
    @discardableResult
    public func trainStep() -> Float {
        let b = config.batch
        let epoch = step / stepsPerEpoch, first = (step % stepsPerEpoch) * b
        prepareOrder(epoch: epoch)
        let net = network
        net.label("batch")
        data.pixels.withUnsafeBufferPointer { pixels in
            data.labels.withUnsafeBufferPointer { labels in
                net.pool.run(items: b, BatchJob(order: order.baseAddress! + first, pixels: pixels.baseAddress!,
                                                labels: labels.baseAddress!, shape: data.shape, table: inputTable.baseAddress!,
                                                augmentation: config.augmentation, seed: config.seed, epoch: epoch,
                                                input: net.input, inputLabels: net.labels))
            }
        }
        step += 1
        net.forward(count: b, training: true, step: step, seed: config.seed)
        let t0 = net.profile.enabled ? DispatchTime.now().uptimeNanoseconds : 0
        let loss = net.lossAndGradient(count: b)
        if net.profile.enabled { lossNanos &+= DispatchTime.now().uptimeNanoseconds &- t0 }
        // The backward pass takes the optimizer step too (dense weights inside it, while in cache).
        gradientsFinite = net.backward(count: b, optimizer: config.optimizer.update(step: step))
        return loss
    }

    /// A batch's images (through the normalisation's table, as `Dataset.copySample`, and the
    /// augmentation) and labels into the network's input, a sample per item.
    struct BatchJob: ParallelJob, @unchecked Sendable {  // a sample's input and label per item; reads the data set
        var order: UnsafePointer<Int32>
        var pixels: UnsafePointer<UInt8>
        var labels: UnsafePointer<Int32>
        var shape: Shape
        var table: UnsafePointer<Float>
        var augmentation: Augmentation
        var seed: UInt64
        var epoch: Int
        var input: UnsafeMutablePointer<Float>
        var inputLabels: UnsafeMutablePointer<Int32>
        func run(_ s: Int, _ worker: Int) {
            let i = Int(order[s]), size = shape.count
            if augmentation.isNone {
                Dataset.convert(pixels + i * size, count: size, channels: shape.c, table: table, to: input + s * size)
            } else {
                augmentation.apply(pixels + i * size, shape: shape, table: table, seed: seed, epoch: epoch, index: i, to: input + s * size)
            }
            inputLabels[s] = labels[i]
        }
        func bytesMoved(items: Int) -> Int { items * (shape.count * 5 + 8) }
    }

    /// Mean loss and accuracy over a whole dataset (no dropout), in chunks of the buffers' capacity.
    public func evaluate(_ set: Dataset) -> Evaluation {
        Self.evaluate(network, set, normalization: normalization)
    }

    /// `record(label, predicted)` is called for every image, in order.
    public static func evaluate(_ net: Network, _ set: Dataset, normalization: Normalization,
                                record: (Int, Int) -> Void = { _, _ in }) -> Evaluation {
        var lossSum = 0.0, correct = 0
        forEachPrediction(net, set, normalization: normalization) { i, logits in
            let label = Int(set.labels[i])
            let r = SoftmaxCrossEntropy.loss(logits: logits, classes: net.classes, label: label)
            lossSum += Double(r.loss)
            if r.argmax == label { correct += 1 }
            record(label, r.argmax)
        }
        return Evaluation(loss: lossSum / Double(max(set.count, 1)), accuracy: Double(correct) / Double(max(set.count, 1)),
                          correct: correct, count: set.count)
    }

    /// Runs every image of `set` through `net` (no dropout) in chunks of the buffers' capacity;
    /// `body(i, logits)` sees image i's logits, in order.
    public static func forEachPrediction(_ net: Network, _ set: Dataset, normalization: Normalization,
                                         _ body: (Int, UnsafeMutablePointer<Float>) -> Void) {
        let size = set.sampleSize, table = normalization.table
        var start = 0
        table.withUnsafeBufferPointer { table in
            while start < set.count {
                let n = min(net.capacity, set.count - start)
                for s in 0..<n { set.copySample(start + s, to: net.input + s * size, table: table.baseAddress!) }
                net.forward(count: n, training: false)
                for s in 0..<n { body(start + s, net.logits + s * net.classes) }
                start += n
            }
        }
    }
}
