// The per-sample parallel regions of a step, as ParallelJob values: the worker pool runs them
// without allocating (a closure would cost a heap allocation per region).
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

/// Packs a GEMM's B operand for `Gemm.multiply(packedB:)`, a slice of a KC x NC block's panels per
/// item: conv weights once a step for every sample's GEMM, a dense layer's dY and dYᵀ for its
/// gradients. `slices` cuts each block for `workers` (a copy: a few items each).
struct PackBJob: ParallelJob, @unchecked Sendable {  // an item writes its panels of the packed copy
    var k, n: Int
    var b: MatrixView
    var into: UnsafeMutablePointer<Float>
    var slices = 1
    init(k: Int, n: Int, b: MatrixView, into: UnsafeMutablePointer<Float>, workers: Int = 1) {
        self.k = k; self.n = n; self.b = b; self.into = into
        let blocks = Gemm.packedBBlocks(k: k, n: n)
        slices = min(Gemm.packedBPanels(n: n), max(1, (2 * workers + blocks - 1) / blocks))
    }
    var blocks: Int { Gemm.packedBBlocks(k: k, n: n) }
    var items: Int { blocks * slices }
    func run(_ item: Int, _ worker: Int) {
        let block = item / slices, slice = item % slices, panels = Gemm.packedBPanels(n: n)
        Gemm.packB(k: k, n: n, b: b, block: block, panels: (slice * panels / slices)..<((slice + 1) * panels / slices), into: into)
    }
}

/// Two packs as one region (a dense layer's dY and dYᵀ): one start and finish instead of two.
struct PackTwoJob: ParallelJob, @unchecked Sendable {  // as its two PackBJobs, which write different buffers
    var first, second: PackBJob
    var items: Int { first.items + second.items }
    func run(_ item: Int, _ worker: Int) {
        if item < first.items { first.run(item, worker) } else { second.run(item - first.items, worker) }
    }
}

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
            guard c.winograd || c.singleChannel else { return (.one, 0) }
            if let p = c.fusedPool, !(p.window.kernel == 2 && p.window.stride == 2) { return (.one, 0) }
            // Recorded at batch 50 cut for 16 workers (4 parts): the one-channel conv did 23% more
            // work; the Winograd conv 60% more (each part of its GEMMs reads all of the packed U).
            return (ConvParts(count: (g.outH + 1) / 2, unit: 2, extent: g.outH), c.winograd ? 0.3 : 0.12)
        }
        // The cut GEMM reads its panels of the packed Uᵀ at an offset: one KC x NC block only.
        guard c.winograd, c.cout <= Gemm.packedBlockRows, g.channels <= Gemm.packedBlockColumns,
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

