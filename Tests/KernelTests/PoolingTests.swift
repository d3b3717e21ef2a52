// The pooling kernels against their Float64 twins and their own definitions: max and average
// forward, each backward as its forward's adjoint, and which element a max-pool picks on ties.
import Testing
import PTKernels
import PTTestSupport

@Test(arguments: [(4, 4, 3, 2, 2), (7, 7, 5, 2, 2), (9, 8, 2, 3, 2), (5, 5, 1, 3, 1), (6, 5, 37, 2, 2), (4, 4, 16, 3, 1)])
func poolsMatchReference(_ p: (Int, Int, Int, Int, Int)) {
    let (h, w, c, size, stride) = p
    let g = Window(inH: h, inW: w, channels: c, kernel: size, stride: stride, same: false)
    var r = Rand(s: 11)
    let x = r.array(g.inputSize)
    var y = [Float](repeating: .nan, count: g.positions * c), arg = [Int32](repeating: -1, count: y.count)
    x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in arg.withUnsafeMutableBufferPointer { ap in
        MaxPool.forward(g, x: xp.baseAddress!, y: yp.baseAddress!, argmax: ap.baseAddress!)
    } } }
    close(y, Reference.pool(g, x: x, max: true), terms: 1)
    #expect(arg == Reference.maxPoolArgmax(g, x: x))
    x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { AvgPool.forward(g, x: xp.baseAddress!, y: $0.baseAddress!) } }
    close(y, Reference.pool(g, x: x, max: false), terms: size * size)
}

/// Average-pool backward is the adjoint of its forward: <pool(x), d> = <x, poolᵀ(d)>, on channel
/// counts that take the SIMD path, its tail, and both.
@Test(arguments: [3, 16, 37])
func avgPoolBackwardIsTheAdjoint(_ c: Int) {
    let g = Window(inH: 7, inW: 6, channels: c, kernel: 3, stride: 2, same: false)
    var r = Rand(s: UInt64(c))
    let x = r.array(g.inputSize), d = r.array(g.positions * c)
    var y = [Float](repeating: .nan, count: d.count), dx = [Float](repeating: .nan, count: x.count)
    x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { AvgPool.forward(g, x: xp.baseAddress!, y: $0.baseAddress!) } }
    d.withUnsafeBufferPointer { dp in dx.withUnsafeMutableBufferPointer { AvgPool.backward(g, dy: dp.baseAddress!, dx: $0.baseAddress!) } }
    let lhs = zip(y, d).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    let rhs = zip(x, dx).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    #expect(abs(lhs - rhs) <= 1e-5 * max(1, abs(lhs)))
}

/// Max-pool backward when windows tile the input (written once per element) gives the bits of
/// the general clear-and-scatter path, with and without the ReLU mask, on SIMD and tail channels,
/// 2x2 and 3x3 windows.
@Test(arguments: [(3, 2), (16, 2), (37, 2), (16, 3), (19, 3)])
func tiledMaxPoolBackwardMatchesTheScatter(_ p: (Int, Int)) {
    let (c, k) = p
    let tiled = Window(inH: 3 * k, inW: 2 * k, channels: c, kernel: k, stride: k, same: false)
    // The same windows over an input one row taller: not tiled, so the general path runs.
    let general = Window(inH: 3 * k + 1, inW: 2 * k, channels: c, kernel: k, stride: k, same: false)
    var r = Rand(s: UInt64(c) &* 31)
    var x = r.array(general.inputSize)
    x[5] = -0.0
    var d = r.array(tiled.positions * c)
    d[0] = -0.0; d[d.count - 1] = -0.0  // a -0 gradient lands as +0 in the scatter
    for masked in [false, true] {
        var y = [Float](repeating: 0, count: d.count), arg = [Int32](repeating: 0, count: d.count)
        var fast = [Float](repeating: .nan, count: tiled.inputSize), slow = [Float](repeating: .nan, count: general.inputSize)
        x.withUnsafeBufferPointer { xp in d.withUnsafeBufferPointer { dp in y.withUnsafeMutableBufferPointer { yp in
            arg.withUnsafeMutableBufferPointer { ap in
                MaxPool.forward(tiled, x: xp.baseAddress!, y: yp.baseAddress!, argmax: ap.baseAddress!)
                let mask = masked ? UnsafePointer(yp.baseAddress!) : nil
                fast.withUnsafeMutableBufferPointer {
                    MaxPool.backward(tiled, dy: dp.baseAddress!, argmax: ap.baseAddress!, dx: $0.baseAddress!, reluOutput: mask)
                }
                slow.withUnsafeMutableBufferPointer {
                    MaxPool.backward(general, dy: dp.baseAddress!, argmax: ap.baseAddress!, dx: $0.baseAddress!, reluOutput: mask)
                }
            }
        } } }
        #expect(fast.map(\.bitPattern) == slow.prefix(tiled.inputSize).map(\.bitPattern), "masked: \(masked)")
        #expect(slow[tiled.inputSize...].allSatisfy { $0 == 0 })
    }
}

