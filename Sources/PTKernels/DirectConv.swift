// A 3x3 stride-1 convolution with few channels (a small ResNet's 16- and 32-channel stages),
// direct on channels-last data: each output pixel's 16 output channels are one vector, and every
// input value is broadcast against a row of the weights. Winograd's 16 GEMMs a sample are
// [tiles x cin] x [cin x cout] there — too thin for the GEMM's register tile (K = 16 is two
// k-steps of a micro-kernel that wants hundreds) — and im2col would copy every value 9 times.
// Here the weights are read as stored ([3][3][cin][cout]), the input from a zero-padded copy, and
// 16 (or 8) pixels of a row share each weight vector (independent sums for the FMA units).
// Sums run in a fixed order — taps in (kh, kw) order, input channels within a tap, then + bias,
// then ReLU — so the bits depend on the data alone. (In bf16 these convs take `ImplicitConv`.)

public enum DirectConv {
    /// Whether a convolution takes this path: 3x3, stride 1, SAME, input and output channels in
    /// whole vectors, at most `maxChannels` of each (above that the GEMM paths' tiles fill and win).
    public static func applies(_ g: Window, cout: Int) -> Bool {
        g.kernel == 3 && g.stride == 1 && g.outH == g.inH && g.outW == g.inW
            && g.channels % 16 == 0 && cout % 16 == 0 && g.channels <= maxChannels && cout <= maxChannels
    }
    public static let maxChannels = 16

    /// Floats of a zero-padded `height` x `width` x `channels` image (one pixel of border).
    public static func paddedFloats(height: Int, width: Int, channels: Int) -> Int { (height + 2) * (width + 2) * channels }

    /// `x` ([height, width, channels]) with a one-pixel border of zeros, into `xp`.
    public static func pad(_ x: UnsafePointer<Float>, height: Int, width: Int, channels: Int, into xp: UnsafeMutablePointer<Float>) {
        let cols = width + 2, row = width * channels
        xp.update(repeating: 0, count: cols * channels)
        for h in 0..<height {
            let out = xp + (h + 1) * cols * channels
            out.update(repeating: 0, count: channels)
            out.advanced(by: channels).update(from: x + h * row, count: row)
            out.advanced(by: channels + row).update(repeating: 0, count: channels)
        }
        (xp + (height + 1) * cols * channels).update(repeating: 0, count: cols * channels)
    }

    typealias V = SIMD16<Float>

    /// y[p][co] = ReLU?(Σ_taps Σ_ci xp · w + bias) for output rows `rows`; `xp` is the padded
    /// input (`pad`), w is [3][3][cin][cout], y is [height, width, cout]; a nil bias adds 0. Also
    /// the input gradient's kernel: dx is this conv of the padded dy with the weights flipped and
    /// transposed (`Window.flipTranspose`), no bias, no ReLU.
    public static func forward(height: Int, width: Int, cin: Int, cout: Int, xp: UnsafePointer<Float>, w: UnsafePointer<Float>,
                               bias: UnsafePointer<Float>?, relu: Bool, rows: Range<Int>, y: UnsafeMutablePointer<Float>) {
        // 16 input channels (the case this path is for) as a constant: the channel loop unrolls.
        if cin == 16 {
            forwardRows(height: height, width: width, cin: 16, cout: cout, xp: xp, w: w, bias: bias, relu: relu, rows: rows, y: y)
        } else {
            forwardRows(height: height, width: width, cin: cin, cout: cout, xp: xp, w: w, bias: bias, relu: relu, rows: rows, y: y)
        }
    }

