// The bf16 conv that reads its patches in place (`ImplicitConv`) on every path this CPU has: its
// forward and its input gradient (the padded output gradient through the flipped weights) within
// the fp32 sum bound of Float64 on the same bf16 operands, and the forward's bits im2col's GEMM's
// wherever a kernel row's patch values are whole k-blocks.
import Foundation
import PTKernels
import PTTestSupport
import Testing

/// Geometries: conv2 of the reference network; 16 channels (a kernel row's K padded 48 -> 64);
/// rows narrower and wider than a panel; a 5x5 kernel; a 2x2 kernel (SAME pads it after only, so
/// the input gradient's padding is the forward's mirrored); a map whose padded rows end mid-panel.
let implicitCases: [(Window, Int)] = [
    (Window(inH: 14, inW: 14, channels: 64, kernel: 3, stride: 1, same: true), 128),
    (Window(inH: 8, inW: 8, channels: 16, kernel: 3, stride: 1, same: true), 16),
    (Window(inH: 5, inW: 7, channels: 16, kernel: 3, stride: 1, same: true), 32),
    (Window(inH: 6, inW: 37, channels: 32, kernel: 3, stride: 1, same: true), 16),
    (Window(inH: 7, inW: 6, channels: 32, kernel: 5, stride: 1, same: true), 48),
    (Window(inH: 6, inW: 5, channels: 16, kernel: 2, stride: 1, same: true), 32),
]

func aligned(_ floats: Int) -> UnsafeMutablePointer<Float> {
    let p = UnsafeMutableRawPointer.allocate(byteCount: 4 * floats, alignment: 64).bindMemory(to: Float.self, capacity: floats)
    p.initialize(repeating: .nan, count: floats)  // what the kernels forget to write shows
    return p
}

/// One implicit GEMM: `image` ([height, width, channels]) through weights w ([kernel][kernel]
/// [channels][n]) into [height, width, n].
func implicitGEMM(_ c: ImplicitConv, image: [Float], w: [Float], n: Int, bias: [Float]?, relu: Bool, path: BF16Path) -> [Float] {
    let area = aligned(c.scratchFloats(n: n)), packed = aligned(c.packedWeightsFloats(cout: n)), s = scratch
    defer { area.deallocate(); packed.deallocate(); s.deallocate() }
    w.withUnsafeBufferPointer { c.packWeights($0.baseAddress!, cout: n, into: packed) }
    var y = [Float](repeating: .nan, count: c.height * c.width * n)
    image.withUnsafeBufferPointer { x in (bias ?? [Float](repeating: 0, count: n)).withUnsafeBufferPointer { b in
        y.withUnsafeMutableBufferPointer {
            c.run(x.baseAddress!, packed: packed, n: n, bias: b.baseAddress!, relu: relu, into: $0.baseAddress!, scratch: area,
                  gemmScratch: s, path: path)
        }
    } }
    return y
}

@Test(arguments: bf16Paths)
func implicitConvForwardIsIm2colsGEMM(_ path: BF16Path) {
    for (g, cout) in implicitCases {
        var r = Rand(s: UInt64(g.inW * 100 + cout))
        let x = r.array(g.inputSize + Im2col.slack), w = r.array(g.patch * cout), bias = r.array(cout)
        let got = implicitGEMM(ImplicitConv(forward: g), image: Array(x[..<g.inputSize]), w: w, n: cout, bias: bias, relu: true, path: path)
        // im2col's GEMM: the patches as bf16 rows, W packed whole.
        let area = aligned(Im2col.bf16Floats(g)), packed = aligned(GemmBF16.packedBFloats(k: g.patch, n: cout))
        defer { area.deallocate(); packed.deallocate() }
        var want = [Float](repeating: .nan, count: g.positions * cout)
        x.withUnsafeBufferPointer { xp in w.withUnsafeBufferPointer { wp in bias.withUnsafeBufferPointer { bp in want.withUnsafeMutableBufferPointer { yp in
            GemmBF16.packB(k: g.patch, n: cout, b: MatrixView(wp.baseAddress!, rowStride: cout, colStride: 1),
                           panels: 0..<GemmBF16.packedBPanels(n: cout), into: packed)
            let (col, lda) = Im2col.forwardBF16(g, x: xp.baseAddress!, scratch: area)
            GemmBF16.multiply(m: g.positions, n: cout, k: g.patch, aBF16: col, lda: lda, b: .packed(packed), c: yp.baseAddress!,
                              ldc: cout, accumulate: false, bias: bp.baseAddress!, relu: true, scratch: scratch, path: path)
        } } } }
        // Where each kernel row's run is whole k-blocks, the blocks hold im2col's values in its
        // order: the same bits. A run padded to a block regroups the sums (AMX's instruction does
        // not add a block's pairs one by one), so there only the bound holds.
        if g.kernel * g.channels % 32 == 0 {
            #expect(got.map(\.bitPattern) == want.map(\.bitPattern), "\(path) \(g) cout \(cout)")
        }
        let u = 0x1p-24, xr = x[..<g.inputSize].map(BF16.rounded), wr = w.map(BF16.rounded)
        let exact = Reference.conv(g, x: xr, w: wr, bias: bias, cout: cout).map { max($0, 0) }
        let size = Reference.conv(g, x: xr.map(abs), w: wr.map(abs), bias: bias.map(abs), cout: cout)
        let terms = Double(g.patch + 2)
        let outside = zip(got, zip(exact, size)).filter { !(abs(Double($0) - $1.0) <= terms * u * $1.1) }.count
        #expect(outside == 0, "\(path) \(g) cout \(cout)")  // (a NaN is outside)
    }
}

@Test(arguments: bf16Paths)
func implicitConvInputGradientIsWithinTheSumBound(_ path: BF16Path) {
    let u = 0x1p-24
    for (g, cout) in implicitCases {
        var r = Rand(s: UInt64(g.inH * 100 + cout))
        let w = r.array(g.patch * cout), dy = r.array(g.positions * cout)
        var flipped = [Float](repeating: 0, count: w.count)
        w.withUnsafeBufferPointer { wp in flipped.withUnsafeMutableBufferPointer {
            g.flipTranspose(wp.baseAddress!, cout: cout, into: $0.baseAddress!)
        } }
        let got = implicitGEMM(ImplicitConv(inputGradientOf: g, cout: cout), image: dy, w: flipped, n: g.channels, bias: nil,
                               relu: false, path: path)
        // Float64 on the operands the GEMM rounded; any order of n fp32 additions of exact
        // products is within (n + 2) u Σ|terms| of the exact sum.
        let wr = w.map(BF16.rounded), dyr = dy.map(BF16.rounded), x = [Float](repeating: 0, count: g.inputSize)
        let want = Reference.convGradients(g, x: x, w: wr, dy: dyr, cout: cout).dx
        let size = Reference.convGradients(g, x: x, w: wr.map(abs), dy: dyr.map(abs), cout: cout).dx
        let terms = Double(g.kernel * g.kernel * cout + 2)
        let outside = zip(got, zip(want, size)).filter { !(abs(Double($0) - $1.0) <= terms * u * $1.1) }.count
        #expect(outside == 0, "\(path) \(g) cout \(cout)")  // (a NaN is outside)
    }
}
