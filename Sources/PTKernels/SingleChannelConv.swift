// A 3x3 convolution with one input channel (the first layer of an MNIST-like network), direct:
// each output pixel is its 9 input values (broadcast) times rows of the weights, 16 output
// channels to a vector. im2col would make rows of 9 floats (shorter than a vector) and a GEMM with
// K = 9, which spends more on stores and packing than on FMAs.
// The sums run exactly as im2col + GEMM run them: from 0, taps in (kh, kw) order with padding as
// zeros, then + bias, then ReLU; the weight gradient continues each element's sum position by
// position. So this path gives the same bits as the general one (tested).

public enum SingleChannelConv {
    /// Whether a convolution takes this path: one input channel, 3x3, output channels in whole vectors.
    public static func applies(_ g: Window, cout: Int) -> Bool { g.channels == 1 && g.kernel == 3 && cout % 16 == 0 }

    /// Floats of the zero-padded input `pad` writes.
    public static func paddedFloats(_ g: Window) -> Int { paddedRows(g) * paddedCols(g) }
    static func paddedRows(_ g: Window) -> Int { (g.outH - 1) * g.stride + 3 }
    static func paddedCols(_ g: Window) -> Int { (g.outW - 1) * g.stride + 3 }

    /// The input with its padding as zeros, so every tap of every output pixel is in bounds.
    public static func pad(_ g: Window, x: UnsafePointer<Float>, into xp: UnsafeMutablePointer<Float>) {
        let rows = paddedRows(g), cols = paddedCols(g)
        for r in 0..<rows {
            let ih = r - g.padTop
            for c in 0..<cols {
                let iw = c - g.padLeft
                xp[r * cols + c] = ih >= 0 && ih < g.inH && iw >= 0 && iw < g.inW ? x[ih * g.inW + iw] : 0
            }
        }
    }

    typealias V = SIMD16<Float>

    /// y[p][co] = ReLU?(Σ_taps xp · w + bias); w is [3][3][1][cout], y is [outH, outW, cout].
    /// Eight pixels of a row at a time share each weight load and give the FMA units eight
    /// independent sums (one pixel's 9 taps are a chain of dependent FMAs).
    /// `rows` (default all): only those output rows; `yFirstRow`: the output row `y` points at.
    public static func forward(_ g: Window, cout: Int, xp: UnsafePointer<Float>, w: UnsafePointer<Float>,
                               bias: UnsafePointer<Float>, relu: Bool, rows: Range<Int>? = nil, y: UnsafeMutablePointer<Float>,
                               yFirstRow: Int = 0) {
        let cols = paddedCols(g), s = g.stride
        let zero = V()
        @inline(__always) func finish(_ acc: V, _ b: V, _ p: UnsafeMutablePointer<Float>) {
            var v = acc + b
            if relu { v.replace(with: zero, where: v .< zero) }
            storeV(v, p)
        }
        for oh in rows ?? 0..<g.outH {
            let row = xp + oh * s * cols
            for co in stride(from: 0, to: cout, by: 16) {
                let b = loadV(bias + co)
                var ow = 0
                while ow < g.outW && g.outW >= 8 {
                    // The last block of a row ends at the row's end and may redo a few pixels of the
                    // one before it: each pixel's sums are the same wherever it is computed.
                    ow = min(ow, g.outW - 8)
                    var a0 = V(), a1 = V(), a2 = V(), a3 = V(), a4 = V(), a5 = V(), a6 = V(), a7 = V()
                    for kh in 0..<3 {
                        for kw in 0..<3 {
                            let wv = loadV(w + (kh * 3 + kw) * cout + co)
                            let t = row + kh * cols + ow * s + kw
                            a0 = a0.addingProduct(V(repeating: t[0]), wv); a1 = a1.addingProduct(V(repeating: t[s]), wv)
                            a2 = a2.addingProduct(V(repeating: t[2 * s]), wv); a3 = a3.addingProduct(V(repeating: t[3 * s]), wv)
                            a4 = a4.addingProduct(V(repeating: t[4 * s]), wv); a5 = a5.addingProduct(V(repeating: t[5 * s]), wv)
                            a6 = a6.addingProduct(V(repeating: t[6 * s]), wv); a7 = a7.addingProduct(V(repeating: t[7 * s]), wv)
                        }
                    }
                    let out = y + ((oh - yFirstRow) * g.outW + ow) * cout + co
                    finish(a0, b, out); finish(a1, b, out + cout); finish(a2, b, out + 2 * cout); finish(a3, b, out + 3 * cout)
                    finish(a4, b, out + 4 * cout); finish(a5, b, out + 5 * cout); finish(a6, b, out + 6 * cout); finish(a7, b, out + 7 * cout)
                    ow += 8
                }
                // Rows narrower than a block: a pixel at a time.
                while ow < g.outW {
                    var acc = V()
                    for kh in 0..<3 {
                        for kw in 0..<3 {
                            acc = acc.addingProduct(V(repeating: row[kh * cols + ow * s + kw]), loadV(w + (kh * 3 + kw) * cout + co))
                        }
                    }
                    finish(acc, b, y + ((oh - yFirstRow) * g.outW + ow) * cout + co)
                    ow += 1
                }
            }
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
        let cols = paddedCols(g), s = g.stride
        for co in stride(from: 0, to: cout, by: 16) {
            // The 9 taps' sums (and the bias's) for these 16 channels stay in registers over the positions.
            var a0 = loadV(dw + 0 * cout + co), a1 = loadV(dw + 1 * cout + co), a2 = loadV(dw + 2 * cout + co)
            var a3 = loadV(dw + 3 * cout + co), a4 = loadV(dw + 4 * cout + co), a5 = loadV(dw + 5 * cout + co)
            var a6 = loadV(dw + 6 * cout + co), a7 = loadV(dw + 7 * cout + co), a8 = loadV(dw + 8 * cout + co)
            var ab = db.map { loadV($0 + co) } ?? V()
            for oh in rows ?? 0..<g.outH {
                for ow in 0..<g.outW {
                    let b = xp + oh * s * cols + ow * s
                    let d = loadV(dy + ((oh - dyFirstRow) * g.outW + ow) * cout + co)
                    ab += d
                    a0 = a0.addingProduct(V(repeating: b[0]), d)
                    a1 = a1.addingProduct(V(repeating: b[1]), d)
                    a2 = a2.addingProduct(V(repeating: b[2]), d)
                    a3 = a3.addingProduct(V(repeating: b[cols]), d)
                    a4 = a4.addingProduct(V(repeating: b[cols + 1]), d)
                    a5 = a5.addingProduct(V(repeating: b[cols + 2]), d)
                    a6 = a6.addingProduct(V(repeating: b[2 * cols]), d)
                    a7 = a7.addingProduct(V(repeating: b[2 * cols + 1]), d)
                    a8 = a8.addingProduct(V(repeating: b[2 * cols + 2]), d)
                }
            }
            storeV(a0, dw + 0 * cout + co); storeV(a1, dw + 1 * cout + co); storeV(a2, dw + 2 * cout + co)
            storeV(a3, dw + 3 * cout + co); storeV(a4, dw + 4 * cout + co); storeV(a5, dw + 5 * cout + co)
            storeV(a6, dw + 6 * cout + co); storeV(a7, dw + 7 * cout + co); storeV(a8, dw + 8 * cout + co)
            if let db { storeV(ab, db + co) }
        }
    }
}
