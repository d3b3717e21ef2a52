// Each fast kernel against its naive Float64 twin, on odd sizes as well as friendly ones.
import Testing
import PTKernels
import PTTestSupport

struct Rand {
    var s: UInt64
    mutating func next() -> Float {
        s = s &* 6364136223846793005 &+ 1442695040888963407
        return Float(Int64(bitPattern: s >> 11) % 2001 - 1000) / 1000
    }
    mutating func array(_ n: Int) -> [Float] { (0..<n).map { _ in next() } }
}

/// |a - b| within a bound scaled by the number of terms summed (Float rounding grows with it).
func close(_ got: [Float], _ want: [Double], terms: Int, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(got.count == want.count, sourceLocation: sourceLocation)
    let tol = 1e-6 * Double(terms) + 1e-6
    var worst = 0.0
    for (g, w) in zip(got, want) { worst = max(worst, abs(Double(g) - w) / max(1, abs(w))) }
    #expect(worst <= tol, "worst relative error \(worst) > \(tol)", sourceLocation: sourceLocation)
}

/// GEMM scratch for one test (tests run in parallel; each needs its own).
var scratch: UnsafeMutablePointer<Float> {
    let p = UnsafeMutablePointer<Float>.allocate(capacity: Gemm.scratchFloats)
    p.initialize(repeating: .nan, count: Gemm.scratchFloats)
    return p  // leaked: a test process is short-lived
}

// The last row tile takes every partial height (M mod 8 = 1 ... 7; mod 6 on AVX2 builds).
@Test(arguments: [(1, 1, 1), (3, 7, 5), (8, 32, 16), (17, 33, 300), (50, 70, 600), (129, 513, 9), (200, 64, 257), (136, 32, 257),
                  (129, 32, 257), (200, 64, 256), (12, 40, 20), (13, 33, 64), (14, 64, 30), (15, 31, 300), (49, 128, 64)])
func gemmMatchesReference(_ shape: (Int, Int, Int)) {
    let (m, n, k) = shape
    var r = Rand(s: UInt64(m * 1000 + n * 10 + k))
    let a = r.array(m * k), b = r.array(k * n), bias = r.array(n)
    for relu in [false, true] {
        var c = [Float](repeating: .nan, count: m * n)
        a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in bias.withUnsafeBufferPointer { biasp in
            c.withUnsafeMutableBufferPointer { cp in
                Gemm.multiply(m: m, n: n, k: k, a: MatrixView(ap.baseAddress!, rowStride: k, colStride: 1),
                              b: .view(MatrixView(bp.baseAddress!, rowStride: n, colStride: 1)), c: cp.baseAddress!, ldc: n,
                              accumulate: false, bias: biasp.baseAddress!, relu: relu, scratch: scratch)
            }
        } } }
        close(c, Reference.gemm(m: m, n: n, k: k, a: a, b: b, bias: bias, relu: relu), terms: k)
    }
}

@Test func gemmTransposedOperandsAndAccumulate() {
    let (m, n, k) = (13, 41, 37)
    var r = Rand(s: 7)
    let at = r.array(k * m), bt = r.array(n * k)   // stored transposed: at is [k, m], bt is [n, k]
    let c0 = r.array(m * n)
    var c = c0
    at.withUnsafeBufferPointer { ap in bt.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
        Gemm.multiply(m: m, n: n, k: k, a: MatrixView(ap.baseAddress!, rowStride: 1, colStride: m),
                      b: .view(MatrixView(bp.baseAddress!, rowStride: 1, colStride: k)), c: cp.baseAddress!, ldc: n,
                      accumulate: true, scratch: scratch)
    } } }
    var a = [Float](repeating: 0, count: m * k), b = [Float](repeating: 0, count: k * n)
    for i in 0..<m { for p in 0..<k { a[i * k + p] = at[p * m + i] } }
    for p in 0..<k { for j in 0..<n { b[p * n + j] = bt[j * k + p] } }
    let want = zip(Reference.gemm(m: m, n: n, k: k, a: a, b: b), c0).map { $0 + Double($1) }
    close(c, want, terms: k)
}

