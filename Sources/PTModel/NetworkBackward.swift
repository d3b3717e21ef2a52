// The backward pass and the Adam step, stage by stage on the worker pool, and the sum of the
// shards' conv gradients.
import Foundation
import PTKernels
import PTRuntime

extension Network {
    /// Parameters per slice of an Adam job item.
    static let adamChunk = 1 << 14

    /// Fills `gradients` with d(mean loss)/d(parameters) for the last forward pass.
    public func backward(count n: Int) {
        lastBackwardFused = false
        backward(count: n, fused: nil)
    }

    /// Computes the gradients as `backward(count:)` does and takes one Adam step on every
    /// parameter, with the same bits as `backward(count:)` followed by Adam over the flat buffers.
    /// A dense layer's weights are updated inside its backward pass, a block of rows as soon as
    /// their gradient is known, from a block of gradient rows in the worker's scratch: fc1's 25.7 MB
    /// of weights is read from memory once instead of twice, and its gradient never goes to
    /// memory. So `gradients` holds every gradient except the dense weights'. Returns false when a
    /// gradient was not finite (the update has been applied all the same; `nonFiniteGradient`
    /// names the first such tensor).
    public func backward(count n: Int, adam: AdamStep) -> Bool { backward(count: n, optimizer: .adam(adam)) }

    /// `backward(count:adam:)` with any optimizer (`OptimizerStep`): Adam, AdamW or SGD, the
    /// dense weights updated inside their backward pass as Adam's are.
    public func backward(count n: Int, optimizer: OptimizerStep) -> Bool {
        finiteFlags.update(repeating: true, count: finiteSlots * pool.count)
        lastBackwardFused = true
        backward(count: n, fused: optimizer)
        let start = clock()
        label("adam (rest)")
        pool.run(items: adamSlices, OptimizerRangesJob(step: optimizer, w: weights, g: gradients, m: moment1, v: moment2,
                                                  starts: adamStarts, counts: adamCounts, finite: finiteFlags))
        charge(.adam, since: start)
        if group.size > 1 {
            // A rank saw only its rows of each dense layer's gradient: the ranks vote, slot by slot.
            for slot in 0..<finiteSlots {
                finiteVotes[slot] = (0..<pool.count).contains { !finiteFlags[slot * pool.count + $0] } ? 1 : 0
            }
            group.maximum(finiteVotes, count: finiteSlots)
            for slot in 0..<finiteSlots where finiteVotes[slot] != 0 { finiteFlags[slot * pool.count] = false }
        }
        return !(0..<(finiteSlots * pool.count)).contains { !finiteFlags[$0] }
    }

    /// The name of the first parameter tensor whose last gradient was not finite, if any.
    public func nonFiniteGradient() -> String? {
        var denseSlot = 0
        for t in tensors {
            if case .denseWeight = t.kind {
                denseSlot += 1
                if lastBackwardFused {
                    if (0..<pool.count).contains(where: { !finiteFlags[denseSlot * pool.count + $0] }) { return t.name }
                    continue
                }
            }
            if (0..<t.count).contains(where: { !gradients[t.offset + $0].isFinite }) { return t.name }
        }
        return nil
    }

    private func backward(count n: Int, fused: OptimizerStep?) {
        let W = weights
        let split = firstDense, mine = samples(batch: n, rank: group.rank)
        for idx in stages.indices.reversed() {
            let range = idx < split ? mine : 0..<n
            let x = io[idx].x, y = io[idx].y, dy = io[idx].dy, dx = io[idx].dx
            let needInput = idx > 0
            let start = clock()
            defer { charge(.backward(idx), since: start) }
            label(regionLabels[idx].backward)
            switch stages[idx] {
            case let .conv(c):
                let wt = needInput ? c.packedWt : nil
                if let wt, c.path != .winograd {  // (a Winograd conv packed its Uᵀ in the forward pass)
                    let pack = PackBJob(k: c.cout, n: c.window.patch, b: .transposed(W + c.weight, cols: c.cout), into: wt,
                                        workers: pool.splitCount, precision: c.precision)
                    pool.run(items: pack.items, pack)
                }
                let shards = Self.shardCount(batch: n), mine = self.shards(batch: n, rank: group.rank)
                let parts = convParts(idx, c, batch: n, backward: true)
                pool.run(range: (mine.lowerBound * parts.count)..<(mine.upperBound * parts.count), ConvBackwardJob(
                    c: c, x: x, y: y, dy: dy, dx: wt == nil ? nil : dx, wt: wt, scratch: scratchLayout, samples: n, shards: shards,
                    gw: shardGradients + c.weight, gb: shardGradients + c.bias, shardStride: convParams, parts: parts, pool: pool))
            case let .pool(p):
                if p.fused { break }
                pool.run(range: range, PoolJob(p: p, x: dx, y: dy, backward: true))
            case let .dense(d):
                if d.relu && !reluMaskedByDropout(after: idx) { pool.run(range: range, ReluMaskJob(dy: dy, y: y, size: d.outputs)) }
                denseBackward(d, count: n, x: x, dy: dy, dx: needInput ? dx : nil, optimizer: fused)
            case let .dropout(d):
                pool.run(range: range, DropoutJob(d: d, x: dx, y: dy, mode: .backward, seed: 0, step: 0,
                                                  reluOutput: reluMaskedByDropout(after: idx - 1) ? x : nil))
            }
        }
        let start = clock()
        label("conv grad all-reduce")
        reduceConvGradients(count: n)
        charge(.reduce, since: start)
    }

