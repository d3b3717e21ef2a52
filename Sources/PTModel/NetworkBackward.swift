// The backward pass and the optimizer step, stage by stage on the worker pool, and the sum of the
// shards' conv gradients.
import Foundation
import PTKernels
import PTRuntime

extension Network {
    /// Parameters per slice of an optimizer job item.
    static let optimizerChunk = 1 << 14

    /// Fills `parameters.gradients` with d(mean loss)/d(parameters) for the last forward pass.
    public func backward(count n: Int) {
        lastBackwardFused = false
        backward(count: n, fused: nil)
    }

    /// Computes the gradients as `backward(count:)` does and takes one Adam step on every
    /// parameter, with the same bits as `backward(count:)` followed by Adam over the flat buffers.
    /// A dense layer's weights are updated inside its backward pass, a block of rows as soon as
    /// their gradient is known, from a block of gradient rows in the worker's scratch: fc1's 25.7 MB
    /// of weights is read from memory once instead of twice, and its gradient never goes to
    /// memory. So `parameters.gradients` holds every gradient except the dense weights'. Returns false when a
    /// gradient was not finite (the update has been applied all the same; `nonFiniteGradient`
    /// names the first such tensor).
    public func backward(count n: Int, adam: AdamStep) -> Bool { backward(count: n, optimizer: .adam(adam)) }

    /// `backward(count:adam:)` with any optimizer (`OptimizerStep`): Adam, AdamW or SGD, the
    /// dense weights updated inside their backward pass as Adam's are.
    public func backward(count n: Int, optimizer: OptimizerStep) -> Bool {
        finite.reset()
        lastBackwardFused = true
        backward(count: n, fused: optimizer)
        // Every dense row was updated and, where a layer keeps one, packed (`DenseUpdateJob`).
        packedWeightsCurrent = true
        let start = clock()
        label("optimizer (rest)")
        pool.run(items: optimizerSlices.count, OptimizerRangesJob(step: optimizer, w: parameters.values, g: parameters.gradients, m: parameters.moment1, v: parameters.moment2,
                                                                  slices: optimizerSlices, finite: finite.flags(slot: 0)))
        charge(.optimizer, since: start)
        finite.vote(group)
        return finite.allFinite
    }

    /// The name of the first parameter tensor whose last gradient was not finite, if any.
    public func nonFiniteGradient() -> String? {
        var denseSlot = 0
        for t in parameters.tensors {
            if case .denseWeight = t.kind {
                denseSlot += 1
                if lastBackwardFused {
                    if !finite.finite(slot: denseSlot) { return t.name }
                    continue
                }
            }
            if (0..<t.count).contains(where: { !parameters.gradients[t.offset + $0].isFinite }) { return t.name }
        }
        return nil
    }

    private func backward(count n: Int, fused: OptimizerStep?) {
        packedWeightsCurrent = false
        let split = firstDense, mine = samples(batch: n, rank: group.rank)
        for idx in stages.indices.reversed() {
            let start = clock()
            defer { charge(.backward(idx), since: start) }
            label(regionLabels[idx].backward)
            let range = idx < split ? mine : 0..<n
            stages[idx].backward(self, StagePass(index: idx, count: n, samples: range, io: activations.io[idx]), optimizer: fused)
        }
        let start = clock()
        label("conv grad all-reduce")
        reduceConvGradients(count: n)
        charge(.reduce, since: start)
    }

    /// The all-reduce of the conv gradients: each worker sums a slice of the parameters over the
    /// shards in shard order 0, 1, 2, ... into `parameters.gradients` (elementwise, so the slicing across
    /// workers cannot change a bit). Under mpirun the sum is passed along the ranks in rank order
    /// (`chainedConvReduce`).
    func reduceConvGradients(count n: Int) {
        if parameters.convCount == 0 { return }
        if group.size > 1 { chainedConvReduce(count: n); return }
        let job = ShardReduceJob(shards: parameters.shardGradients, count: Self.shardCount(batch: n), stride: parameters.convCount,
                                 out: parameters.gradients, total: parameters.convCount)
        pool.run(items: job.chunks, job)
    }

    /// Bytes the conv-gradient reduction of a batch of `n` reads and writes (for GB/s).
    public func reduceBytes(batch n: Int) -> Int { parameters.convCount == 0 ? 0 : 4 * parameters.convCount * (Self.shardCount(batch: n) + 1) }
}

/// out[i] = shard 0 + shard 1 + ... in that order, for a slice of the parameters per item.
/// Public for the all-reduce benchmark in Benchmarks/.
public struct ShardReduceJob: ParallelJob, @unchecked Sendable {  // an item writes its slice of the sum
    static let chunk = 1 << 12
    var shards: UnsafeMutablePointer<Float>
    var count, stride: Int
    var out: UnsafeMutablePointer<Float>
    var total: Int
    /// Whether `out` holds the sum of the shards before these (another rank's), to go on from.
    var continues = false
    public init(shards: UnsafeMutablePointer<Float>, count: Int, stride: Int, out: UnsafeMutablePointer<Float>, total: Int,
                continues: Bool = false) {
        self.shards = shards; self.count = count; self.stride = stride; self.out = out; self.total = total
        self.continues = continues
    }
    public var chunks: Int { (total + Self.chunk - 1) / Self.chunk }
    public func run(_ c: Int, _ worker: Int) {
        let lo = c * Self.chunk, length = min(Self.chunk, total - lo)
        if continues {
            Elementwise.addInOrder(shards + lo, count: count, stride: stride, length: length, into: out + lo)
        } else {
            Elementwise.sumInOrder(shards + lo, count: count, stride: stride, length: length, into: out + lo)
        }
    }
}

extension ShardReduceJob {
    public func bytesMoved(items: Int) -> Int { MemoryLayout<Float>.size * (count + (continues ? 2 : 1)) * min(items * Self.chunk, total) }
}
