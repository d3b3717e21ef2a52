// bf16 rounding and the bf16 GEMM on every path this CPU has: against Float64 on the same
// bf16-rounded operands within the fp32 accumulation bound, the same bits for any sub-block and for
// a K chain continued at a 32-k boundary, and the portable path equal to AVX512-BF16's.
import Foundation
import PTKernels
import PTTestSupport
import Testing

/// The paths to test here, and a line in the log for each one this CPU lacks.
let bf16Paths: [BF16Path] = {
    for p in BF16Path.allCases where !BF16Path.available.contains(p) {
        print("skipped: no \(p == .amx ? "AMX" : "AVX512-BF16") on this CPU (bf16 tests of that path)")
    }
    return BF16Path.available
}()

@Test func bf16RoundsToNearestEven() {
    // Exact ties: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 (bf16 has 7 fraction bits).
    #expect(BF16.rounded(1 + 0x1p-8) == 1)                   // tie to even (1)
    #expect(BF16.rounded(1 + 3 * 0x1p-8) == 1 + 2 * 0x1p-7)  // tie to even (1 + 2^-6)
    #expect(BF16.rounded(1 + 0x1p-8 + 0x1p-20) == 1 + 0x1p-7)
    #expect(BF16.rounded(-1.5) == -1.5 && BF16.rounded(0) == 0 && BF16.rounded(-0.0).sign == .minus)
    #expect(BF16.rounded(.greatestFiniteMagnitude) == .infinity && BF16.rounded(-.infinity) == -.infinity)
    #expect(BF16.rounded(.nan).isNaN && BF16.rounded(Float(bitPattern: 0x7F80_0001)).isNaN)
    // Against rounding in Double, on many values; the vector form agrees with the scalar one.
    var r = Rand(s: 5)
    var values = [Float]()
    for i in 0..<4096 { values.append(r.next() * Float(1 << (i % 20)) + Float(i % 7) * 1e-3) }
    for chunk in stride(from: 0, to: values.count, by: 16) {
        var v = SIMD16<Float>()
        for i in 0..<16 { v[i] = values[chunk + i] }
        let vector = BF16.round(v)
        for i in 0..<16 {
            let x = values[chunk + i]
            #expect(UInt16(vector[i]) == BF16.round(x))
            // The nearest bf16 in Double: no other bf16 is closer, and a tie goes to an even mantissa.
            if BF16.round(x) & 0x7FFF == 0 { continue }  // ±0: its neighbours' patterns wrap
            let got = Double(BF16.rounded(x)), up = Double(BF16.widen(BF16.round(x) &+ 1)), down = Double(BF16.widen(BF16.round(x) &- 1))
            let e = abs(got - Double(x))
            #expect(e <= abs(up - Double(x)) && e <= abs(down - Double(x)), "\(x)")
            if e == abs(up - Double(x)) || e == abs(down - Double(x)) { #expect(BF16.round(x) & 1 == 0, "\(x)") }
        }
    }
}

/// A bf16 GEMM of `m x k · k x n` against Float64 on the rounded operands, every element within
/// the bound for a sum of k + 2 terms (products, the loaded C, the bias) in fp32: each addition
/// rounds by at most u = 2^-24 of the running sum, so |error| <= (k + 2) u Σ|terms| (products of
/// bf16 values are exact in fp32).
func checkBF16Gemm(_ path: BF16Path, m: Int, n: Int, k: Int, accumulate: Bool, bias: Bool, relu: Bool,
                   transposeA: Bool = false, transposeB: Bool = false, packB: Bool = false,
                   sourceLocation: SourceLocation = #_sourceLocation) {
    var r = Rand(s: UInt64(m * 1000 + n * 10 + k))
    let a = r.array(m * k), b = r.array(k * n), c0 = r.array(m * n), bs = r.array(n)
    let ra = a.map { Double(BF16.rounded($0)) }, rb = b.map { Double(BF16.rounded($0)) }
    // A as stored: row-major, or its transpose (then a[i, p] is at at[p * m + i]).
    var at = [Float](repeating: 0, count: m * k)
    for i in 0..<m { for p in 0..<k { at[p * m + i] = a[i * k + p] } }
    var c = accumulate ? c0 : [Float](repeating: .nan, count: m * n)
    let packed = UnsafeMutablePointer<Float>.allocate(capacity: max(1, GemmBF16.packedBFloats(k: k, n: n)))
    defer { packed.deallocate() }
    let s = scratch
    defer { s.deallocate() }
    // B as stored: row-major, or its transpose (b[p, j] at bt[j * k + p]).
    var bt = [Float](repeating: 0, count: k * n)
    for p in 0..<k { for j in 0..<n { bt[j * k + p] = b[p * n + j] } }
    (transposeB ? bt : b).withUnsafeBufferPointer { bp in
        let bv = transposeB ? MatrixView(bp.baseAddress!, rowStride: 1, colStride: k) : MatrixView(bp.baseAddress!, rowStride: n, colStride: 1)
        if packB { GemmBF16.packB(k: k, n: n, b: bv, panels: 0..<GemmBF16.packedBPanels(n: n), into: packed) }
        (transposeA ? at : a).withUnsafeBufferPointer { ap in
            let av = transposeA ? MatrixView(ap.baseAddress!, rowStride: 1, colStride: m) : MatrixView(ap.baseAddress!, rowStride: k, colStride: 1)
            bs.withUnsafeBufferPointer { biasp in
                c.withUnsafeMutableBufferPointer { cp in
                    GemmBF16.multiply(m: m, n: n, k: k, a: av, b: packB ? .packed(packed) : .view(bv), c: cp.baseAddress!, ldc: n,
                                      accumulate: accumulate, bias: bias ? biasp.baseAddress! : nil, relu: relu, scratch: s, path: path)
                }
            }
        }
    }
    var worst = 0.0
    for i in 0..<m {
        for j in 0..<n {
            var sum = 0.0, size = 0.0
            for p in 0..<k { let t = ra[i * k + p] * rb[p * n + j]; sum += t; size += abs(t) }
            if accumulate { sum += Double(c0[i * n + j]); size += abs(Double(c0[i * n + j])) }
            if bias { sum += Double(bs[j]); size += abs(Double(bs[j])) }
            let want = relu ? max(sum, 0) : sum
            let bound = Double(k + 2) * 0x1p-24 * size
            let err = abs(Double(c[i * n + j]) - want)
            worst = max(worst, err / max(bound, .leastNormalMagnitude))
            if err > bound {
                Issue.record("\(path) m\(m) n\(n) k\(k): C[\(i),\(j)] = \(c[i * n + j]), Float64 \(want), bound \(bound)", sourceLocation: sourceLocation)
                return
            }
        }
    }
}

@Test(arguments: bf16Paths)
func bf16GemmMatchesFloat64OnRoundedOperands(_ path: BF16Path) {
    // Odd sizes, edge tiles in both dimensions, K across the 512-k blocks and not a multiple of 32.
    for (m, n, k) in [(1, 1, 1), (3, 7, 5), (17, 33, 31), (32, 32, 32), (33, 70, 100), (70, 45, 600), (65, 257, 64), (5, 10, 1100)] {
        checkBF16Gemm(path, m: m, n: n, k: k, accumulate: false, bias: false, relu: false)
        checkBF16Gemm(path, m: m, n: n, k: k, accumulate: true, bias: true, relu: true, packB: true)
        checkBF16Gemm(path, m: m, n: n, k: k, accumulate: true, bias: false, relu: false, transposeA: true)
        checkBF16Gemm(path, m: m, n: n, k: k, accumulate: false, bias: true, relu: false, transposeB: true)
        checkBF16Gemm(path, m: m, n: n, k: k, accumulate: false, bias: false, relu: true, transposeB: true, packB: true)
    }
}

/// `count` values of T that end right before an unreadable page: a read past them faults.
func beforeGuardPage<T>(_ count: Int, _: T.Type) -> UnsafeMutablePointer<T> {
    let bytes = count * MemoryLayout<T>.stride, page = 4096, span = (bytes + page - 1) / page * page
    let base = mmap(nil, span + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
    mprotect(base + span, page, PROT_NONE)
    return (base + span - bytes).bindMemory(to: T.self, capacity: count)  // (mapped for the process's life)
}

/// A already in bf16 (a dense layer's rounded input, a bf16 im2col) gives the bits of A as fp32
/// rounded in the call, for any block of rows the pool cuts, and reads no row past m (48 rows:
/// a last panel of exactly 16, which AMX reads in place).
@Test(arguments: bf16Paths)
func bf16RowsOfAGiveTheBitsOfAView(_ path: BF16Path) {
    for (m, n, k) in [(5, 40, 70), (33, 64, 600), (77, 100, 6), (48, 16, 96)] {
        var r = Rand(s: UInt64(m))
        let a = r.array(m * k), b = r.array(k * n), lda = GemmBF16.paddedK(k)
        let rows = beforeGuardPage(m * lda, UInt16.self)
        a.withUnsafeBufferPointer { GemmBF16.packRows($0.baseAddress!, ld: k, k: k, rows: 0..<m, into: rows) }
        let s = scratch
        defer { s.deallocate() }
        for cut in [0, 8, m / 2 / 8 * 8] where cut < m {
            var viaView = [Float](repeating: 0, count: m * n), viaRows = viaView
            a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in
                let bv = BOperand.view(MatrixView(bp.baseAddress!, rowStride: n, colStride: 1))
                viaView.withUnsafeMutableBufferPointer { c in
                    GemmBF16.multiply(m: m - cut, n: n, k: k, a: MatrixView(ap.baseAddress! + cut * k, rowStride: k, colStride: 1), b: bv,
                                      c: c.baseAddress! + cut * n, ldc: n, accumulate: false, scratch: s, path: path)
                }
                viaRows.withUnsafeMutableBufferPointer { c in
                    GemmBF16.multiply(m: m - cut, n: n, k: k, aBF16: rows + cut * lda, lda: lda, b: bv,
                                      c: c.baseAddress! + cut * n, ldc: n, accumulate: false, scratch: s, path: path)
                }
            } }
            #expect(viaRows.map(\.bitPattern) == viaView.map(\.bitPattern), "\(path) m\(m) n\(n) k\(k) from row \(cut)")
        }
    }
}

