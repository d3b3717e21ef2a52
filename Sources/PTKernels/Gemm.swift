// C[M,N] (=|+=) A[M,K] · B[K,N], then optionally + bias[N] and ReLU.
// A and B are strided views (any row/column stride, so transposes cost nothing); C is row-major
// with leading dimension ldc. Blocked as in BLIS: B is packed into 32-column panels of KC rows,
// A into MR-row panels, and an MR x NR register tile does the FMAs (GemmMicroKernel.swift).
//
// Determinism: K is always cut at the same KC boundaries and every element is one chain of FMAs
// in k order in a single accumulator lane, whatever M/N sub-block a caller hands in. A partial
// row tile runs a kernel of its own row count (GemmMicroKernel's gemmKernelRows1...), and a
// partial column tile runs the full kernel on zero-padded B panels, but each element's chain is
// the same FMAs in the same order. So any split of M or N across threads gives the same bits.

@inline(__always) func loadV(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
}
@inline(__always) func loadV(_ p: UnsafeMutablePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
}
@inline(__always) func storeV(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<Float>.self)
}
/// acc + bias, through the ReLU when asked, stored: the last step of the direct conv kernels.
@inline(__always) func storeBiasReLU(_ acc: SIMD16<Float>, _ bias: SIMD16<Float>, _ relu: Bool, _ p: UnsafeMutablePointer<Float>) {
    storeV(acc.plusBias(bias, relu: relu), p)
}

/// A read-only strided matrix view: element (i, j) is `base[i * rowStride + j * colStride]`.
public struct MatrixView {
    public var base: UnsafePointer<Float>
    public var rowStride: Int
    public var colStride: Int
    public init(_ base: UnsafePointer<Float>, rowStride: Int, colStride: Int) {
        self.base = base; self.rowStride = rowStride; self.colStride = colStride
    }
    public init(_ base: UnsafeMutablePointer<Float>, rowStride: Int, colStride: Int) {
        self.init(UnsafePointer(base), rowStride: rowStride, colStride: colStride)
    }
    /// Row-major matrix with `cols` columns.
    public static func rowMajor(_ p: UnsafeMutablePointer<Float>, cols: Int) -> MatrixView {
        MatrixView(p, rowStride: cols, colStride: 1)
    }
    /// The transpose of a row-major matrix with `cols` columns.
    public static func transposed(_ p: UnsafeMutablePointer<Float>, cols: Int) -> MatrixView {
        MatrixView(p, rowStride: 1, colStride: cols)
    }
    @inline(__always) public func offset(row: Int, col: Int) -> MatrixView {
        MatrixView(base + row * rowStride + col * colStride, rowStride: rowStride, colStride: colStride)
    }
}

/// A GEMM's B operand: a strided view (packed by each call as it goes), or a whole B already
/// packed by `Gemm.packB` (a weight matrix that many small GEMMs share: packed once a step).
public enum BOperand {
    case view(MatrixView)
    case packed(UnsafePointer<Float>)
    /// A row-major matrix with `cols` columns.
    public static func rowMajor(_ p: UnsafeMutablePointer<Float>, cols: Int) -> BOperand { .view(.rowMajor(p, cols: cols)) }
    /// The transpose of a row-major matrix with `cols` columns.
    public static func transposed(_ p: UnsafeMutablePointer<Float>, cols: Int) -> BOperand { .view(.transposed(p, cols: cols)) }
    /// Panels written by `Gemm.packB` (of this same B).
    public static func packed(_ p: UnsafeMutablePointer<Float>) -> BOperand { .packed(UnsafePointer(p)) }
}

public enum Gemm {
    /// The register tile (see GemmMicroKernel.swift): 8 x 32 on AVX-512 builds, 6 x 16 on AVX2.
    public static let mr = gemmMR, nr = gemmNR
    // mc is a whole number of MR-row panels and nc of NR-column panels: packA holds exactly
    // mc x kc floats (a partial last panel would write past it into packB).
    static let kc = 256, mc = 128 / gemmMR * gemmMR, nc = 512 / gemmNR * gemmNR

    /// Floats of scratch one thread needs for `multiply`.
    public static let scratchFloats = max(mc * kc + kc * nc + mr * nr + nr, GemmBF16.scratchFloats)

    /// A B of at most this many rows and columns packs into one KC x NC block, whose columns
    /// from a multiple of NR on are themselves a packed B: `packed + col * k` (a GEMM on a block
    /// of a conv's output channels).
    public static let packedBlockRows = kc, packedBlockColumns = nc

    /// Floats of a whole [k, n] B packed by `packB` (in bf16: by `GemmBF16.packB`).
    public static func packedBFloats(k: Int, n: Int, precision: Precision = .fp32) -> Int {
        precision.isBF16 ? GemmBF16.packedBFloats(k: k, n: n) : k * ((n + nr - 1) / nr * nr)
    }
    /// The KC x NC blocks `packB` fills one at a time (so several threads can share the work).
    public static func packedBBlocks(k: Int, n: Int) -> Int { ((n + nc - 1) / nc) * ((k + kc - 1) / kc) }

