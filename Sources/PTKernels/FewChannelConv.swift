// A first layer's 3x3 convolution of an image with 1 to 4 channels (MNIST's grey, RGB), direct:
// each output pixel is its 9 x C input values (broadcast) times rows of the weights, 16 output
// channels to a vector. im2col would make rows of 9 x C floats (shorter than a vector or two) and
// a GEMM with K = 9 x C, which spends more on stores and packing than on FMAs.
// The sums run exactly as im2col + GEMM run them: from 0, taps in (kh, kw, c) order with padding
// as zeros, then + bias, then ReLU; the weight gradient continues each element's sum position by
// position. So this path gives the same bits as the general one (tested).

public enum FewChannelConv {
    /// The most input channels this path takes.
    public static let maxChannels = 4

    /// Whether a convolution takes this path: 1 to 4 input channels, 3x3, output channels in whole vectors.
    public static func applies(_ g: Window, cout: Int) -> Bool {
        g.channels >= 1 && g.channels <= maxChannels && g.kernel == 3 && cout % 16 == 0
    }

    /// Floats of the zero-padded input `pad` writes.
    public static func paddedFloats(_ g: Window) -> Int { paddedRows(g) * paddedCols(g) * g.channels }
    static func paddedRows(_ g: Window) -> Int { (g.outH - 1) * g.stride + 3 }
    static func paddedCols(_ g: Window) -> Int { (g.outW - 1) * g.stride + 3 }

    /// The input with its padding as zeros, so every tap of every output pixel is in bounds.
    public static func pad(_ g: Window, x: UnsafePointer<Float>, into xp: UnsafeMutablePointer<Float>) {
        let rows = paddedRows(g), c = g.channels, rowFloats = paddedCols(g) * c
        // A padded row: zeros, the image row's pixels (as many as fit), zeros.
        let left = min(g.padLeft, paddedCols(g)) * c, inside = max(0, min(g.inW * c, rowFloats - left))
        for r in 0..<rows {
            let ih = r - g.padTop, out = xp + r * rowFloats
            if ih < 0 || ih >= g.inH {
                for i in 0..<rowFloats { out[i] = 0 }
                continue
            }
            let src = x + ih * g.inW * c
            for i in 0..<left { out[i] = 0 }
            for i in 0..<inside { out[left + i] = src[i] }
            for i in (left + inside)..<rowFloats { out[i] = 0 }
        }
    }

    typealias V = SIMD16<Float>

    /// The output channels a kernel holds per sum: one vector, or two (`VectorPair`). (SIMD32
    /// compiles to code that spills every lane to the stack.)
    protocol Channels16 {
        static var count: Int { get }
        init()
        init(_ p: UnsafePointer<Float>)
        init(_ p: UnsafeMutablePointer<Float>)
        func store(_ p: UnsafeMutablePointer<Float>)
        /// self + x · w, each lane one FMA.
        func fma(_ x: Float, _ w: Self) -> Self
        static func + (a: Self, b: Self) -> Self
        /// self + b, through the ReLU when asked.
        func plusBias(_ b: Self, relu: Bool) -> Self
    }
    struct VectorPair: Channels16 {
        var lo = V(), hi = V()
        static var count: Int { 32 }
        init() {}
        @inline(__always) init(_ p: UnsafePointer<Float>) { lo = V(p); hi = V(p + 16) }
        @inline(__always) init(_ p: UnsafeMutablePointer<Float>) { self.init(UnsafePointer(p)) }
        @inline(__always) func store(_ p: UnsafeMutablePointer<Float>) { lo.store(p); hi.store(p + 16) }
        @inline(__always) func fma(_ x: Float, _ w: Self) -> Self {
            var r = self
            let b = V(repeating: x)
            r.lo = lo.addingProduct(b, w.lo); r.hi = hi.addingProduct(b, w.hi)
            return r
        }
        @inline(__always) static func + (a: Self, b: Self) -> Self { var r = a; r.lo += b.lo; r.hi += b.hi; return r }
        @inline(__always) func plusBias(_ b: Self, relu: Bool) -> Self {
            var r = self
            r.lo = lo.plusBias(b.lo, relu: relu); r.hi = hi.plusBias(b.hi, relu: relu)
            return r
        }
    }

