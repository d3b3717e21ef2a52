// The forward pass and the loss, stage by stage on the worker pool.
import Foundation
import PTKernels
import PTRuntime

extension Network {
    /// Runs the first `count` samples of `input` through the network into `logits`.
    /// Dropout is applied only when `training`, with masks keyed by (seed, step, sample, unit).
    public func forward(count n: Int, training: Bool, step: Int = 0, seed: UInt64 = 0) {
        precondition(n >= 1 && n <= capacity)
        let W = weights
        let split = firstDense, mine = samples(batch: n, rank: group.rank)
        for (idx, stage) in stages.enumerated() {
            let x = io[idx].x, y = io[idx].y
            let start = clock()
            defer { charge(.forward(idx), since: start) }
            label(regionLabels[idx].forward)
            // Per-sample stages run on this rank's samples; from the first dense layer on, on all.
            let range = idx < split ? mine : 0..<n
            if idx == split && split > 0 && group.size > 1 {
                let size = sizes[idx]
                group.allgather(x) { r in let p = samples(batch: n, rank: r); return (p.lowerBound * size)..<(p.upperBound * size) }
            }
            switch stage {
            case let .conv(c):
                // A sample at a time: its im2col is built in the worker's scratch and used from cache.
                switch c.path {
                case .winograd:
                    let pairs = c.window.channels * c.cout
                    let transform = WinogradWeightsJob(w: W + c.weight, pairs: pairs, u: c.u!, chunks: min(pairs / 16, 4 * pool.splitCount))
                    pool.run(items: transform.chunks, transform)
                    pool.run(items: 16, PackWinogradJob(c: c))
                case .im2col, .pointwise:
                    let pack = PackBJob(k: c.window.patch, n: c.cout, b: .rowMajor(W + c.weight, cols: c.cout), into: c.packedW,
                                        workers: pool.splitCount, precision: c.precision)
                    pool.run(items: pack.items, pack)
                case .singleChannel:
                    break  // reads the weights as stored
                }
                let parts = convParts(idx, c, batch: n, backward: false)
                pool.run(range: (range.lowerBound * parts.count)..<(range.upperBound * parts.count), ConvForwardJob(
                    c: c, x: x, y: y, weights: W, scratch: scratchLayout, parts: parts, pool: pool))
            case let .pool(p):
                if p.fused { break }
                pool.run(range: range, PoolJob(p: p, x: x, y: y, backward: false))
            case let .dense(d):
                if group.size > 1 {
                    chainedDenseForward(d, count: n, x: x, y: y)
                } else {
                    var job = GemmJob(m: n, n: d.outputs, k: d.inputs, a: .rowMajor(x, cols: d.inputs),
                                      b: .rowMajor(W + d.weight, cols: d.outputs), c: y, ldc: d.outputs,
                                      bias: W + d.bias, relu: d.relu, precision: d.precision)
                    if let xh = d.inputBF16 {
                        let round = PackRowsJob(src: x, rows: n, k: d.inputs, into: xh)
                        pool.run(items: round.items, round)
                        job.aBF16 = UnsafePointer(xh); job.aBF16Stride = GemmBF16.paddedK(d.inputs)
                    }
                    pool.gemm(job)
                }
            case let .dropout(d):
                pool.run(range: range, DropoutJob(d: d, x: x, y: y, mode: training ? .train : .evaluate, seed: seed, step: step))
            }
        }
    }

    /// Softmax cross-entropy of the first `count` logits against `labels`; writes the gradient of
    /// the batch-mean loss into the logits' gradient buffer and returns that mean.
    /// Each sample's loss and gradient on the pool; the losses are summed in sample order.
    public func lossAndGradient(count n: Int) -> Float {
        let out = stages.count
        label("loss")
        pool.run(items: n, LossJob(logits: acts[out], dlogits: grads[out], labels: labels, classes: classes,
                                   scale: 1 / Float(n), losses: sampleLosses))
        var sum: Float = 0
        for s in 0..<n { sum += sampleLosses[s] }
        return sum / Float(n)
    }
}