/// The byte-code max-pool against the Int32 one: the same outputs, codes naming the same inputs
/// (ties, -0 and NaN included), the ReLU mask bit where the output is not > 0, and the same input
/// gradient bits with and without the mask; and which windows keep codes.
@Test(arguments: [16, 48])
func maxPoolCodesMatchTheIndices(_ c: Int) {
    let g = Window(inH: 6, inW: 8, channels: c, kernel: 2, stride: 2, same: false)
    #expect(MaxPoolCodes.apply(g))
    #expect(!MaxPoolCodes.apply(Window(inH: 7, inW: 8, channels: c, kernel: 2, stride: 2, same: false)))
    #expect(!MaxPoolCodes.apply(Window(inH: 6, inW: 8, channels: c + 1, kernel: 2, stride: 2, same: false)))
    #expect(!MaxPoolCodes.apply(Window(inH: 6, inW: 6, channels: c, kernel: 3, stride: 3, same: false)))
    var r = Rand(s: UInt64(c) &* 7)
    // Rounded to a few values, with zeros: ties in most windows.
    var x = r.array(g.inputSize).map { max(($0 * 3).rounded() / 3, 0) }
    x[1] = -0.0; x[c + 1] = 0; x[2] = .nan; x[5 * c] = -1
    var d = r.array(g.positions * c)
    d[0] = -0.0
    var y = [Float](repeating: .nan, count: d.count), yc = y, arg = [Int32](repeating: -1, count: d.count)
    MaxPool.forward(g, x: x, y: &y, argmax: &arg)
    for masked in [false, true] {
        var codes = [UInt8](repeating: 255, count: d.count)
        MaxPoolCodes.forward(g, x: x, y: &yc, codes: &codes, reluMasked: masked)
        #expect(yc.map(\.bitPattern) == y.map(\.bitPattern))
        #expect(decode(codes, g) == arg)
        #expect(codes.indices.allSatisfy { (codes[$0] & 4 != 0) == (masked && !(y[$0] > 0)) })
        var want = [Float](repeating: .nan, count: g.inputSize), got = want
        y.withUnsafeBufferPointer { yb in
            MaxPool.backward(g, dy: d, argmax: arg, dx: &want, reluOutput: masked ? yb.baseAddress! : nil)
        }
        MaxPoolCodes.backward(g, dy: d, codes: codes, dx: &got)
        #expect(got.map(\.bitPattern) == want.map(\.bitPattern), "masked: \(masked)")
    }
}

/// Max-pool argmax on ties is the window's first maximum (row by row), on every path: 2x2 windows
/// (SIMD and scalar channels), 3x3, overlapping strides; -0 and +0 tie too.
@Test(arguments: [(4, 4, 16, 2, 2), (6, 6, 21, 2, 2), (5, 5, 3, 2, 1), (7, 7, 17, 3, 2)])
func maxPoolTiesKeepTheFirstMaximum(_ p: (Int, Int, Int, Int, Int)) {
    let (h, w, c, size, stride) = p
    let g = Window(inH: h, inW: w, channels: c, kernel: size, stride: stride, same: false)
    // Values from a small set, so most windows hold ties; every other zero is negative.
    let x = (0..<g.inputSize).map { i -> Float in
        let v = Float((i * 7 + i / 5) % 3)
        return v == 0 && i % 2 == 1 ? -0.0 : v
    }
    var y = [Float](repeating: .nan, count: g.positions * c), arg = [Int32](repeating: -1, count: y.count)
    x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in arg.withUnsafeMutableBufferPointer { ap in
        MaxPool.forward(g, x: xp.baseAddress!, y: yp.baseAddress!, argmax: ap.baseAddress!)
    } } }
    let want = Reference.maxPoolArgmax(g, x: x)
    for o in arg.indices {
        #expect(arg[o] == want[o] && y[o].bitPattern == x[Int(want[o])].bitPattern, "output \(o)")
    }
}