/// One sample of a convolution (or a block of its output rows, `parts`): im2col into the
/// worker's scratch (the input itself for a 1x1 stride-1 conv) and one GEMM with bias and ReLU —
/// or Winograd, or the direct one-channel conv — and, when a max-pool follows, the pool (then `y`
/// is the pool's output and the conv's output stays in scratch). Item i is sample i / parts.count.
struct ConvForwardJob: ParallelJob, @unchecked Sendable {  // an item writes its sample's (part's) output, and its worker's scratch
    var g: Window
    var cout: Int
    var x, y, w, bias: UnsafeMutablePointer<Float>   // w: the weights packed by PackBJob
    var relu, viaCol: Bool
    var winograd: ConvStage?   // set for a Winograd conv (then w is unused)
    var singleChannel: Bool    // direct (then w is the weights as stored)
    var fusedPool: PoolStage?
    var scratch: ScratchLayout
    var parts = ConvParts.one
    unowned(unsafe) var pool: WorkerPool
    func run(_ item: Int, _ worker: Int) {
        let s = item / parts.count
        // This part's output rows (whole pairs unless the last row is odd).
        let rows = parts.count == 1 ? 0..<g.outH : parts.block(item % parts.count)
        let area = pool.scratch(worker)
        if singleChannel {
            let xp = area + scratch.col
            SingleChannelConv.pad(g, x: x + s * g.inputSize, into: xp)
            let out = fusedPool == nil ? y + s * g.positions * cout : area + scratch.output
            SingleChannelConv.forward(g, cout: cout, xp: xp, w: w, bias: bias, relu: relu, rows: rows, y: out)
            poolAfter(out, s, rows)
            return
        }
        if let c = winograd {
            // V = Bᵀ d B, then M_ξ = V_ξ · U_ξ for the 16 positions ξ, then y = Aᵀ M A + bias; a
            // part computes its rows of tiles of V, M and y.
            let t = Winograd.tiles(g), cin = g.channels, tilesW = (g.outW + 1) / 2
            let tiles = (rows.lowerBound / 2 * tilesW)..<((rows.upperBound + 1) / 2 * tilesW)
            let v = area + scratch.col, m = area + scratch.winograd
            Winograd.transformInput(g, x: x + s * g.inputSize, tiles: tiles, into: v)
            for xi in 0..<16 {
                let packed = c.packedW + xi * c.packedStride
                Gemm.multiply(m: tiles.count, n: cout, k: cin, a: .rowMajor(v + (xi * t + tiles.lowerBound) * cin, cols: cin),
                              b: .rowMajor(packed, cols: cout), c: m + (xi * t + tiles.lowerBound) * cout, ldc: cout,
                              accumulate: false, packedB: packed, scratch: area)
            }
            let out = fusedPool == nil ? y + s * g.positions * cout : area + scratch.output
            Winograd.transformOutput(g, cout: cout, m: m, bias: bias, relu: relu, tiles: tiles, into: out)
            poolAfter(out, s, rows)
            return
        }
        let col = viaCol ? area + scratch.col : x + s * g.inputSize
        if viaCol { Im2col.forward(g, x: x + s * g.inputSize, col: col) }
        let out = fusedPool == nil ? y + s * g.positions * cout : area + scratch.output
        // w is the packed weights: the B view is not read.
        Gemm.multiply(m: g.positions, n: cout, k: g.patch, a: .rowMajor(col, cols: g.patch), b: .rowMajor(w, cols: cout),
                      c: out, ldc: cout, accumulate: false, bias: bias, relu: relu, packedB: w, scratch: area)
        poolAfter(out, s, rows)
    }

    /// The fused pool over the conv's output `rows` (a part's: whole 2x2 windows, `ConvParts`).
    @inline(__always) func poolAfter(_ out: UnsafeMutablePointer<Float>, _ s: Int, _ rows: Range<Int>) {
        if let p = fusedPool {
            let size = p.window.positions * p.window.channels
            let pooled = rows.count == g.outH ? nil : (rows.lowerBound / 2)..<min(rows.upperBound / 2, p.window.outH)
            MaxPool.forward(p.window, x: out, y: y + s * size, argmax: p.argmax! + s * size, rows: pooled)
        }
    }
}

