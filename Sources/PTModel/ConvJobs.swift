// The conv regions of a step: a sample (or a part of one) forward, a shard (or a part of one)
// backward, the Winograd weight transforms, and the shard gradients' reduction.
import PTKernels
import PTRuntime

/// Offsets into a worker's scratch (after the GEMM packing area). The conv regions and the dense
/// region overlap: conv and dense stages never run at once.
struct ScratchLayout {
    var col: Int       // one sample's im2col, then its gradient (Winograd: its transformed input V, then dV)
    var output: Int    // one sample's conv output, then its gradient, when a max-pool is fused
    var winograd: Int  // Winograd: a sample's transformed outputs M (then dM), and after them the shard's dU
    var denseRows: Int // a dense layer's backward pass: a block of its weight gradient's rows
}

/// U = G g Gᵀ of a Winograd conv's weights, a slice of the (cin, cout) pairs per item.
struct WinogradWeightsJob: ParallelJob, @unchecked Sendable {  // an item writes its (cin, cout) pairs of U
    var w: UnsafeMutablePointer<Float>
    var pairs: Int
    var u: UnsafeMutablePointer<Float>
    var chunks: Int
    func run(_ item: Int, _ worker: Int) {
        let vectors = pairs / 16
        Winograd.transformWeights(w, pairs: pairs, range: (item * vectors / chunks * 16)..<((item + 1) * vectors / chunks * 16), into: u)
    }
}

/// Packs U_ξ (the forward's B) and U_ξᵀ (the input gradient's B) of a Winograd conv, one ξ per item.
struct PackWinogradJob: ParallelJob, @unchecked Sendable {  // an item writes its position ξ's packed U and Uᵀ
    var c: ConvStage
    func run(_ xi: Int, _ worker: Int) {
        let cin = c.window.channels, u = c.u! + xi * cin * c.cout
        for block in 0..<Gemm.packedBBlocks(k: cin, n: c.cout) {
            Gemm.packB(k: cin, n: c.cout, b: .rowMajor(u, cols: c.cout), block: block, into: c.packedW + xi * c.packedStride)
        }
        if let wt = c.packedWt {
            for block in 0..<Gemm.packedBBlocks(k: c.cout, n: cin) {
                Gemm.packB(k: c.cout, n: cin, b: .transposed(u, cols: c.cout), block: block, into: wt + xi * c.packedStrideT)
            }
        }
    }
}

/// Parts a sample's (forward) or a shard's (backward) work on a conv is cut into when there are
/// too few samples or shards to keep the workers equally busy. Each part is its own arithmetic,
/// so the parts change no bit. The forward cuts a sample's output rows (two at a time: a row of
/// Winograd tiles, a row of a fused 2x2 max-pool's windows) on the Winograd and one-channel
/// paths; the backward cuts a shard's input channels on the Winograd path (dU's rows, dV's
/// columns, dx's channels). Not cut: the im2col path (its columns interleave the input channels
/// and its input gradient sums over every output channel), a one-channel conv's backward (its
/// part would read a strided slice of every activation: recorded 70% more work for two parts),
/// and a forward whose fused pool is not 2x2 with stride 2 (its windows would straddle parts).
struct ConvParts: Hashable {
    var count: Int
    /// Rows or channels a block is made of, and of how many in all.
    var unit: Int
    var extent: Int
    static let one = ConvParts(count: 1, unit: 1, extent: 1)

    /// The rows (forward) or channels (backward) of part `p`.
    func block(_ p: Int) -> Range<Int> {
        let units = (extent + unit - 1) / unit
        return min(p * units / count * unit, extent)..<min((p + 1) * units / count * unit, extent)
    }

    /// The most parts a conv's pass can be cut into (1: not cut), and what each doubling of the
    /// parts costs in repeated work (a fraction of the region's work; see `choose`).
    static func limit(_ c: ConvStage, backward: Bool) -> (parts: ConvParts, cost: Double) {
        let g = c.window
        if !backward {
            guard c.path == .winograd || c.path == .singleChannel else { return (.one, 0) }
            if let p = c.fusedPool, !(p.window.kernel == 2 && p.window.stride == 2) { return (.one, 0) }
            // Recorded at batch 50 cut for 16 workers (4 parts): the one-channel conv did 23% more
            // work; the Winograd conv 60% more (each part of its GEMMs reads all of the packed U).
            return (ConvParts(count: (g.outH + 1) / 2, unit: 2, extent: g.outH), c.path == .winograd ? 0.3 : 0.12)
        }
        // The cut GEMM reads its panels of the packed Uᵀ at an offset: one KC x NC block only.
        guard c.path == .winograd, c.cout <= Gemm.packedBlockRows, g.channels <= Gemm.packedBlockColumns,
              g.channels % Gemm.nr == 0 else { return (.one, 0) }
        return (ConvParts(count: g.channels / Gemm.nr, unit: Gemm.nr, extent: g.channels), 0.25)
    }