    /// Packs block `block` of a [k, n] B into `dst` in the layout `multiply` reads as `.packed`: a
    /// weight matrix used by many small GEMMs (a conv, a sample at a time) is packed once a step.
    /// `panels`: only those NR-column panels of the block (several threads can share a block).
    public static func packB(k: Int, n: Int, b: MatrixView, block: Int, panels: Range<Int>? = nil, into dst: UnsafeMutablePointer<Float>) {
        let pcBlocks = (k + kc - 1) / kc
        let jc = block / pcBlocks * nc, pc = block % pcBlocks * kc
        let ncb = min(nc, n - jc), kcb = min(kc, k - pc)
        let p = panels ?? 0..<((ncb + nr - 1) / nr)
        let c0 = p.lowerBound * nr, c1 = min(p.upperBound * nr, ncb)
        if c0 >= c1 { return }
        // A block's panels lie one after another, kcb x NR floats each.
        packPanelsB(kcb, c1 - c0, b.offset(row: pc, col: jc + c0), dst + packedBOffset(jc: jc, pc: pc, k: k, ncb: ncb) + c0 * kcb)
    }

    /// The NR-column panels of the widest block `packB` fills.
    public static func packedBPanels(n: Int) -> Int { (min(nc, n) + nr - 1) / nr }

    /// Where block (jc, pc) starts: blocks of earlier column ranges are whole NC-wide (NC is a
    /// multiple of NR), and a block's width is rounded up to whole NR-column panels.
    @inline(__always) static func packedBOffset(jc: Int, pc: Int, k: Int, ncb: Int) -> Int {
        jc * k + pc * ((ncb + nr - 1) / nr * nr)
    }

    /// `scratch` must hold `scratchFloats` floats and belong to the calling thread.
    public static func multiply(m: Int, n: Int, k: Int, a: MatrixView, b operand: BOperand,
                                c: UnsafeMutablePointer<Float>, ldc: Int,
                                accumulate: Bool, bias: UnsafePointer<Float>? = nil, relu: Bool = false,
                                scratch: UnsafeMutablePointer<Float>) {
        if m <= 0 || n <= 0 { return }
        let b: MatrixView, packedB: UnsafePointer<Float>?
        switch operand {
        case let .view(view): b = view; packedB = nil
        case let .packed(p): b = MatrixView(p, rowStride: 0, colStride: 0); packedB = p  // the view is not read
        }
        if k == 0 {
            for i in 0..<m {
                for j in 0..<n {
                    var v = accumulate ? c[i * ldc + j] : 0
                    if let bias { v += bias[j] }
                    c[i * ldc + j] = relu ? max(v, 0) : v
                }
            }
            return
        }
        let packA = scratch
        let packB = scratch + mc * kc
        let edgeC = packB + kc * nc
        let edgeBias = edgeC + mr * nr
        // A row-major operand is read in place: no packing pass, rows stream through the cache.
        let directA = a.colStride == 1
        // With few rows (fc forward: M is the batch) the whole KC x NC block of B would be used by
        // only a few row tiles: pack one NR-column panel at a time instead, just before its tiles
        // use it, so it sits in L1. Reading B in place was slower: fc1's rows are 4 KB apart, so
        // a panel's rows fall into the same few L1 sets and evict each other.
        let panelB = m <= mc && packedB == nil
        var jc = 0
        while jc < n {
            let ncb = min(nc, n - jc)
            var pc = 0
            while pc < k {
                let kcb = min(kc, k - pc)
                let blockB: UnsafePointer<Float>
                if let packedB {
                    blockB = packedB + packedBOffset(jc: jc, pc: pc, k: k, ncb: ncb)
                } else {
                    if !panelB { packPanelsB(kcb, ncb, b.offset(row: pc, col: jc), packB) }
                    blockB = UnsafePointer(packB)
                }
                let load = accumulate || pc > 0
                let last = pc + kcb == k
                var ic = 0
                while ic < m {
                    let mcb = min(mc, m - ic)
                    let fullRows = mcb / mr * mr
                    if !directA {
                        packPanelsA(mcb, kcb, a.offset(row: ic, col: pc), packA)
                    } else if fullRows < mcb {
                        // The last, partial row tile: packed zero-padded (rather than read past A),
                        // once here rather than once per column panel.
                        packPanelsA(mcb - fullRows, kcb, a.offset(row: ic + fullRows, col: pc), packA)
                    }
                    var jr = 0
                    while jr < ncb {
                        let cols = min(nr, ncb - jr)
                        let tileBias: UnsafePointer<Float>?
                        if last, let bias {
                            if cols == nr {
                                tileBias = bias + jc + jr
                            } else {
                                for j in 0..<nr { edgeBias[j] = j < cols ? bias[jc + jr + j] : 0 }
                                tileBias = UnsafePointer(edgeBias)
                            }
                        } else {
                            tileBias = nil
                        }
                        let tileRelu = last && relu
                        var pb = blockB + jr * kcb
                        if panelB {
                            packPanelsB(kcb, cols, b.offset(row: pc, col: jc + jr), packB)
                            pb = UnsafePointer(packB)
                        }
                        var ir = 0
                        while ir < mcb {
                            let rows = min(mr, mcb - ir)
                            let i0 = ic + ir, j0 = jc + jr
                            let inPlace = rows == mr && cols == nr
                            let target = inPlace ? c + i0 * ldc + j0 : edgeC
                            let ldt = inPlace ? ldc : nr
                            if !inPlace && load {
                                for r in 0..<mr {
                                    for j in 0..<nr { edgeC[r * nr + j] = (r < rows && j < cols) ? c[(i0 + r) * ldc + j0 + j] : 0 }
                                }
                            }
                            var pa = UnsafePointer(packA + ir * kcb)
                            let aInPlace = directA && rows == mr
                            if directA && !aInPlace { pa = UnsafePointer(packA) }
                            let ap = a.base + i0 * a.rowStride + pc
                            if aInPlace {
                                gemmKernelDirectA(kcb, ap, a.rowStride, pb, target, ldt, load: load, bias: tileBias, relu: tileRelu)
                            } else if rows < mr {
                                // A last, partial row tile (M = 50: 2 rows; a Winograd GEMM's 49: 1)
                                // computes only its rows, not a zero-padded full tile.
                                gemmKernelPackedRows(rows, kcb, pa, pb, target, ldt, load: load, bias: tileBias, relu: tileRelu)
                            } else {
                                gemmKernelPacked(kcb, pa, pb, target, ldt, load: load, bias: tileBias, relu: tileRelu)
                            }
                            if !inPlace {
                                for r in 0..<rows {
                                    for j in 0..<cols { c[(i0 + r) * ldc + j0 + j] = edgeC[r * nr + j] }
                                }
                            }
                            ir += mr
                        }
                        jr += nr
                    }
                    ic += mc
                }
                pc += kcb
            }
            jc += ncb
        }
    }

