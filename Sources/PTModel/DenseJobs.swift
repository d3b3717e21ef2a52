// A dense layer's backward regions: its rows of dXᵀ, dW and Adam, and dx from dXᵀ.
import PTKernels
import PTRuntime

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
/// dXᵀ's rows (reading those W rows), then dW's rows — into `g` when `optimizer` is nil; otherwise into
/// the worker's scratch and straight into the optimizer on exactly those rows of W, m and v, while W and
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
    var optimizer: OptimizerStep?
    var finite: UnsafeMutablePointer<Bool>         // one flag per worker, and-ed
    var tiles: Range<Int>                          // the tiles of Gemm.mr rows of W this process updates (under mpirun, its share)
    var parts: Int
    var sums: ColumnSumJob                         // the bias gradient, items parts..<parts + sumChunks
    var sumChunks: Int
    var rows: Int                                  // where a block of dW's rows goes in the worker's scratch
    var precision: Precision
    unowned(unsafe) var pool: WorkerPool

    /// Items the row blocks of `tiles` are cut into for `workers`: about four a worker.
    static func parts(tiles: Range<Int>, workers: Int) -> Int { min(tiles.count, 4 * workers) }

    /// The rows of W that items `items` (of `parts` over `tiles`) update: the job's items and
    /// `Network`'s placement of those rows by node both read it from here.
    static func rows(_ items: Range<Int>, of parts: Int, tiles: Range<Int>, inputs: Int) -> Range<Int> {
        let tn = tiles.count, p = max(parts, 1)
        return min((tiles.lowerBound + items.lowerBound * tn / p) * Gemm.mr, inputs)..<min((tiles.lowerBound + items.upperBound * tn / p) * Gemm.mr, inputs)
    }

    func run(_ item: Int, _ worker: Int) {
        if item >= parts { sums.run(chunk: item - parts, of: sumChunks); return }
        let block = Self.rows(item..<(item + 1), of: parts, tiles: tiles, inputs: inputs)
        let lo = block.lowerBound, hi = block.upperBound
        let scratch = pool.scratch(worker)
        var ok = true
        var r0 = lo
        while r0 < hi {
            let r = min(Self.rows, hi - r0)
            if let packedDyT, let dxT {
                Gemm.multiply(m: r, n: paddedBatch, k: outputs, a: .rowMajor(w + r0 * outputs, cols: outputs),
                              b: .packed(packedDyT), c: dxT + r0 * paddedBatch, ldc: paddedBatch,
                              accumulate: false, scratch: scratch, precision: precision)
            }
            let at = r0 * outputs
            let gradient = optimizer == nil ? g + at : scratch + rows
            Gemm.multiply(m: r, n: outputs, k: batch, a: MatrixView.transposed(x, cols: inputs).offset(row: r0, col: 0),
                          b: .packed(packedDy), c: gradient, ldc: outputs,
                          accumulate: false, scratch: scratch, precision: precision)
            if let optimizer {
                ok = OptimizerUpdate.apply(optimizer, w: w + at, g: gradient, m: m + at, v: v + at, count: r * outputs) && ok
            }
            r0 += r
        }
        if !ok { finite[worker] = false }
    }
}
