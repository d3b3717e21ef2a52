// Winograd F(m x m, 3x3) for a 3x3 stride-1 convolution of one NHWC sample (Lavin & Gray, 2015):
// each m x m block of outputs (a "tile") is Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A, d being the (m+2) x (m+2)
// input patch under it. F(2x2, 3x3) does 16 multiply-adds per tile and channel pair where a
// direct conv does 36; F(4x4, 3x3) does 36 where a direct conv does 144 (`Tile`). Across channels
// the ⊙ is (m+2)² independent GEMMs, one per position ξ of the transformed tile:
//   M_ξ[tile, cout] = V_ξ[tile, cin] · U_ξ[cin, cout].
// These are the transforms around those GEMMs, and their transposes for the backward pass:
//   forward   V = Bᵀ d B (input), U = G g Gᵀ (weights), y = Aᵀ M A (+ bias, ReLU)
//   backward  dM = A dy Aᵀ, then (GEMMs) dU_ξ = V_ξᵀ dM_ξ and dV_ξ = dM_ξ U_ξᵀ, then
//             dx = Σ_tiles B dV Bᵀ and dg = Gᵀ dU G
// Layouts: V and M are (m+2)² row-major [tiles, channels] matrices, one per ξ, `matrixStride`
// apart; U is [(m+2)²][cin][cout], weights are ptrain's [3][3][cin][cout]. Channels are SIMD16
// lanes, so both channel counts are whole vectors (`applies`). Every sum has one fixed order.
// F(2x2)'s transforms are here; F(4x4)'s in Winograd4.swift.

public enum Winograd {
    /// The output tile: F(2x2, 3x3) (4x4 input tiles, transforms of 0 and ±1 only, exact but for
    /// the adds), or F(4x4, 3x3) (6x6 input tiles: 0.56x F(2x2)'s multiply-adds and 0.56x its
    /// transformed data per output pixel, with transform coefficients up to 8 and weight
    /// coefficients of 1/6 and 1/24, so a few more roundings).
    public enum Tile: Sendable, Equatable {
        case f2, f4
        /// Output pixels on a tile's side.
        public var m: Int { self == .f2 ? 2 : 4 }
        /// Positions ξ of a transformed tile: the GEMMs a sample's pass runs.
        public var positions: Int { (m + 2) * (m + 2) }
    }

    /// Whether a convolution takes this path: 3x3, stride 1, channels in whole vectors.
    public static func applies(_ g: Window, cout: Int) -> Bool {
        g.kernel == 3 && g.stride == 1 && g.channels % 16 == 0 && cout % 16 == 0 && g.outH > 0 && g.outW > 0
    }

    /// F(4x4) where the output is whole 4x4 tiles, at least 4 of them (an 8x8 output and up);
    /// F(2x2) elsewhere (no overhanging tiles' wasted work, and a 4x4 output's one tile).
    public static func tile(for g: Window) -> Tile {
        g.outH % 4 == 0 && g.outW % 4 == 0 && (g.outH / 4) * (g.outW / 4) >= 4 ? .f4 : .f2
    }

    /// Samples whose tiles one GEMM takes together, so that it has 16 rows or more: F(4x4) on an
    /// 8x8 output has 4 tiles a sample, and GEMMs of 4 rows ran its register tiles half empty
    /// (measured 1.6x F(2x2)'s time a sample; 4 samples together, 0.62x). Which samples share a
    /// GEMM changes no bit: its rows are independent, and dU's sums run over the samples' tiles in
    /// sample order either way (one chain of FMAs per element, `Gemm`).
    public static func group(for g: Window, _ tile: Tile) -> Int { (16 + tiles(g, tile) - 1) / tiles(g, tile) }

    /// Output tiles of a sample (edge tiles may hang over the output; those pixels are dropped).
    public static func tiles(_ g: Window, _ tile: Tile) -> Int {
        ((g.outH + tile.m - 1) / tile.m) * ((g.outW + tile.m - 1) / tile.m)
    }