    /// Packs rows [0, rows) x cols [0, kc) of `a` into MR-row panels, k-major inside a panel.
    @inline(__always)
    static func packPanelsA(_ rows: Int, _ kc: Int, _ a: MatrixView, _ dst: UnsafeMutablePointer<Float>) {
        var d = dst
        var i = 0
        while i < rows {
            let valid = min(mr, rows - i)
            if a.rowStride == 1 && valid == 8 && mr == 8 {
                // Transposed operand: the 8 rows of one k are adjacent in memory.
                var src = a.base + i
                for _ in 0..<kc {
                    UnsafeMutableRawPointer(d).storeBytes(
                        of: UnsafeRawPointer(src).loadUnaligned(as: SIMD8<Float>.self), as: SIMD8<Float>.self)
                    src += a.colStride; d += mr
                }
            } else {
                for r in 0..<mr {
                    if r < valid {
                        let src = a.base + (i + r) * a.rowStride
                        for p in 0..<kc { d[p * mr + r] = src[p * a.colStride] }
                    } else {
                        for p in 0..<kc { d[p * mr + r] = 0 }
                    }
                }
                d += kc * mr
            }
            i += mr
        }
    }

    /// Packs rows [0, kc) x cols [0, cols) of `b` into NR-column panels, k-major inside a panel.
    @inline(__always)
    static func packPanelsB(_ kc: Int, _ cols: Int, _ b: MatrixView, _ dst: UnsafeMutablePointer<Float>) {
        var d = dst
        var j = 0
        while j < cols {
            let valid = min(nr, cols - j)
            if b.colStride == 1 && valid == nr {
                var src = b.base + j
                for _ in 0..<kc {
                    storeG(loadG(src), d); storeG(loadG(src + nr / 2), d + nr / 2)
                    src += b.rowStride; d += nr
                }
            } else if b.colStride == 1 {
                // A partial panel of a row-major operand, row by row (fc2's 10 columns: column by
                // column wrote 32 scattered floats a row, and packing cost more than the GEMM).
                var src = b.base + j
                for _ in 0..<kc {
                    for q in 0..<valid { d[q] = src[q] }
                    for q in valid..<nr { d[q] = 0 }
                    src += b.rowStride; d += nr
                }
            } else {
                // Column by column: for a transposed operand (rowStride 1) each column is
                // contiguous, so reads stream instead of jumping a row per element.
                for q in 0..<nr {
                    if q < valid {
                        let src = b.base + (j + q) * b.colStride
                        for p in 0..<kc { d[p * nr + q] = src[p * b.rowStride] }
                    } else {
                        for p in 0..<kc { d[p * nr + q] = 0 }
                    }
                }
                d += kc * nr
            }
            j += nr
        }
    }
}
