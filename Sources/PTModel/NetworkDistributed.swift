// Under mpirun: the chain that passes the conv gradients' sum from rank to rank in the order one
// process sums them (docs/DISTRIBUTED.md; a dense layer's chain is in Stages/Dense.swift), and
// gathering state for a checkpoint.
import Foundation
import PTKernels
import PTRuntime

extension Network {
    /// Under mpirun a rank keeps only its rows of each dense layer's W and their Adam moments
    /// current: this gives every rank all of them (before a checkpoint is written). Every rank
    /// must call it.
    public func gatherDenseState() {
        if group.size == 1 { return }
        for case let d as DenseStage in stages {
            for buffer in [parameters.values, parameters.moment1, parameters.moment2].compactMap({ $0 }) { d.gatherRows(self, buffer + d.weight, width: d.outputs) }
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
        func params(_ b: Int) -> Range<Int> { (b * parameters.convCount / blocks)..<((b + 1) * parameters.convCount / blocks) }
        if let at {
            let mine = shards(batch: n, rank: me)
            if at > 0 {
                for b in 0..<blocks { _ = group.receive(parameters.gradients + params(b).lowerBound, count: params(b).count, from: ranks[at - 1], tag: 100 + b) }
            }
            for b in 0..<blocks {
                let p = params(b)
                if at > 0 { group.wait(b) }
                let job = ShardReduceJob(shards: parameters.shardGradients + mine.lowerBound * parameters.convCount + p.lowerBound, count: mine.count,
                                         stride: parameters.convCount, out: parameters.gradients + p.lowerBound, total: p.count, continues: at > 0)
                pool.run(items: job.chunks, job)
                if at < ranks.count - 1 { group.send(parameters.gradients + p.lowerBound, count: p.count, to: ranks[at + 1], tag: 100 + b) }
            }
            group.waitAll()
        }
        group.broadcast(parameters.gradients, count: parameters.convCount, root: ranks.last!)
    }
}
