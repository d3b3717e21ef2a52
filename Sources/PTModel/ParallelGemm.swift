// Splits one GEMM across a worker pool by whole register tiles of M or N (and both when one has
// fewer tiles than there are workers), never by K, so every output element keeps the single
// summation order Gemm gives it; and packs a GEMM's B operand on the pool.
import PTKernels
import PTRuntime

private let f = MemoryLayout<Float>.size

struct GemmJob {
    var m, n, k: Int
    var a, b: MatrixView
    var c: UnsafeMutablePointer<Float>
    var ldc: Int
    var accumulate = false
    var bias: UnsafePointer<Float>? = nil
    var relu = false
    var precision = Precision.fp32
    /// In bf16: A already rounded (`GemmBF16.packRows`), its rows `aBF16Stride` apart.
    var aBF16: UnsafePointer<UInt16>? = nil
    var aBF16Stride = 0
    /// In bf16: B as `GemmBF16.packB` packs the whole of it, kept current by its owner (a dense
    /// layer's weights, packed by the optimizer as it updates them); `b` still views it in fp32.
    var bPackedBF16: UnsafePointer<Float>? = nil
}

/// Rounds rows of a row-major fp32 matrix into bf16 rows (`GemmBF16.packRows`), 8 rows an item.
struct PackRowsJob: ParallelJob, @unchecked Sendable {  // an item writes its rows of the bf16 copy
    var src: UnsafePointer<Float>
    var rows, k: Int
    var into: UnsafeMutablePointer<UInt16>
    var items: Int { (rows + 7) / 8 }
    func run(_ item: Int, _ worker: Int) {
        GemmBF16.packRows(src, ld: k, k: k, rows: (item * 8)..<min(item * 8 + 8, rows), into: into)
    }
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
        let tiles = splitM ? mt : nt, across = splitM ? nt : mt
        // A few items per worker, taken from a shared counter: a worker the hypervisor or another
        // process delays holds up less of the region. Tile-aligned, so the bits do not change.
        var parts = min(tiles, 4 * splitCount)
        // Each part of an M split packs all of B (K x N rounded up to whole NR panels): keep its
        // rows' multiply-adds at least 8 times that (fc2's forward, N = 10, has 32 row tiles at
        // batch 256, and cut 32 ways it spent more time packing B than multiplying).
        if splitM {
            let packed = (j.n + Gemm.nr - 1) / Gemm.nr * Gemm.nr
            let minTiles = (8 * packed + j.n * Gemm.mr - 1) / (j.n * Gemm.mr)
            parts = max(1, min(parts, tiles / max(minTiles, 1)))
        } else if tiles >= 2 * splitCount {
            // Each part of an N split streams all of A: two column tiles a part at least, while
            // that still gives every worker a part (fc1's forward at batch 50 on 16 workers).
            parts = min(parts, tiles / 2)
        }
        // Fewer tiles than workers (fc1's forward has 32 column tiles): cut the other dimension
        // too, just enough to give every worker an item. The pieces of one tile range are
        // consecutive items, so they run at the same time and read their slice of the shared
        // operand together (from the last-level cache, not once each from memory).
        let cuts = tiles < splitCount ? min(across, (splitCount + tiles - 1) / tiles) : 1
        run(items: parts * cuts, SplitGemm(job: j, splitM: splitM, tiles: tiles, parts: parts, across: across, cuts: cuts, pool: self))
    }
}

/// One GEMM cut into `parts` tile ranges.
struct SplitGemm: ParallelJob, @unchecked Sendable {  // an item writes its tile range of C; reads A and B
    var job: GemmJob
    var splitM: Bool
    var tiles, parts: Int
    /// Tiles along the other dimension, cut into `cuts` ranges (1: not cut).
    var across = 1, cuts = 1
    unowned(unsafe) var pool: WorkerPool

