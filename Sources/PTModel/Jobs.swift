// The per-sample parallel regions of a step, as ParallelJob values: the worker pool runs them
// without allocating (a closure would cost a heap allocation per region).
import PTKernels
import PTRuntime

struct PoolJob: ParallelJob {
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

/// dy = 0 where the ReLU output y was clamped, one sample of `size` floats per item.
struct ReluMaskJob: ParallelJob {
    var dy, y: UnsafeMutablePointer<Float>
    var size: Int
    func run(_ s: Int, _ worker: Int) {
        Elementwise.reluBackward(dy: dy + s * size, y: y + s * size, count: size)
    }
}

struct DropoutJob: ParallelJob {
    var d: DropoutStage
    var x, y: UnsafeMutablePointer<Float>   // forward: y = x * mask; backward: x is dx, y is dy
    var mode: Mode
    var seed: UInt64, step: Int
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
            for u in 0..<d.units { xs[u] = ys[u] * m[u] }
        }
    }
}

/// Packs a GEMM's B operand for `Gemm.multiply(packedB:)`, one KC x NC block per item: conv
/// weights once a step for every sample's GEMM, a dense layer's dYᵀ for its input gradient.
struct PackBJob: ParallelJob {
    var k, n: Int
    var b: MatrixView
    var into: UnsafeMutablePointer<Float>
    var blocks: Int { Gemm.packedBBlocks(k: k, n: n) }
    func run(_ block: Int, _ worker: Int) { Gemm.packB(k: k, n: n, b: b, block: block, into: into) }
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
struct WinogradWeightsJob: ParallelJob {
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
struct PackWinogradJob: ParallelJob {
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

/// One sample of a convolution: im2col into the worker's scratch (the input itself for a 1x1
/// stride-1 conv) and one GEMM with bias and ReLU — or Winograd, or the direct one-channel conv —
/// and, when a max-pool follows, the pool (then `y` is the pool's output and the conv's output
/// stays in scratch).
struct ConvForwardJob: ParallelJob {
    var g: Window
    var cout: Int
    var x, y, w, bias: UnsafeMutablePointer<Float>   // w: the weights packed by PackBJob
    var relu, viaCol: Bool
    var winograd: ConvStage?   // set for a Winograd conv (then w is unused)
    var singleChannel: Bool    // direct (then w is the weights as stored)
    var fusedPool: PoolStage?
    var scratch: ScratchLayout
    unowned(unsafe) var pool: WorkerPool
    func run(_ s: Int, _ worker: Int) {
        let area = pool.scratch(worker)
        if singleChannel {
            let xp = area + scratch.col
            SingleChannelConv.pad(g, x: x + s * g.inputSize, into: xp)
            let out = fusedPool == nil ? y + s * g.positions * cout : area + scratch.output
            SingleChannelConv.forward(g, cout: cout, xp: xp, w: w, bias: bias, relu: relu, y: out)
            poolAfter(out, s)
            return
        }
        if let c = winograd {
            // V = Bᵀ d B, then M_ξ = V_ξ · U_ξ for the 16 positions ξ, then y = Aᵀ M A + bias.
            let t = Winograd.tiles(g), cin = g.channels
            let v = area + scratch.col, m = area + scratch.winograd
            Winograd.transformInput(g, x: x + s * g.inputSize, into: v)
            for xi in 0..<16 {
                let packed = c.packedW + xi * c.packedStride
                Gemm.multiply(m: t, n: cout, k: cin, a: .rowMajor(v + xi * t * cin, cols: cin), b: .rowMajor(packed, cols: cout),
                              c: m + xi * t * cout, ldc: cout, accumulate: false, packedB: packed, scratch: area)
            }
            let out = fusedPool == nil ? y + s * g.positions * cout : area + scratch.output
            Winograd.transformOutput(g, cout: cout, m: m, bias: bias, relu: relu, into: out)
            poolAfter(out, s)
            return
        }
        let col = viaCol ? area + scratch.col : x + s * g.inputSize
        if viaCol { Im2col.forward(g, x: x + s * g.inputSize, col: col) }
        let out = fusedPool == nil ? y + s * g.positions * cout : area + scratch.output
        // w is the packed weights: the B view is not read.
        Gemm.multiply(m: g.positions, n: cout, k: g.patch, a: .rowMajor(col, cols: g.patch), b: .rowMajor(w, cols: cout),
                      c: out, ldc: cout, accumulate: false, bias: bias, relu: relu, packedB: w, scratch: area)
        poolAfter(out, s)
    }