@Test(arguments: [(1, 37), (3, 37), (5, 37), (8, 37), (13, 37), (7, 300), (11, 300)])
func gemmSubBlocksAreBitIdentical(_ c: (Int, Int)) {
    // m = 300 spans several row blocks (an AVX2 build once overran its packing buffer there).
    let (cut, m) = c
    let (n, k) = (75, 530)
    var r = Rand(s: 99)
    let a = r.array(m * k), b = r.array(k * n)
    var whole = [Float](repeating: 0, count: m * n), split = whole
    a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in
        let av = MatrixView(ap.baseAddress!, rowStride: k, colStride: 1)
        let bv = MatrixView(bp.baseAddress!, rowStride: n, colStride: 1)
        whole.withUnsafeMutableBufferPointer { cp in
            Gemm.multiply(m: m, n: n, k: k, a: av, b: .view(bv), c: cp.baseAddress!, ldc: n, accumulate: false, scratch: scratch)
        }
        split.withUnsafeMutableBufferPointer { cp in
            // Rows [0, cut) and [cut, m); then columns of the second block cut again.
            Gemm.multiply(m: cut, n: n, k: k, a: av, b: .view(bv), c: cp.baseAddress!, ldc: n, accumulate: false, scratch: scratch)
            let c2 = cp.baseAddress! + cut * n
            Gemm.multiply(m: m - cut, n: cut * 3, k: k, a: av.offset(row: cut, col: 0), b: .view(bv), c: c2, ldc: n,
                          accumulate: false, scratch: scratch)
            Gemm.multiply(m: m - cut, n: n - cut * 3, k: k, a: av.offset(row: cut, col: 0), b: .view(bv.offset(row: 0, col: cut * 3)),
                          c: c2 + cut * 3, ldc: n, accumulate: false, scratch: scratch)
        }
    } }
    #expect(whole.map(\.bitPattern) == split.map(\.bitPattern))
}

@Test(arguments: [(5, 5, 1, 3, 1, true), (7, 6, 3, 3, 2, true), (9, 8, 2, 5, 2, false), (4, 4, 3, 1, 1, true), (6, 5, 4, 3, 3, false)])
func im2colConvMatchesDirectConv(_ p: (Int, Int, Int, Int, Int, Bool)) {
    let (h, w, c, k, s, same) = p
    let cout = 5
    let g = Window(inH: h, inW: w, channels: c, kernel: k, stride: s, same: same)
    var r = Rand(s: UInt64(h * w * c + k))
    let x = r.array(g.inputSize), wt = r.array(g.patch * cout), bias = r.array(cout)
    let xs = x + [Float](repeating: 0, count: Im2col.slack)  // im2col may read (not use) past x
    var col = [Float](repeating: .nan, count: g.positions * g.patch + Im2col.slack)
    var y = [Float](repeating: .nan, count: g.positions * cout)
    xs.withUnsafeBufferPointer { xp in col.withUnsafeMutableBufferPointer { cp in
        Im2col.forward(g, x: xp.baseAddress!, col: cp.baseAddress!)
    } }
    col.withUnsafeBufferPointer { cp in wt.withUnsafeBufferPointer { wp in bias.withUnsafeBufferPointer { bp in
        y.withUnsafeMutableBufferPointer { yp in
            Gemm.multiply(m: g.positions, n: cout, k: g.patch, a: MatrixView(cp.baseAddress!, rowStride: g.patch, colStride: 1),
                          b: .view(MatrixView(wp.baseAddress!, rowStride: cout, colStride: 1)), c: yp.baseAddress!, ldc: cout,
                          accumulate: false, bias: bp.baseAddress!, scratch: scratch)
        }
    } } }
    close(y, Reference.conv(g, x: x, w: wt, bias: bias, cout: cout), terms: g.patch)
}

/// im2col against its definition, for kernel rows shorter than a vector (copied as overlapping
/// 16-float vectors) and longer ones; nothing past the slack is touched.
@Test(arguments: [(28, 28, 1, 3, 1, true), (7, 6, 3, 3, 2, true), (9, 8, 2, 5, 2, false), (6, 5, 4, 3, 3, false),
                  (5, 7, 8, 3, 1, true), (4, 4, 3, 1, 1, true)])