    func run(_ item: Int, _ worker: Int) {
        let j = job
        let part = item / cuts, cut = item % cuts
        let t0 = part * tiles / parts, t1 = (part + 1) * tiles / parts
        let u0 = cut * across / cuts, u1 = (cut + 1) * across / cuts
        let (rows, cols) = splitM ? ((t0, t1), (u0, u1)) : ((u0, u1), (t0, t1))
        let r0 = rows.0 * Gemm.mr, r1 = min(rows.1 * Gemm.mr, j.m)
        let c0 = cols.0 * Gemm.nr, c1 = min(cols.1 * Gemm.nr, j.n)
        if let a = j.aBF16, let path = j.precision.bf16Path {
            // The packed B's panels are 32 columns wide: a part starting inside one packs its view.
            var b = BOperand.view(j.b.offset(row: 0, col: c0))
            if let packed = j.bPackedBF16, c0 % 32 == 0 { b = .packed(packed + GemmBF16.packedColumnOffset(col: c0, k: j.k)) }
            GemmBF16.multiply(m: r1 - r0, n: c1 - c0, k: j.k, aBF16: a + r0 * j.aBF16Stride, lda: j.aBF16Stride,
                              b: b, c: j.c + r0 * j.ldc + c0, ldc: j.ldc,
                              accumulate: j.accumulate, bias: j.bias.map { $0 + c0 }, relu: j.relu, scratch: pool.scratch(worker), path: path)
            return
        }
        Gemm.multiply(m: r1 - r0, n: c1 - c0, k: j.k, a: j.a.offset(row: r0, col: 0), b: .view(j.b.offset(row: 0, col: c0)),
                      c: j.c + r0 * j.ldc + c0, ldc: j.ldc,
                      accumulate: j.accumulate, bias: j.bias.map { $0 + c0 }, relu: j.relu, scratch: pool.scratch(worker),
                      precision: j.precision)
    }
}

/// Packs a GEMM's B operand for `Gemm.multiply(b: .packed)`, a slice of a KC x NC block's panels per
/// item: conv weights once a step for every sample's GEMM, a dense layer's dY and dYᵀ for its
/// gradients. `slices` cuts each block for `workers` (a copy: a few items each). In bf16 the
/// whole B is one block of 32-column panels (`GemmBF16.packB`).
struct PackBJob: ParallelJob, @unchecked Sendable {  // an item writes its panels of the packed copy
    var k, n: Int
    var b: MatrixView
    var into: UnsafeMutablePointer<Float>
    var precision: Precision
    /// KC x NC blocks of the packed copy, and the slices of panels each is cut into (items for
    /// about two per worker).
    var blocks: Int, slices: Int
    init(k: Int, n: Int, b: MatrixView, into: UnsafeMutablePointer<Float>, workers: Int = 1, precision: Precision = .fp32) {
        self.k = k; self.n = n; self.b = b; self.into = into; self.precision = precision
        blocks = precision.isBF16 ? 1 : Gemm.packedBBlocks(k: k, n: n)
        slices = min(Self.panels(n: n, precision), max(1, (2 * workers + blocks - 1) / blocks))
    }
    /// The column panels of a block (in bf16 the block is the whole B).
    static func panels(n: Int, _ precision: Precision) -> Int {
        precision.isBF16 ? GemmBF16.packedBPanels(n: n) : Gemm.packedBPanels(n: n)
    }
    var items: Int { blocks * slices }
    func run(_ item: Int, _ worker: Int) {
        let block = item / slices, slice = item % slices, panels = Self.panels(n: n, precision)
        let mine = (slice * panels / slices)..<((slice + 1) * panels / slices)
        if precision.isBF16 {
            GemmBF16.packB(k: k, n: n, b: b, panels: mine, into: into)
        } else {
            Gemm.packB(k: k, n: n, b: b, block: block, panels: mine, into: into)
        }
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

extension SplitGemm {
    func bytesMoved(items: Int) -> Int {
        // (A or B already in bf16 is half the bytes.)
        (job.aBF16 == nil ? f : 2) * job.m * job.k + (job.bPackedBF16 == nil ? f : 2) * job.k * job.n
            + f * job.m * job.n * (job.accumulate ? 2 : 1)
    }
}

extension PackRowsJob {
    /// Its rows in fp32, and in bf16.
    func bytesMoved(items: Int) -> Int { min(items * 8, rows) * k * (f + 2) }
}

extension PackBJob {
    func bytesMoved(items: Int) -> Int { f * 2 * k * n * items / max(self.items, 1) }
}

extension PackTwoJob {
    func bytesMoved(items: Int) -> Int { first.bytesMoved(items: first.items) + second.bytesMoved(items: second.items) }
}