    /// Whether stage `idx` is a dense layer with a ReLU followed by dropout, whose backward pass
    /// applies the ReLU's mask too (one pass over the gradient instead of two).
    func reluMaskedByDropout(after idx: Int) -> Bool {
        guard idx >= 0, idx + 1 < stages.count, case let .dense(d) = stages[idx], d.relu, case .dropout = stages[idx + 1] else { return false }
        return true
    }

    /// A dense layer's backward pass (see `DenseUpdateJob`), with the Adam step of its weights
    /// when `optimizer` is given (its bias is left to the pass over the remaining parameters).
    private func denseBackward(_ d: DenseStage, count n: Int, x: UnsafeMutablePointer<Float>,
                               dy: UnsafeMutablePointer<Float>, dx: UnsafeMutablePointer<Float>?, optimizer: OptimizerStep?) {
        let np = Self.paddedBatch(n)
        let packRows = PackBJob(k: n, n: d.outputs, b: .rowMajor(dy, cols: d.outputs), into: d.packedDyRows, workers: pool.splitCount,
                                precision: d.precision)
        var packedDyT: UnsafeMutablePointer<Float>?
        if dx != nil, let packedDy = d.packedDy {
            let pack = PackBJob(k: d.outputs, n: n, b: .transposed(dy, cols: d.outputs), into: packedDy, workers: pool.splitCount,
                                precision: d.precision)
            let both = PackTwoJob(first: packRows, second: pack)
            pool.run(items: both.items, both)
            packedDyT = packedDy
        } else {
            pool.run(items: packRows.items, packRows)
        }
        // Under mpirun each rank owns a share of W's rows: it alone computes their dXᵀ and dW rows
        // and takes their Adam step (keeping their moments), and the ranks exchange dXᵀ's rows.
        // Each row is the same chain of sums whichever rank computes it.
        let rowTiles = d.ownedTiles(rank: group.rank, of: group.size)
        let parts = DenseUpdateJob.parts(tiles: rowTiles, workers: pool.splitCount)
        let sums = ColumnSumJob(m: dy, rows: n, cols: d.outputs, out: gradients + d.bias)
        let sumChunks = sums.chunks(workers: pool.splitCount)
        let update = DenseUpdateJob(
            inputs: d.inputs, outputs: d.outputs, batch: n, x: x, dy: dy, packedDy: d.packedDyRows,
            packedDyT: packedDyT, dxT: packedDyT == nil ? nil : d.inputGradT, paddedBatch: np,
            w: weights + d.weight, g: gradients + d.weight, m: moment1 + d.weight, v: moment2 + d.weight,
            optimizer: optimizer, finite: finiteFlags + d.finiteSlot * pool.count, tiles: rowTiles, parts: parts, sums: sums,
            sumChunks: sumChunks, rows: scratchLayout.denseRows, precision: d.precision, pool: pool)
        if pool.rangeNodes.count > 1 {
            // On several nodes the row blocks alone are dealt by node, so that each node's workers
            // take the rows placed on it (Network.init); the bias sums follow as their own region.
            pool.run(items: parts, update)
            pool.run(range: parts..<(parts + sumChunks), update)
        } else {
            pool.run(items: parts + sumChunks, update)
        }
        if group.size > 1 {
            if packedDyT != nil, let dxT = d.inputGradT { gatherRows(d, dxT, width: np) }
            if optimizer == nil { gatherRows(d, gradients + d.weight, width: d.outputs) }
        }
        if let dx, let dxT = d.inputGradT, packedDyT != nil {
            let transpose = TransposeOutJob(inputs: d.inputs, paddedBatch: np, samples: n, dxT: dxT, dx: dx)
            pool.run(items: transpose.items, transpose)
        }
    }

    /// The all-reduce of the conv gradients: each worker sums a slice of the parameters over the
    /// shards in shard order 0, 1, 2, ... into `gradients` (elementwise, so the slicing across
    /// workers cannot change a bit). Under mpirun the sum is passed along the ranks in rank order
    /// (`chainedConvReduce`).
    func reduceConvGradients(count n: Int) {
        if convParams == 0 { return }
        if group.size > 1 { chainedConvReduce(count: n); return }
        let job = ShardReduceJob(shards: shardGradients, count: Self.shardCount(batch: n), stride: convParams,
                                 out: gradients, total: convParams)
        pool.run(items: job.chunks, job)
    }

    /// Bytes the conv-gradient reduction of a batch of `n` reads and writes (for GB/s).
    public func reduceBytes(batch n: Int) -> Int { convParams == 0 ? 0 : 4 * convParams * (Self.shardCount(batch: n) + 1) }
}
