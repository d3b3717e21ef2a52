// The forward pass and the loss, stage by stage on the worker pool.
import Foundation
import PTKernels
import PTRuntime

extension Network {
    /// Runs the first `count` samples of `input` through the network into `logits`.
    /// Dropout is applied only when `training`, with masks keyed by (seed, step, sample, unit).
    public func forward(count n: Int, training: Bool, step: Int = 0, seed: UInt64 = 0) {
        precondition(n >= 1 && n <= capacity)
        let split = firstDense, mine = samples(batch: n, rank: group.rank)
        for idx in stages.indices {
            let start = clock()
            defer { charge(.forward(idx), since: start) }
            label(regionLabels[idx].forward)
            // Per-sample stages run on this rank's samples; from the first dense layer on, on all.
            let range = idx < split ? mine : 0..<n
            if idx == split && split > 0 && group.size > 1 {
                let size = activations.sizes[idx]
                group.allgather(activations.io[idx].x) { r in let p = samples(batch: n, rank: r); return (p.lowerBound * size)..<(p.upperBound * size) }
            }
            stages[idx].forward(self, StagePass(index: idx, count: n, samples: range, io: activations.io[idx], training: training, step: step, seed: seed))
        }
    }

    /// Softmax cross-entropy of the first `count` logits against `labels`; writes the gradient of
    /// the batch-mean loss into the logits' gradient buffer and returns that mean.
    /// Each sample's loss and gradient on the pool; the losses are summed in sample order.
    public func lossAndGradient(count n: Int) -> Float {
        let out = stages.count
        label("loss")
        pool.run(items: n, LossJob(logits: activations.values[out], dlogits: activations.gradients[out], labels: labels, classes: classes,
                                   scale: 1 / Float(n), losses: sampleLosses))
        var sum: Float = 0
        for s in 0..<n { sum += sampleLosses[s] }
        return sum / Float(n)
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