    /// y[p][co] = ReLU?(Σ_taps xp · w + bias); w is [3][3][C][cout], y is [outH, outW, cout].
    /// Eight pixels of a row at a time share each weight load and give the FMA units eight
    /// independent sums per vector (one pixel's 9 x C taps are a chain of dependent FMAs); 32
    /// channels at a time (two vectors) where they fit, so each broadcast input feeds two FMAs
    /// and 16 sums cover the FMA latency.
    /// `rows` (default all): only those output rows; `yFirstRow`: the output row `y` points at.
    public static func forward(_ g: Window, cout: Int, xp: UnsafePointer<Float>, w: UnsafePointer<Float>,
                               bias: UnsafePointer<Float>, relu: Bool, rows: Range<Int>? = nil, y: UnsafeMutablePointer<Float>,
                               yFirstRow: Int = 0) {
        // The channel count as a type, so each count gets its own code with constant tap loops
        // (a run-time count cost one channel 7% in the forward and 30% in the weight gradient).
        switch g.channels {
        case 1: forward(One.self, g, cout, xp, w, bias, relu, rows ?? 0..<g.outH, y, yFirstRow)
        case 2: forward(Two.self, g, cout, xp, w, bias, relu, rows ?? 0..<g.outH, y, yFirstRow)
        case 3: forward(Three.self, g, cout, xp, w, bias, relu, rows ?? 0..<g.outH, y, yFirstRow)
        default: forward(Four.self, g, cout, xp, w, bias, relu, rows ?? 0..<g.outH, y, yFirstRow)
        }
    }

    protocol Channels { static var count: Int { get } }
    enum One: Channels { static var count: Int { 1 } }
    enum Two: Channels { static var count: Int { 2 } }
    enum Three: Channels { static var count: Int { 3 } }
    enum Four: Channels { static var count: Int { 4 } }

    static func forward<C: Channels>(_: C.Type, _ g: Window, _ cout: Int, _ xp: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                                     _ bias: UnsafePointer<Float>, _ relu: Bool, _ rows: Range<Int>, _ y: UnsafeMutablePointer<Float>,
                                     _ yFirstRow: Int) {
        let c = C.count, rowFloats = paddedCols(g) &* c
        for oh in rows {
            let row = xp + oh &* g.stride &* rowFloats, out = y + (oh &- yFirstRow) &* g.outW &* cout
            var co = 0
            while co &+ 32 <= cout {
                forwardRow(C.self, VectorPair.self, g, cout, co, row, w, bias, relu, out)
                co &+= 32
            }
            if co < cout { forwardRow(C.self, V.self, g, cout, co, row, w, bias, relu, out) }
        }
    }

    /// One output row's channels [co, co + W.count). Index arithmetic wraps (`&*`): the
    /// sizes are checked where the window is made, and overflow checks were a third of
    /// the tap loop's instructions.
    @inline(__always)
    static func forwardRow<C: Channels, W: Channels16>(_: C.Type, _: W.Type, _ g: Window, _ cout: Int, _ co: Int,
                                                 _ row: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                                                 _ bias: UnsafePointer<Float>, _ relu: Bool,
                                                 _ out: UnsafeMutablePointer<Float>) {
        let c = C.count, rowFloats = paddedCols(g) &* c, step = g.stride &* c
        @inline(__always) func load(_ p: UnsafePointer<Float>) -> W { W(p) }
        @inline(__always) func finish(_ acc: W, _ b: W, _ p: UnsafeMutablePointer<Float>) { acc.plusBias(b, relu: relu).store(p) }
        let b = load(bias + co)
        var ow = 0
        while ow < g.outW && g.outW >= 8 {
            // The last block of a row ends at the row's end and may redo a few pixels of the
            // one before it: each pixel's sums are the same wherever it is computed.
            ow = min(ow, g.outW &- 8)
            var a0 = W(), a1 = W(), a2 = W(), a3 = W(), a4 = W(), a5 = W(), a6 = W(), a7 = W()
            let first = row + ow &* step
            for kh in 0..<3 {
                for kw in 0..<3 {
                    for ch in 0..<c {
                        let tap: Int = (kh &* 3 &+ kw) &* c &+ ch, at: Int = kh &* rowFloats &+ kw &* c &+ ch
                        let wv = load(w + (tap &* cout &+ co))
                        let t = first + at
                        a0 = a0.fma(t[0], wv); a1 = a1.fma(t[step], wv)
                        a2 = a2.fma(t[2 &* step], wv); a3 = a3.fma(t[3 &* step], wv)
                        a4 = a4.fma(t[4 &* step], wv); a5 = a5.fma(t[5 &* step], wv)
                        a6 = a6.fma(t[6 &* step], wv); a7 = a7.fma(t[7 &* step], wv)
                    }
                }
            }
            let o = out + (ow &* cout &+ co)
            finish(a0, b, o); finish(a1, b, o + cout); finish(a2, b, o + 2 &* cout); finish(a3, b, o + 3 &* cout)
            finish(a4, b, o + 4 &* cout); finish(a5, b, o + 5 &* cout); finish(a6, b, o + 6 &* cout); finish(a7, b, o + 7 &* cout)
            ow &+= 8
        }
        // Rows narrower than a block: a pixel at a time.
        while ow < g.outW {
            var acc = W()
            let first = row + ow &* step
            for kh in 0..<3 {
                for kw in 0..<3 {
                    for ch in 0..<c {
                        let tap: Int = (kh &* 3 &+ kw) &* c &+ ch, at: Int = kh &* rowFloats &+ kw &* c &+ ch
                        acc = acc.fma(first[at], load(w + (tap &* cout &+ co)))
                    }
                }
            }
            finish(acc, b, out + (ow &* cout &+ co))
            ow &+= 1
        }
    }

