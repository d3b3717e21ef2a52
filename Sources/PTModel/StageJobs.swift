// The per-sample stage regions of a step (pooling, ReLU mask, dropout, loss), as ParallelJob
// values: the worker pool runs them without allocating (a closure would cost a heap allocation
// per region).
import PTKernels
import PTRuntime

struct PoolJob: ParallelJob, @unchecked Sendable {  // an item writes its sample's output (and argmax)
    var p: PoolStage
    var x, y: UnsafeMutablePointer<Float>   // forward: x -> y; backward: y is dy, x is dx
    var backward: Bool
    func run(_ s: Int, _ worker: Int) {
        let g = p.window, inSize = g.inputSize, outSize = g.positions * g.channels
        switch (p.argmax, backward) {
        case let (am?, false): MaxPool.forward(g, x: x + s * inSize, y: y + s * outSize, argmax: am + s * outSize)
        case let (am?, true):
            MaxPool.backward(g, dy: y + s * outSize, argmax: am + s * outSize, dx: x + s * inSize)
        case (nil, false): AvgPool.forward(g, x: x + s * inSize, y: y + s * outSize)
        case (nil, true): AvgPool.backward(g, dy: y + s * outSize, dx: x + s * inSize)
        }
    }
}

/// A sample's softmax cross-entropy and the gradient of the batch-mean loss (`scale` = 1 / batch).
struct LossJob: ParallelJob, @unchecked Sendable {  // an item writes its sample's loss and logit gradient
    var logits, dlogits: UnsafeMutablePointer<Float>
    var labels: UnsafeMutablePointer<Int32>
    var classes: Int
    var scale: Float
    var losses: UnsafeMutablePointer<Float>
    func run(_ s: Int, _ worker: Int) {
        losses[s] = SoftmaxCrossEntropy.forwardBackward(logits: logits + s * classes, classes: classes, label: Int(labels[s]),
                                                        gradScale: scale, dlogits: dlogits + s * classes)
    }
}

/// dy = 0 where the ReLU output y was clamped, one sample of `size` floats per item.
struct ReluMaskJob: ParallelJob, @unchecked Sendable {  // an item writes its sample's gradient
    var dy, y: UnsafeMutablePointer<Float>
    var size: Int
    func run(_ s: Int, _ worker: Int) {
        Elementwise.reluBackward(dy: dy + s * size, y: y + s * size, count: size)
    }
}

struct DropoutJob: ParallelJob, @unchecked Sendable {  // an item writes its sample's output and mask
    var d: DropoutStage
    var x, y: UnsafeMutablePointer<Float>   // forward: y = x * mask; backward: x is dx, y is dy
    var mode: Mode
    var seed: UInt64, step: Int
    /// Backward: the ReLU output before this dropout, whose mask is applied here as well
    /// (`Elementwise.reluBackward`'s: 0 where it is not > 0).
    var reluOutput: UnsafeMutablePointer<Float>? = nil
    enum Mode { case train, evaluate, backward }
    func run(_ s: Int, _ worker: Int) {
        let m = d.scales + s * d.units, xs = x + s * d.units, ys = y + s * d.units
        switch mode {
        case .train:
            Dropout.fillScales(m, count: d.units, keep: d.keep, seed: seed, step: UInt64(step), sample: UInt64(s))
            for u in 0..<d.units { ys[u] = xs[u] * m[u] }
        case .evaluate:
            ys.update(from: xs, count: d.units)
        case .backward:
            if let r = reluOutput.map({ $0 + s * d.units }) {
                for u in 0..<d.units { xs[u] = r[u] > 0 ? ys[u] * m[u] : 0 }
            } else {
                for u in 0..<d.units { xs[u] = ys[u] * m[u] }
            }
        }
    }
}