/// A bf16 im2col holds exactly the rounded values of the fp32 one, zeros in each row's k padding.
@Test func bf16Im2colIsTheRoundedIm2col() {
    for g in [Window(inH: 9, inW: 8, channels: 3, kernel: 3, stride: 2, same: true),
              Window(inH: 14, inW: 14, channels: 64, kernel: 3, stride: 1, same: true),
              Window(inH: 7, inW: 6, channels: 5, kernel: 5, stride: 1, same: false)] {
        var r = Rand(s: 7)
        let x = r.array(g.inputSize + Im2col.slack)
        let col = UnsafeMutablePointer<Float>.allocate(capacity: g.positions * g.patch + Im2col.slack)
        let area = UnsafeMutablePointer<Float>.allocate(capacity: Im2col.bf16Floats(g))
        defer { col.deallocate(); area.deallocate() }
        x.withUnsafeBufferPointer { Im2col.forward(g, x: $0.baseAddress!, col: col) }
        let (h, lda) = x.withUnsafeBufferPointer { Im2col.forwardBF16(g, x: $0.baseAddress!, scratch: area) }
        #expect(lda == GemmBF16.paddedK(g.patch))
        var same = true
        for p in 0..<g.positions {
            for i in 0..<lda where h[p * lda + i] != (i < g.patch ? BF16.round(col[p * g.patch + i]) : 0) { same = false }
        }
        #expect(same, "\(g)")
    }
}

