// The Winograd composition the tests check against a direct convolution (test support only).
import PTKernels

/// One sample through Winograd F(2x2, 3x3) or F(4x4, 3x3), composed from the kernels one step at
/// a time (the transforms, then the 16 or 36 GEMMs by `Gemm.multiply`) with plain arrays: what the
/// conv jobs do in their worker's scratch, spelled out for the tests to compare with a direct
/// convolution.
public struct WinogradConv {
    public let g: Window
    public let cout: Int
    public let tile: Winograd.Tile
    public init(g: Window, cout: Int, tile: Winograd.Tile) { self.g = g; self.cout = cout; self.tile = tile }
    /// GEMM scratch for one call (tests run in parallel; each needs its own).
    private var scratch: UnsafeMutablePointer<Float> {
        let p = UnsafeMutablePointer<Float>.allocate(capacity: Gemm.scratchFloats)
        p.initialize(repeating: .nan, count: Gemm.scratchFloats)
        return p  // leaked: a test process is short-lived
    }
    var t: Int { Winograd.tiles(g, tile) }
    var positions: Int { tile.positions }
    var cin: Int { g.channels }
    /// V's and M's matrices lie `matrixStride` apart (a cache line past each other).
    var vs: Int { Winograd.matrixStride(g, channels: cin, tile) }
    var ms: Int { Winograd.matrixStride(g, channels: cout, tile) }

    func u(_ w: [Float]) -> [Float] {
        var u = [Float](repeating: .nan, count: positions * cin * cout)
        w.withUnsafeBufferPointer { wp in u.withUnsafeMutableBufferPointer {
            Winograd.transformWeights(tile, wp.baseAddress!, pairs: cin * cout, range: 0..<(cin * cout), into: $0.baseAddress!)
        } }
        return u
    }

    func v(_ x: [Float]) -> [Float] {
        var v = [Float](repeating: .nan, count: positions * vs)
        x.withUnsafeBufferPointer { xp in v.withUnsafeMutableBufferPointer { Winograd.transformInput(g, tile, x: xp.baseAddress!, into: $0.baseAddress!) } }
        return v
    }

    public func forward(x: [Float], w: [Float], bias: [Float]) -> [Float] {
        let u = u(w), v = v(x)
        var m = [Float](repeating: .nan, count: positions * ms), y = [Float](repeating: .nan, count: g.positions * cout)
        u.withUnsafeBufferPointer { up in v.withUnsafeBufferPointer { vp in m.withUnsafeMutableBufferPointer { mp in
            for xi in 0..<positions {
                Gemm.multiply(m: t, n: cout, k: cin, a: MatrixView(vp.baseAddress! + xi * vs, rowStride: cin, colStride: 1),
                              b: .view(MatrixView(up.baseAddress! + xi * cin * cout, rowStride: cout, colStride: 1)),
                              c: mp.baseAddress! + xi * ms, ldc: cout, accumulate: false, scratch: scratch)
            }
        } } }
        m.withUnsafeBufferPointer { mp in bias.withUnsafeBufferPointer { bp in y.withUnsafeMutableBufferPointer {
            Winograd.transformOutput(g, tile, cout: cout, m: mp.baseAddress!, bias: bp.baseAddress!, relu: false, into: $0.baseAddress!)
        } } }
        return y
    }

    /// (dx, dw) for output gradient dy.
    public func backward(x: [Float], w: [Float], dy: [Float]) -> ([Float], [Float]) {
        let u = u(w), v = v(x)
        var dm = [Float](repeating: .nan, count: positions * ms), du = [Float](repeating: 0, count: positions * cin * cout)
        var dv = [Float](repeating: .nan, count: positions * vs)
        var dx = [Float](repeating: .nan, count: g.inputSize), dw = [Float](repeating: .nan, count: 9 * cin * cout)
        dy.withUnsafeBufferPointer { dyp in dm.withUnsafeMutableBufferPointer {
            Winograd.transformOutputGradient(g, tile, cout: cout, dy: dyp.baseAddress!, into: $0.baseAddress!)
        } }
        dm.withUnsafeBufferPointer { mp in v.withUnsafeBufferPointer { vp in u.withUnsafeBufferPointer { up in
            du.withUnsafeMutableBufferPointer { dup in dv.withUnsafeMutableBufferPointer { dvp in
                for xi in 0..<positions {
                    Gemm.multiply(m: cin, n: cout, k: t, a: MatrixView(vp.baseAddress! + xi * vs, rowStride: 1, colStride: cin),
                                  b: .view(MatrixView(mp.baseAddress! + xi * ms, rowStride: cout, colStride: 1)),
                                  c: dup.baseAddress! + xi * cin * cout, ldc: cout, accumulate: true, scratch: scratch)
                    Gemm.multiply(m: t, n: cin, k: cout, a: MatrixView(mp.baseAddress! + xi * ms, rowStride: cout, colStride: 1),
                                  b: .view(MatrixView(up.baseAddress! + xi * cin * cout, rowStride: 1, colStride: cout)),
                                  c: dvp.baseAddress! + xi * vs, ldc: cin, accumulate: false, scratch: scratch)
                }
            } }
        } } }
        dv.withUnsafeBufferPointer { dvp in dx.withUnsafeMutableBufferPointer { Winograd.inputGradient(g, tile, dv: dvp.baseAddress!, into: $0.baseAddress!) } }
        du.withUnsafeBufferPointer { dup in dw.withUnsafeMutableBufferPointer { Winograd.weightGradient(tile, dup.baseAddress!, pairs: cin * cout, into: $0.baseAddress!) } }
        return (dx, dw)
    }
}
