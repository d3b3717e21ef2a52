// Where a network's buffers come from: zeroed, page-aligned allocations, parts of which are
// placed on the NUMA node whose workers use them before they are first touched
// (docs/SCALING.md, "NUMA"); and each stage's buffers for a batch of `capacity`.
import PTKernels
import PTRuntime

/// Allocates the buffers of one network; the network frees `owned` when it goes.
final class BufferLayout {
    let pool: WorkerPool, group: ProcessGroup, numa: Numa
    let capacity: Int
    /// The stages before the first dense layer, which deal this rank's samples (shards) by node.
    let convStages: Int
    let mySamples: Range<Int>
    private(set) var owned: [UnsafeMutableRawPointer] = []

    init(pool: WorkerPool, group: ProcessGroup, numa: Numa, capacity: Int, stages: [any Stage]) {
        self.pool = pool; self.group = group; self.numa = numa; self.capacity = capacity
        convStages = stages.firstDense
        mySamples = Network.samples(batch: capacity, rank: group.rank, of: group.size)
    }

    /// `n` zeroed 4-byte elements (floats and Int32s alike: ranges are in elements), with
    /// `Im2col.slack` to spare (im2col may read that far past a conv's input); `perNode` places
    /// ranges of it on nodes, and the rest comes from node 0.
    func zeroed(_ n: Int, perNode: [(Range<Int>, Int)]) -> UnsafeMutableRawPointer {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 4 * (n + Im2col.slack), alignment: 4096)
        for (range, node) in perNode { numa.place(raw + 4 * range.lowerBound, bytes: 4 * range.count, node: node) }
        raw.initializeMemory(as: UInt32.self, repeating: 0, count: n + Im2col.slack)
        owned.append(raw)
        return raw
    }

    func floats(_ n: Int, perNode: [(Range<Int>, Int)] = []) -> UnsafeMutablePointer<Float> {
        zeroed(n, perNode: perNode).bindMemory(to: Float.self, capacity: n + Im2col.slack)
    }

    /// `count` things of `size` floats from `base`, dealt to nodes as the pool deals a region's items.
    func byNode(_ count: Int, size: Int, from base: Int = 0) -> [(Range<Int>, Int)] {
        let nodes = pool.rangeNodes
        return pool.nodeRanges(count).enumerated().map { k, r in ((base + r.lowerBound * size)..<(base + r.upperBound * size), nodes[k]) }
    }

    /// Activation `i` (per-sample `size` floats) by this rank's samples, for the conv stack's
    /// buffers; the dense layers' activations are whole-batch GEMM operands, left on node 0.
    func bySample(_ i: Int, _ size: Int) -> [(Range<Int>, Int)] {
        i <= convStages ? byNode(mySamples.count, size: size, from: mySamples.lowerBound * size) : []
    }

    /// Every dense layer's weight rows in the flat parameter buffers.
    func denseWeightRows(_ stages: [any Stage]) -> [(Range<Int>, Int)] {
        stages.flatMap { stage -> [(Range<Int>, Int)] in
            guard let d = stage as? DenseStage else { return [] }
            return denseRows(d, width: d.outputs, from: d.weight)
        }
    }

    /// The planned stages with their own buffers (`Stage.allocate`).
    func allocate(_ planned: [any Stage]) -> [any Stage] {
        var stages: [any Stage] = []
        for (index, stage) in planned.enumerated() {
            var s = stage
            s.allocate(self, index: index, earlier: &stages)
            stages.append(s)
        }
        return stages
    }
}