func im2colMatchesItsDefinition(_ p: (Int, Int, Int, Int, Int, Bool)) {
    let (h, w, c, k, s, same) = p
    let g = Window(inH: h, inW: w, channels: c, kernel: k, stride: s, same: same)
    var r = Rand(s: UInt64(h + w + c))
    let canary: Float = -12345
    let x = r.array(g.inputSize) + [Float](repeating: canary, count: Im2col.slack + 8)
    var col = [Float](repeating: .nan, count: g.positions * g.patch + Im2col.slack + 8)
    x.withUnsafeBufferPointer { xp in col.withUnsafeMutableBufferPointer { Im2col.forward(g, x: xp.baseAddress!, col: $0.baseAddress!) } }
    var expected: [Float] = []
    for oh in 0..<g.outH {
        for ow in 0..<g.outW {
            for kh in 0..<k {
                for kw in 0..<k {
                    let ih = oh * s - g.padTop + kh, iw = ow * s - g.padLeft + kw
                    for ch in 0..<c {
                        expected.append(ih >= 0 && ih < h && iw >= 0 && iw < w ? x[(ih * w + iw) * c + ch] : 0)
                    }
                }
            }
        }
    }
    #expect(Array(col[0..<expected.count]) == expected)
    let untouched = col[(expected.count + Im2col.slack)...].allSatisfy { $0.isNaN }
    #expect(untouched)
}

/// col2im is the adjoint of im2col: <im2col(x), d> == <x, col2im(d)>.
@Test(arguments: [(5, 5, 2, 3, 1, true), (8, 7, 3, 3, 2, true), (9, 9, 1, 4, 3, false)])
func col2imIsAdjointOfIm2col(_ p: (Int, Int, Int, Int, Int, Bool)) {
    let (h, w, c, k, s, same) = p
    let g = Window(inH: h, inW: w, channels: c, kernel: k, stride: s, same: same)
    var r = Rand(s: 5)
    let x = r.array(g.inputSize), d = r.array(g.positions * g.patch)
    let xs = x + [Float](repeating: 0, count: Im2col.slack)
    var col = [Float](repeating: 0, count: d.count + Im2col.slack), dx = [Float](repeating: .nan, count: x.count)
    xs.withUnsafeBufferPointer { xp in col.withUnsafeMutableBufferPointer { Im2col.forward(g, x: xp.baseAddress!, col: $0.baseAddress!) } }
    col.removeLast(Im2col.slack)
    d.withUnsafeBufferPointer { dp in dx.withUnsafeMutableBufferPointer { Im2col.backward(g, dcol: dp.baseAddress!, dx: $0.baseAddress!) } }
    let lhs = zip(col, d).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    let rhs = zip(x, dx).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    #expect(abs(lhs - rhs) <= 1e-5 * max(1, abs(lhs)))
}

/// col2im gathers each pixel's entries in the order a scatter in position order adds them, from
/// 0: the scatter's bits (a -0 entry included), for channels in whole vectors and a tail, strides
/// 1 to 3, padded and not, 1x1 to 4x4 kernels.
@Test(arguments: [(5, 5, 2, 3, 1, true), (8, 7, 3, 3, 2, true), (9, 9, 1, 4, 3, false), (14, 14, 64, 3, 1, true),
                  (8, 8, 20, 3, 2, true), (7, 7, 16, 1, 1, false), (6, 9, 33, 3, 1, false)])
func col2imHasTheScatterBits(_ p: (Int, Int, Int, Int, Int, Bool)) {
    let (h, w, c, k, s, same) = p
    let g = Window(inH: h, inW: w, channels: c, kernel: k, stride: s, same: same)
    var r = Rand(s: 9)
    var d = r.array(g.positions * g.patch)
    for i in stride(from: 0, to: d.count, by: 7) { d[i] = -0.0 }
    var expected = [Float](repeating: 0, count: g.inputSize)
    for oh in 0..<g.outH {
        for ow in 0..<g.outW {
            for kh in 0..<k {
                for kw in 0..<k {
                    let ih = oh * s - g.padTop + kh, iw = ow * s - g.padLeft + kw
                    guard ih >= 0 && ih < h && iw >= 0 && iw < w else { continue }
                    for ch in 0..<c { expected[(ih * w + iw) * c + ch] += d[((oh * g.outW + ow) * k * k + kh * k + kw) * c + ch] }
                }
            }
        }
    }
    var dx = [Float](repeating: .nan, count: g.inputSize)
    d.withUnsafeBufferPointer { dp in dx.withUnsafeMutableBufferPointer { Im2col.backward(g, dcol: dp.baseAddress!, dx: $0.baseAddress!) } }
    #expect(dx.map(\.bitPattern) == expected.map(\.bitPattern))
}