/// `floats` floats of scratch with every 16-bit slot 0xFFFF (a bf16 NaN): a value a kernel forgot
/// to write shows, zeros too.
func bf16NaNs(floats: Int) -> UnsafeMutablePointer<Float> {
    let p = UnsafeMutablePointer<Float>.allocate(capacity: floats)
    UnsafeMutableRawPointer(p).initializeMemory(as: UInt16.self, repeating: 0xFFFF, count: 2 * floats)
    return p
}

/// The transposed bf16 im2col (a weight gradient's A) holds exactly the rounded values of the fp32
/// im2col's transpose, zeros in each row's k padding: strides 1 and 2, SAME and VALID, a 5x5
/// kernel (two columns of padding a side), rows wider than a vector, 1 to 64 channels, and maps
/// so small with stride 2 that a whole kernel row or column of an output falls in the padding.
let transposedWindows = [Window(inH: 9, inW: 8, channels: 3, kernel: 3, stride: 2, same: true),
                         Window(inH: 1, inW: 8, channels: 2, kernel: 3, stride: 2, same: true),
                         Window(inH: 2, inW: 2, channels: 4, kernel: 3, stride: 2, same: true),
                         Window(inH: 3, inW: 1, channels: 16, kernel: 3, stride: 2, same: true),
                         Window(inH: 14, inW: 14, channels: 64, kernel: 3, stride: 1, same: true),
                         Window(inH: 7, inW: 6, channels: 5, kernel: 5, stride: 1, same: false),
                         Window(inH: 8, inW: 9, channels: 2, kernel: 5, stride: 1, same: true),
                         Window(inH: 5, inW: 37, channels: 1, kernel: 3, stride: 1, same: true),
                         Window(inH: 10, inW: 11, channels: 16, kernel: 3, stride: 2, same: false)]
