// Winograd F(4x4, 3x3)'s transforms (Lavin & Gray, 2015, points 0, ±1, ±2 and ∞), the same
// passes as F(2x2)'s in Winograd.swift over 6x6 input tiles and 4x4 output tiles:
//   Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1]
//   G  = [1/4 0 0; −1/6 −1/6 −1/6; −1/6 1/6 −1/6; 1/24 1/12 1/6; 1/24 −1/12 1/6; 0 0 1]
//   Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1]
// Each 1-D transform is written as sums of pairs so that most of its multiplications are by 2, 4
// or 8, which are exact; the adds round, and so do B's fives and G's sixths. A 2-D transform is
// the 1-D one on columns, then on rows, as in F(2x2).

extension Winograd {
    // The four 1-D transforms and the two of the weights.
    /// Bᵀ d.
    @inline(__always) static func bt6(_ d0: V, _ d1: V, _ d2: V, _ d3: V, _ d4: V, _ d5: V) -> (V, V, V, V, V, V) {
        let two = V(repeating: 2), four = V(repeating: 4)
        let e = d4 - d2, f = two * (d3 - d1)
        return (four * (d0 - d2) + e, (d3 + d4) - four * (d1 + d2), (d4 - d3) + four * (d1 - d2), e + f, e - f,
                four * (d1 - d3) + (d5 - d3))
    }
    /// B v (Bᵀ's transpose).
    @inline(__always) static func b6(_ v0: V, _ v1: V, _ v2: V, _ v3: V, _ v4: V, _ v5: V) -> (V, V, V, V, V, V) {
        let two = V(repeating: 2), four = V(repeating: 4), five = V(repeating: 5)
        let s12 = v1 + v2, d21 = v2 - v1, s34 = v3 + v4, d43 = v4 - v3
        return (four * v0, (four * d21 + two * d43) + four * v5, (V() - four * s12 - s34) - five * v0,
                (V() - d21 - two * d43) - five * v5, (v0 + s12) + s34, v5)
    }
    /// Aᵀ m.
    @inline(__always) static func at6(_ m0: V, _ m1: V, _ m2: V, _ m3: V, _ m4: V, _ m5: V) -> (V, V, V, V) {
        let two = V(repeating: 2), four = V(repeating: 4), eight = V(repeating: 8)
        let a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4
        return ((m0 + a) + c, b + two * d, a + four * c, (b + eight * d) + m5)
    }
    /// A y (Aᵀ's transpose).
    @inline(__always) static func a6(_ y0: V, _ y1: V, _ y2: V, _ y3: V) -> (V, V, V, V, V, V) {
        let two = V(repeating: 2), four = V(repeating: 4), eight = V(repeating: 8)
        let p = y0 + y2, q = y1 + y3, p2 = y0 + four * y2, q2 = two * y1 + eight * y3
        return (y0, p + q, p - q, p2 + q2, p2 - q2, y3)
    }
    /// G g.
    @inline(__always) static func g6(_ g0: V, _ g1: V, _ g2: V) -> (V, V, V, V, V, V) {
        let quarter = V(repeating: 0.25), half = V(repeating: 0.5), sixth = V(repeating: Float(1.0 / 6.0))
        let a = g0 + g2, b = quarter * g0 + g2, h = half * g1
        return (quarter * g0, (V() - (a + g1)) * sixth, (V() - (a - g1)) * sixth, (b + h) * sixth, (b - h) * sixth, g2)
    }
    /// Gᵀ u (G's transpose).
    @inline(__always) static func gt6(_ u0: V, _ u1: V, _ u2: V, _ u3: V, _ u4: V, _ u5: V) -> (V, V, V) {
        let quarter = V(repeating: 0.25), half = V(repeating: 0.5), sixth = V(repeating: Float(1.0 / 6.0))
        let s12 = u1 + u2, d21 = u2 - u1, s34 = u3 + u4, d34 = u3 - u4
        return (quarter * u0 + (quarter * s34 - s12) * sixth, (d21 + half * d34) * sixth, (s34 - s12) * sixth + u5)
    }

