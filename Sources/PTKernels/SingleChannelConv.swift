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
    /// `rows` (default all): only those output rows.
    public static func forward(_ g: Window, cout: Int, xp: UnsafePointer<Float>, w: UnsafePointer<Float>,
                               bias: UnsafePointer<Float>, relu: Bool, rows: Range<Int>? = nil, y: UnsafeMutablePointer<Float>) {
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
                    let out = y + (oh * g.outW + ow) * cout + co
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
                    finish(acc, b, y + (oh * g.outW + ow) * cout + co)
                    ow += 1
                }
            }
        }
    }

    /// dw[tap][co] += Σ_p xp(p, tap) · dy[p][co], positions in order (dw's running sums go on).
    public static func weightGradient(_ g: Window, cout: Int, xp: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                                      dw: UnsafeMutablePointer<Float>) {
        let cols = paddedCols(g), s = g.stride
        for co in stride(from: 0, to: cout, by: 16) {
            // The 9 taps' sums for these 16 channels stay in registers over all positions.
            var a0 = loadV(dw + 0 * cout + co), a1 = loadV(dw + 1 * cout + co), a2 = loadV(dw + 2 * cout + co)
            var a3 = loadV(dw + 3 * cout + co), a4 = loadV(dw + 4 * cout + co), a5 = loadV(dw + 5 * cout + co)
            var a6 = loadV(dw + 6 * cout + co), a7 = loadV(dw + 7 * cout + co), a8 = loadV(dw + 8 * cout + co)
            for oh in 0..<g.outH {
                for ow in 0..<g.outW {
                    let b = xp + oh * s * cols + ow * s
                    let d = loadV(dy + (oh * g.outW + ow) * cout + co)
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
        }
    }
}