    @inline(__always)
    static func forwardRows(height: Int, width: Int, cin: Int, cout: Int, xp: UnsafePointer<Float>, w: UnsafePointer<Float>,
                            bias: UnsafePointer<Float>?, relu: Bool, rows: Range<Int>, y: UnsafeMutablePointer<Float>) {
        let cols = width + 2
        @inline(__always) func finish(_ acc: V, _ b: V, _ p: UnsafeMutablePointer<Float>) { storeBiasReLU(acc, b, relu, p) }
        for oh in rows {
            for co in stride(from: 0, to: cout, by: 16) {
                let b = bias.map { loadV($0 + co) } ?? V()
                var ow = 0
                // 16 pixels at a time where the row has them: 16 independent sums keep both FMA
                // units busy through the FMA's latency (8 left no slack).
                while ow + 16 <= width {
                    var a = (V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V())
                    for kh in 0..<3 {
                        for kw in 0..<3 {
                            let t = xp + ((oh + kh) * cols + ow + kw) * cin
                            let wt = w + (kh * 3 + kw) * cin * cout + co
                            for ci in 0..<cin {
                                let wv = loadV(wt + ci * cout), u = t + ci
                                a.0 = a.0.addingProduct(V(repeating: u[0]), wv); a.1 = a.1.addingProduct(V(repeating: u[cin]), wv)
                                a.2 = a.2.addingProduct(V(repeating: u[2 * cin]), wv); a.3 = a.3.addingProduct(V(repeating: u[3 * cin]), wv)
                                a.4 = a.4.addingProduct(V(repeating: u[4 * cin]), wv); a.5 = a.5.addingProduct(V(repeating: u[5 * cin]), wv)
                                a.6 = a.6.addingProduct(V(repeating: u[6 * cin]), wv); a.7 = a.7.addingProduct(V(repeating: u[7 * cin]), wv)
                                a.8 = a.8.addingProduct(V(repeating: u[8 * cin]), wv); a.9 = a.9.addingProduct(V(repeating: u[9 * cin]), wv)
                                a.10 = a.10.addingProduct(V(repeating: u[10 * cin]), wv); a.11 = a.11.addingProduct(V(repeating: u[11 * cin]), wv)
                                a.12 = a.12.addingProduct(V(repeating: u[12 * cin]), wv); a.13 = a.13.addingProduct(V(repeating: u[13 * cin]), wv)
                                a.14 = a.14.addingProduct(V(repeating: u[14 * cin]), wv); a.15 = a.15.addingProduct(V(repeating: u[15 * cin]), wv)
                            }
                        }
                    }
                    let out = y + (oh * width + ow) * cout + co
                    finish(a.0, b, out); finish(a.1, b, out + cout); finish(a.2, b, out + 2 * cout); finish(a.3, b, out + 3 * cout)
                    finish(a.4, b, out + 4 * cout); finish(a.5, b, out + 5 * cout); finish(a.6, b, out + 6 * cout); finish(a.7, b, out + 7 * cout)
                    finish(a.8, b, out + 8 * cout); finish(a.9, b, out + 9 * cout); finish(a.10, b, out + 10 * cout)
                    finish(a.11, b, out + 11 * cout); finish(a.12, b, out + 12 * cout); finish(a.13, b, out + 13 * cout)
                    finish(a.14, b, out + 14 * cout); finish(a.15, b, out + 15 * cout)
                    ow += 16
                }
                while ow < width && width >= 8 {
                    // The last block of a row ends at the row's end and may redo a few pixels of the
                    // one before it: each pixel's sums are the same wherever it is computed.
                    ow = min(ow, width - 8)
                    var a0 = V(), a1 = V(), a2 = V(), a3 = V(), a4 = V(), a5 = V(), a6 = V(), a7 = V()
                    for kh in 0..<3 {
                        for kw in 0..<3 {
                            let t = xp + ((oh + kh) * cols + ow + kw) * cin
                            let wt = w + (kh * 3 + kw) * cin * cout + co
                            for ci in 0..<cin {
                                let wv = loadV(wt + ci * cout), u = t + ci
                                a0 = a0.addingProduct(V(repeating: u[0]), wv); a1 = a1.addingProduct(V(repeating: u[cin]), wv)
                                a2 = a2.addingProduct(V(repeating: u[2 * cin]), wv); a3 = a3.addingProduct(V(repeating: u[3 * cin]), wv)
                                a4 = a4.addingProduct(V(repeating: u[4 * cin]), wv); a5 = a5.addingProduct(V(repeating: u[5 * cin]), wv)
                                a6 = a6.addingProduct(V(repeating: u[6 * cin]), wv); a7 = a7.addingProduct(V(repeating: u[7 * cin]), wv)
                            }
                        }
                    }
                    let out = y + (oh * width + ow) * cout + co
                    finish(a0, b, out); finish(a1, b, out + cout); finish(a2, b, out + 2 * cout); finish(a3, b, out + 3 * cout)
                    finish(a4, b, out + 4 * cout); finish(a5, b, out + 5 * cout); finish(a6, b, out + 6 * cout); finish(a7, b, out + 7 * cout)
                    ow += 8
                }
                // Rows narrower than a block: a pixel at a time, in the same order.
                while ow < width {
                    var acc = V()
                    for kh in 0..<3 {
                        for kw in 0..<3 {
                            let t = xp + ((oh + kh) * cols + ow + kw) * cin, wt = w + (kh * 3 + kw) * cin * cout + co
                            for ci in 0..<cin { acc = acc.addingProduct(V(repeating: t[ci]), loadV(wt + ci * cout)) }
                        }
                    }
                    finish(acc, b, y + (oh * width + ow) * cout + co)
                    ow += 1
                }
            }
        }
    }

