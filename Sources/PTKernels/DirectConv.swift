// A 3x3 stride-1 convolution with few channels (a small ResNet's 16- and 32-channel stages),
// direct on channels-last data: each output pixel's 16 output channels are one vector, and every
// input value is broadcast against a row of the weights. Winograd's GEMMs (16 or 36 a sample) are
// [tiles x cin] x [cin x cout] there — too thin for the GEMM's register tile (K = 16 is two
// k-steps of a micro-kernel that wants hundreds) — and im2col would copy every value 9 times.
// Here the weights are read as stored ([3][3][cin][cout]), the input in place, and 16 (or 8)
// pixels of a row share each weight vector (independent sums for the FMA units). A tap that falls
// outside the image reads a row of zeros instead (`zeros`): the products of a zero-padded copy of
// the input, without making the copy, so the same bits.
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

    /// Floats of the zeros the kernels read where a tap falls outside the image (a block's reach:
    /// at most 15 pixels), for `channels` ≥ those of what they read (the input, or for the input
    /// gradient the output gradient).
    public static func zeroFloats(channels: Int) -> Int { 16 * channels }

    typealias V = SIMD16<Float>

    /// y[p][co] = ReLU?(Σ_taps Σ_ci x · w + bias) for output rows `rows`, x outside the image
    /// being 0; x is [height, width, cin], w is [3][3][cin][cout], y is [height, width, cout]; a
    /// nil bias adds 0; `zeros` holds `zeroFloats(channels: cin)` zeros. Also the input
    /// gradient's kernel: dx is this conv of dy with the weights flipped and transposed
    /// (`Window.flipTranspose`), no bias, no ReLU.
    public static func forward(height: Int, width: Int, cin: Int, cout: Int, x: UnsafePointer<Float>, zeros: UnsafePointer<Float>,
                               w: UnsafePointer<Float>, bias: UnsafePointer<Float>?, relu: Bool, rows: Range<Int>,
                               y: UnsafeMutablePointer<Float>) {
        // 16 input channels (the case this path is for) as a constant: the channel loop unrolls.
        if cin == 16 {
            forwardRows(height: height, width: width, cin: 16, cout: cout, x: x, zeros: zeros, w: w, bias: bias, relu: relu, rows: rows, y: y)
        } else {
            forwardRows(height: height, width: width, cin: cin, cout: cout, x: x, zeros: zeros, w: w, bias: bias, relu: relu, rows: rows, y: y)
        }
    }

    @inline(__always)
    static func forwardRows(height: Int, width: Int, cin: Int, cout: Int, x: UnsafePointer<Float>, zeros: UnsafePointer<Float>,
                            w: UnsafePointer<Float>, bias: UnsafePointer<Float>?, relu: Bool, rows: Range<Int>,
                            y: UnsafeMutablePointer<Float>) {
        @inline(__always) func finish(_ acc: V, _ b: V, _ p: UnsafeMutablePointer<Float>) { storeBiasReLU(acc, b, relu, p) }
        // A block of `n` pixels from column ow, at tap (kh, kw): pixel j reads column ow + j + kw − 1.
        // Its inner pixels (1 ..< n − 1) always lie in a row (ow + n ≤ width); the first and last,
        // and a whole row above or below the image, may not: those read zeros. Returns pixel 1's
        // input, and the first's and last's.
        @inline(__always) func taps(_ oh: Int, _ kh: Int, _ ow: Int, _ kw: Int, _ n: Int)
            -> (mid: UnsafePointer<Float>, first: UnsafePointer<Float>, last: UnsafePointer<Float>) {
            let ih = oh + kh - 1, c1 = ow + kw
            guard ih >= 0 && ih < height else { return (zeros + cin, zeros, zeros) }
            let mid = x + (ih * width + c1) * cin
            return (mid, c1 >= 1 ? mid - cin : zeros, c1 + n - 2 < width ? mid + (n - 2) * cin : zeros)
        }
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
                            let (t, first, last) = taps(oh, kh, ow, kw, 16)
                            let wt = w + (kh * 3 + kw) * cin * cout + co
                            for ci in 0..<cin {
                                let wv = loadV(wt + ci * cout), u = t + ci
                                a.0 = a.0.addingProduct(V(repeating: first[ci]), wv); a.1 = a.1.addingProduct(V(repeating: u[0]), wv)
                                a.2 = a.2.addingProduct(V(repeating: u[cin]), wv); a.3 = a.3.addingProduct(V(repeating: u[2 * cin]), wv)
                                a.4 = a.4.addingProduct(V(repeating: u[3 * cin]), wv); a.5 = a.5.addingProduct(V(repeating: u[4 * cin]), wv)
                                a.6 = a.6.addingProduct(V(repeating: u[5 * cin]), wv); a.7 = a.7.addingProduct(V(repeating: u[6 * cin]), wv)
                                a.8 = a.8.addingProduct(V(repeating: u[7 * cin]), wv); a.9 = a.9.addingProduct(V(repeating: u[8 * cin]), wv)
                                a.10 = a.10.addingProduct(V(repeating: u[9 * cin]), wv); a.11 = a.11.addingProduct(V(repeating: u[10 * cin]), wv)
                                a.12 = a.12.addingProduct(V(repeating: u[11 * cin]), wv); a.13 = a.13.addingProduct(V(repeating: u[12 * cin]), wv)
                                a.14 = a.14.addingProduct(V(repeating: u[13 * cin]), wv); a.15 = a.15.addingProduct(V(repeating: last[ci]), wv)
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
                            let (t, first, last) = taps(oh, kh, ow, kw, 8)
                            let wt = w + (kh * 3 + kw) * cin * cout + co
                            for ci in 0..<cin {
                                let wv = loadV(wt + ci * cout), u = t + ci
                                a0 = a0.addingProduct(V(repeating: first[ci]), wv); a1 = a1.addingProduct(V(repeating: u[0]), wv)
                                a2 = a2.addingProduct(V(repeating: u[cin]), wv); a3 = a3.addingProduct(V(repeating: u[2 * cin]), wv)
                                a4 = a4.addingProduct(V(repeating: u[3 * cin]), wv); a5 = a5.addingProduct(V(repeating: u[4 * cin]), wv)
                                a6 = a6.addingProduct(V(repeating: u[5 * cin]), wv); a7 = a7.addingProduct(V(repeating: last[ci]), wv)
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
                            let ih = oh + kh - 1, iw = ow + kw - 1
                            let t = ih >= 0 && ih < height && iw >= 0 && iw < width ? x + (ih * width + iw) * cin : zeros
                            let wt = w + (kh * 3 + kw) * cin * cout + co
                            for ci in 0..<cin { acc = acc.addingProduct(V(repeating: t[ci]), loadV(wt + ci * cout)) }
                        }
                    }
                    finish(acc, b, y + (oh * width + ow) * cout + co)
                    ow += 1
                }
            }
        }
    }

    typealias Sums = (V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V)

    /// dw[tap][ci][co] += Σ_p x(p + tap)[ci] · dy[p][co], positions in order, x outside the image
    /// being 0 (read from `zeros`, as `forward`); a running sum over a shard's samples when
    /// `accumulate`, else starting from 0.
    public static func weightGradient(height: Int, width: Int, cin: Int, cout: Int, x: UnsafePointer<Float>,
                                      zeros: UnsafePointer<Float>, dy: UnsafePointer<Float>, dw: UnsafeMutablePointer<Float>,
                                      accumulate: Bool) {
        // One position: 16 input channels' values at u, times the dy vector d.
        @inline(__always) func add(_ a: inout Sums, _ u: UnsafePointer<Float>, _ d: V) {
            a.0 = a.0.addingProduct(V(repeating: u[0]), d); a.1 = a.1.addingProduct(V(repeating: u[1]), d)
            a.2 = a.2.addingProduct(V(repeating: u[2]), d); a.3 = a.3.addingProduct(V(repeating: u[3]), d)
            a.4 = a.4.addingProduct(V(repeating: u[4]), d); a.5 = a.5.addingProduct(V(repeating: u[5]), d)
            a.6 = a.6.addingProduct(V(repeating: u[6]), d); a.7 = a.7.addingProduct(V(repeating: u[7]), d)
            a.8 = a.8.addingProduct(V(repeating: u[8]), d); a.9 = a.9.addingProduct(V(repeating: u[9]), d)
            a.10 = a.10.addingProduct(V(repeating: u[10]), d); a.11 = a.11.addingProduct(V(repeating: u[11]), d)
            a.12 = a.12.addingProduct(V(repeating: u[12]), d); a.13 = a.13.addingProduct(V(repeating: u[13]), d)
            a.14 = a.14.addingProduct(V(repeating: u[14]), d); a.15 = a.15.addingProduct(V(repeating: u[15]), d)
        }
        // For each tap and 16 output channels, 16 input channels' sums stay in registers over all
        // positions: one dy vector and 16 broadcasts a position.
        for tap in 0..<9 {
            let kh = tap / 3, kw = tap % 3
            for co in stride(from: 0, to: cout, by: 16) {
                for c0 in stride(from: 0, to: cin, by: 16) {
                    let out = dw + tap * cin * cout + c0 * cout + co
                    var a: Sums = (V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V())
                    if accumulate {
                        a = (loadV(out), loadV(out + cout), loadV(out + 2 * cout), loadV(out + 3 * cout),
                             loadV(out + 4 * cout), loadV(out + 5 * cout), loadV(out + 6 * cout), loadV(out + 7 * cout),
                             loadV(out + 8 * cout), loadV(out + 9 * cout), loadV(out + 10 * cout), loadV(out + 11 * cout),
                             loadV(out + 12 * cout), loadV(out + 13 * cout), loadV(out + 14 * cout), loadV(out + 15 * cout))
                    }
                    let zero = zeros + c0
                    for oh in 0..<height {
                        let ih = oh + kh - 1, drow = dy + oh * width * cout + co
                        guard ih >= 0 && ih < height else {
                            for ow in 0..<width { add(&a, zero, loadV(drow + ow * cout)) }
                            continue
                        }
                        // Position ow reads column ow + kw − 1: the first is outside for kw = 0, the last for kw = 2.
                        let xrow = x + ih * width * cin + c0
                        var ow = 0
                        if kw == 0 { add(&a, zero, loadV(drow)); ow = 1 }
                        let end = kw == 2 ? width - 1 : width
                        while ow < end { add(&a, xrow + (ow + kw - 1) * cin, loadV(drow + ow * cout)); ow += 1 }
                        if kw == 2 && width > 0 { add(&a, zero, loadV(drow + (width - 1) * cout)) }
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
