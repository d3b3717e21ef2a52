// C[M,N] (=|+=) A[M,K] · B[K,N], then optionally + bias[N] and ReLU, with bf16 operands and fp32
// accumulation: Gemm.multiply's contract (strided fp32 views in, fp32 C out) under mixed precision.
// A and B are rounded to bf16 (round-to-nearest-even) as they are packed; the products are exact
// in fp32 and summed there by a 32x32 tile kernel (CBF16: AMX, AVX512-BF16 or portable).
//
// Blocking: B in KC x NC blocks of 32-column panels (each 32 k of a panel is 1024 bf16: two
// 16-column halves in the VNNI pair layout), A in MC-row blocks of 32-row panels with K padded to
// a multiple of 32 by zeros. Determinism: K is cut at multiples of KC counted from k = 0 and
// padded only at its end, so every element's sum is the same sequence of tile instructions
// whatever M/N sub-block or edge tile computes it: any split of M or N keeps the bits (on one
// path; the paths' bits differ from each other and from fp32).
import CBF16

public enum BF16 {
    /// fp32 → bf16, round to nearest even (a NaN stays a NaN). The result is in each lane's low 16 bits.
    @inline(__always) public static func round(_ v: SIMD16<Float>) -> SIMD16<UInt32> {
        let bits = unsafeBitCast(v, to: SIMD16<UInt32>.self)
        let rounded = (bits &+ 0x7FFF &+ ((bits &>> 16) & 1)) &>> 16
        // NaN found by a float compare (one vcmpps): Swift lowers the unsigned-integer compare that
        // says the same, (bits & 0x7FFF_FFFF) .> 0x7F80_0000, to a loop over the 16 lanes.
        return rounded.replacing(with: (bits &>> 16) | 0x40, where: v .!= v)
    }
    @inline(__always) public static func round(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        if bits & 0x7FFF_FFFF > 0x7F80_0000 { return UInt16(bits >> 16) | 0x40 }
        return UInt16((bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
    }
    @inline(__always) public static func widen(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }
    /// `x` rounded to the nearest bf16, as a Float.
    @inline(__always) public static func rounded(_ x: Float) -> Float { widen(round(x)) }
}

public enum GemmBF16 {
    // kc, nc: multiples of 32; mc a multiple of 32. Scratch: A block, B block, an edge tile, its bias.
    static let kc = 512, mc = 64, nc = 256

    /// Floats of scratch one thread needs for `multiply` (no more than Gemm's).
    public static let scratchFloats = (mc * kc + kc * nc) / 2 + 32 * 32 + 32

    /// K padded to whole 32-k blocks, as packed operands hold it.
    @inline(__always) public static func paddedK(_ k: Int) -> Int { (k + 31) / 32 * 32 }

    /// Floats of a whole [k, n] B packed by `packB` (32-column panels of K padded to 32, bf16).
    public static func packedBFloats(k: Int, n: Int) -> Int { paddedK(k) * ((n + 31) / 32 * 32) / 2 }

    /// Where the 32-column panel holding column `col` (a multiple of 32) of a packed [k, n] B
    /// starts, in floats: the packed columns from there on are themselves a packed B.
    public static func packedColumnOffset(col: Int, k: Int) -> Int { col * paddedK(k) / 2 }

    /// Packs columns `panels` (32-column panels) of a [k, n] B into `dst` as `multiply` reads it
    /// for `.packed` (several threads can share the panels of one B).
    public static func packB(k: Int, n: Int, b: MatrixView, panels: Range<Int>, into dst: UnsafeMutablePointer<Float>) {
        let kp = paddedK(k)
        let out = UnsafeMutableRawPointer(dst + packedColumnOffset(col: panels.lowerBound * 32, k: k))
        let cols = min(panels.upperBound * 32, n) - panels.lowerBound * 32
        if cols <= 0 { return }
        packPanelsB(k: k, kPadded: kp, cols: cols, b: b.offset(row: 0, col: panels.lowerBound * 32),
                    into: out.assumingMemoryBound(to: UInt32.self), panelWords: kp * 16)
    }
    public static func packedBPanels(n: Int) -> Int { (n + 31) / 32 }

    /// Rows 32·`block` ..< 32·`block` + 32 of a [k, n] B (one k-block: rows past k as zeros)
    /// into their place in `packB`'s layout of the whole B, every column panel; the other blocks
    /// are left as they are. So a B whose rows change a block at a time (a dense layer's weights,
    /// updated by the optimizer a block of rows at a time) stays packed without packing it whole.
    public static func packB(k: Int, n: Int, b: MatrixView, kBlock block: Int, into dst: UnsafeMutablePointer<Float>) {
        let r0 = block * 32
        guard r0 < k, n > 0 else { return }
        let words = UnsafeMutableRawPointer(dst).assumingMemoryBound(to: UInt32.self) + block * 512
        packPanelsB(k: min(32, k - r0), kPadded: 32, cols: n, b: b.offset(row: r0, col: 0), into: words, panelWords: paddedK(k) * 16)
    }

    /// `scratch` must hold `scratchFloats` floats and belong to the calling thread; a `.packed` B
    /// comes from `packB`.
    public static func multiply(m: Int, n: Int, k: Int, a: MatrixView, b operand: BOperand,
                                c: UnsafeMutablePointer<Float>, ldc: Int,
                                accumulate: Bool, bias: UnsafePointer<Float>? = nil, relu: Bool = false,
                                scratch: UnsafeMutablePointer<Float>, path: BF16Path) {
        if m <= 0 || n <= 0 { return }
        if k == 0 { emptySum(m: m, n: n, c: c, ldc: ldc, accumulate: accumulate, bias: bias, relu: relu); return }
        run(m: m, n: n, k: k, a: .view(a), b: operand, c: c, ldc: ldc, accumulate: accumulate, bias: bias, relu: relu,
            scratch: scratch, path: path)
    }

    /// The same with A already in bf16 (`packRows`, or a bf16 im2col): row i's k = 0, 1, ... at
    /// `a + i * lda`, lda >= paddedK(k), finite values from k to paddedK(k) (they meet B's zero
    /// rows; zeros give `multiply`'s bits with A as fp32 for any data).
    public static func multiply(m: Int, n: Int, k: Int, aBF16 a: UnsafePointer<UInt16>, lda: Int, b operand: BOperand,
                                c: UnsafeMutablePointer<Float>, ldc: Int,
                                accumulate: Bool, bias: UnsafePointer<Float>? = nil, relu: Bool = false,
                                scratch: UnsafeMutablePointer<Float>, path: BF16Path) {
        if m <= 0 || n <= 0 { return }
        if k == 0 { emptySum(m: m, n: n, c: c, ldc: ldc, accumulate: accumulate, bias: bias, relu: relu); return }
        run(m: m, n: n, k: k, a: .rows(a, lda, padded: false), b: operand, c: c, ldc: ldc, accumulate: accumulate, bias: bias, relu: relu,
            scratch: scratch, path: path)
    }

    /// K = 0: C is its loaded value (or 0), plus the bias, through the ReLU.
    static func emptySum(m: Int, n: Int, c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool,
                         bias: UnsafePointer<Float>?, relu: Bool) {
        for i in 0..<m {
            for j in 0..<n {
                var v = accumulate ? c[i * ldc + j] : 0
                if let bias { v += bias[j] }
                c[i * ldc + j] = relu && v < 0 ? 0 : v
            }
        }
    }

    /// The same with A read in place by k-blocks: row i's block kb (k = 32·kb ..< 32·kb + 32) at
    /// `a + i * lda + offsets[kb]` — a convolution's patches in its padded input
    /// (`ImplicitConv`). m and k are whole 32-row panels and 32-k blocks; the values a block reads
    /// must be finite wherever B's rows are zero.
    public static func multiply(m: Int, n: Int, k: Int, aBlocks a: UnsafePointer<UInt16>, lda: Int, offsets: UnsafePointer<Int>,
                                b operand: BOperand, c: UnsafeMutablePointer<Float>, ldc: Int,
                                accumulate: Bool, bias: UnsafePointer<Float>? = nil, relu: Bool = false,
                                scratch: UnsafeMutablePointer<Float>, path: BF16Path) {
        precondition(m % 32 == 0 && k % 32 == 0, "an A read by k-blocks is whole panels and blocks")
        if m <= 0 || n <= 0 { return }
        if k == 0 { emptySum(m: m, n: n, c: c, ldc: ldc, accumulate: accumulate, bias: bias, relu: relu); return }
        run(m: m, n: n, k: k, a: .blocks(a, lda, offsets), b: operand, c: c, ldc: ldc, accumulate: accumulate, bias: bias, relu: relu,
            scratch: scratch, path: path)
    }

    /// Packs a B whose K is `segments` runs of `rows` rows, each run zero-padded to `segmentK` (a
    /// multiple of 32) and given by `run(s)` as a [rows, n] view, into `dst` as `multiply` reads a
    /// `.packed` B of K = segments · segmentK (an `ImplicitConv`'s weights: a kernel row's taps and
    /// channels per run).
    public static func packSegmentsB(segments: Int, rows: Int, segmentK: Int, n: Int, run: (Int) -> MatrixView,
                                     into dst: UnsafeMutablePointer<Float>) {
        precondition(segmentK % 32 == 0 && rows <= segmentK)
        let words = UnsafeMutableRawPointer(dst).assumingMemoryBound(to: UInt32.self), k = segments * segmentK
        for seg in 0..<segments {
            packPanelsB(k: rows, kPadded: segmentK, cols: n, b: run(seg), into: words + seg * segmentK / 32 * 512, panelWords: paddedK(k) * 16)
        }
    }

    /// Floats of a [rows, k] A in bf16 as `packRows` writes it: rows rounded up to 32, k to paddedK.
    public static func rowsFloats(rows: Int, k: Int) -> Int { (rows + 31) / 32 * 32 * paddedK(k) / 2 }

    /// Rows `rows` of a row-major fp32 [_, k] matrix (leading dimension ld) as bf16 rows of
    /// paddedK(k) into `dst` (`multiply(aBF16:)`'s A).
    public static func packRows(_ src: UnsafePointer<Float>, ld: Int, k: Int, rows: Range<Int>, into dst: UnsafeMutablePointer<UInt16>) {
        let lda = paddedK(k)
        pt_bf16_pack_rows(src + rows.lowerBound * ld, ld, Int32(rows.count), Int32(k), dst + rows.lowerBound * lda, lda)
    }

    enum AOperand {
        case view(MatrixView)
        /// bf16 rows `stride` apart; `padded`: zero rows follow up to a whole 32-row panel.
        case rows(UnsafePointer<UInt16>, Int, padded: Bool)
        /// bf16 rows `stride` apart, k-block kb of each at `offsets[kb]` (`multiply(aBlocks:)`).
        case blocks(UnsafePointer<UInt16>, Int, UnsafePointer<Int>)
    }

    static func run(m: Int, n: Int, k: Int, a: AOperand, b operand: BOperand,
                    c: UnsafeMutablePointer<Float>, ldc: Int,
                    accumulate: Bool, bias: UnsafePointer<Float>?, relu: Bool,
                    scratch: UnsafeMutablePointer<Float>, path: BF16Path) {
        let raw = UnsafeMutableRawPointer(scratch)
        let packA = raw.assumingMemoryBound(to: UInt16.self)
        let packB = (raw + mc * kc * 2).assumingMemoryBound(to: UInt32.self)
        let edgeC = (raw + (mc * kc + kc * nc) * 2).assumingMemoryBound(to: Float.self)
        let edgeBias = edgeC + 32 * 32
        let kp = paddedK(k)
        var a = a
        // A view that fits the A block whole (one K block, its rows padded to a 32-row panel) is
        // rounded once here rather than once per column block: a dense layer's dW (32 rows of Xᵀ
        // against 1024 columns), a conv's dX (dY against the patch's columns).
        if case let .view(view) = a, n > nc, kp <= kc, (m + 31) / 32 * 32 * kp <= mc * kc {
            packPanelA(rows: m, k: k, lda: kp, a: view, into: packA)
            a = .rows(UnsafePointer(packA), kp, padded: true)
        }
        if path == .amx { pt_bf16_amx_configure() }
        var jc = 0
        while jc < n {
            let ncb = min(nc, n - jc)
            var pc = 0
            while pc < kp {
                let kcbPadded = min(kc, kp - pc), kcb = min(kcbPadded, k - pc)
                // This block's panels: panel j at panels + j * panelWords (32-bit words: bf16 pairs).
                let panels: UnsafePointer<UInt32>, panelWords: Int
                switch operand {
                case let .packed(p):
                    panelWords = kp * 16
                    panels = UnsafeRawPointer(p + packedColumnOffset(col: jc, k: k)).assumingMemoryBound(to: UInt32.self) + pc * 16
                case let .view(view):
                    panelWords = kcbPadded * 16
                    packPanelsB(k: kcb, kPadded: kcbPadded, cols: ncb, b: view.offset(row: pc, col: jc), into: packB, panelWords: panelWords)
                    panels = UnsafePointer(packB)
                }
                let load = accumulate || pc > 0, last = pc + kcbPadded == kp
                var ic = 0
                while ic < m {
                    let mcb = min(mc, m - ic)
                    // Whole 32-row panels of A read where they are; a partial last one from packA,
                    // zero-padded (the rows past m need not exist).
                    let blockA: UnsafePointer<UInt16>, lda: Int, inPlaceRows: Int
                    var offsets: UnsafePointer<Int>? = nil
                    switch a {
                    case let .blocks(p, stride, blockOffsets):
                        blockA = p + ic * stride; lda = stride; inPlaceRows = mcb; offsets = blockOffsets + pc / 32
                    case let .view(view):
                        packPanelA(rows: mcb, k: kcb, lda: kcbPadded, a: view.offset(row: ic, col: pc), into: packA)
                        blockA = UnsafePointer(packA); lda = kcbPadded; inPlaceRows = mcb
                    case let .rows(p, stride, padded):
                        // (On AMX a last panel of exactly 16 rows is read in place too: its kernel
                        // reads no row past them.)
                        blockA = p + ic * stride + pc; lda = stride
                        inPlaceRows = padded ? (mcb + 31) / 32 * 32 : mcb / 32 * 32 + (path == .amx && mcb % 32 == 16 ? 16 : 0)
                        if inPlaceRows < mcb {
                            for r in 0..<32 {
                                let d = packA + r * kcbPadded
                                if inPlaceRows + r < mcb { d.update(from: blockA + (inPlaceRows + r) * lda, count: kcbPadded) }
                                else { d.update(repeating: 0, count: kcbPadded) }
                            }
                        }
                    }
                    var jr = 0
                    while jr < ncb {
                        let cols = min(32, ncb - jr)
                        var tileBias: UnsafePointer<Float>? = nil
                        if last, let bias {
                            if cols == 32 { tileBias = bias + jc + jr } else {
                                for j in 0..<32 { edgeBias[j] = j < cols ? bias[jc + jr + j] : 0 }
                                tileBias = UnsafePointer(edgeBias)
                            }
                        }
                        let pb = panels + (jr / 32) * panelWords
                        var ir = 0
                        while ir < mcb {
                            let rows = min(32, mcb - ir), i0 = ic + ir, j0 = jc + jr
                            let inPlace = rows == 32 && cols == 32
                            let target = inPlace ? c + i0 * ldc + j0 : edgeC
                            // An edge tile runs in edgeC: only its valid rows and columns are
                            // loaded and stored back (each element of C depends on its own row of
                            // A and column of B alone, so what the others hold changes no bit).
                            if !inPlace && load {
                                for r in 0..<rows { copyRow(c + (i0 + r) * ldc + j0, to: edgeC + r * 32, count: cols) }
                            }
                            let pa = ir < inPlaceRows ? blockA + ir * lda : UnsafePointer(packA)
                            // A last panel of 16 rows or fewer, or 16 columns: half the tile or less
                            // (what lies past them in edgeC is never copied out).
                            tile(path, kcbPadded / 32, pa, ir < inPlaceRows ? lda : kcbPadded, pb, target, inPlace ? ldc : 32,
                                 load: load, bias: tileBias, relu: last && relu, rows: rows, cols: cols, offsets: offsets)
                            if !inPlace {
                                for r in 0..<rows { copyRow(edgeC + r * 32, to: c + (i0 + r) * ldc + j0, count: cols) }
                            }
                            ir += 32
                        }
                        jr += 32
                    }
                    ic += mcb
                }
                pc += kcbPadded
            }
            jc += ncb
        }
    }

    /// An edge tile's row (up to 32 floats), inline: a memmove call per row cost more than the
    /// tile's products where C is 16 columns wide (a 16-channel conv's output).
    @inline(__always)
    static func copyRow(_ src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i + 16 <= count {
            UnsafeMutableRawPointer(dst + i).storeBytes(of: UnsafeRawPointer(src + i).loadUnaligned(as: SIMD16<Float>.self), as: SIMD16<Float>.self)
            i += 16
        }
        while i < count { dst[i] = src[i]; i += 1 }
    }

    /// C's rows 0..<`rows` and columns 0..<`cols` (of 32) are computed; the others may be left as
    /// they were (on AMX, 16 or fewer of either takes half the products; on AVX512-BF16, 16 or
    /// fewer columns half, and rows by strips of 8 or 16). The kernel may still read A's rows and
    /// read and write C's rows and columns up to its strips' or half tiles' ends (16 or 32 columns,
    /// up to 32 rows): a tile with fewer runs in the 32 x 32 edgeC.
    @inline(__always)
    static func tile(_ path: BF16Path, _ blocks: Int, _ a: UnsafePointer<UInt16>, _ lda: Int, _ b: UnsafePointer<UInt32>,
                     _ c: UnsafeMutablePointer<Float>, _ ldc: Int, load: Bool, bias: UnsafePointer<Float>?, relu: Bool, rows: Int = 32,
                     cols: Int = 32, offsets: UnsafePointer<Int>? = nil) {
        let bh = UnsafeRawPointer(b).assumingMemoryBound(to: UInt16.self)
        let l = load ? Int32(1) : 0, r = relu ? Int32(1) : 0
        switch path {
        case .amx: pt_bf16_tile_amx(Int32(blocks), a, offsets, lda, bh, c, ldc, l, bias, r, Int32(rows), Int32(cols))
        case .avx512: pt_bf16_tile_avx512(Int32(blocks), a, offsets, lda, bh, c, ldc, l, bias, r, Int32(rows), Int32(cols))
        case .portable: pt_bf16_tile_portable(Int32(blocks), a, offsets, lda, bh, c, ldc, l, bias, r)
        }
    }

    /// Rows [0, rows) x k [0, k) of `a` as bf16 rows of `lda` (k zero-padded to lda), and zero rows
    /// up to a whole 32-row panel.
    static func packPanelA(rows: Int, k: Int, lda: Int, a: MatrixView, into dst: UnsafeMutablePointer<UInt16>) {
        let padded = (rows + 31) / 32 * 32
        if a.colStride == 1 {
            pt_bf16_pack_rows(a.base, a.rowStride, Int32(rows), Int32(k), dst, lda)
        } else if a.rowStride == 1 {
            // A transposed operand (a weight gradient's Xᵀ): 16 x 16 transposes in CBF16.
            pt_bf16_pack_transposed(a.base, a.colStride, Int32(rows), Int32(k), dst, lda)
        } else {
            for r in 0..<rows {
                for p in 0..<k { dst[r * lda + p] = BF16.round(a.base[r * a.rowStride + p * a.colStride]) }
                (dst + r * lda + k).update(repeating: 0, count: lda - k)
            }
        }
        (dst + rows * lda).update(repeating: 0, count: (padded - rows) * lda)
    }

    /// Rows [0, k) x cols [0, cols) of `b` into 32-column panels of `panelWords` words, each 32 k a
    /// block of two 16-column halves of 16 k-pairs (word = bf16(k even) | bf16(k odd) << 16);
    /// k from `k` to `kPadded` and columns past `cols` are zeros.
    static func packPanelsB(k: Int, kPadded: Int, cols: Int, b: MatrixView, into dst: UnsafeMutablePointer<UInt32>, panelWords: Int) {
        let panels = (cols + 31) / 32
        for j in 0..<panels {
            for h in 0..<2 {
                let n0 = j * 32 + h * 16, valid = max(0, min(16, cols - n0))
                if valid == 0 {
                    // The empty half of a 16-column B (a 16-channel conv's weights or output gradient).
                    for kb in 0..<(kPadded / 32) { (dst + j * panelWords + kb * 512 + h * 256).update(repeating: 0, count: 256) }
                    continue
                }
                if valid == 16 && b.colStride == 1 {
                    for kb in 0..<(kPadded / 32) {
                        pt_bf16_pack_pairs16(b.base + kb * 32 * b.rowStride + n0, b.rowStride, Int32(max(0, k - kb * 32)), 16,
                                             dst + j * panelWords + kb * 512 + h * 256, 16)
                    }
                    continue
                }
                if valid == 16 && b.rowStride == 1 {
                    // Stored transposed (dYᵀ, Wᵀ): each column's k run is contiguous.
                    for kb in 0..<(kPadded / 32) {
                        pt_bf16_pack_pairs16_transposed(b.base + n0 * b.colStride + kb * 32, b.colStride, Int32(max(0, k - kb * 32)),
                                                        dst + j * panelWords + kb * 512 + h * 256)
                    }
                    continue
                }
                // A partial half-panel, or any other stride: element by element.
                for q in 0..<(kPadded / 2) {
                    let d = dst + j * panelWords + (q / 16) * 512 + h * 256 + (q % 16) * 16
                    let k0 = 2 * q
                    for q2 in 0..<16 {
                        var word: UInt32 = 0
                        if q2 < valid {
                            let col = b.base + (n0 + q2) * b.colStride
                            if k0 < k { word = UInt32(BF16.round(col[k0 * b.rowStride])) }
                            if k0 + 1 < k { word |= UInt32(BF16.round(col[(k0 + 1) * b.rowStride])) << 16 }
                        }
                        d[q2] = word
                    }
                }
            }
        }
    }
}

extension Gemm {
    /// `multiply` in `precision`: fp32, or bf16 operands with fp32 sums on a path (a `.packed` B
    /// packed by `packB(precision:)` in the same precision).
    @inline(__always)
    public static func multiply(m: Int, n: Int, k: Int, a: MatrixView, b: BOperand, c: UnsafeMutablePointer<Float>, ldc: Int,
                                accumulate: Bool, bias: UnsafePointer<Float>? = nil, relu: Bool = false,
                                scratch: UnsafeMutablePointer<Float>, precision: Precision) {
        switch precision {
        case .fp32:
            multiply(m: m, n: n, k: k, a: a, b: b, c: c, ldc: ldc, accumulate: accumulate, bias: bias, relu: relu, scratch: scratch)
        case let .bf16(path):
            GemmBF16.multiply(m: m, n: n, k: k, a: a, b: b, c: c, ldc: ldc, accumulate: accumulate, bias: bias, relu: relu,
                              scratch: scratch, path: path)
        }
    }
}