@Test func softmaxCrossEntropyIsStableAndExact() {
    // Hand-computed: logits (1, 2, 3), label 2: loss = log(e^1 + e^2 + e^3) - 3 = 0.40760596.
    var d = [Float](repeating: 0, count: 3)
    let loss = [Float(1), 2, 3].withUnsafeBufferPointer { lp in d.withUnsafeMutableBufferPointer { dp in
        SoftmaxCrossEntropy.forwardBackward(logits: lp.baseAddress!, classes: 3, label: 2, gradScale: 1, dlogits: dp.baseAddress!)
    } }
    #expect(abs(loss - 0.40760596) < 1e-6)
    // Gradient: softmax - onehot = (0.09003057, 0.24472847, 0.66524096 - 1).
    #expect(abs(d[0] - 0.09003057) < 1e-6 && abs(d[1] - 0.24472847) < 1e-6 && abs(d[2] + 0.33475904) < 1e-6)
    // Huge logits stay finite (a naive exp would overflow).
    let big: [Float] = [1000, -1000, 999]
    let l2 = big.withUnsafeBufferPointer { lp in d.withUnsafeMutableBufferPointer { dp in
        SoftmaxCrossEntropy.forwardBackward(logits: lp.baseAddress!, classes: 3, label: 2, gradScale: 0.5, dlogits: dp.baseAddress!)
    } }
    #expect(l2.isFinite && abs(Double(l2) - Reference.crossEntropy(logits: big, label: 2)) < 1e-4)
    #expect(d.allSatisfy { $0.isFinite })
}

@Test func adamMatchesHandComputedSteps() {
    // One parameter w = 1, gradient 0.5 twice, lr 0.1 and PyTorch's defaults.
    // t=1: m = 0.05, v = 0.00025; m̂ = 0.5, v̂ = 0.25 → w = 1 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.9
    // t=2: m = 0.095, v = 0.00049975; m̂ = 0.5, v̂ = 0.25 → w = 0.8
    var w: [Float] = [1], m: [Float] = [0], v: [Float] = [0]
    let g: [Float] = [0.5]
    for t in 1...2 {
        AdamUpdate.apply(AdamStep(lr: 0.1, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, t: t),
                         w: &w, g: g, m: &m, v: &v, count: 1)
    }
    #expect(abs(w[0] - 0.8) < 1e-6)
    #expect(abs(m[0] - 0.095) < 1e-7 && abs(v[0] - 0.00049975) < 1e-9)
}

@Test func adamReportsNonFiniteGradients() {
    for bad in [Float.nan, .infinity, -.infinity] {
        var w: [Float] = [1, 1, 1], m: [Float] = [0, 0, 0], v: [Float] = [0, 0, 0]
        let ok = AdamUpdate.apply(AdamStep(lr: 0.1, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, t: 1),
                                  w: &w, g: [0.5, bad, 1e30], m: &m, v: &v, count: 3)
        #expect(!ok)
    }
    var w: [Float] = [1, 1], m: [Float] = [0, 0], v: [Float] = [0, 0]
    #expect(AdamUpdate.apply(AdamStep(lr: 0.1, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, t: 1),
                             w: &w, g: [.greatestFiniteMagnitude, -0.0], m: &m, v: &v, count: 2))
}

@Test func dropoutMasksDependOnlyOnTheirKey() {
    var a = [Float](repeating: 0, count: 4096), b = a
    Dropout.fillScales(&a, count: a.count, keep: 0.5, seed: 1, step: 3, sample: 7)
    Dropout.fillScales(&b, count: b.count, keep: 0.5, seed: 1, step: 3, sample: 7)
    #expect(a == b)
    let kept = a.filter { $0 != 0 }.count
    #expect(kept > 1900 && kept < 2200)          // ~keep * count
    #expect(a.allSatisfy { $0 == 0 || $0 == 2 })  // inverted dropout scale 1/keep
    Dropout.fillScales(&b, count: b.count, keep: 0.5, seed: 1, step: 3, sample: 8)
    #expect(a != b)
}