    /// Whether a max-pool after the conv can run inside it (`forwardPooled`): one that keeps
    /// byte codes (`MaxPoolCodes`: 2x2 windows with stride 2 tiling the conv's output).
    public static func poolFuses(_ g: Window, pool p: Window) -> Bool {
        MaxPoolCodes.apply(p) && p.inH == g.outH && p.inW == g.outW
    }

    /// The conv, then the 2x2 max-pool after it (`poolFuses`), a pair of output rows at a time:
    /// the pair is written to `pair` (2 rows of the conv's output: it stays in L1) and pooled from
    /// there, so the conv's whole output never goes out to L2 and back. The same sums and the
    /// same pool as `forward` then `MaxPoolCodes.forward`: the same bits. `pooledRows` (default
    /// all): only those rows of the pool.
    public static func forwardPooled(_ g: Window, cout: Int, xp: UnsafePointer<Float>, w: UnsafePointer<Float>,
                                     bias: UnsafePointer<Float>, relu: Bool, pool p: Window, pooledRows: Range<Int>? = nil,
                                     pair: UnsafeMutablePointer<Float>, y: UnsafeMutablePointer<Float>,
                                     codes: UnsafeMutablePointer<UInt8>) {
        for ph in pooledRows ?? 0..<p.outH {
            forward(g, cout: cout, xp: xp, w: w, bias: bias, relu: relu, rows: 2 * ph..<2 * ph + 2, y: pair, yFirstRow: 2 * ph)
            MaxPoolCodes.forward(p, x: pair, y: y, codes: codes, reluMasked: relu, rows: ph..<ph + 1, xFirstRow: 2 * ph)
        }
    }

    /// The backward of `forwardPooled`: a pair of the conv's output rows at a time, the pool's
    /// gradient (the ReLU's mask is in the codes) goes into `pair` and the weight and bias
    /// gradients' sums go on over it. The positions are summed in the same order as
    /// `weightGradient` sums the whole output's gradient: the same bits.
    public static func weightGradientPooled(_ g: Window, cout: Int, xp: UnsafePointer<Float>, pool p: Window,
                                            dy: UnsafePointer<Float>, codes: UnsafePointer<UInt8>,
                                            pair: UnsafeMutablePointer<Float>,
                                            dw: UnsafeMutablePointer<Float>, db: UnsafeMutablePointer<Float>?) {
        for ph in 0..<p.outH {
            MaxPoolCodes.backward(p, dy: dy, codes: codes, dx: pair, rows: ph..<ph + 1, dxFirstRow: 2 * ph)
            weightGradient(g, cout: cout, xp: xp, dy: pair, dw: dw, db: db, rows: 2 * ph..<2 * ph + 2, dyFirstRow: 2 * ph)
        }
    }

    /// dw[tap][co] += Σ_p xp(p, tap) · dy[p][co], positions in order (dw's running sums go on),
    /// and with `db` the bias gradient's: db[co] += Σ_p dy[p][co]. `rows` (default all): only
    /// those output rows; `dyFirstRow`: the output row `dy` points at.
    public static func weightGradient(_ g: Window, cout: Int, xp: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                                      dw: UnsafeMutablePointer<Float>, db: UnsafeMutablePointer<Float>? = nil,
                                      rows: Range<Int>? = nil, dyFirstRow: Int = 0) {
        let rows = rows ?? 0..<g.outH
        switch g.channels {
        case 1: weightGradient(One.self, g, cout, xp, dy, dw, db, rows, dyFirstRow)
        case 2: weightGradient(Two.self, g, cout, xp, dy, dw, db, rows, dyFirstRow)
        case 3: weightGradient(Three.self, g, cout, xp, dy, dw, db, rows, dyFirstRow)
        default: weightGradient(Four.self, g, cout, xp, dy, dw, db, rows, dyFirstRow)
        }
    }