    /// V = Bᵀ d B (`transformInput` for F(4x4)).
    static func transformInput4(_ g: Window, x: UnsafePointer<Float>, channels: Range<Int>?, tiles range: Range<Int>?,
                                plane: Int, into v: UnsafeMutablePointer<Float>) {
        let c = g.channels, tilesW = (g.outW + 3) / 4, t = tiles(g, .f4)
        let r = channels ?? 0..<c
        for tile in range ?? 0..<t {
            let y0 = (tile / tilesW) * 4 - g.padTop, x0 = (tile % tilesW) * 4 - g.padLeft
            @inline(__always) func transform(_ ch: Int, _ d: (Int, Int) -> V) {
                let k0 = bt6(d(0, 0), d(1, 0), d(2, 0), d(3, 0), d(4, 0), d(5, 0))
                let k1 = bt6(d(0, 1), d(1, 1), d(2, 1), d(3, 1), d(4, 1), d(5, 1))
                let k2 = bt6(d(0, 2), d(1, 2), d(2, 2), d(3, 2), d(4, 2), d(5, 2))
                let k3 = bt6(d(0, 3), d(1, 3), d(2, 3), d(3, 3), d(4, 3), d(5, 3))
                let k4 = bt6(d(0, 4), d(1, 4), d(2, 4), d(3, 4), d(4, 4), d(5, 4))
                let k5 = bt6(d(0, 5), d(1, 5), d(2, 5), d(3, 5), d(4, 5), d(5, 5))
                let o = v + tile * c + ch
                @inline(__always) func row(_ i: Int, _ r: (V, V, V, V, V, V)) {
                    let p = o + 6 * i * plane
                    storeV(r.0, p); storeV(r.1, p + plane); storeV(r.2, p + 2 * plane)
                    storeV(r.3, p + 3 * plane); storeV(r.4, p + 4 * plane); storeV(r.5, p + 5 * plane)
                }
                row(0, bt6(k0.0, k1.0, k2.0, k3.0, k4.0, k5.0)); row(1, bt6(k0.1, k1.1, k2.1, k3.1, k4.1, k5.1))
                row(2, bt6(k0.2, k1.2, k2.2, k3.2, k4.2, k5.2)); row(3, bt6(k0.3, k1.3, k2.3, k3.3, k4.3, k5.3))
                row(4, bt6(k0.4, k1.4, k2.4, k3.4, k4.4, k5.4)); row(5, bt6(k0.5, k1.5, k2.5, k3.5, k4.5, k5.5))
            }
            eachPatchVector(g, x: x, y0: y0, x0: x0, size: 6, channels: r, transform)
        }
    }

    /// y = Aᵀ M A (+ bias, then ReLU) (`transformOutput` for F(4x4)). The columns' Aᵀ m go
    /// through a small buffer on the stack: holding their 24 vectors in registers, the compiler
    /// split them into 128-bit pieces and ran 2.2x slower.
    static func transformOutput4(_ g: Window, cout: Int, m: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                                 relu: Bool, tiles range: Range<Int>?, plane: Int, into y: UnsafeMutablePointer<Float>) {
        let tilesW = (g.outW + 3) / 4, t = tiles(g, .f4)
        var buffer = (V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V())
        withUnsafeMutableBytes(of: &buffer) { raw in
            let tb = raw.baseAddress!.assumingMemoryBound(to: Float.self)  // [4][6] vectors: row i of Aᵀ M
            for tile in range ?? 0..<t {
                let oy = (tile / tilesW) * 4, ox = (tile % tilesW) * 4
                let rows = min(4, g.outH - oy), cols = min(4, g.outW - ox)
                for ch in stride(from: 0, to: cout, by: 16) {
                    let p = m + tile * cout + ch
                    for j in 0..<6 {
                        let r = at6(loadV(p + j * plane), loadV(p + (6 + j) * plane), loadV(p + (12 + j) * plane),
                                    loadV(p + (18 + j) * plane), loadV(p + (24 + j) * plane), loadV(p + (30 + j) * plane))
                        storeV(r.0, tb + 16 * j); storeV(r.1, tb + 16 * (6 + j)); storeV(r.2, tb + 16 * (12 + j)); storeV(r.3, tb + 16 * (18 + j))
                    }
                    let bv = loadV(bias + ch)
                    for i in 0..<rows {
                        let q = tb + 96 * i
                        let r = at6(loadV(q), loadV(q + 16), loadV(q + 32), loadV(q + 48), loadV(q + 64), loadV(q + 80))
                        let o = y + ((oy + i) * g.outW + ox) * cout + ch
                        @inline(__always) func put(_ j: Int, _ v: V) {
                            let w = v + bv
                            storeV(relu ? w.replacing(with: 0, where: w .< 0) : w, o + j * cout)
                        }
                        put(0, r.0)
                        if cols > 1 { put(1, r.1) }
                        if cols > 2 { put(2, r.2) }
                        if cols > 3 { put(3, r.3) }
                    }
                }
            }
        }
    }

