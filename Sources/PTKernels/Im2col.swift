// One sample, NHWC. x is [H, W, C]; col is [Ho*Wo, K*K*C] with columns ordered (kh, kw, c),
// which matches a conv weight stored as [K*K*C, Cout]. Padding cells read as zero.

/// Geometry of a square-kernel 2-D window (convolution or pooling) over an NHWC image.
public struct Window: Equatable, Sendable {
    public var inH, inW, channels: Int
    public var kernel, stride: Int
    public var padTop, padLeft: Int
    public var outH, outW: Int

    /// TensorFlow's SAME (out = ceil(in / stride), extra padding at the bottom/right) or VALID.
    public init(inH: Int, inW: Int, channels: Int, kernel: Int, stride: Int, same: Bool) {
        self.inH = inH; self.inW = inW; self.channels = channels
        self.kernel = kernel; self.stride = stride
        if same {
            outH = (inH + stride - 1) / stride
            outW = (inW + stride - 1) / stride
            padTop = max((outH - 1) * stride + kernel - inH, 0) / 2
            padLeft = max((outW - 1) * stride + kernel - inW, 0) / 2
        } else {
            outH = inH >= kernel ? (inH - kernel) / stride + 1 : 0
            outW = inW >= kernel ? (inW - kernel) / stride + 1 : 0
            padTop = 0; padLeft = 0
        }
    }
    public var patch: Int { kernel * kernel * channels }
    public var positions: Int { outH * outW }
    public var inputSize: Int { inH * inW * channels }
}

public enum Im2col {
    /// An inline copy: a memmove call per kernel row costs more than the copy when there are few
    /// channels (conv1 has one). Whole kernel rows are copied at once where no padding is involved.
    @inline(__always) static func copyChannels(from src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<Float>, count c: Int) {
        var ch = 0
        while ch + 16 <= c { storeV(loadV(src + ch), dst + ch); ch += 16 }
        while ch < c { dst[ch] = src[ch]; ch += 1 }
    }

    /// Floats that `forward` may read past the end of `x` and write past the end of the patches
    /// (buffers passed to it are allocated with this much slack).
    public static let slack = 16

    public static func forward(_ g: Window, x: UnsafePointer<Float>, col: UnsafeMutablePointer<Float>) {
        // A kernel row shorter than a vector (conv1: 3 floats) is copied as one 16-float vector, in
        // increasing address order, so the part past the row is overwritten by the rows after it
        // and the last one spills into `slack`; a copy loop for 3 floats costs more than that.
        let c = g.channels, rowFloats = g.kernel * c  // one kernel row of a patch: k pixels of c channels, contiguous in NHWC
        let short = rowFloats < 16
        var dst = col
        eachKernelRow(g,
                      outside: { for i in 0..<rowFloats { dst[i] = 0 } },
                      whole: { at in if short { storeV(loadV(x + at), dst) } else { copyChannels(from: x + at, to: dst, count: rowFloats) } },
                      pixel: { kw, at in
                          if let at { copyChannels(from: x + at, to: dst + kw * c, count: c) } else { for ch in 0..<c { dst[kw * c + ch] = 0 } }
                      },
                      rowDone: { dst += rowFloats }, positionDone: {})
    }

    /// The walk both im2cols make over a sample: each output position's kernel rows in order, a
    /// row being outside the image (`outside`), inside it whole (`whole`, its first element's
    /// offset in the sample), or at the left or right edge pixel by pixel (`pixel`: kw and the
    /// pixel's offset, nil where it is padding); `rowDone` after each row, `positionDone` after
    /// each position's rows.
    @inline(__always)
    static func eachKernelRow(_ g: Window, outside: () -> Void, whole: (Int) -> Void, pixel: (Int, Int?) -> Void,
                              rowDone: () -> Void, positionDone: () -> Void) {
        let c = g.channels, k = g.kernel
        for oh in 0..<g.outH {
            for ow in 0..<g.outW {
                let iw0 = ow * g.stride - g.padLeft
                let inside = iw0 >= 0 && iw0 + k <= g.inW
                for kh in 0..<k {
                    let ih = oh * g.stride - g.padTop + kh
                    if ih < 0 || ih >= g.inH {
                        outside()
                    } else if inside {
                        whole((ih * g.inW + iw0) * c)
                    } else {
                        for kw in 0..<k {
                            let iw = iw0 + kw
                            pixel(kw, iw >= 0 && iw < g.inW ? (ih * g.inW + iw) * c : nil)
                        }
                    }
                    rowDone()
                }
                positionDone()
            }
        }
    }

    /// Floats of scratch `forwardBF16` uses: the sample in bf16, then its patches as bf16 rows.
    public static func bf16Floats(_ g: Window) -> Int {
        (g.inputSize + 63) / 64 * 32 + GemmBF16.rowsFloats(rows: g.positions, k: g.patch)
    }

    /// im2col into bf16 rows of GemmBF16.paddedK(patch), GemmBF16.multiply(aBF16:)'s A: the
    /// sample is rounded once at the front of `scratch` (a ninth of the patches' values for a 3x3
    /// conv), then the patches are copied from it. Returns the patches and their row stride.
    public static func forwardBF16(_ g: Window, x: UnsafePointer<Float>, scratch: UnsafeMutablePointer<Float>) -> (UnsafePointer<UInt16>, Int) {
        let raw = UnsafeMutableRawPointer(scratch)
        let xh = raw.assumingMemoryBound(to: UInt16.self)
        let col = (raw + (g.inputSize + 63) / 64 * 128).assumingMemoryBound(to: UInt16.self)
        GemmBF16.packRows(x, ld: g.inputSize, k: g.inputSize, rows: 0..<1, into: xh)
        let c = g.channels, lda = GemmBF16.paddedK(g.patch), rowValues = g.kernel * c
        var dst = col
        eachKernelRow(g,
                      outside: { dst.update(repeating: 0, count: rowValues) },
                      whole: { at in dst.update(from: xh + at, count: rowValues) },
                      pixel: { kw, at in
                          if let at { (dst + kw * c).update(from: xh + at, count: c) } else { (dst + kw * c).update(repeating: 0, count: c) }
                      },
                      rowDone: { dst += rowValues },
                      positionDone: {
                          // The k padding meets B's zeros: it must be finite, so zeros.
                          dst.update(repeating: 0, count: lda - g.patch)
                          dst += lda - g.patch
                      })
        return (UnsafePointer(col), lda)
    }

    /// dx = col2im(dcol): every patch entry is added back to the pixel it came from, in
    /// position order, so each dx element has one fixed summation order.
    public static func backward(_ g: Window, dcol: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>) {
        let c = g.channels
        dx.update(repeating: 0, count: g.inputSize)
        var src = dcol
        for oh in 0..<g.outH {
            for ow in 0..<g.outW {
                for kh in 0..<g.kernel {
                    let ih = oh * g.stride - g.padTop + kh
                    for kw in 0..<g.kernel {
                        let iw = ow * g.stride - g.padLeft + kw
                        if ih >= 0 && ih < g.inH && iw >= 0 && iw < g.inW {
                            let d = dx + (ih * g.inW + iw) * c
                            for ch in 0..<c { d[ch] += src[ch] }
                        }
                        src += c
                    }
                }
            }
        }
    }
}