    /// Floats from one of V's (or M's) matrices to the next, for `channels` columns and `group`
    /// samples' tiles (one after another): the matrix and one cache line more. A tile writes (or
    /// reads) one row in each; with matrices a multiple of 4 KB long (64 tiles x 32 channels,
    /// 16 x 64) those rows fell in one L1 set and evicted each other.
    public static func matrixStride(_ g: Window, channels: Int, _ tile: Tile, group: Int = 1) -> Int {
        tiles(g, tile) * group * channels + 16
    }

    typealias V = SIMD16<Float>

    // The four 1-D transforms (applied to columns, then to rows).
    @inline(__always) static func bt(_ d0: V, _ d1: V, _ d2: V, _ d3: V) -> (V, V, V, V) { (d0 - d2, d1 + d2, d2 - d1, d1 - d3) }
    @inline(__always) static func b(_ v0: V, _ v1: V, _ v2: V, _ v3: V) -> (V, V, V, V) { (v0, v1 - v2 + v3, v1 + v2 - v0, -v3) }
    @inline(__always) static func at(_ m0: V, _ m1: V, _ m2: V, _ m3: V) -> (V, V) { (m0 + m1 + m2, m1 - m2 - m3) }
    @inline(__always) static func a(_ y0: V, _ y1: V) -> (V, V, V, V) { (y0, y0 + y1, y0 - y1, -y1) }

    /// V = Bᵀ d B for every tile. Input pixels outside the image (padding, or under the overhang
    /// of an edge tile) read as zero. `channels` (whole vectors) and `tiles` (default all) limit
    /// it to those columns and rows of V: a part of a sample's work (each is its own transform).
    /// With `group`, V's matrices hold that many samples' tiles and `v` is this sample's first row
    /// (as for `transformOutput`, `transformOutputGradient` and `inputGradient`).
    public static func transformInput(_ g: Window, _ tile: Tile, x: UnsafePointer<Float>, channels: Range<Int>? = nil,
                                      tiles range: Range<Int>? = nil, group: Int = 1, into v: UnsafeMutablePointer<Float>) {
        let plane = matrixStride(g, channels: g.channels, tile, group: group)
        if tile == .f4 { return transformInput4(g, x: x, channels: channels, tiles: range, plane: plane, into: v) }
        let c = g.channels, tilesW = (g.outW + 1) / 2, t = tiles(g, .f2)
        let r = channels ?? 0..<c
        for tile in range ?? 0..<t {
            let y0 = (tile / tilesW) * 2 - g.padTop, x0 = (tile % tilesW) * 2 - g.padLeft
            // Columns j: (Bᵀ d)[0...3][j]; then each row i of that, times B.
            @inline(__always) func transform(_ ch: Int, _ d: (Int, Int) -> V) {
                let k0 = bt(d(0, 0), d(1, 0), d(2, 0), d(3, 0)), k1 = bt(d(0, 1), d(1, 1), d(2, 1), d(3, 1))
                let k2 = bt(d(0, 2), d(1, 2), d(2, 2), d(3, 2)), k3 = bt(d(0, 3), d(1, 3), d(2, 3), d(3, 3))
                let o = v + tile * c + ch
                @inline(__always) func row(_ i: Int, _ r: (V, V, V, V)) {
                    storeV(r.0, o + (4 * i) * plane); storeV(r.1, o + (4 * i + 1) * plane)
                    storeV(r.2, o + (4 * i + 2) * plane); storeV(r.3, o + (4 * i + 3) * plane)
                }
                row(0, bt(k0.0, k1.0, k2.0, k3.0)); row(1, bt(k0.1, k1.1, k2.1, k3.1))
                row(2, bt(k0.2, k1.2, k2.2, k3.2)); row(3, bt(k0.3, k1.3, k2.3, k3.3))
            }
            eachPatchVector(g, x: x, y0: y0, x0: x0, size: 4, channels: r, transform)
        }
    }