    /// dM = A dy Aᵀ (`transformOutputGradient` for F(4x4); dy past an edge is zero).
    static func transformOutputGradient4(_ g: Window, cout: Int, dy: UnsafePointer<Float>, plane: Int, into dm: UnsafeMutablePointer<Float>) {
        let tilesW = (g.outW + 3) / 4, t = tiles(g, .f4)
        for tile in 0..<t {
            let oy = (tile / tilesW) * 4, ox = (tile % tilesW) * 4
            let inside = oy + 4 <= g.outH && ox + 4 <= g.outW
            for ch in stride(from: 0, to: cout, by: 16) {
                @inline(__always) func d(_ i: Int, _ j: Int) -> V {
                    inside || (oy + i < g.outH && ox + j < g.outW) ? loadV(dy + ((oy + i) * g.outW + ox + j) * cout + ch) : V()
                }
                // Columns j of A dy (6 rows each), then row i of that times Aᵀ.
                let u0 = a6(d(0, 0), d(1, 0), d(2, 0), d(3, 0)), u1 = a6(d(0, 1), d(1, 1), d(2, 1), d(3, 1))
                let u2 = a6(d(0, 2), d(1, 2), d(2, 2), d(3, 2)), u3 = a6(d(0, 3), d(1, 3), d(2, 3), d(3, 3))
                let o = dm + tile * cout + ch
                @inline(__always) func row(_ i: Int, _ r: (V, V, V, V, V, V)) {
                    let p = o + 6 * i * plane
                    storeV(r.0, p); storeV(r.1, p + plane); storeV(r.2, p + 2 * plane)
                    storeV(r.3, p + 3 * plane); storeV(r.4, p + 4 * plane); storeV(r.5, p + 5 * plane)
                }
                row(0, a6(u0.0, u1.0, u2.0, u3.0)); row(1, a6(u0.1, u1.1, u2.1, u3.1)); row(2, a6(u0.2, u1.2, u2.2, u3.2))
                row(3, a6(u0.3, u1.3, u2.3, u3.3)); row(4, a6(u0.4, u1.4, u2.4, u3.4)); row(5, a6(u0.5, u1.5, u2.5, u3.5))
            }
        }
    }

    /// dx += Σ_tiles B dV Bᵀ, tile by tile in tile order, for `channels` of dx (cleared by
    /// `inputGradient`); pixels outside the image are dropped.
    static func inputGradient4(_ g: Window, dv: UnsafePointer<Float>, channels r: Range<Int>, plane: Int, into dx: UnsafeMutablePointer<Float>) {
        let c = g.channels, tilesW = (g.outW + 3) / 4, t = tiles(g, .f4)
        for tile in 0..<t {
            let y0 = (tile / tilesW) * 4 - g.padTop, x0 = (tile % tilesW) * 4 - g.padLeft
            let inside = y0 >= 0 && y0 + 6 <= g.inH && x0 >= 0 && x0 + 6 <= g.inW
            for ch in stride(from: r.lowerBound, to: r.upperBound, by: 16) {
                let p = dv + tile * c + ch
                @inline(__always) func vv(_ i: Int, _ j: Int) -> V { loadV(p + (6 * i + j) * plane) }
                let k0 = b6(vv(0, 0), vv(1, 0), vv(2, 0), vv(3, 0), vv(4, 0), vv(5, 0))
                let k1 = b6(vv(0, 1), vv(1, 1), vv(2, 1), vv(3, 1), vv(4, 1), vv(5, 1))
                let k2 = b6(vv(0, 2), vv(1, 2), vv(2, 2), vv(3, 2), vv(4, 2), vv(5, 2))
                let k3 = b6(vv(0, 3), vv(1, 3), vv(2, 3), vv(3, 3), vv(4, 3), vv(5, 3))
                let k4 = b6(vv(0, 4), vv(1, 4), vv(2, 4), vv(3, 4), vv(4, 4), vv(5, 4))
                let k5 = b6(vv(0, 5), vv(1, 5), vv(2, 5), vv(3, 5), vv(4, 5), vv(5, 5))
                @inline(__always) func row(_ i: Int, _ r: (V, V, V, V, V, V)) {
                    let yy = y0 + i
                    guard inside || (yy >= 0 && yy < g.inH) else { return }
                    @inline(__always) func add(_ j: Int, _ value: V) {
                        let xx = x0 + j
                        guard inside || (xx >= 0 && xx < g.inW) else { return }
                        let q = dx + (yy * g.inW + xx) * c + ch
                        storeV(loadV(q) + value, q)
                    }
                    add(0, r.0); add(1, r.1); add(2, r.2); add(3, r.3); add(4, r.4); add(5, r.5)
                }
                row(0, b6(k0.0, k1.0, k2.0, k3.0, k4.0, k5.0)); row(1, b6(k0.1, k1.1, k2.1, k3.1, k4.1, k5.1))
                row(2, b6(k0.2, k1.2, k2.2, k3.2, k4.2, k5.2)); row(3, b6(k0.3, k1.3, k2.3, k3.3, k4.3, k5.3))
                row(4, b6(k0.4, k1.4, k2.4, k3.4, k4.4, k5.4)); row(5, b6(k0.5, k1.5, k2.5, k3.5, k4.5, k5.5))
            }
        }
    }

