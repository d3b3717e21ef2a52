// The convolution paths other than im2col + GEMM. Winograd F(2x2, 3x3) against direct Float64
// convolution: forward, input gradient and weight gradient, on sizes with edge tiles that hang
// over the output (odd heights and widths), SAME and VALID (the transforms are exact in real
// arithmetic, so only Float rounding separates them). The direct one-input-channel conv against
// im2col + GEMM, bit for bit.
import Testing
import PTKernels
import PTTestSupport

let winogradShapes = [(7, 6, 16, 16, true), (14, 14, 32, 48, true), (6, 5, 16, 32, false), (5, 9, 32, 16, false), (3, 3, 16, 16, true),
                      (16, 16, 32, 32, true), (10, 13, 16, 32, false), (9, 11, 16, 16, true)]

@Test(arguments: winogradShapes, [Winograd.Tile.f2, .f4])
func winogradForwardMatchesDirectConv(_ p: (Int, Int, Int, Int, Bool), _ tile: Winograd.Tile) {
    let (h, w, cin, cout, same) = p
    let g = Window(inH: h, inW: w, channels: cin, kernel: 3, stride: 1, same: same)
    #expect(Winograd.applies(g, cout: cout))
    var r = Rand(s: UInt64(h * w + cin))
    let x = r.array(g.inputSize), wt = r.array(9 * cin * cout), bias = r.array(cout)
    let y = WinogradConv(g: g, cout: cout, tile: tile).forward(x: x, w: wt, bias: bias)
    close(y, Reference.conv(g, x: x, w: wt, bias: bias, cout: cout), terms: g.patch)
}

@Test(arguments: winogradShapes, [Winograd.Tile.f2, .f4])
func winogradGradientsMatchDirectConv(_ p: (Int, Int, Int, Int, Bool), _ tile: Winograd.Tile) {
    let (h, w, cin, cout, same) = p
    let g = Window(inH: h, inW: w, channels: cin, kernel: 3, stride: 1, same: same)
    var r = Rand(s: UInt64(h + w * cin))
    let x = r.array(g.inputSize), wt = r.array(9 * cin * cout), dy = r.array(g.positions * cout)
    let (dx, dw) = WinogradConv(g: g, cout: cout, tile: tile).backward(x: x, w: wt, dy: dy)
    let (wantDx, wantDw) = Reference.convGradients(g, x: x, w: wt, dy: dy, cout: cout)
    close(dx, wantDx, terms: 9 * cout)
    close(dw, wantDw, terms: g.positions)
}

/// Samples whose tiles share the GEMMs (a group, `Winograd.group(for:_:)`) get each sample's own
/// bits: the forward's outputs and the input gradients, and dU's sums over the group's tiles equal
/// the sums continued a sample at a time (one FMA chain per element, in sample order). On F(4x4)
/// over an 8x8 output (group 4) and F(2x2) over a 4x4 one, with an overhanging, VALID F(4x4) too.
@Test(arguments: [(8, 8, 16, 32, true, Winograd.Tile.f4), (4, 4, 32, 16, true, .f2), (9, 7, 16, 16, false, .f4)])
func winogradGroupsGiveEachSamplesBits(_ p: (Int, Int, Int, Int, Bool, Winograd.Tile)) {
    let (h, w, cin, cout, same, tile) = p
    let g = Window(inH: h, inW: w, channels: cin, kernel: 3, stride: 1, same: same)
    #expect(Winograd.group(for: g, tile) > 1)
    var r = Rand(s: UInt64(h * w + cout))
    let xs = (0..<3).map { _ in r.array(g.inputSize) }, dys = (0..<3).map { _ in r.array(g.positions * cout) }
    let wt = r.array(9 * cin * cout), bias = r.array(cout)
    let conv = WinogradConv(g: g, cout: cout, tile: tile)
    #expect(conv.forward(xs: xs, w: wt, bias: bias) == xs.map { conv.forward(x: $0, w: wt, bias: bias) })
    let (groupDx, groupDw) = conv.backward(xs: xs, w: wt, dys: dys, grouped: true)
    let (aloneDx, aloneDw) = conv.backward(xs: xs, w: wt, dys: dys, grouped: false)
    #expect(groupDx == aloneDx)
    #expect(groupDw.map(\.bitPattern) == aloneDw.map(\.bitPattern))
}