@Test func columnSumsAreRowOrderSums() {
    var r = Rand(s: 3)
    let (rows, cols) = (9, 101)  // 4-vector blocks, single vectors and a scalar tail
    let m = r.array(rows * cols)
    var out = [Float](repeating: .nan, count: cols)
    m.withUnsafeBufferPointer { mp in out.withUnsafeMutableBufferPointer { op in
        Elementwise.columnSums(mp.baseAddress!, rows: rows, ld: cols, cols: 0..<20, into: op.baseAddress!)
        Elementwise.columnSums(mp.baseAddress!, rows: rows, ld: cols, cols: 20..<cols, into: op.baseAddress!)
    } }
    for j in 0..<cols {
        var s: Float = 0
        for i in 0..<rows { s += m[i * cols + j] }
        #expect(out[j].bitPattern == s.bitPattern)
    }
}

/// Summing rows [0, 4) then accumulating rows [4, 9) gives the bits of one pass over all rows.
@Test func columnSumsAccumulateContinuesTheRowOrder() {
    var r = Rand(s: 4)
    let (rows, cols) = (9, 101)  // 4-vector blocks, single vectors and a scalar tail
    let m = r.array(rows * cols)
    var whole = [Float](repeating: .nan, count: cols), split = whole
    m.withUnsafeBufferPointer { mp in
        whole.withUnsafeMutableBufferPointer { op in
            Elementwise.columnSums(mp.baseAddress!, rows: rows, ld: cols, cols: 0..<cols, into: op.baseAddress!)
        }
        split.withUnsafeMutableBufferPointer { op in
            Elementwise.columnSums(mp.baseAddress!, rows: 4, ld: cols, cols: 0..<cols, into: op.baseAddress!)
            Elementwise.columnSums(mp.baseAddress! + 4 * cols, rows: rows - 4, ld: cols, cols: 0..<cols,
                                   into: op.baseAddress!, accumulate: true)
        }
    }
    #expect(split.map(\.bitPattern) == whole.map(\.bitPattern))
}

/// The shard reduction adds shard 0, 1, 2, ... in that order, for elements in its eight-vector
/// blocks, in single vectors and in the tail alike.
@Test(arguments: [1, 2, 5, 32])
func sumInOrderAddsShardsInOrder(_ shards: Int) {
    var r = Rand(s: UInt64(shards))
    let (length, stride) = (169, 173)
    let src = r.array(shards * stride)
    var out = [Float](repeating: .nan, count: length)
    src.withUnsafeBufferPointer { sp in out.withUnsafeMutableBufferPointer { op in
        Elementwise.sumInOrder(sp.baseAddress!, count: shards, stride: stride, length: length, into: op.baseAddress!)
    } }
    for i in 0..<length {
        var s = src[i]
        for k in 1..<shards { s += src[k * stride + i] }
        #expect(out[i].bitPattern == s.bitPattern)
    }
}

/// A sum over shards begun by one process and continued by the next (`addInOrder`, as the
/// ranks of an mpirun job pass it on) has the bits of the whole sum, at every split point.
@Test(arguments: [1, 2, 5, 32])
func addInOrderContinuesASumExactly(_ shards: Int) {
    var r = Rand(s: 77 + UInt64(shards))
    let (length, stride) = (169, 173)
    var src = r.array(shards * stride)
    src[3] = -0.0  // a sum that starts at -0 must keep it
    var whole = [Float](repeating: .nan, count: length)
    src.withUnsafeBufferPointer { sp in whole.withUnsafeMutableBufferPointer { op in
        Elementwise.sumInOrder(sp.baseAddress!, count: shards, stride: stride, length: length, into: op.baseAddress!)
    } }
    for cut in 1...shards {
        var out = [Float](repeating: .nan, count: length)
        src.withUnsafeBufferPointer { sp in out.withUnsafeMutableBufferPointer { op in
            Elementwise.sumInOrder(sp.baseAddress!, count: cut, stride: stride, length: length, into: op.baseAddress!)
            Elementwise.addInOrder(sp.baseAddress! + cut * stride, count: shards - cut, stride: stride, length: length,
                                   into: op.baseAddress!)
        } }
        #expect(out.map(\.bitPattern) == whole.map(\.bitPattern), "cut at \(cut)")
    }
}