/// One shard of the batch through a convolution's backward pass, a sample at a time in sample
/// order: the fused max-pool's backward (into scratch) or the ReLU mask, im2col again (cheaper
/// than keeping the batch's), the shard's weight and bias gradients accumulated into its own
/// buffers, and the input gradient (dcol = dy · Wᵀ, wt being Wᵀ packed, then col2im); or the
/// same through Winograd's transforms (`backwardWinograd`), or the direct one-channel conv's
/// weight gradient. Which worker runs a shard changes nothing: its sums run in sample order.
/// A Winograd conv's shard may be cut into `parts` (blocks of input channels, `ConvParts`): item i
/// is shard i / parts.count.
struct ConvBackwardJob: ParallelJob, @unchecked Sendable {  // an item writes its shard's (part's) gradients and samples' dx, and its worker's scratch
    var g: Window
    var cout: Int
    var relu, viaCol: Bool
    var x, y, dy: UnsafeMutablePointer<Float>   // with a fused pool, dy is the pool's output gradient
    var dx, wt: UnsafeMutablePointer<Float>?
    var winograd: ConvStage?   // set for a Winograd conv (then wt is its packed U_ξᵀ, 16 blocks)
    var singleChannel: Bool    // direct, weight gradient only (a first layer)
    var fusedPool: PoolStage?
    var pooled: UnsafeMutablePointer<Float>     // the fused pool's output (for its ReLU mask)
    var scratch: ScratchLayout
    var samples, shards: Int
    var gw, gb: UnsafeMutablePointer<Float>   // shard 0's weight and bias gradient; shard i is i * shardStride on
    var shardStride: Int
    var parts = ConvParts.one
    unowned(unsafe) var pool: WorkerPool

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
        if singleChannel { gws.update(repeating: 0, count: K * cout) }
        // Part 0 sums the bias gradient.
        let biasColumns = part == 0 ? 0..<cout : 0..<0
        gbs.update(repeating: 0, count: biasColumns.count)
        for s in first..<end {
            let dys: UnsafeMutablePointer<Float>
            if let p = fusedPool {
                let size = p.window.positions * p.window.channels
                dys = area + scratch.output
                // A Winograd conv's part needs every output channel's gradient (its input
                // channels' sums run over all of them).
                MaxPool.backward(p.window, dy: dy + s * size, argmax: p.argmax! + s * size, dx: dys,
                                 reluOutput: p.masksRelu ? UnsafePointer(pooled + s * size) : nil)
            } else {
                dys = dy + s * P * cout
                if relu { Elementwise.reluBackward(dy: dys, y: y + s * P * cout, count: P * cout) }
            }
            if singleChannel {
                let xp = area + scratch.col
                SingleChannelConv.pad(g, x: x + s * g.inputSize, into: xp)
                SingleChannelConv.weightGradient(g, cout: cout, xp: xp, dy: dys, dw: gws)
                Elementwise.columnSums(dys, rows: P, ld: cout, cols: biasColumns, into: gbs, accumulate: true)
                continue
            }
            if let c = winograd {
                backwardWinograd(c, s, dys, du, accumulate: s > first, area, parts.count == 1 ? 0..<g.channels : parts.block(part))
                Elementwise.columnSums(dys, rows: P, ld: cout, cols: biasColumns, into: gbs, accumulate: true)
                continue
            }
            let col = viaCol ? area + scratch.col : x + s * g.inputSize
            if viaCol { Im2col.forward(g, x: x + s * g.inputSize, col: col) }
            Gemm.multiply(m: K, n: cout, k: P, a: .transposed(col, cols: K), b: .rowMajor(dys, cols: cout),
                          c: gws, ldc: cout, accumulate: s > first, scratch: area)
            Elementwise.columnSums(dys, rows: P, ld: cout, cols: 0..<cout, into: gbs, accumulate: true)
            if let dx, let wt {
                // The im2col is no longer needed: its gradient goes over it.
                let dcol = viaCol ? col : dx + s * P * K
                Gemm.multiply(m: P, n: K, k: cout, a: .rowMajor(dys, cols: cout), b: .rowMajor(wt, cols: K),
                              c: dcol, ldc: K, accumulate: false, packedB: wt, scratch: area)
                if viaCol { Im2col.backward(g, dcol: dcol, dx: dx + s * g.inputSize) }
            }
        }
        if winograd != nil {
            let ci = parts.count == 1 ? 0..<g.channels : parts.block(part)
            Winograd.weightGradient(du, pairs: g.channels * cout, range: (ci.lowerBound * cout)..<(ci.upperBound * cout), into: gws)
        }
    }

    /// One sample of a Winograd conv, for the input channels `ci`: dM = A dy Aᵀ, dU_ξ += V_ξᵀ dM_ξ
    /// (V recomputed from x; ci's rows of dU), and when the input gradient is needed,
    /// dV_ξ = dM_ξ U_ξᵀ (ci's columns, over V; its panels of the packed U_ξᵀ) and dx = Σ B dV Bᵀ.
    func backwardWinograd(_ c: ConvStage, _ s: Int, _ dys: UnsafeMutablePointer<Float>,
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
            Gemm.multiply(m: t, n: ci.count, k: cout, a: .rowMajor(dm + xi * t * cout, cols: cout), b: .rowMajor(packed, cols: cin),
                          c: v + xi * t * cin + c0, ldc: cin, accumulate: false, packedB: packed, scratch: area)
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

/// dx[s, :] = column s of dXᵀ, for a block of `rows` inputs per item: the block's rows of dXᵀ
/// (rows x paddedBatch floats) stay in L1 while every sample's 64-byte run of dx is written.
struct TransposeOutJob: ParallelJob, @unchecked Sendable {  // an item writes its block of dx's columns
    static let rows = 64
    var inputs, paddedBatch, samples: Int
    var dxT, dx: UnsafeMutablePointer<Float>
    var items: Int { (inputs + Self.rows - 1) / Self.rows }
    func run(_ item: Int, _ worker: Int) {
        let lo = item * Self.rows, hi = min(lo + Self.rows, inputs)
        for s in 0..<samples {
            let out = dx + s * inputs
            for i in lo..<hi { out[i] = dxT[i * paddedBatch + s] }
        }
    }
}

/// A dense layer's backward pass, by ranges of W's rows (tile-aligned, so every output element
/// is summed as one GEMM over the whole layer would sum it). For each block of `rows` rows of W:
/// dXᵀ's rows (reading those W rows), then dW's rows — into `g` when `adam` is nil; otherwise into
/// the worker's scratch and straight into Adam on exactly those rows of W, m and v, while W and
/// the gradient rows are in cache (the gradient never goes to memory: writing fc1's 25.7 MB would
/// also read it first, for ownership). dXᵀ row i needs only W row i, so updating a row right after
/// its dXᵀ never feeds a new weight into an old gradient.
struct DenseUpdateJob: ParallelJob, @unchecked Sendable {  // an item writes its rows of W, m, v and dXᵀ (or its bias columns), and its worker's flag
    static let rows = 32
    var inputs, outputs, batch: Int
    var x: UnsafeMutablePointer<Float>             // [batch, inputs]
    var dy, packedDy: UnsafeMutablePointer<Float>  // dY [batch, outputs], and packed as dW's B
    var packedDyT, dxT: UnsafeMutablePointer<Float>?  // dYᵀ packed as dXᵀ's B, dXᵀ [inputs, paddedBatch]; nil: no input gradient
    var paddedBatch: Int
    var w, g, m, v: UnsafeMutablePointer<Float>    // this layer's weights, gradient and moments in the flat buffers
    var adam: AdamStep?
    var finite: UnsafeMutablePointer<Bool>         // one flag per worker, and-ed
    var tiles: Range<Int>                          // the tiles of Gemm.mr rows of W this process updates (under mpirun, its share)
    var parts: Int
    var sums: ColumnSumJob                         // the bias gradient, items parts..<parts + sumChunks
    var sumChunks: Int
    var rows: Int                                  // where a block of dW's rows goes in the worker's scratch
    unowned(unsafe) var pool: WorkerPool

    func run(_ item: Int, _ worker: Int) {
        if item >= parts { sums.run(chunk: item - parts, of: sumChunks); return }
        let t0 = tiles.lowerBound, tn = tiles.count
        let lo = (t0 + item * tn / parts) * Gemm.mr, hi = min((t0 + (item + 1) * tn / parts) * Gemm.mr, inputs)
        let scratch = pool.scratch(worker)
        var ok = true
        var r0 = lo
        while r0 < hi {
            let r = min(Self.rows, hi - r0)
            if let packedDyT, let dxT {
                Gemm.multiply(m: r, n: paddedBatch, k: outputs, a: .rowMajor(w + r0 * outputs, cols: outputs),
                              b: .rowMajor(packedDyT, cols: paddedBatch), c: dxT + r0 * paddedBatch, ldc: paddedBatch,
                              accumulate: false, packedB: packedDyT, scratch: scratch)
            }
            let at = r0 * outputs
            let gradient = adam == nil ? g + at : scratch + rows
            Gemm.multiply(m: r, n: outputs, k: batch, a: MatrixView.transposed(x, cols: inputs).offset(row: r0, col: 0),
                          b: .rowMajor(dy, cols: outputs), c: gradient, ldc: outputs,
                          accumulate: false, packedB: packedDy, scratch: scratch)
            if let adam {
                ok = AdamUpdate.apply(adam, w: w + at, g: gradient, m: m + at, v: v + at, count: r * outputs) && ok
            }
            r0 += r
        }
        if !ok { finite[worker] = false }
    }
}

/// Adam over the parameters the dense layers did not update in their backward pass (conv
/// parameters and biases), as slices listed once at build time; a flag per worker for
/// non-finite gradients.
struct AdamRangesJob: ParallelJob, @unchecked Sendable {  // an item writes its slice of the parameters and moments, and its worker's flag
    var adam: AdamStep
    var w, g, m, v: UnsafeMutablePointer<Float>
    var starts, counts: UnsafeMutablePointer<Int>
    var finite: UnsafeMutablePointer<Bool>
    func run(_ item: Int, _ worker: Int) {
        let lo = starts[item]
        if !AdamUpdate.apply(adam, w: w + lo, g: g + lo, m: m + lo, v: v + lo, count: counts[item]) { finite[worker] = false }
    }
}
