// Under mpirun: each rank's rows of the dense layers, the chains that pass partial sums from rank
// to rank in the order one process sums them (docs/DISTRIBUTED.md), and gathering state for a
// checkpoint.
import Foundation
import PTKernels
import PTRuntime

extension Network {
    /// Every rank receives the other ranks' rows of a [d.inputs, width] matrix split as `DenseStage.ownedTiles`.
    func gatherRows(_ d: DenseStage, _ matrix: UnsafeMutablePointer<Float>, width: Int) {
        group.allgather(matrix) { r in
            let t = d.ownedTiles(rank: r, of: group.size)
            return (min(t.lowerBound * Gemm.mr, d.inputs) * width)..<(min(t.upperBound * Gemm.mr, d.inputs) * width)
        }
    }

    /// Under mpirun a rank keeps only its rows of each dense layer's W and their Adam moments
    /// current: this gives every rank all of them (before a checkpoint is written). Every rank
    /// must call it.
    public func gatherDenseState() {
        if group.size == 1 { return }
        for case let .dense(d) in stages {
            for buffer in [weights, moment1, moment2] { gatherRows(d, buffer + d.weight, width: d.outputs) }
        }
    }

    /// The conv gradients' sum over the shards under mpirun, in the order one process sums them:
    /// the first rank with shards sums its own, in order; each next rank receives that partial sum
    /// and adds its shards to it, in order; the last broadcasts the total. A rank receives 0.3 MB
    /// (the reference network's conv parameters) twice instead of every shard's 298 KB. Blocks of
    /// parameters pipeline the chain.
    func chainedConvReduce(count n: Int) {
        let ranks = (0..<group.size).filter { !shards(batch: n, rank: $0).isEmpty }
        let me = group.rank, at = ranks.firstIndex(of: me)
        let blocks = 8
        func params(_ b: Int) -> Range<Int> { (b * convParams / blocks)..<((b + 1) * convParams / blocks) }
        if let at {
            let mine = shards(batch: n, rank: me)
            if at > 0 {
                for b in 0..<blocks { _ = group.receive(gradients + params(b).lowerBound, count: params(b).count, from: ranks[at - 1], tag: 100 + b) }
            }
            for b in 0..<blocks {
                let p = params(b)
                if at > 0 { group.wait(b) }
                let job = ShardReduceJob(shards: shardGradients + mine.lowerBound * convParams + p.lowerBound, count: mine.count,
                                         stride: convParams, out: gradients + p.lowerBound, total: p.count, continues: at > 0)
                pool.run(items: job.chunks, job)
                if at < ranks.count - 1 { group.send(gradients + p.lowerBound, count: p.count, to: ranks[at + 1], tag: 100 + b) }
            }
            group.waitAll()
        }
        group.broadcast(gradients, count: convParams, root: ranks.last!)
    }

    /// Column blocks of a dense layer's output that the forward chain passes from rank to rank,
    /// each a whole number of register tiles. More blocks shorten the chain's start and end
    /// (R ranks take (blocks + R - 1) / blocks of one rank's share), but a narrower GEMM re-reads
    /// its A operand more often: measured at 2 ranks on fc1, 8 blocks made each rank's GEMMs 1.8x
    /// slower than 1, and 2 blocks gave the shortest chain (docs/DISTRIBUTED.md).
    static func chainBlocks(outputs: Int, ranks: Int) -> Int { min(max(2, ranks), (outputs + Gemm.nr - 1) / Gemm.nr) }

    /// A dense layer's forward pass when each rank owns a share of W's rows: y = x·W + b as one
    /// chain of sums over W's rows, as one process computes it, passed along the ranks. Rank 0
    /// sums its rows for a block of output columns and sends the partial sums to rank 1, which
    /// continues them over its rows (a GEMM that loads C goes on exactly where the sums stopped),
    /// and so on; the last rank adds the bias and ReLU, and broadcasts y. Blocks of columns
    /// pipeline the chain: rank 1 works on block 0 while rank 0 works on block 1.
    func chainedDenseForward(_ d: DenseStage, count n: Int, x: UnsafeMutablePointer<Float>, y: UnsafeMutablePointer<Float>) {
        let r = group.rank, last = group.size - 1
        let t = d.ownedTiles(rank: r, of: group.size)
        let k0 = min(t.lowerBound * Gemm.mr, d.inputs), k1 = min(t.upperBound * Gemm.mr, d.inputs)
        let blocks = Self.chainBlocks(outputs: d.outputs, ranks: group.size), tiles = (d.outputs + Gemm.nr - 1) / Gemm.nr
        func columns(_ j: Int) -> Range<Int> { min(j * tiles / blocks * Gemm.nr, d.outputs)..<min((j + 1) * tiles / blocks * Gemm.nr, d.outputs) }
        let link = d.chainBuffer!  // block j at n * columns(j).lowerBound, n x width floats
        if r > 0 {
            for j in 0..<blocks { _ = group.receive(link + n * columns(j).lowerBound, count: n * columns(j).count, from: r - 1, tag: j) }
        }
        for j in 0..<blocks {
            let c = columns(j), part = link + n * c.lowerBound
            if r > 0 {
                group.wait(j)
                Elementwise.copy(rows: n, cols: c.count, from: part, fromStride: c.count, to: y + c.lowerBound, toStride: d.outputs)
            }
            pool.gemm(GemmJob(m: n, n: c.count, k: k1 - k0, a: .rowMajor(x + k0, cols: d.inputs),
                              b: .rowMajor(weights + d.weight + k0 * d.outputs + c.lowerBound, cols: d.outputs),
                              c: y + c.lowerBound, ldc: d.outputs, accumulate: r > 0,
                              bias: r == last ? weights + d.bias + c.lowerBound : nil, relu: r == last && d.relu,
                              precision: d.precision))
            if r < last {
                Elementwise.copy(rows: n, cols: c.count, from: y + c.lowerBound, fromStride: d.outputs, to: part, toStride: c.count)
                group.send(part, count: n * c.count, to: r + 1, tag: j)
            }
        }
        group.waitAll()
        group.broadcast(y, count: n * d.outputs, root: last)
    }
}