/// B packed once (block by block, in any order) gives the bits of B packed inside the call, for
/// shapes that span several KC x NC blocks and for the small-M panel path.
@Test(arguments: [(37, 600, 300), (5, 70, 9), (130, 33, 513)])
func prepackedBGivesTheSameBits(_ shape: (Int, Int, Int)) {
    let (m, n, k) = shape
    var r = Rand(s: UInt64(m + n + k))
    let a = r.array(m * k), b = r.array(k * n), bias = r.array(n)
    let packed = UnsafeMutablePointer<Float>.allocate(capacity: Gemm.packedBFloats(k: k, n: n))
    defer { packed.deallocate() }
    var plain = [Float](repeating: .nan, count: m * n), prepacked = plain
    a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in bias.withUnsafeBufferPointer { biasp in
        let av = MatrixView(ap.baseAddress!, rowStride: k, colStride: 1)
        let bv = MatrixView(bp.baseAddress!, rowStride: n, colStride: 1)
        for block in (0..<Gemm.packedBBlocks(k: k, n: n)).reversed() { Gemm.packB(k: k, n: n, b: bv, block: block, into: packed) }
        plain.withUnsafeMutableBufferPointer { cp in
            Gemm.multiply(m: m, n: n, k: k, a: av, b: .view(bv), c: cp.baseAddress!, ldc: n, accumulate: false,
                          bias: biasp.baseAddress!, relu: true, scratch: scratch)
        }
        prepacked.withUnsafeMutableBufferPointer { cp in
            Gemm.multiply(m: m, n: n, k: k, a: av, b: .packed(packed), c: cp.baseAddress!, ldc: n, accumulate: false,
                          bias: biasp.baseAddress!, relu: true, scratch: scratch)
        }
    } } }
    #expect(prepacked.map(\.bitPattern) == plain.map(\.bitPattern))
}