    @inline(__always) func poolAfter(_ out: UnsafeMutablePointer<Float>, _ s: Int) {
        if let p = fusedPool {
            let size = p.window.positions * p.window.channels
            MaxPool.forward(p.window, x: out, y: y + s * size, argmax: p.argmax! + s * size)
        }
    }
}

/// One shard of the batch through a convolution's backward pass, a sample at a time in sample
/// order: the fused max-pool's backward (into scratch) or the ReLU mask, im2col again (cheaper
/// than keeping the batch's), the shard's weight and bias gradients accumulated into its own
/// buffers, and the input gradient (dcol = dy · Wᵀ, wt being Wᵀ packed, then col2im); or the
/// same through Winograd's transforms (`backwardWinograd`), or the direct one-channel conv's
/// weight gradient. Which worker runs a shard changes nothing: its sums run in sample order.
struct ConvBackwardJob: ParallelJob {
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
    unowned(unsafe) var pool: WorkerPool

    func run(_ shard: Int, _ worker: Int) {
        let P = g.positions, K = g.patch
        let area = pool.scratch(worker)
        let gws = gw + shard * shardStride, gbs = gb + shard * shardStride
        // A Winograd conv sums the shard's weight gradient as dU (transformed), then transforms it once.
        let du = area + scratch.winograd + 16 * Winograd.tiles(g) * cout
        // The shard's first sample starts the weight gradient's sums (no clearing pass; the same bits).
        let first = shard * samples / shards, end = (shard + 1) * samples / shards
        if singleChannel || first == end { gws.update(repeating: 0, count: K * cout) }
        gbs.update(repeating: 0, count: cout)
        for s in first..<end {
            let dys: UnsafeMutablePointer<Float>
            if let p = fusedPool {
                let size = p.window.positions * p.window.channels
                dys = area + scratch.output
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
                Elementwise.columnSums(dys, rows: P, ld: cout, cols: 0..<cout, into: gbs, accumulate: true)
                continue
            }
            if let c = winograd {
                backwardWinograd(c, s, dys, du, accumulate: s > first, area)
                Elementwise.columnSums(dys, rows: P, ld: cout, cols: 0..<cout, into: gbs, accumulate: true)
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
        if winograd != nil && first < end { Winograd.weightGradient(du, pairs: g.channels * cout, into: gws) }
    }

    /// One sample of a Winograd conv: dM = A dy Aᵀ, dU_ξ += V_ξᵀ dM_ξ (V recomputed from x), and
    /// when the input gradient is needed, dV_ξ = dM_ξ U_ξᵀ (over V) and dx = Σ B dV Bᵀ.
    func backwardWinograd(_ c: ConvStage, _ s: Int, _ dys: UnsafeMutablePointer<Float>,
                          _ du: UnsafeMutablePointer<Float>, accumulate: Bool, _ area: UnsafeMutablePointer<Float>) {
        let t = Winograd.tiles(g), cin = g.channels
        let v = area + scratch.col, dm = area + scratch.winograd
        Winograd.transformInput(g, x: x + s * g.inputSize, into: v)
        Winograd.transformOutputGradient(g, cout: cout, dy: dys, into: dm)
        for xi in 0..<16 {
            Gemm.multiply(m: cin, n: cout, k: t, a: .transposed(v + xi * t * cin, cols: cin), b: .rowMajor(dm + xi * t * cout, cols: cout),
                          c: du + xi * cin * cout, ldc: cout, accumulate: accumulate, scratch: area)
        }
        guard let dx, let wt else { return }
        for xi in 0..<16 {
            let packed = wt + xi * c.packedStrideT
            Gemm.multiply(m: t, n: cin, k: cout, a: .rowMajor(dm + xi * t * cout, cols: cout), b: .rowMajor(packed, cols: cin),
                          c: v + xi * t * cin, ldc: cin, accumulate: false, packedB: packed, scratch: area)
        }
        Winograd.inputGradient(g, dv: v, into: dx + s * g.inputSize)
    }
}

/// out[i] = shard 0 + shard 1 + ... in that order, for a slice of the parameters per item.
/// Public for the all-reduce benchmark in Benchmarks/.
public struct ShardReduceJob: ParallelJob {
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
struct TransposeOutJob: ParallelJob {
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
struct DenseUpdateJob: ParallelJob {
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
struct AdamRangesJob: ParallelJob {
    var adam: AdamStep
    var w, g, m, v: UnsafeMutablePointer<Float>
    var starts, counts: UnsafeMutablePointer<Int>
    var finite: UnsafeMutablePointer<Bool>
    func run(_ item: Int, _ worker: Int) {
        let lo = starts[item]
        if !AdamUpdate.apply(adam, w: w + lo, g: g + lo, m: m + lo, v: v + lo, count: counts[item]) { finite[worker] = false }
    }
}
