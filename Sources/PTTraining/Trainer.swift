// The training loop: seeded per-epoch shuffling, one forward/backward over the whole batch on the
// worker pool, and one Adam step (taken by the backward pass, see `Network.backward(count:adam:)`).
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
    public var lr = 1e-4
    public var beta1 = 0.9
    public var beta2 = 0.999
    public var epsilon = 1e-8
    public var seed: UInt64 = 1
    public init() {}
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
    /// Optimizer steps taken so far.
    public private(set) var step = 0
    private var order: [Int32]
    /// False when the last step's gradients held a NaN or an infinity.
    public private(set) var gradientsFinite = true
    private var orderEpoch = -1
    /// With `network.profiling`: time spent in the loss (nanoseconds).
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
        network = try Network(spec: spec, input: Shape(h: data.rows, w: data.cols, c: 1), classes: Dataset.classes,
                              capacity: max(config.batch, evalCapacity), threads: config.threads, seed: config.seed,
                              group: group)
        order = (0..<Int32(data.count)).map { $0 }
    }

    /// Continues from a checkpoint's step (its weights and moments restored by `Checkpoint.restore`).
    public func restore(step: Int) { self.step = step }

    public var checkpointState: CheckpointState {
        CheckpointState(spec: network.spec.text, input: network.inputShape, classes: network.classes, step: step,
                        seed: config.seed, batch: config.batch, trainCount: data.count,
                        lr: config.lr, beta1: config.beta1, beta2: config.beta2, epsilon: config.epsilon)
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
        let b = config.batch, size = data.rows * data.cols
        let epoch = step / stepsPerEpoch, first = (step % stepsPerEpoch) * b
        prepareOrder(epoch: epoch)
        let net = network
        net.label("batch")
        order.withUnsafeBufferPointer { order in
            data.pixels.withUnsafeBufferPointer { pixels in
                data.labels.withUnsafeBufferPointer { labels in
                    net.pool.run(items: b, BatchJob(order: order.baseAddress! + first, pixels: pixels.baseAddress!, labels: labels.baseAddress!,
                                                    size: size, input: net.input, inputLabels: net.labels))
                }
            }
        }
        step += 1
        net.forward(count: b, training: true, step: step, seed: config.seed)
        let t0 = net.profiling ? DispatchTime.now().uptimeNanoseconds : 0
        let loss = net.lossAndGradient(count: b)
        if net.profiling { lossNanos &+= DispatchTime.now().uptimeNanoseconds &- t0 }
        // The backward pass takes the Adam step too (dense weights inside it, while in cache).
        let adam = AdamStep(lr: config.lr, beta1: config.beta1, beta2: config.beta2, epsilon: config.epsilon, t: step)
        gradientsFinite = net.backward(count: b, adam: adam)
        return loss
    }

    /// A batch's images (scaled to [0, 1], as `Dataset.copySample`) and labels into the network's
    /// input, a sample per item.
    struct BatchJob: ParallelJob, @unchecked Sendable {  // a sample's input and label per item; reads the data set
        var order: UnsafePointer<Int32>
        var pixels, labels: UnsafePointer<UInt8>
        var size: Int
        var input: UnsafeMutablePointer<Float>
        var inputLabels: UnsafeMutablePointer<Int32>
        func run(_ s: Int, _ worker: Int) {
            let i = Int(order[s])
            Dataset.scale(pixels + i * size, count: size, to: input + s * size)
            inputLabels[s] = Int32(labels[i])
        }
        func bytesMoved(items: Int) -> Int { items * (size * 5 + 5) }
    }

    /// Mean loss and accuracy over a whole dataset (no dropout), in chunks of the buffers' capacity.
    public func evaluate(_ set: Dataset) -> Evaluation {
        Self.evaluate(network, set)
    }

    /// `record(label, predicted)` is called for every image, in order.
    public static func evaluate(_ net: Network, _ set: Dataset, record: (Int, Int) -> Void = { _, _ in }) -> Evaluation {
        var lossSum = 0.0, correct = 0
        forEachPrediction(net, set) { i, logits in
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
    public static func forEachPrediction(_ net: Network, _ set: Dataset, _ body: (Int, UnsafeMutablePointer<Float>) -> Void) {
        let size = set.rows * set.cols
        var start = 0
        while start < set.count {
            let n = min(net.capacity, set.count - start)
            for s in 0..<n { set.copySample(start + s, to: net.input + s * size) }
            net.forward(count: n, training: false)
            for s in 0..<n { body(start + s, net.logits + s * net.classes) }
            start += n
        }
    }
}