@Test(arguments: transposedWindows)
func transposedBF16Im2colIsTheRoundedTranspose(_ g: Window) {
    var r = Rand(s: 9)
    let x = r.array(g.inputSize + Im2col.slack)
    let col = UnsafeMutablePointer<Float>.allocate(capacity: g.positions * g.patch + Im2col.slack)
    let area = bf16NaNs(floats: Im2col.transposedBF16Floats(g))
    defer { col.deallocate(); area.deallocate() }
    x.withUnsafeBufferPointer { Im2col.forward(g, x: $0.baseAddress!, col: col) }
    let (h, lda) = x.withUnsafeBufferPointer { Im2col.transposedBF16(g, x: $0.baseAddress!, scratch: area) }
    #expect(lda == GemmBF16.paddedK(g.positions))
    var wrong = 0
    for i in 0..<g.patch {
        for p in 0..<lda where h[i * lda + p] != (p < g.positions ? BF16.round(col[p * g.patch + i]) : 0) { wrong += 1 }
    }
    #expect(wrong == 0, "\(g)")
}

/// The shifted planes hold, for every tap and channel, `transposedBF16`'s row in place (its
/// positions, then finite values over the k padding): the SAME stride-1 convs above, and 3x3 and
/// 4x4 (more padding after than before) kernels on maps of 16x16x32 down to 3x3.
@Test(arguments: transposedWindows.filter(Im2col.shiftedPlanesApply) + [
    Window(inH: 16, inW: 16, channels: 32, kernel: 3, stride: 1, same: true),
    Window(inH: 3, inW: 3, channels: 5, kernel: 3, stride: 1, same: true),
    Window(inH: 6, inW: 7, channels: 3, kernel: 4, stride: 1, same: true)])