    /// `transform(ch, d)` for each vector of `channels`, d(i, j) reading pixel (i, j) of the
    /// `size` x `size` input patch at (y0, x0), zero outside the image. A tile inside the image
    /// loads its patch unchecked: checking each pixel cost branch mispredictions where interior
    /// and edge tiles alternate.
    @inline(__always)
    static func eachPatchVector(_ g: Window, x: UnsafePointer<Float>, y0: Int, x0: Int, size: Int, channels r: Range<Int>,
                                _ transform: (Int, (Int, Int) -> V) -> Void) {
        let c = g.channels
        if y0 >= 0 && y0 + size <= g.inH && x0 >= 0 && x0 + size <= g.inW {
            let corner = x + (y0 * g.inW + x0) * c, rowFloats = g.inW * c
            for ch in stride(from: r.lowerBound, to: r.upperBound, by: 16) {
                let base = corner + ch
                transform(ch) { i, j -> V in loadV(base + i * rowFloats + j * c) }
            }
        } else {
            for ch in stride(from: r.lowerBound, to: r.upperBound, by: 16) {
                transform(ch) { i, j -> V in
                    let yy = y0 + i, xx = x0 + j
                    guard yy >= 0, yy < g.inH, xx >= 0, xx < g.inW else { return V() }
                    return loadV(x + (yy * g.inW + xx) * c + ch)
                }
            }
        }
    }

    /// y = Aᵀ M A (+ bias, then ReLU) for every tile; y is [outH, outW, cout]. `tiles` (default
    /// all): only those tiles' outputs.
    public static func transformOutput(_ g: Window, _ tile: Tile, cout: Int, m: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                                       relu: Bool, tiles range: Range<Int>? = nil, group: Int = 1, into y: UnsafeMutablePointer<Float>) {
        let plane = matrixStride(g, channels: cout, tile, group: group)
        if tile == .f4 { return transformOutput4(g, cout: cout, m: m, bias: bias, relu: relu, tiles: range, plane: plane, into: y) }
        let tilesW = (g.outW + 1) / 2, t = tiles(g, .f2)
        let zero = V()
        for tile in range ?? 0..<t {
            let oy = (tile / tilesW) * 2, ox = (tile % tilesW) * 2
            for ch in stride(from: 0, to: cout, by: 16) {
                let p = m + tile * cout + ch
                @inline(__always) func mm(_ i: Int, _ j: Int) -> V { loadV(p + (4 * i + j) * plane) }
                let s0 = at(mm(0, 0), mm(1, 0), mm(2, 0), mm(3, 0)), s1 = at(mm(0, 1), mm(1, 1), mm(2, 1), mm(3, 1))
                let s2 = at(mm(0, 2), mm(1, 2), mm(2, 2), mm(3, 2)), s3 = at(mm(0, 3), mm(1, 3), mm(2, 3), mm(3, 3))
                let r0 = at(s0.0, s1.0, s2.0, s3.0), r1 = at(s0.1, s1.1, s2.1, s3.1)
                let bv = loadV(bias + ch)
                @inline(__always) func put(_ i: Int, _ j: Int, _ value: V) {
                    guard oy + i < g.outH, ox + j < g.outW else { return }
                    var out = value + bv
                    if relu { out.replace(with: zero, where: out .< zero) }
                    storeV(out, y + ((oy + i) * g.outW + ox + j) * cout + ch)
                }
                put(0, 0, r0.0); put(0, 1, r0.1); put(1, 0, r1.0); put(1, 1, r1.1)
            }
        }
    }