    /// U = G g Gᵀ (`transformWeights` for F(4x4)): u is [36][cin][cout].
    static func transformWeights4(_ w: UnsafePointer<Float>, pairs: Int, range: Range<Int>, into u: UnsafeMutablePointer<Float>) {
        for q in stride(from: range.lowerBound, to: range.upperBound, by: 16) {
            @inline(__always) func wv(_ a: Int, _ b: Int) -> V { loadV(w + (a * 3 + b) * pairs + q) }
            // Columns b of G g (6 rows each), then row i of that times Gᵀ.
            let k0 = g6(wv(0, 0), wv(1, 0), wv(2, 0)), k1 = g6(wv(0, 1), wv(1, 1), wv(2, 1)), k2 = g6(wv(0, 2), wv(1, 2), wv(2, 2))
            @inline(__always) func row(_ i: Int, _ r: (V, V, V, V, V, V)) {
                let p = u + 6 * i * pairs + q
                storeV(r.0, p); storeV(r.1, p + pairs); storeV(r.2, p + 2 * pairs)
                storeV(r.3, p + 3 * pairs); storeV(r.4, p + 4 * pairs); storeV(r.5, p + 5 * pairs)
            }
            row(0, g6(k0.0, k1.0, k2.0)); row(1, g6(k0.1, k1.1, k2.1)); row(2, g6(k0.2, k1.2, k2.2))
            row(3, g6(k0.3, k1.3, k2.3)); row(4, g6(k0.4, k1.4, k2.4)); row(5, g6(k0.5, k1.5, k2.5))
        }
    }

    /// dg = Gᵀ dU G (`weightGradient` for F(4x4)): du is [36][cin][cout].
    static func weightGradient4(_ du: UnsafePointer<Float>, pairs: Int, range r: Range<Int>, into dw: UnsafeMutablePointer<Float>) {
        for q in stride(from: r.lowerBound, to: r.upperBound, by: 16) {
            @inline(__always) func dv(_ i: Int, _ j: Int) -> V { loadV(du + (6 * i + j) * pairs + q) }
            // Columns j of Gᵀ dU (3 rows each), then row a of that times G.
            let k0 = gt6(dv(0, 0), dv(1, 0), dv(2, 0), dv(3, 0), dv(4, 0), dv(5, 0))
            let k1 = gt6(dv(0, 1), dv(1, 1), dv(2, 1), dv(3, 1), dv(4, 1), dv(5, 1))
            let k2 = gt6(dv(0, 2), dv(1, 2), dv(2, 2), dv(3, 2), dv(4, 2), dv(5, 2))
            let k3 = gt6(dv(0, 3), dv(1, 3), dv(2, 3), dv(3, 3), dv(4, 3), dv(5, 3))
            let k4 = gt6(dv(0, 4), dv(1, 4), dv(2, 4), dv(3, 4), dv(4, 4), dv(5, 4))
            let k5 = gt6(dv(0, 5), dv(1, 5), dv(2, 5), dv(3, 5), dv(4, 5), dv(5, 5))
            @inline(__always) func row(_ a: Int, _ r: (V, V, V)) {
                storeV(r.0, dw + (a * 3) * pairs + q); storeV(r.1, dw + (a * 3 + 1) * pairs + q); storeV(r.2, dw + (a * 3 + 2) * pairs + q)
            }
            row(0, gt6(k0.0, k1.0, k2.0, k3.0, k4.0, k5.0)); row(1, gt6(k0.1, k1.1, k2.1, k3.1, k4.1, k5.1))
            row(2, gt6(k0.2, k1.2, k2.2, k3.2, k4.2, k5.2))
        }
    }
}