    static func weightGradient<C: Channels>(_: C.Type, _ g: Window, _ cout: Int, _ xp: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                                            _ dw: UnsafeMutablePointer<Float>, _ db: UnsafeMutablePointer<Float>?,
                                            _ rows: Range<Int>, _ dyFirstRow: Int) {
        // One input channel's 9 taps at a time (9 x C sums would not fit in registers): each
        // weight's sum still runs over the positions in order. 32 output channels at a time
        // where they fit: each broadcast input feeds two FMAs.
        for ch in 0..<C.count {
            var co = 0
            while co &+ 32 <= cout {
                weightGradient(C.self, VectorPair.self, g, cout, co, ch, xp, dy, dw, db, rows, dyFirstRow)
                co &+= 32
            }
            if co < cout { weightGradient(C.self, V.self, g, cout, co, ch, xp, dy, dw, db, rows, dyFirstRow) }
        }
    }

    /// Input channel `ch`'s 9 taps (and with `db` and `ch` 0 the bias) for channels [co, co +
    /// W.count): the sums stay in registers over the positions.
    @inline(__always)
    static func weightGradient<C: Channels, W: Channels16>(_: C.Type, _: W.Type, _ g: Window, _ cout: Int, _ co: Int, _ ch: Int,
                                                     _ xp: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                                                     _ dw: UnsafeMutablePointer<Float>, _ db: UnsafeMutablePointer<Float>?,
                                                     _ rows: Range<Int>, _ dyFirstRow: Int) {
        let c = C.count, r = paddedCols(g) &* c, s = g.stride &* c
        @inline(__always) func at(_ tap: Int) -> UnsafeMutablePointer<Float> { dw + ((tap &* c &+ ch) &* cout &+ co) }
        var a0 = W(at(0)), a1 = W(at(1)), a2 = W(at(2)), a3 = W(at(3)), a4 = W(at(4))
        var a5 = W(at(5)), a6 = W(at(6)), a7 = W(at(7)), a8 = W(at(8))
        let bias = ch == 0 ? db : nil
        var ab = bias.map { W($0 + co) } ?? W()
        for oh in rows {
            var x = xp + (oh &* g.stride &* r &+ ch)
            var d = dy + ((oh &- dyFirstRow) &* g.outW &* cout &+ co)
            for _ in 0..<g.outW {
                let v = W(d)
                ab = ab + v
                a0 = a0.fma(x[0], v)
                a1 = a1.fma(x[c], v)
                a2 = a2.fma(x[2 &* c], v)
                a3 = a3.fma(x[r], v)
                a4 = a4.fma(x[r &+ c], v)
                a5 = a5.fma(x[r &+ 2 &* c], v)
                a6 = a6.fma(x[2 &* r], v)
                a7 = a7.fma(x[2 &* r &+ c], v)
                a8 = a8.fma(x[2 &* r &+ 2 &* c], v)
                x += s; d += cout
            }
        }
        a0.store(at(0)); a1.store(at(1)); a2.store(at(2)); a3.store(at(3)); a4.store(at(4))
        a5.store(at(5)); a6.store(at(6)); a7.store(at(7)); a8.store(at(8))
        if let bias { ab.store(bias + co) }
    }
}

/// (Also the bias and ReLU of every direct conv kernel's store: `storeBiasReLU`.)
extension SIMD16: FewChannelConv.Channels16 where Scalar == Float {
    static var count: Int { 16 }
    @inline(__always) init(_ p: UnsafePointer<Float>) { self = loadV(p) }
    @inline(__always) init(_ p: UnsafeMutablePointer<Float>) { self = loadV(p) }
    @inline(__always) func store(_ p: UnsafeMutablePointer<Float>) { storeV(self, p) }
    @inline(__always) func fma(_ x: Float, _ w: Self) -> Self { addingProduct(Self(repeating: x), w) }
    @inline(__always) func plusBias(_ b: Self, relu: Bool) -> Self {
        var v = self + b
        if relu { v.replace(with: Self(), where: v .< Self()) }
        return v
    }
}