    /// Parts for `sizes` (samples per item: 1 for each sample forward, each shard's samples
    /// backward) on `workers`: the count (1, 2, 4, ...) whose busiest worker (items dealt in order
    /// to whichever worker is free, as the pool deals them) finishes first, each doubling charged
    /// `cost` of the work. A backward part repeats the pool's and dM's gradients and reads its
    /// channels' strided slice of the activations: recorded with `ptrain bench --model-cores` on
    /// the reference network, two parts did 20-30% more work than one (forward: see `limit`).
    /// Depends on the batch and the worker count only.
    static func choose(_ limit: (parts: ConvParts, cost: Double), sizes: [Int], workers: Int) -> ConvParts {
        guard workers > 1, limit.parts.count > 1, !sizes.isEmpty else { return .one }
        var best = limit.parts, bestCost = Double.infinity
        var parts = 1, charge = 1.0
        while parts <= limit.parts.count {
            // In units of 1/parts of a sample.
            let items = sizes.flatMap { Array(repeating: UInt64($0), count: parts) }
            let cost = Double(ScalingModel.makespan(items[...], workers: workers)) / Double(parts) * charge
            if cost < bestCost { bestCost = cost; best.count = parts }
            parts *= 2
            charge += limit.cost
        }
        return best
    }
}

/// One sample of a convolution (or a block of its output rows, `parts`) by the conv's path:
/// im2col into the worker's scratch (the input itself on the pointwise path) and one GEMM with
/// bias and ReLU, or Winograd, or the direct one-channel conv; and, when a max-pool follows, the
/// pool (then `y` is the pool's output and the conv's output stays in scratch). Item i is sample
/// i / parts.count.
struct ConvForwardJob: ParallelJob, @unchecked Sendable {  // an item writes its sample's (part's) output, and its worker's scratch
    var c: ConvStage
    var x, y: UnsafeMutablePointer<Float>
    var weights: UnsafeMutablePointer<Float>   // the flat parameters: the conv's bias, and its weights as stored
    var scratch: ScratchLayout
    var parts = ConvParts.one
    unowned(unsafe) var pool: WorkerPool
    func run(_ item: Int, _ worker: Int) {
        let g = c.window, cout = c.cout, bias = weights + c.bias
        let s = item / parts.count
        // This part's output rows (whole pairs unless the last row is odd).
        let rows = parts.count == 1 ? 0..<g.outH : parts.block(item % parts.count)
        let area = pool.scratch(worker)
        let out = c.fusedPool == nil ? y + s * g.positions * cout : area + scratch.output
        switch c.path {
        case .singleChannel:
            let xp = area + scratch.col
            SingleChannelConv.pad(g, x: x + s * g.inputSize, into: xp)
            SingleChannelConv.forward(g, cout: cout, xp: xp, w: weights + c.weight, bias: bias, relu: c.relu, rows: rows, y: out)
        case .winograd:
            // V = Bᵀ d B, then M_ξ = V_ξ · U_ξ for the 16 positions ξ, then y = Aᵀ M A + bias; a
            // part computes its rows of tiles of V, M and y.
            let t = Winograd.tiles(g), cin = g.channels, tilesW = (g.outW + 1) / 2
            let tiles = (rows.lowerBound / 2 * tilesW)..<((rows.upperBound + 1) / 2 * tilesW)
            let v = area + scratch.col, m = area + scratch.winograd
            Winograd.transformInput(g, x: x + s * g.inputSize, tiles: tiles, into: v)
            for xi in 0..<16 {
                let packed = c.packedW + xi * c.packedStride
                Gemm.multiply(m: tiles.count, n: cout, k: cin, a: .rowMajor(v + (xi * t + tiles.lowerBound) * cin, cols: cin),
                              b: .packed(packed), c: m + (xi * t + tiles.lowerBound) * cout, ldc: cout,
                              accumulate: false, scratch: area)
            }
            Winograd.transformOutput(g, cout: cout, m: m, bias: bias, relu: c.relu, tiles: tiles, into: out)
        case .im2col where c.precision.isBF16:
            // The patches straight into bf16 rows: no fp32 im2col, no packing pass.
            let path = c.precision.bf16Path!
            let (col, lda) = Im2col.forwardBF16(g, x: x + s * g.inputSize, scratch: area + scratch.col)
            GemmBF16.multiply(m: g.positions, n: cout, k: g.patch, aBF16: col, lda: lda, b: .packed(c.packedW),
                              c: out, ldc: cout, accumulate: false, bias: bias, relu: c.relu, scratch: area, path: path)
        case .im2col, .pointwise:
            let col = c.path == .im2col ? area + scratch.col : x + s * g.inputSize
            if c.path == .im2col { Im2col.forward(g, x: x + s * g.inputSize, col: col) }
            Gemm.multiply(m: g.positions, n: cout, k: g.patch, a: .rowMajor(col, cols: g.patch), b: .packed(c.packedW),
                          c: out, ldc: cout, accumulate: false, bias: bias, relu: c.relu, scratch: area, precision: c.precision)
        }
        poolAfter(out, s, rows)
    }