@Test func winogradAppliesOnlyTo3x3Stride1WholeVectors() {
    #expect(!Winograd.applies(Window(inH: 8, inW: 8, channels: 16, kernel: 3, stride: 2, same: true), cout: 16))
    #expect(!Winograd.applies(Window(inH: 8, inW: 8, channels: 16, kernel: 5, stride: 1, same: true), cout: 16))
    #expect(!Winograd.applies(Window(inH: 8, inW: 8, channels: 1, kernel: 3, stride: 1, same: true), cout: 64))
    #expect(!Winograd.applies(Window(inH: 8, inW: 8, channels: 16, kernel: 3, stride: 1, same: true), cout: 10))
}

/// The direct conv of 1 to 4 input channels gives im2col + GEMM's bits: forward (bias, ReLU) and
/// the weight gradient continuing a running sum, on odd sizes, SAME and VALID, strides 1 and 2.
@Test(arguments: [(28, 28, 64, 1, true, 1), (7, 6, 16, 1, true, 1), (9, 8, 32, 2, true, 1), (6, 7, 16, 1, false, 1),
                  (8, 9, 48, 2, false, 1), (5, 9, 16, 1, true, 1), (4, 10, 32, 1, false, 1), (3, 17, 16, 2, true, 1),
                  (32, 32, 16, 1, true, 3), (7, 6, 32, 2, true, 3), (6, 9, 16, 1, false, 2), (5, 11, 48, 1, true, 4),
                  (9, 4, 16, 2, false, 3)])
func fewChannelConvHasIm2colGemmBits(_ p: (Int, Int, Int, Int, Bool, Int)) {
    let (h, w, cout, stride, same, c) = p
    let g = Window(inH: h, inW: w, channels: c, kernel: 3, stride: stride, same: same)
    #expect(FewChannelConv.applies(g, cout: cout))
    var r = Rand(s: UInt64(h * w + cout))
    let x = r.array(g.inputSize) + [Float](repeating: 0, count: Im2col.slack)
    let K = g.patch, wt = r.array(K * cout), bias = r.array(cout), dy = r.array(g.positions * cout), start = r.array(K * cout)
    let dbStart = r.array(cout)
    var col = [Float](repeating: 0, count: g.positions * K + Im2col.slack)
    var xp = [Float](repeating: .nan, count: FewChannelConv.paddedFloats(g))
    var yGemm = [Float](repeating: .nan, count: g.positions * cout), yDirect = yGemm
    var dwGemm = start, dwDirect = start, dbSums = dbStart, dbDirect = dbStart
    x.withUnsafeBufferPointer { xb in
        col.withUnsafeMutableBufferPointer { Im2col.forward(g, x: xb.baseAddress!, col: $0.baseAddress!) }
        xp.withUnsafeMutableBufferPointer { FewChannelConv.pad(g, x: xb.baseAddress!, into: $0.baseAddress!) }
    }
    col.withUnsafeBufferPointer { cb in wt.withUnsafeBufferPointer { wb in bias.withUnsafeBufferPointer { bb in dy.withUnsafeBufferPointer { db in
        yGemm.withUnsafeMutableBufferPointer {
            Gemm.multiply(m: g.positions, n: cout, k: K, a: MatrixView(cb.baseAddress!, rowStride: K, colStride: 1),
                          b: .view(MatrixView(wb.baseAddress!, rowStride: cout, colStride: 1)), c: $0.baseAddress!, ldc: cout,
                          accumulate: false, bias: bb.baseAddress!, relu: true, scratch: scratch)
        }
        dwGemm.withUnsafeMutableBufferPointer {
            Gemm.multiply(m: K, n: cout, k: g.positions, a: MatrixView(cb.baseAddress!, rowStride: 1, colStride: K),
                          b: .view(MatrixView(db.baseAddress!, rowStride: cout, colStride: 1)), c: $0.baseAddress!, ldc: cout,
                          accumulate: true, scratch: scratch)
        }
    } } } }
    xp.withUnsafeBufferPointer { xb in wt.withUnsafeBufferPointer { wb in bias.withUnsafeBufferPointer { bb in dy.withUnsafeBufferPointer { db in
        yDirect.withUnsafeMutableBufferPointer {
            FewChannelConv.forward(g, cout: cout, xp: xb.baseAddress!, w: wb.baseAddress!, bias: bb.baseAddress!, relu: true, y: $0.baseAddress!)
        }
        dwDirect.withUnsafeMutableBufferPointer {
            FewChannelConv.weightGradient(g, cout: cout, xp: xb.baseAddress!, dy: db.baseAddress!, dw: $0.baseAddress!, db: &dbDirect)
        }
        Elementwise.columnSums(db.baseAddress!, rows: g.positions, ld: cout, cols: 0..<cout, into: &dbSums, accumulate: true)
    } } } }
    #expect(yDirect.map(\.bitPattern) == yGemm.map(\.bitPattern))
    #expect(dwDirect.map(\.bitPattern) == dwGemm.map(\.bitPattern))
    #expect(dbDirect.map(\.bitPattern) == dbSums.map(\.bitPattern))
    close(yDirect, Reference.conv(g, x: Array(x.prefix(g.inputSize)), w: wt, bias: bias, cout: cout).map { max($0, 0) }, terms: K)
}