    /// dM = A dy Aᵀ for every tile (the transpose of `transformOutput`; dy past an edge is zero).
    public static func transformOutputGradient(_ g: Window, _ tile: Tile, cout: Int, dy: UnsafePointer<Float>,
                                               group: Int = 1, into dm: UnsafeMutablePointer<Float>) {
        let plane = matrixStride(g, channels: cout, tile, group: group)
        if tile == .f4 { return transformOutputGradient4(g, cout: cout, dy: dy, plane: plane, into: dm) }
        let tilesW = (g.outW + 1) / 2, t = tiles(g, .f2)
        for tile in 0..<t {
            let oy = (tile / tilesW) * 2, ox = (tile % tilesW) * 2
            for ch in stride(from: 0, to: cout, by: 16) {
                @inline(__always) func d(_ i: Int, _ j: Int) -> V {
                    oy + i < g.outH && ox + j < g.outW ? loadV(dy + ((oy + i) * g.outW + ox + j) * cout + ch) : V()
                }
                let u0 = a(d(0, 0), d(1, 0)), u1 = a(d(0, 1), d(1, 1))  // columns j of A dy
                let o = dm + tile * cout + ch
                @inline(__always) func row(_ i: Int, _ r: (V, V, V, V)) {
                    storeV(r.0, o + (4 * i) * plane); storeV(r.1, o + (4 * i + 1) * plane)
                    storeV(r.2, o + (4 * i + 2) * plane); storeV(r.3, o + (4 * i + 3) * plane)
                }
                row(0, a(u0.0, u1.0)); row(1, a(u0.1, u1.1)); row(2, a(u0.2, u1.2)); row(3, a(u0.3, u1.3))
            }
        }
    }

    /// dx = Σ_tiles B dV Bᵀ (the transpose of `transformInput`), added tile by tile in tile order
    /// into dx, which is cleared first; pixels outside the image are dropped. `channels` (whole
    /// vectors; default all): only those channels of dx.
    public static func inputGradient(_ g: Window, _ tile: Tile, dv: UnsafePointer<Float>, channels: Range<Int>? = nil,
                                     group: Int = 1, into dx: UnsafeMutablePointer<Float>) {
        let c = g.channels
        let r = channels ?? 0..<c
        if r.count == c {
            dx.update(repeating: 0, count: g.inputSize)
        } else {
            for pixel in 0..<(g.inH * g.inW) { (dx + pixel * c + r.lowerBound).update(repeating: 0, count: r.count) }
        }
        let plane = matrixStride(g, channels: c, tile, group: group)
        if tile == .f4 { return inputGradient4(g, dv: dv, channels: r, plane: plane, into: dx) }
        let tilesW = (g.outW + 1) / 2, t = tiles(g, .f2)
        for tile in 0..<t {
            let y0 = (tile / tilesW) * 2 - g.padTop, x0 = (tile % tilesW) * 2 - g.padLeft
            for ch in stride(from: r.lowerBound, to: r.upperBound, by: 16) {
                let p = dv + tile * c + ch
                @inline(__always) func vv(_ i: Int, _ j: Int) -> V { loadV(p + (4 * i + j) * plane) }
                let k0 = b(vv(0, 0), vv(1, 0), vv(2, 0), vv(3, 0)), k1 = b(vv(0, 1), vv(1, 1), vv(2, 1), vv(3, 1))
                let k2 = b(vv(0, 2), vv(1, 2), vv(2, 2), vv(3, 2)), k3 = b(vv(0, 3), vv(1, 3), vv(2, 3), vv(3, 3))
                @inline(__always) func row(_ i: Int, _ r: (V, V, V, V)) {
                    let yy = y0 + i
                    guard yy >= 0 && yy < g.inH else { return }
                    @inline(__always) func add(_ j: Int, _ value: V) {
                        let xx = x0 + j
                        guard xx >= 0 && xx < g.inW else { return }
                        let q = dx + (yy * g.inW + xx) * c + ch
                        storeV(loadV(q) + value, q)
                    }
                    add(0, r.0); add(1, r.1); add(2, r.2); add(3, r.3)
                }
                row(0, b(k0.0, k1.0, k2.0, k3.0)); row(1, b(k0.1, k1.1, k2.1, k3.1))
                row(2, b(k0.2, k1.2, k2.2, k3.2)); row(3, b(k0.3, k1.3, k2.3, k3.3))
            }
        }
    }