    /// The fused pool over the conv's output `rows` (a part's: whole 2x2 windows, `ConvParts`).
    @inline(__always) func poolAfter(_ out: UnsafeMutablePointer<Float>, _ s: Int, _ rows: Range<Int>) {
        if let p = c.fusedPool {
            let size = p.window.positions * p.window.channels
            let pooled = rows.count == c.window.outH ? nil : (rows.lowerBound / 2)..<min(rows.upperBound / 2, p.window.outH)
            MaxPool.forward(p.window, x: out, y: y + s * size, argmax: p.argmax! + s * size, rows: pooled)
        }
    }
}

/// One shard of the batch through a convolution's backward pass, a sample at a time in sample
/// order: the fused max-pool's backward (into scratch) or the ReLU mask, im2col again (cheaper
/// than keeping the batch's), the shard's weight and bias gradients accumulated into its own
/// buffers, and the input gradient (dcol = dy · Wᵀ, wt being Wᵀ packed, then col2im); or the
/// same through Winograd's transforms (`backwardWinograd`), or the direct one-channel conv's
/// weight gradient (that path has no input gradient). Which worker runs a shard changes nothing: its sums run in sample order.
/// A Winograd conv's shard may be cut into `parts` (blocks of input channels, `ConvParts`): item i
/// is shard i / parts.count.
struct ConvBackwardJob: ParallelJob, @unchecked Sendable {  // an item writes its shard's (part's) gradients and samples' dx, and its worker's scratch
    var c: ConvStage
    var x, y, dy: UnsafeMutablePointer<Float>   // with a fused pool, y and dy are the pool's output and its gradient
    var dx, wt: UnsafeMutablePointer<Float>?    // wt: Wᵀ packed (Winograd: its packed U_ξᵀ, 16 blocks)
    var scratch: ScratchLayout
    var samples, shards: Int
    var gw, gb: UnsafeMutablePointer<Float>   // shard 0's weight and bias gradient; shard i is i * shardStride on
    var shardStride: Int
    var parts = ConvParts.one
    unowned(unsafe) var pool: WorkerPool
    var g: Window { c.window }
    var cout: Int { c.cout }