func shiftedPlanesHoldTheTransposedPatches(_ g: Window) {
    #expect(Im2col.shiftedPlanesApply(g))
    var r = Rand(s: 10)
    let x = r.array(g.inputSize + Im2col.slack)
    let expected = UnsafeMutablePointer<Float>.allocate(capacity: Im2col.transposedBF16Floats(g))
    let area = bf16NaNs(floats: Im2col.shiftedPlanesFloats(g))
    defer { expected.deallocate(); area.deallocate() }
    let (rows, lda) = x.withUnsafeBufferPointer { Im2col.transposedBF16(g, x: $0.baseAddress!, scratch: expected) }
    let (planes, ld) = x.withUnsafeBufferPointer { Im2col.shiftedPlanesBF16(g, x: $0.baseAddress!, scratch: area) }
    var wrong = 0, notFinite = 0
    for kh in 0..<g.kernel {
        for kw in 0..<g.kernel {
            for ch in 0..<g.channels {
                let row = rows + ((kh * g.kernel + kw) * g.channels + ch) * lda
                let run = planes + (kw * g.channels + ch) * ld + kh * g.outW
                for p in 0..<g.positions where run[p] != row[p] { wrong += 1 }
                for p in g.positions..<lda where !BF16.widen(run[p]).isFinite { notFinite += 1 }
            }
        }
    }
    #expect(wrong == 0, "\(g)")
    #expect(notFinite == 0, "\(g)")
}

/// One path's C for a GEMM, computed whole or as sub-blocks of rows and columns at given cuts.
func bf16Blocks(_ path: BF16Path, m: Int, n: Int, k: Int, rowCuts: [Int], colCuts: [Int], packB: Bool) -> [UInt32] {
    var r = Rand(s: 11)
    let a = r.array(m * k), b = r.array(k * n), bs = r.array(n)
    var c = r.array(m * n)
    let packed = UnsafeMutablePointer<Float>.allocate(capacity: GemmBF16.packedBFloats(k: k, n: n))
    defer { packed.deallocate() }
    let s = scratch
    defer { s.deallocate() }
    a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in bs.withUnsafeBufferPointer { biasp in c.withUnsafeMutableBufferPointer { cp in
        let bv = MatrixView(bp.baseAddress!, rowStride: n, colStride: 1)
        GemmBF16.packB(k: k, n: n, b: bv, panels: 0..<GemmBF16.packedBPanels(n: n), into: packed)
        let rows = zip([0] + rowCuts, rowCuts + [m]), cols = Array(zip([0] + colCuts, colCuts + [n]))
        for (r0, r1) in rows {
            for (c0, c1) in cols {
                // A packed B's columns from a multiple of 32 are a packed B of their own.
                let operand: BOperand = packB ? .packed(packed + GemmBF16.packedColumnOffset(col: c0, k: k)) : .view(bv.offset(row: 0, col: c0))
                GemmBF16.multiply(m: r1 - r0, n: c1 - c0, k: k, a: MatrixView(ap.baseAddress! + r0 * k, rowStride: k, colStride: 1),
                                  b: operand, c: cp.baseAddress! + r0 * n + c0, ldc: n, accumulate: true,
                                  bias: biasp.baseAddress! + c0, relu: true, scratch: s, path: path)
            }
        }
    } } } }
    return c.map(\.bitPattern)
}

@Test(arguments: bf16Paths)
func bf16GemmSubBlocksAreBitIdentical(_ path: BF16Path) {
    let whole = bf16Blocks(path, m: 77, n: 100, k: 700, rowCuts: [], colCuts: [], packB: false)
    // Rows cut anywhere (on tiles of 8 as the pool cuts them, and not), columns at multiples of 32.
    // (On AMX a part's last panel of 16 rows or fewer runs the 16-row kernel, a full one the 32-row
    // kernel: rows 0-7 come from the 16-row kernel here and from the 32-row one whole.)
    #expect(bf16Blocks(path, m: 77, n: 100, k: 700, rowCuts: [8, 40, 41], colCuts: [32, 64], packB: false) == whole)
    #expect(bf16Blocks(path, m: 77, n: 100, k: 700, rowCuts: [1, 2, 3, 70], colCuts: [64], packB: true) == whole)
    // Columns cut at 16 (a view B): a 16-column tile against the full one for the same elements.
    #expect(bf16Blocks(path, m: 77, n: 100, k: 700, rowCuts: [40], colCuts: [16, 48], packB: false) == whole)
    // Parts of 17 to 31 rows (AVX512-BF16: a partial last strip of 8, or a 16-row strip and an
    // 8-row one in 16-column tiles), against the whole.
    #expect(bf16Blocks(path, m: 77, n: 100, k: 700, rowCuts: [24, 48], colCuts: [16, 48], packB: false) == whole)
    #expect(bf16Blocks(path, m: 77, n: 100, k: 700, rowCuts: [17, 46], colCuts: [16], packB: false) == whole)
    #expect(bf16Blocks(path, m: 77, n: 100, k: 700, rowCuts: [], colCuts: [], packB: true) == whole)
    // Wider than a column block with an A that fits the A block whole (rounded once for every
    // column block), against column parts each narrow enough to round their own.
    for (m, k) in [(77, 200), (64, 96), (5, 512)] {
        #expect(bf16Blocks(path, m: m, n: 600, k: k, rowCuts: [], colCuts: [], packB: false)
                == bf16Blocks(path, m: m, n: 600, k: k, rowCuts: [], colCuts: [256, 512], packB: false), "m \(m), k \(k)")
    }
}