    /// U = G g Gᵀ for the (cin, cout) pairs in `range` (whole vectors): u is [ξ][cin][cout] (16 or 36 ξ) and w
    /// is [3][3][cin][cout], `pairs` = cin·cout.
    public static func transformWeights(_ tile: Tile, _ w: UnsafePointer<Float>, pairs: Int, range: Range<Int>,
                                        into u: UnsafeMutablePointer<Float>) {
        if tile == .f4 { return transformWeights4(w, pairs: pairs, range: range, into: u) }
        let half = V(repeating: 0.5)
        @inline(__always) func gm(_ g0: V, _ g1: V, _ g2: V) -> (V, V, V, V) { (g0, (g0 + g1 + g2) * half, (g0 - g1 + g2) * half, g2) }
        for q in stride(from: range.lowerBound, to: range.upperBound, by: 16) {
            @inline(__always) func wv(_ a: Int, _ b: Int) -> V { loadV(w + (a * 3 + b) * pairs + q) }
            // Columns b of G g (4 rows each), then row i of that times Gᵀ.
            let k0 = gm(wv(0, 0), wv(1, 0), wv(2, 0)), k1 = gm(wv(0, 1), wv(1, 1), wv(2, 1)), k2 = gm(wv(0, 2), wv(1, 2), wv(2, 2))
            @inline(__always) func row(_ i: Int, _ r: (V, V, V, V)) {
                storeV(r.0, u + (4 * i) * pairs + q); storeV(r.1, u + (4 * i + 1) * pairs + q)
                storeV(r.2, u + (4 * i + 2) * pairs + q); storeV(r.3, u + (4 * i + 3) * pairs + q)
            }
            row(0, gm(k0.0, k1.0, k2.0)); row(1, gm(k0.1, k1.1, k2.1)); row(2, gm(k0.2, k1.2, k2.2)); row(3, gm(k0.3, k1.3, k2.3))
        }
    }

    /// dg = Gᵀ dU G (the transpose of `transformWeights`): dw is [3][3][cin][cout], du is
    /// [ξ][cin][cout] (16 or 36 ξ); for the (cin, cout) pairs in `range` (whole vectors; default all).
    public static func weightGradient(_ tile: Tile, _ du: UnsafePointer<Float>, pairs: Int, range: Range<Int>? = nil,
                                      into dw: UnsafeMutablePointer<Float>) {
        if tile == .f4 { return weightGradient4(du, pairs: pairs, range: range ?? 0..<pairs, into: dw) }
        let half = V(repeating: 0.5)
        @inline(__always) func gt(_ u0: V, _ u1: V, _ u2: V, _ u3: V) -> (V, V, V) {
            (u0 + u1 * half + u2 * half, u1 * half - u2 * half, u1 * half + u2 * half + u3)
        }
        let r = range ?? 0..<pairs
        for q in stride(from: r.lowerBound, to: r.upperBound, by: 16) {
            @inline(__always) func dv(_ i: Int, _ j: Int) -> V { loadV(du + (4 * i + j) * pairs + q) }
            // Columns j of Gᵀ dU (3 rows each), then row a of that times G.
            let k0 = gt(dv(0, 0), dv(1, 0), dv(2, 0), dv(3, 0)), k1 = gt(dv(0, 1), dv(1, 1), dv(2, 1), dv(3, 1))
            let k2 = gt(dv(0, 2), dv(1, 2), dv(2, 2), dv(3, 2)), k3 = gt(dv(0, 3), dv(1, 3), dv(2, 3), dv(3, 3))
            @inline(__always) func row(_ a: Int, _ r: (V, V, V)) {
                storeV(r.0, dw + (a * 3) * pairs + q); storeV(r.1, dw + (a * 3 + 1) * pairs + q); storeV(r.2, dw + (a * 3 + 2) * pairs + q)
            }
            row(0, gt(k0.0, k1.0, k2.0, k3.0)); row(1, gt(k0.1, k1.1, k2.1, k3.1)); row(2, gt(k0.2, k1.2, k2.2, k3.2))
        }
    }
}
