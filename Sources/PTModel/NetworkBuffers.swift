// Where a network's buffers come from: zeroed, page-aligned allocations, parts of which are
// placed on the NUMA node whose workers use them before they are first touched
// (docs/SCALING.md, "NUMA"); and each stage's buffers for a batch of `capacity`.
import PTKernels
import PTRuntime

/// The buffers a stage reads and writes for the whole batch: its input and output and their
/// gradients. A conv with a fused max-pool reads and writes the pool's output (`y`, `dy`): its
/// own output and that output's gradient live only in a worker's scratch.
struct StageBuffers {
    var x, y, dx, dy: UnsafeMutablePointer<Float>
}

/// Allocates the buffers of one network; the network frees `owned` when it goes.
final class BufferLayout {
    let pool: WorkerPool, group: ProcessGroup, numa: Numa
    let capacity: Int
    /// The stages before the first dense layer, which deal this rank's samples (shards) by node.
    let convStages: Int
    let mySamples: Range<Int>
    private(set) var owned: [UnsafeMutableRawPointer] = []

    init(pool: WorkerPool, group: ProcessGroup, numa: Numa, capacity: Int, stages: [Stage]) {
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

    /// A dense layer's rows (`width` floats each, from `base`): its backward pass with Adam deals
    /// this rank's row blocks by node.
    func denseRows(_ d: DenseStage, width: Int, from base: Int) -> [(Range<Int>, Int)] {
        let tiles = d.ownedTiles(rank: group.rank, of: group.size)
        let parts = DenseUpdateJob.parts(tiles: tiles, workers: pool.splitCount), nodes = pool.rangeNodes
        return pool.nodeRanges(parts).enumerated().map { k, items in
            let rows = DenseUpdateJob.rows(items, of: parts, tiles: tiles, inputs: d.inputs)
            return ((base + rows.lowerBound * width)..<(base + rows.upperBound * width), nodes[k])
        }
    }

    /// Every dense layer's weight rows in the flat parameter buffers.
    func denseWeightRows(_ stages: [Stage]) -> [(Range<Int>, Int)] {
        stages.flatMap { stage -> [(Range<Int>, Int)] in
            guard case let .dense(d) = stage else { return [] }
            return denseRows(d, width: d.outputs, from: d.weight)
        }
    }

    /// The planned stages with their own buffers: packed weights, argmaxes, dropout scales, the
    /// dense layers' packed gradients.
    func allocate(_ planned: [Stage]) -> [Stage] {
        var stages: [Stage] = []
        for (index, stage) in planned.enumerated() {
            switch stage {
            case .conv(var c):
                let g = c.window
                switch c.path {
                case .singleChannel:
                    break  // the weights are read as stored: nothing to pack
                case .winograd:
                    c.u = floats(16 * g.channels * c.cout)
                    c.packedStride = Gemm.packedBFloats(k: g.channels, n: c.cout)
                    c.packedStrideT = Gemm.packedBFloats(k: c.cout, n: g.channels)
                    c.packedW = floats(16 * c.packedStride)
                    if index > 0 { c.packedWt = floats(16 * c.packedStrideT) }
                case .im2col, .pointwise:
                    c.packedW = floats(Gemm.packedBFloats(k: g.patch, n: c.cout, precision: c.precision))
                    if index > 0 { c.packedWt = floats(Gemm.packedBFloats(k: c.cout, n: g.patch, precision: c.precision)) }
                }
                stages.append(.conv(c))
            case .pool(var p):
                if p.isMax {
                    let size = p.window.positions * p.window.channels
                    p.argmax = zeroed(size * capacity, perNode: bySample(index, size)).bindMemory(to: Int32.self, capacity: size * capacity)
                    // The conv that runs a fused pool holds a copy of it.
                    if p.fused, case var .conv(c)? = stages.last {
                        c.fusedPool = p
                        stages[stages.count - 1] = .conv(c)
                    }
                }
                stages.append(.pool(p))
            case .dropout(var d):
                d.scales = floats(d.units * capacity)
                stages.append(.dropout(d))
            case .dense(var d):
                d.packedDyRows = floats(Gemm.packedBFloats(k: capacity, n: d.outputs, precision: d.precision))
                if d.precision.isBF16 {
                    d.inputBF16 = UnsafeMutableRawPointer(floats(GemmBF16.rowsFloats(rows: capacity, k: d.inputs)))
                        .bindMemory(to: UInt16.self, capacity: 2 * GemmBF16.rowsFloats(rows: capacity, k: d.inputs))
                }
                if group.size > 1 { d.chainBuffer = floats(capacity * d.outputs) }
                if index > 0 {
                    let batch = Network.paddedBatch(capacity)
                    d.packedDy = floats(Gemm.packedBFloats(k: d.outputs, n: capacity, precision: d.precision))
                    d.inputGradT = floats(d.inputs * batch, perNode: denseRows(d, width: batch, from: 0))
                }
                stages.append(.dense(d))
            }
        }
        return stages
    }
}