/// A transposed A (a dense layer's Xᵀ, rows of W's inputs over the batch) that fits the A block
/// whole, rounded once for every column block: the bits of column parts that round their own.
@Test(arguments: bf16Paths)
func bf16TransposedAFittingTheBlockIsRoundedOnce(_ path: BF16Path) {
    let batch = 50, inputs = 70, rows = 40..<70, n = 600
    var r = Rand(s: 5)
    let x = r.array(batch * inputs), b = r.array(batch * n)
    let packed = UnsafeMutablePointer<Float>.allocate(capacity: GemmBF16.packedBFloats(k: batch, n: n))
    defer { packed.deallocate() }
    let s = scratch
    defer { s.deallocate() }
    var whole = [Float](repeating: 0, count: rows.count * n), parts = whole
    x.withUnsafeBufferPointer { xp in b.withUnsafeBufferPointer { bp in
        GemmBF16.packB(k: batch, n: n, b: MatrixView(bp.baseAddress!, rowStride: n, colStride: 1),
                       panels: 0..<GemmBF16.packedBPanels(n: n), into: packed)
        let a = MatrixView(xp.baseAddress!, rowStride: 1, colStride: inputs).offset(row: rows.lowerBound, col: 0)
        GemmBF16.multiply(m: rows.count, n: n, k: batch, a: a, b: .packed(packed), c: &whole, ldc: n, accumulate: false,
                          scratch: s, path: path)
        parts.withUnsafeMutableBufferPointer { cp in
            for c0 in stride(from: 0, to: n, by: 256) {
                GemmBF16.multiply(m: rows.count, n: min(256, n - c0), k: batch, a: a,
                                  b: .packed(packed + GemmBF16.packedColumnOffset(col: c0, k: batch)),
                                  c: cp.baseAddress! + c0, ldc: n, accumulate: false, scratch: s, path: path)
            }
        }
    } }
    #expect(whole.map(\.bitPattern) == parts.map(\.bitPattern))
    #expect(whole.contains { $0 != 0 })
}

/// A B packed a k-block at a time (as a dense layer's optimizer keeps its weights packed) is the
/// whole B packed at once, word for word: k ending inside a block, n inside a half panel.
@Test(arguments: [(1, 1), (31, 16), (32, 17), (33, 32), (70, 40), (96, 100)])
func bf16PackingByKBlocksIsPackingWhole(_ k: Int, _ n: Int) {
    var r = Rand(s: 3)
    var b = r.array(k * n)
    b[0] = .nan
    let words = GemmBF16.packedBFloats(k: k, n: n)
    let whole = UnsafeMutablePointer<Float>.allocate(capacity: words), blocks = UnsafeMutablePointer<Float>.allocate(capacity: words)
    defer { whole.deallocate(); blocks.deallocate() }
    blocks.initialize(repeating: Float(bitPattern: 0xFFFF_FFFF), count: words)  // so a word left unwritten shows
    b.withUnsafeBufferPointer { bp in
        let bv = MatrixView(bp.baseAddress!, rowStride: n, colStride: 1)
        GemmBF16.packB(k: k, n: n, b: bv, panels: 0..<GemmBF16.packedBPanels(n: n), into: whole)
        for block in (0..<(GemmBF16.paddedK(k) / 32)).reversed() { GemmBF16.packB(k: k, n: n, b: bv, kBlock: block, into: blocks) }
    }
    #expect((0..<words).allSatisfy { whole[$0].bitPattern == blocks[$0].bitPattern }, "k \(k), n \(n)")
}