    func run(_ item: Int, _ worker: Int) {
        let shard = item / parts.count, part = item % parts.count
        let P = g.positions, K = g.patch
        let area = pool.scratch(worker)
        let gws = gw + shard * shardStride, gbs = gb + shard * shardStride
        // A Winograd conv sums the shard's weight gradient as dU (transformed), then transforms it once.
        let du = area + scratch.winograd + 16 * Winograd.tiles(g) * cout
        // The shard's first sample starts the weight gradient's sums (no clearing pass; the same bits).
        let first = shard * samples / shards, end = (shard + 1) * samples / shards
        if first == end {
            if part == 0 { gws.update(repeating: 0, count: K * cout); gbs.update(repeating: 0, count: cout) }
            return
        }
        if c.path == .singleChannel { gws.update(repeating: 0, count: K * cout) }
        // Part 0 sums the bias gradient.
        let biasColumns = part == 0 ? 0..<cout : 0..<0
        gbs.update(repeating: 0, count: biasColumns.count)
        for s in first..<end {
            let dys: UnsafeMutablePointer<Float>
            if let p = c.fusedPool {
                let size = p.window.positions * p.window.channels
                dys = area + scratch.output
                // A Winograd conv's part needs every output channel's gradient (its input
                // channels' sums run over all of them).
                MaxPool.backward(p.window, dy: dy + s * size, argmax: p.argmax! + s * size, dx: dys,
                                 reluOutput: p.masksRelu ? UnsafePointer(y + s * size) : nil)
            } else {
                dys = dy + s * P * cout
                if c.relu { Elementwise.reluBackward(dy: dys, y: y + s * P * cout, count: P * cout) }
            }
            switch c.path {
            case .singleChannel:
                let xp = area + scratch.col
                SingleChannelConv.pad(g, x: x + s * g.inputSize, into: xp)
                SingleChannelConv.weightGradient(g, cout: cout, xp: xp, dy: dys, dw: gws)
                Elementwise.columnSums(dys, rows: P, ld: cout, cols: biasColumns, into: gbs, accumulate: true)
            case .winograd:
                backwardWinograd(s, dys, du, accumulate: s > first, area, parts.count == 1 ? 0..<g.channels : parts.block(part))
                Elementwise.columnSums(dys, rows: P, ld: cout, cols: biasColumns, into: gbs, accumulate: true)
            case .im2col, .pointwise:
                let viaCol = c.path == .im2col
                let col = viaCol ? area + scratch.col : x + s * g.inputSize
                if viaCol { Im2col.forward(g, x: x + s * g.inputSize, col: col) }
                Gemm.multiply(m: K, n: cout, k: P, a: .transposed(col, cols: K), b: .rowMajor(dys, cols: cout),
                              c: gws, ldc: cout, accumulate: s > first, scratch: area, precision: c.precision)
                Elementwise.columnSums(dys, rows: P, ld: cout, cols: 0..<cout, into: gbs, accumulate: true)
                if let dx, let wt {
                    // The im2col is no longer needed: its gradient goes over it.
                    let dcol = viaCol ? col : dx + s * P * K
                    Gemm.multiply(m: P, n: K, k: cout, a: .rowMajor(dys, cols: cout), b: .packed(wt),
                                  c: dcol, ldc: K, accumulate: false, scratch: area, precision: c.precision)
                    if viaCol { Im2col.backward(g, dcol: dcol, dx: dx + s * g.inputSize) }
                }
            }
        }
        if c.path == .winograd {
            let ci = parts.count == 1 ? 0..<g.channels : parts.block(part)
            Winograd.weightGradient(du, pairs: g.channels * cout, range: (ci.lowerBound * cout)..<(ci.upperBound * cout), into: gws)
        }
    }

    /// One sample of a Winograd conv, for the input channels `ci`: dM = A dy Aᵀ, dU_ξ += V_ξᵀ dM_ξ
    /// (V recomputed from x; ci's rows of dU), and when the input gradient is needed,
    /// dV_ξ = dM_ξ U_ξᵀ (ci's columns, over V; its panels of the packed U_ξᵀ) and dx = Σ B dV Bᵀ.
    func backwardWinograd(_ s: Int, _ dys: UnsafeMutablePointer<Float>,
                          _ du: UnsafeMutablePointer<Float>, accumulate: Bool, _ area: UnsafeMutablePointer<Float>,
                          _ ci: Range<Int>) {
        let t = Winograd.tiles(g), cin = g.channels, c0 = ci.lowerBound
        let v = area + scratch.col, dm = area + scratch.winograd
        Winograd.transformInput(g, x: x + s * g.inputSize, channels: ci, into: v)
        Winograd.transformOutputGradient(g, cout: cout, dy: dys, into: dm)
        for xi in 0..<16 {
            Gemm.multiply(m: ci.count, n: cout, k: t, a: .transposed(v + xi * t * cin + c0, cols: cin),
                          b: .rowMajor(dm + xi * t * cout, cols: cout),
                          c: du + xi * cin * cout + c0 * cout, ldc: cout, accumulate: accumulate, scratch: area)
        }
        guard let dx, let wt else { return }
        for xi in 0..<16 {
            let packed = wt + xi * c.packedStrideT + c0 * cout
            Gemm.multiply(m: t, n: ci.count, k: cout, a: .rowMajor(dm + xi * t * cout, cols: cout), b: .packed(packed),
                          c: v + xi * t * cin + c0, ldc: cin, accumulate: false, scratch: area)
        }
        Winograd.inputGradient(g, dv: v, channels: ci, into: dx + s * g.inputSize)
    }
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