/// The ReLU mask zeroes dy exactly where y is not positive (NaN and -0 included), vector and tail.
@Test func reluBackwardMasksWhereTheOutputWasClamped() {
    var r = Rand(s: 5)
    var y = r.array(37)
    y[3] = .nan; y[20] = -0.0; y[21] = 0; y[36] = .infinity
    let dy0 = r.array(37)
    var dy = dy0
    y.withUnsafeBufferPointer { yp in dy.withUnsafeMutableBufferPointer {
        Elementwise.reluBackward(dy: $0.baseAddress!, y: yp.baseAddress!, count: 37)
    } }
    for i in 0..<37 { #expect(dy[i].bitPattern == (y[i] > 0 ? dy0[i] : 0).bitPattern, "index \(i)") }
}

/// The transpose moves every word to its place and nothing else: whole 16 x 16 blocks, ragged
/// edges in both directions, strides wider than the block, and NaN payloads and -0 kept bit for bit.
@Test(arguments: [(1, 1), (16, 16), (17, 33), (64, 50), (64, 256), (5, 40), (40, 5)])
func transposeMovesEveryWordAndNothingElse(_ size: (Int, Int)) {
    let (rows, cols) = size
    let fromStride = cols + 3, toStride = rows + 5
    var r = Rand(s: UInt64(rows * 1000 + cols))
    var src = r.array(rows * fromStride)
    src[0] = Float(bitPattern: 0x7FC0_1234)
    if src.count > 1 { src[1] = -0.0 }
    let sentinel = Float(bitPattern: 0x7F80_0F0F)
    var dst = [Float](repeating: sentinel, count: cols * toStride)
    src.withUnsafeBufferPointer { s in
        dst.withUnsafeMutableBufferPointer { d in
            Elementwise.transpose(rows: rows, cols: cols, from: s.baseAddress!, fromStride: fromStride, to: d.baseAddress!, toStride: toStride)
        }
    }
    for c in 0..<cols {
        for j in 0..<toStride {
            let want = j < rows ? src[j * fromStride + c] : sentinel
            #expect(dst[c * toStride + j].bitPattern == want.bitPattern)
        }
    }
}

/// A batch's variance merged from its samples' moments (Chan's formula) against the Float64
/// two-pass variance, on data about 3 or 1000 (where Σx²/N − mean² in Float would lose the
/// spread). The bound is derived, per channel, with D_s = mean_s − mean and u half an ulp:
/// - every term of the merge, Σ_s M2_s + Σ_s P·D_s², is within k roundings of its magnitude on
///   its longest path (P adds and a divide for a sample's mean, a subtract and a square, P adds of
///   squares, n adds over the samples, the merge's divide, subtract, two multiplies, add and
///   divide, and the batch mean's n + P + 1): γ_k with k = 2P + 2n + 10;
/// - a sample's mean is off by at most δ_s = γ_{P+1}·mean|x|_s and the batch's by
///   ε = γ_{n+P+1}·mean|x|. M2_s does not move with δ_s to first order (Σ(x − mean_s) = 0); the
///   merge's square does: 2P·|D_s|·(δ_s + ε), plus P·(δ_s + ε)² and P·δ_s² at second order.
/// Leaving out the merge's spread term (Σ P·D_s², about σ²/P of the variance here) breaks it.
/// With one position a sample (a bn after a dense layer), the merge is the two-pass variance
/// itself, bit for bit.
@Test(arguments: [(1, 50, 10, 3.0), (49, 8, 16, 3.0), (64, 128, 32, 1000.0), (196, 5, 19, 3.0), (1024, 3, 16, 3.0), (1024, 3, 16, 1000.0)])
func mergedVarianceMatchesTheTwoPassVariance(_ c: (positions: Int, samples: Int, channels: Int, offset: Double)) {
    let (p, n, ch) = (c.positions, c.samples, c.channels)
    var r = Rand(s: UInt64(p * 7 + n * 3 + ch))
    let x = (0..<(n * p * ch)).map { _ in Float(c.offset) + r.next() }
    var moments = [Float](repeating: .nan, count: n * 2 * ch), mean = [Float](repeating: 0, count: ch)
    var variance = [Float](repeating: .nan, count: ch)
    x.withUnsafeBufferPointer { xp in moments.withUnsafeMutableBufferPointer { mp in
        for s in 0..<n { BatchNorm.sampleMoments(xp.baseAddress! + s * p * ch, positions: p, channels: ch, into: mp.baseAddress! + s * 2 * ch) }
    } }
    for k in 0..<ch {
        var sum: Float = 0
        for s in 0..<n { sum += moments[s * 2 * ch + k] }
        mean[k] = sum / Float(n * p)
    }
    moments.withUnsafeBufferPointer { mp in
        BatchNorm.mergedVariance(mp.baseAddress!, samples: n, stride: 2 * ch, positions: p, channels: ch, mean: mean, into: &variance)
    }
    let u = Double(Float.ulpOfOne) / 2
    func gamma(_ k: Int) -> Double { Double(k) * u / (1 - Double(k) * u) }
    let total = Double(n * p)
    for k in 0..<ch {
        let values = (0..<(n * p)).map { Double(x[$0 * ch + k]) }
        let batchMean = values.reduce(0, +) / total, batchAbs = values.map(abs).reduce(0, +) / total
        let epsilon = gamma(n + p + 1) * batchAbs
        var exact = 0.0, magnitude = 0.0, meanErrors = 0.0
        for s in 0..<n {
            let sample = values[(s * p)..<((s + 1) * p)]
            let sampleMean = sample.reduce(0, +) / Double(p), delta = gamma(p + 1) * sample.map(abs).reduce(0, +) / Double(p)
            let m2 = sample.map { ($0 - sampleMean) * ($0 - sampleMean) }.reduce(0, +), d = sampleMean - batchMean
            exact += m2 + Double(p) * d * d
            magnitude += m2 + Double(p) * d * d
            meanErrors += 2 * Double(p) * abs(d) * (delta + epsilon) + Double(p) * ((delta + epsilon) * (delta + epsilon) + delta * delta)
        }
        exact /= total
        let bound = (gamma(2 * p + 2 * n + 10) * magnitude + meanErrors) / total
        #expect(abs(Double(variance[k]) - exact) <= bound, "channel \(k): \(variance[k]) against \(exact), bound \(bound)")
        if p == 1 {
            // The two-pass variance in Float, squares added in sample order.
            var twoPass: Float = 0
            for s in 0..<n { let d = x[s * ch + k] - mean[k]; twoPass += d * d }
            #expect(variance[k].bitPattern == (twoPass / Float(n)).bitPattern)
        }
    }
}