/// Under mpirun each rank continues the forward's sums over its share of K (a multiple of 32 rows
/// from the start): the chain must give the bits of one GEMM over all of K.
@Test(arguments: bf16Paths)
func bf16GemmContinuedAt32KBoundariesIsBitIdentical(_ path: BF16Path) {
    let m = 20, n = 40, k = 1000
    var r = Rand(s: 3)
    let a = r.array(m * k), b = r.array(k * n)
    let s = scratch
    defer { s.deallocate() }
    func run(_ cuts: [Int]) -> [UInt32] {
        var c = [Float](repeating: 0, count: m * n)
        a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
            for (i, (k0, k1)) in zip([0] + cuts, cuts + [k]).enumerated() {
                GemmBF16.multiply(m: m, n: n, k: k1 - k0, a: MatrixView(ap.baseAddress! + k0, rowStride: k, colStride: 1),
                                  b: .view(MatrixView(bp.baseAddress! + k0 * n, rowStride: n, colStride: 1)),
                                  c: cp.baseAddress!, ldc: n, accumulate: i > 0, scratch: s, path: path)
            }
        } } }
        return c.map(\.bitPattern)
    }
    let whole = run([])
    #expect(run([32, 544]) == whole)
    #expect(run([512]) == whole)
    #expect(run([96, 480, 992]) == whole)
}

/// The portable path does VDPBF16PS's arithmetic: where the CPU has AVX512-BF16, the same bits,
/// with subnormal operands (read as zero) and sums that cancel into the subnormal range (flushed).
@Test func portableBF16IsAVX512BF16sArithmetic() {
    guard BF16Path.available.contains(.avx512) else {
        print("skipped: no AVX512-BF16 on this CPU (portable vs AVX512-BF16 bits)")
        return
    }
    for (m, n, k) in [(33, 70, 100), (8, 40, 1030)] {
        let cuts = [Int]()
        #expect(bf16Blocks(.portable, m: m, n: n, k: k, rowCuts: cuts, colCuts: cuts, packB: true)
                == bf16Blocks(.avx512, m: m, n: n, k: k, rowCuts: cuts, colCuts: cuts, packB: true))
    }
    // Tiny values: bf16 subnormals (below 2^-126), products and partial sums near fp32's smallest normal.
    let m = 32, n = 32, k = 64
    var r = Rand(s: 13)
    let scale: [Float] = [0x1p-130, 0x1p-70, 0x1p-60, 1]
    let a = (0..<(m * k)).map { r.next() * scale[$0 % 4] }, b = (0..<(k * n)).map { r.next() * scale[($0 / 3) % 4] }
    let s = scratch
    defer { s.deallocate() }
    var out: [[UInt32]] = []
    for path in [BF16Path.portable, .avx512] {
        var c = [Float](repeating: 0, count: m * n)
        a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
            GemmBF16.multiply(m: m, n: n, k: k, a: MatrixView(ap.baseAddress!, rowStride: k, colStride: 1),
                              b: .view(MatrixView(bp.baseAddress!, rowStride: n, colStride: 1)), c: cp.baseAddress!, ldc: n,
                              accumulate: false, scratch: s, path: path)
        } } }
        out.append(c.map(\.bitPattern))
    }
    #expect(out[0] == out[1])
    #expect(out[0].contains { $0 & 0x7FFF_FFFF != 0 && $0 & 0x7F80_0000 == 0 } == false, "a subnormal result survived")
}
