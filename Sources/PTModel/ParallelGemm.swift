// Splits one GEMM across a worker pool by whole register tiles of M or N (whichever has more),
// never by K, so every output element keeps the single summation order Gemm gives it.
import PTKernels
import PTRuntime

struct GemmJob {
    var m, n, k: Int
    var a, b: MatrixView
    var c: UnsafeMutablePointer<Float>
    var ldc: Int
    var accumulate = false
    var bias: UnsafePointer<Float>? = nil
    var relu = false
}

/// Column sums of a row-major [rows, cols] matrix (a bias gradient), run beside a dense layer's
/// backward pass (`DenseUpdateJob`).
struct ColumnSumJob {
    var m: UnsafePointer<Float>
    var rows, cols: Int
    var out: UnsafeMutablePointer<Float>
    /// How many chunks to cut the columns into for `count` workers.
    func chunks(workers count: Int) -> Int { min((cols + 15) / 16, count) }
    /// Chunks of whole 16-column groups, so each column's sum takes the same (SIMD or not) path.
    func run(chunk c: Int, of chunks: Int) {
        let groups = (cols + 15) / 16
        let lo = min(c * groups / chunks * 16, cols), hi = min((c + 1) * groups / chunks * 16, cols)
        Elementwise.columnSums(m, rows: rows, ld: cols, cols: lo..<hi, into: out)
    }
}

extension WorkerPool {
    func gemm(_ j: GemmJob) {
        let mt = (j.m + Gemm.mr - 1) / Gemm.mr, nt = (j.n + Gemm.nr - 1) / Gemm.nr
        // Split along the dimension whose split re-reads the smaller operand: every part of an
        // M split reads (and packs) all of B (K x N), every part of an N split all of A (M x K).
        // fc1's forward at batch 256 (M 256, N 1024) split by M read W's 25.7 MB once a part
        // (found by `ptrain bench --model-cores`).
        let splitM = j.n < j.m
        let tiles = splitM ? mt : nt
        // A few items per worker, taken from a shared counter: a worker the hypervisor or another
        // process delays holds up less of the region. Tile-aligned, so the bits do not change.
        let parts = min(tiles, 4 * splitCount)
        run(items: parts, SplitGemm(job: j, splitM: splitM, tiles: tiles, parts: parts, pool: self))
    }
}

/// One GEMM cut into `parts` tile ranges.
struct SplitGemm: ParallelJob {
    var job: GemmJob
    var splitM: Bool
    var tiles, parts: Int
    unowned(unsafe) var pool: WorkerPool

    func run(_ item: Int, _ worker: Int) {
        let j = job
        let t0 = item * tiles / parts, t1 = (item + 1) * tiles / parts
        let scratch = pool.scratch(worker)
        if splitM {
            let r0 = t0 * Gemm.mr, r1 = min(t1 * Gemm.mr, j.m)
            Gemm.multiply(m: r1 - r0, n: j.n, k: j.k, a: j.a.offset(row: r0, col: 0), b: j.b,
                          c: j.c + r0 * j.ldc, ldc: j.ldc,
                          accumulate: j.accumulate, bias: j.bias, relu: j.relu, scratch: scratch)
        } else {
            let c0 = t0 * Gemm.nr, c1 = min(t1 * Gemm.nr, j.n)
            Gemm.multiply(m: j.m, n: c1 - c0, k: j.k, a: j.a, b: j.b.offset(row: 0, col: c0),
                          c: j.c + c0, ldc: j.ldc,
                          accumulate: j.accumulate, bias: j.bias.map { $0 + c0 }, relu: j.relu, scratch: scratch)
        }
    }
}