/// The first-layer conv with its 2x2 max-pool inside (a pair of output rows at a time, in L1,
/// the argmaxes as byte codes) gives the bits of the conv's whole output then `MaxPool` with Int32
/// indices: forward (all pooled rows, and in parts as a cut sample runs them), the codes naming the
/// same inputs, and the weight and bias gradients' running sums, with and without the ReLU (and
/// its mask); 1 to 4 channels, strides 1 and 2. The ReLU's zeros make ties in the windows (the
/// first maximum must win in both).
@Test(arguments: [(28, 28, 64, 1, 1), (8, 6, 16, 1, 1), (4, 10, 32, 1, 1), (6, 14, 48, 1, 1), (12, 8, 16, 3, 1),
                  (8, 12, 32, 2, 1), (4, 6, 16, 4, 1), (16, 8, 16, 1, 2), (12, 16, 32, 3, 2)])
func fewChannelConvWithItsPoolHasUnfusedBits(_ p: (Int, Int, Int, Int, Int)) {
    let (h, w, cout, c, stride) = p
    let g = Window(inH: h, inW: w, channels: c, kernel: 3, stride: stride, same: true)
    let pw = Window(inH: g.outH, inW: g.outW, channels: cout, kernel: 2, stride: 2, same: false)
    #expect(FewChannelConv.poolFuses(g, pool: pw))
    let odd = Window(inH: h + stride, inW: w, channels: c, kernel: 3, stride: stride, same: true)
    #expect(!FewChannelConv.poolFuses(odd, pool: Window(inH: odd.outH, inW: odd.outW, channels: cout, kernel: 2, stride: 2, same: false)))
    var r = Rand(s: UInt64(h * w * cout))
    let x = r.array(g.inputSize), wt = r.array(g.patch * cout), bias = r.array(cout), dy = r.array(pw.positions * cout)
    let dwStart = r.array(g.patch * cout), dbStart = r.array(cout)
    var xp = [Float](repeating: .nan, count: FewChannelConv.paddedFloats(g))
    x.withUnsafeBufferPointer { FewChannelConv.pad(g, x: $0.baseAddress!, into: &xp) }
    for relu in [false, true] {
        var conv = [Float](repeating: .nan, count: g.positions * cout), pair = [Float](repeating: .nan, count: 2 * g.outW * cout)
        var y = [Float](repeating: .nan, count: pw.positions * cout), yFused = y, yParts = y
        var arg = [Int32](repeating: -1, count: pw.positions * cout)
        var codes = [UInt8](repeating: 255, count: pw.positions * cout), codesParts = codes
        FewChannelConv.forward(g, cout: cout, xp: xp, w: wt, bias: bias, relu: relu, y: &conv)
        MaxPool.forward(pw, x: conv, y: &y, argmax: &arg)
        FewChannelConv.forwardPooled(g, cout: cout, xp: xp, w: wt, bias: bias, relu: relu, pool: pw, pair: &pair, y: &yFused, codes: &codes)
        for part in [0..<pw.outH / 2, pw.outH / 2..<pw.outH] {
            FewChannelConv.forwardPooled(g, cout: cout, xp: xp, w: wt, bias: bias, relu: relu, pool: pw, pooledRows: part,
                                            pair: &pair, y: &yParts, codes: &codesParts)
        }
        if relu { #expect(y.contains(0), "no ReLU zeros: no ties tested") }
        #expect(yFused.map(\.bitPattern) == y.map(\.bitPattern), "relu: \(relu)")
        #expect(yParts.map(\.bitPattern) == y.map(\.bitPattern), "relu: \(relu)")
        #expect(codesParts == codes)
        #expect(decode(codes, pw) == arg, "relu: \(relu)")
        #expect(codes.indices.allSatisfy { (codes[$0] & 4 != 0) == (relu && !(y[$0] > 0)) }, "relu: \(relu)")
        var dconv = [Float](repeating: .nan, count: g.positions * cout)
        var dw = dwStart, db = dbStart, dwFused = dwStart, dbFused = dbStart
        y.withUnsafeBufferPointer { yb in
            MaxPool.backward(pw, dy: dy, argmax: arg, dx: &dconv, reluOutput: relu ? yb.baseAddress! : nil)
        }
        FewChannelConv.weightGradient(g, cout: cout, xp: xp, dy: dconv, dw: &dw)
        Elementwise.columnSums(dconv, rows: g.positions, ld: cout, cols: 0..<cout, into: &db, accumulate: true)
        FewChannelConv.weightGradientPooled(g, cout: cout, xp: xp, pool: pw, dy: dy, codes: codes, pair: &pair, dw: &dwFused, db: &dbFused)
        #expect(dwFused.map(\.bitPattern) == dw.map(\.bitPattern), "relu: \(relu)")
        #expect(dbFused.map(\.bitPattern) == db.map(\.bitPattern), "relu: \(relu)")
    }
}

/// The Int32 index into the pool's input that each byte code names.
func decode(_ codes: [UInt8], _ g: Window) -> [Int32] {
    codes.indices.map { i in
        let ch = i % g.channels, o = i / g.channels, oh = o / g.outW, ow = o % g.outW, k = Int(codes[i] & 3)
        return Int32(((2 * oh + k / 2) * g.inW + 2 * ow + k % 2) * g.channels + ch)
    }
}

/// The direct channels-last 3x3 conv against direct Float64 convolution: forward (bias, ReLU),
/// the input gradient (the same kernel on dy with flipped, transposed weights) and the
/// weight gradient (from 0, and continuing a running sum), on rows narrower than its 8-pixel block,
/// rows of whole 16-pixel blocks, rows with a remainder after either, and 32-channel sides (the
/// kernel takes any multiple of 16).
@Test(arguments: [(7, 6, 16, 16), (32, 32, 16, 16), (5, 11, 16, 32), (9, 8, 32, 16), (3, 3, 16, 16), (1, 12, 16, 16),
                  (3, 40, 16, 16), (2, 20, 16, 32), (4, 1, 16, 16), (3, 2, 16, 32)])
func directConvMatchesFloat64Convolution(_ p: (Int, Int, Int, Int)) {
    let (h, w, cin, cout) = p
    let g = Window(inH: h, inW: w, channels: cin, kernel: 3, stride: 1, same: true)
    #expect(DirectConv.applies(g, cout: cout) == (cin <= DirectConv.maxChannels && cout <= DirectConv.maxChannels))
    var r = Rand(s: UInt64(h * w + cin + cout))
    let x = r.array(g.inputSize), wt = r.array(9 * cin * cout), bias = r.array(cout), dy = r.array(g.positions * cout)
    let start = r.array(9 * cin * cout)
    let zeros = directConvZeros(channels: max(cin, cout))
    var flipped = [Float](repeating: .nan, count: 9 * cin * cout)
    var y = [Float](repeating: .nan, count: g.positions * cout), dx = [Float](repeating: .nan, count: g.inputSize)
    var dwFresh = [Float](repeating: .nan, count: 9 * cin * cout), dwRunning = start
    wt.withUnsafeBufferPointer { g.flipTranspose($0.baseAddress!, cout: cout, into: &flipped) }
    DirectConv.forward(height: h, width: w, cin: cin, cout: cout, x: x, zeros: zeros, w: wt, bias: bias, relu: true, rows: 0..<h, y: &y)
    DirectConv.forward(height: h, width: w, cin: cout, cout: cin, x: dy, zeros: zeros, w: flipped, bias: nil, relu: false, rows: 0..<h, y: &dx)
    DirectConv.weightGradient(height: h, width: w, cin: cin, cout: cout, x: x, zeros: zeros, dy: dy, dw: &dwFresh, accumulate: false)
    DirectConv.weightGradient(height: h, width: w, cin: cin, cout: cout, x: x, zeros: zeros, dy: dy, dw: &dwRunning, accumulate: true)
    close(y, Reference.conv(g, x: x, w: wt, bias: bias, cout: cout).map { max($0, 0) }, terms: g.patch)
    let (wantDx, wantDw) = Reference.convGradients(g, x: x, w: wt, dy: dy, cout: cout)
    close(dx, wantDx, terms: 9 * cout)
    close(dwFresh, wantDw, terms: g.positions)
    close(dwRunning, zip(wantDw, start).map { $0 + Double($1) }, terms: g.positions + 1)
    // A block of rows computes those rows' bits exactly as the whole does (the forward's parts).
    var part = [Float](repeating: .nan, count: g.positions * cout)
    DirectConv.forward(height: h, width: w, cin: cin, cout: cout, x: x, zeros: zeros, w: wt, bias: bias, relu: true, rows: (h / 2)..<h, y: &part)
    #expect(Array(part[(h / 2 * w * cout)...]).map(\.bitPattern) == Array(y[(h / 2 * w * cout)...]).map(\.bitPattern))
}

/// A pixel's sums are the same whichever block computes it (16 pixels, 8, or one at a time): the
/// interior pixels of a crop narrower than a block equal those of a row of 16-pixel blocks, bit for bit.
@Test func directConvPixelsAreTheSameInEveryBlock() {
    let h = 3, w = 40, c = 16, crop = 10..<17
    var r = Rand(s: 5)
    let x = r.array(h * w * c), wt = r.array(9 * c * c), bias = r.array(c)
    func conv(_ x: [Float], width: Int) -> [Float] {
        let zeros = directConvZeros(channels: c)
        var y = [Float](repeating: .nan, count: h * width * c)
        DirectConv.forward(height: h, width: width, cin: c, cout: c, x: x, zeros: zeros, w: wt, bias: bias, relu: false, rows: 0..<h, y: &y)
        return y
    }
    var cropped: [Float] = []
    for row in 0..<h {
        let start = (row * w + crop.lowerBound) * c
        cropped += x[start..<(start + crop.count * c)]
    }
    let whole = conv(x, width: w), narrow = conv(cropped, width: crop.count)
    // Row 1, the crop's interior columns: the same 3x3 neighbourhoods in both.
    for col in (crop.lowerBound + 1)..<(crop.upperBound - 1) {
        let i = (w + col) * c, j = (crop.count + col - crop.lowerBound) * c
        let a: [UInt32] = whole[i..<(i + c)].map { $0.bitPattern }
        let b: [UInt32] = narrow[j..<(j + c)].map { $0.bitPattern }
        #expect(a == b, "column \(col)")
    }
}

/// The zeros a direct conv reads for taps outside the image, then NaNs: a read past them (or at
/// a wrong offset into a longer buffer) would show in the results.
func directConvZeros(channels: Int) -> [Float] {
    [Float](repeating: 0, count: DirectConv.zeroFloats(channels: channels)) + [Float](repeating: .nan, count: 64)
}

/// A tap outside the image reads the zero row: every output pixel has the bits it has when the
/// image is zero-padded in memory (the interior of the padded image's conv), on rows of 16- and
/// 8-pixel blocks and on rows narrower than a block; and each weight gradient sum is its
/// positions' fused multiply-adds in order, 0 read outside the image, from 0 or from where a
/// running sum stood.
@Test(arguments: [(6, 20), (5, 9), (4, 5), (3, 2), (4, 1)])
func directConvReadsZerosAsAPaddedCopyWould(_ p: (Int, Int)) {
    let (h, w) = p, c = 16
    var r = Rand(s: UInt64(h * w))
    let x = r.array(h * w * c), wt = r.array(9 * c * c), bias = r.array(c), dy = r.array(h * w * c), start = r.array(9 * c * c)
    var padded = [Float](repeating: 0, count: (h + 2) * (w + 2) * c)
    for i in 0..<h { for j in 0..<w { for k in 0..<c { padded[((i + 1) * (w + 2) + j + 1) * c + k] = x[(i * w + j) * c + k] } } }
    let zeros = directConvZeros(channels: c)
    func conv(_ x: [Float], _ h: Int, _ w: Int) -> [Float] {
        var y = [Float](repeating: .nan, count: h * w * c)
        DirectConv.forward(height: h, width: w, cin: c, cout: c, x: x, zeros: zeros, w: wt, bias: bias, relu: false, rows: 0..<h, y: &y)
        return y
    }
    let small = conv(x, h, w), big = conv(padded, h + 2, w + 2)
    for i in 0..<h {
        for j in 0..<w {
            let a = (i * w + j) * c, b = ((i + 1) * (w + 2) + j + 1) * c
            #expect(small[a..<(a + c)].map(\.bitPattern) == big[b..<(b + c)].map(\.bitPattern), "pixel (\(i), \(j))")
        }
    }
    for accumulate in [false, true] {
        var dw = start
        DirectConv.weightGradient(height: h, width: w, cin: c, cout: c, x: x, zeros: zeros, dy: dy, dw: &dw, accumulate: accumulate)
        var want = accumulate ? start : [Float](repeating: 0, count: 9 * c * c)
        for tap in 0..<9 {
            for ci in 0..<c {
                for co in 0..<c {
                    var acc = want[(tap * c + ci) * c + co]
                    for i in 0..<h {
                        for j in 0..<w {
                            let (ih, iw) = (i + tap / 3 - 1, j + tap % 3 - 1)
                            let v = ih >= 0 && ih < h && iw >= 0 && iw < w ? x[(ih * w + iw) * c + ci] : 0
                            acc = acc.addingProduct(v, dy[(i * w + j) * c + co])
                        }
                    }
                    want[(tap * c + ci) * c + co] = acc
                }
            }
        }
        #expect(dw.map(\.bitPattern) == want.map(\.bitPattern), "accumulate \(accumulate)")
    }
}