    /// dw[tap][ci][co] += Σ_p xp(p + tap)[ci] · dy[p][co], positions in order (a running sum over a
    /// shard's samples when `accumulate`, else starting from 0).
    public static func weightGradient(height: Int, width: Int, cin: Int, cout: Int, xp: UnsafePointer<Float>,
                                      dy: UnsafePointer<Float>, dw: UnsafeMutablePointer<Float>,
                                      accumulate: Bool) {
        let cols = width + 2
        // For each tap and 16 output channels, 16 input channels' sums stay in registers over all
        // positions: one dy vector and 16 broadcasts a position.
        for tap in 0..<9 {
            let kh = tap / 3, kw = tap % 3
            for co in stride(from: 0, to: cout, by: 16) {
                for c0 in stride(from: 0, to: cin, by: 16) {
                    let out = dw + tap * cin * cout + c0 * cout + co
                    var a = (V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V())
                    if accumulate {
                        a = (loadV(out), loadV(out + cout), loadV(out + 2 * cout), loadV(out + 3 * cout),
                             loadV(out + 4 * cout), loadV(out + 5 * cout), loadV(out + 6 * cout), loadV(out + 7 * cout),
                             loadV(out + 8 * cout), loadV(out + 9 * cout), loadV(out + 10 * cout), loadV(out + 11 * cout),
                             loadV(out + 12 * cout), loadV(out + 13 * cout), loadV(out + 14 * cout), loadV(out + 15 * cout))
                    }
                    for oh in 0..<height {
                        let xrow = xp + ((oh + kh) * cols + kw) * cin + c0, drow = dy + oh * width * cout + co
                        for ow in 0..<width {
                            let d = loadV(drow + ow * cout), u = xrow + ow * cin
                            a.0 = a.0.addingProduct(V(repeating: u[0]), d); a.1 = a.1.addingProduct(V(repeating: u[1]), d)
                            a.2 = a.2.addingProduct(V(repeating: u[2]), d); a.3 = a.3.addingProduct(V(repeating: u[3]), d)
                            a.4 = a.4.addingProduct(V(repeating: u[4]), d); a.5 = a.5.addingProduct(V(repeating: u[5]), d)
                            a.6 = a.6.addingProduct(V(repeating: u[6]), d); a.7 = a.7.addingProduct(V(repeating: u[7]), d)
                            a.8 = a.8.addingProduct(V(repeating: u[8]), d); a.9 = a.9.addingProduct(V(repeating: u[9]), d)
                            a.10 = a.10.addingProduct(V(repeating: u[10]), d); a.11 = a.11.addingProduct(V(repeating: u[11]), d)
                            a.12 = a.12.addingProduct(V(repeating: u[12]), d); a.13 = a.13.addingProduct(V(repeating: u[13]), d)
                            a.14 = a.14.addingProduct(V(repeating: u[14]), d); a.15 = a.15.addingProduct(V(repeating: u[15]), d)
                        }
                    }
                    storeV(a.0, out); storeV(a.1, out + cout); storeV(a.2, out + 2 * cout); storeV(a.3, out + 3 * cout)
                    storeV(a.4, out + 4 * cout); storeV(a.5, out + 5 * cout); storeV(a.6, out + 6 * cout); storeV(a.7, out + 7 * cout)
                    storeV(a.8, out + 8 * cout); storeV(a.9, out + 9 * cout); storeV(a.10, out + 10 * cout); storeV(a.11, out + 11 * cout)
                    storeV(a.12, out + 12 * cout); storeV(a.13, out + 13 * cout); storeV(a.14, out + 14 * cout); storeV(a.15, out + 15 * cout)
                }
            }
        }
    }
}
