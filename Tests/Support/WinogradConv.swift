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

    func u(_ w: [Float]) -> [Float] {
        var u = [Float](repeating: .nan, count: positions * cin * cout)
        w.withUnsafeBufferPointer { wp in u.withUnsafeMutableBufferPointer {
            Winograd.transformWeights(tile, wp.baseAddress!, pairs: cin * cout, range: 0..<(cin * cout), into: $0.baseAddress!)
        } }
        return u
    }

    /// V of `xs`, the samples' tiles one after another (a group, as the conv jobs lay it out).
    func v(_ xs: [[Float]]) -> [Float] {
        let vs = Winograd.matrixStride(g, channels: cin, tile, group: xs.count)
        var v = [Float](repeating: .nan, count: positions * vs)
        for (k, x) in xs.enumerated() {
            x.withUnsafeBufferPointer { xp in v.withUnsafeMutableBufferPointer {
                Winograd.transformInput(g, tile, x: xp.baseAddress!, group: xs.count, into: $0.baseAddress! + k * t * cin)
            } }
        }
        return v
    }

    public func forward(x: [Float], w: [Float], bias: [Float]) -> [Float] { forward(xs: [x], w: w, bias: bias)[0] }

    /// The samples `xs` as one group: each ξ's GEMM takes all of their tiles.
    public func forward(xs: [[Float]], w: [Float], bias: [Float]) -> [[Float]] {
        let u = u(w), v = v(xs), n = xs.count
        let vs = Winograd.matrixStride(g, channels: cin, tile, group: n), ms = Winograd.matrixStride(g, channels: cout, tile, group: n)
        var m = [Float](repeating: .nan, count: positions * ms)
        u.withUnsafeBufferPointer { up in v.withUnsafeBufferPointer { vp in m.withUnsafeMutableBufferPointer { mp in
            for xi in 0..<positions {
                Gemm.multiply(m: n * t, n: cout, k: cin, a: MatrixView(vp.baseAddress! + xi * vs, rowStride: cin, colStride: 1),
                              b: .view(MatrixView(up.baseAddress! + xi * cin * cout, rowStride: cout, colStride: 1)),
                              c: mp.baseAddress! + xi * ms, ldc: cout, accumulate: false, scratch: scratch)
            }
        } } }
        return (0..<n).map { k in
            var y = [Float](repeating: .nan, count: g.positions * cout)
            m.withUnsafeBufferPointer { mp in bias.withUnsafeBufferPointer { bp in y.withUnsafeMutableBufferPointer {
                Winograd.transformOutput(g, tile, cout: cout, m: mp.baseAddress! + k * t * cout, bias: bp.baseAddress!, relu: false,
                                         group: n, into: $0.baseAddress!)
            } } }
            return y
        }
    }

    /// (dx, dw) for output gradient dy.
    public func backward(x: [Float], w: [Float], dy: [Float]) -> ([Float], [Float]) {
        let (dxs, dw) = backward(xs: [x], w: w, dys: [dy])
        return (dxs[0], dw)
    }

    /// (each sample's dx, dw summed over the samples) for output gradients `dys`: as one group
    /// (each ξ's GEMMs over all of their tiles), or with `grouped` false a sample at a time, dU's
    /// sums continuing from one sample to the next.
    public func backward(xs: [[Float]], w: [Float], dys: [[Float]], grouped: Bool = true) -> ([[Float]], [Float]) {
        let u = u(w), n = xs.count
        var du = [Float](repeating: 0, count: positions * cin * cout)
        var dxs = [[Float]](repeating: [], count: n)
        for members in grouped ? [0..<n] : (0..<n).map({ $0..<($0 + 1) }) {
            let group = members.count, v = v(Array(xs[members]))
            let vs = Winograd.matrixStride(g, channels: cin, tile, group: group), ms = Winograd.matrixStride(g, channels: cout, tile, group: group)
            var dm = [Float](repeating: .nan, count: positions * ms), dv = [Float](repeating: .nan, count: positions * vs)
            for (k, s) in members.enumerated() {
                dys[s].withUnsafeBufferPointer { dyp in dm.withUnsafeMutableBufferPointer {
                    Winograd.transformOutputGradient(g, tile, cout: cout, dy: dyp.baseAddress!, group: group, into: $0.baseAddress! + k * t * cout)
                } }
            }
            dm.withUnsafeBufferPointer { mp in v.withUnsafeBufferPointer { vp in u.withUnsafeBufferPointer { up in
                du.withUnsafeMutableBufferPointer { dup in dv.withUnsafeMutableBufferPointer { dvp in
                    for xi in 0..<positions {
                        Gemm.multiply(m: cin, n: cout, k: group * t, a: MatrixView(vp.baseAddress! + xi * vs, rowStride: 1, colStride: cin),
                                      b: .view(MatrixView(mp.baseAddress! + xi * ms, rowStride: cout, colStride: 1)),
                                      c: dup.baseAddress! + xi * cin * cout, ldc: cout, accumulate: true, scratch: scratch)
                        Gemm.multiply(m: group * t, n: cin, k: cout, a: MatrixView(mp.baseAddress! + xi * ms, rowStride: cout, colStride: 1),
                                      b: .view(MatrixView(up.baseAddress! + xi * cin * cout, rowStride: 1, colStride: cout)),
                                      c: dvp.baseAddress! + xi * vs, ldc: cin, accumulate: false, scratch: scratch)
                    }
                } }
            } } }
            for (k, s) in members.enumerated() {
                var dx = [Float](repeating: .nan, count: g.inputSize)
                dv.withUnsafeBufferPointer { dvp in dx.withUnsafeMutableBufferPointer {
                    Winograd.inputGradient(g, tile, dv: dvp.baseAddress! + k * t * cin, group: group, into: $0.baseAddress!)
                } }
                dxs[s] = dx
            }
        }
        var dw = [Float](repeating: .nan, count: 9 * cin * cout)
        du.withUnsafeBufferPointer { dup in dw.withUnsafeMutableBufferPointer { Winograd.weightGradient(tile, dup.baseAddress!, pairs: cin * cout, into: $0.baseAddress!) } }
        return (dxs, dw)
    }
}
