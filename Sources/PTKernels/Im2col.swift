import CBF16

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

    /// wt[kh][kw][co][ci] = w[K-1-kh][K-1-kw][ci][co] (w as stored, [K][K][channels][cout]): the
    /// weights of the stride-1 conv that maps this conv's output gradient to its input gradient.
    public func flipTranspose(_ w: UnsafePointer<Float>, cout: Int, into wt: UnsafeMutablePointer<Float>) {
        let taps = kernel * kernel, cin = channels
        for tap in 0..<taps {
            let src = w + (taps - 1 - tap) * cin * cout, dst = wt + tap * cout * cin
            for ci in 0..<cin { for co in 0..<cout { dst[co * cin + ci] = src[ci * cout + co] } }
        }
    }
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
                      whole: { at in copy(xh + at, to: dst, count: rowValues) },
                      pixel: { kw, at in
                          if let at { copy(xh + at, to: dst + kw * c, count: c) } else { (dst + kw * c).update(repeating: 0, count: c) }
                      },
                      rowDone: { dst += rowValues },
                      positionDone: {
                          // The k padding meets B's zeros: it must be finite, so zeros.
                          dst.update(repeating: 0, count: lda - g.patch)
                          dst += lda - g.patch
                      })
        return (UnsafePointer(col), lda)
    }

    /// Floats of scratch `transposedBF16` uses: the sample's channel planes in bf16, their shifted
    /// copies, then the transposed patches.
    public static func transposedBF16Floats(_ g: Window) -> Int {
        planesBytes(g) / 4 + (g.channels * g.kernel * shiftedStride(g) + 1) / 2 + (g.patch * GemmBF16.paddedK(g.positions) + 16 + 1) / 2
    }
    /// The channel planes' bytes, to a whole cache line: the planes and the zeros around each.
    static func planesBytes(_ g: Window) -> Int { (2 * (planeGap(g) + g.channels * (g.inH * g.inW + planeGap(g))) + 63) / 64 * 64 }
    /// Zeros before the first plane and after each: the shifted copies read up to padLeft values
    /// before a row and a vector and a kernel's width past it.
    static func planeGap(_ g: Window) -> Int { 16 + g.kernel }
    /// A shifted plane's bf16 values: outW columns per input row, and a vector of slack.
    static func shiftedStride(_ g: Window) -> Int { g.inH * g.outW + 32 }

    /// The patches transposed, in bf16: row (kh, kw, c) holds that tap's input at every output
    /// position in order (0 in the padding), k = positions, zeros up to GemmBF16.paddedK —
    /// `GemmBF16.multiply(aBF16:)`'s A for a weight gradient colᵀ · dY, instead of an fp32 im2col
    /// that the GEMM transposes and rounds (measured on conv2 of the reference network, one sample:
    /// 24 µs against 15 + 26 µs; a stride-1 SAME conv now reads these runs in place,
    /// `shiftedPlanesBF16`). Each channel's plane (one transposing pass for all) is
    /// copied once per kernel column, shifted by that column (outW values per input row, zeros
    /// where the tap falls in the padding); then the rows are written in order, each (with stride
    /// 1) one contiguous run of a shifted plane. The same values, so the same bits. Returns the
    /// rows and their stride.
    public static func transposedBF16(_ g: Window, x: UnsafePointer<Float>, scratch: UnsafeMutablePointer<Float>) -> (UnsafePointer<UInt16>, Int) {
        let raw = UnsafeMutableRawPointer(scratch)
        let area = g.inH * g.inW, gap = planeGap(g), planeStride = area + gap, c = g.channels, k = g.kernel
        // Channel planes with zeros before and after each (`planeGap`).
        let planes = raw.assumingMemoryBound(to: UInt16.self)
        planes.update(repeating: 0, count: gap)
        pt_bf16_pack_transposed(x, c, Int32(c), Int32(area), planes + gap, planeStride)
        let shifted = (raw + planesBytes(g)).assumingMemoryBound(to: UInt16.self), sStride = shiftedStride(g)
        let col = shifted + c * k * sStride
        let lda = GemmBF16.paddedK(g.positions), outW = g.outW
        // Where (channel, kernel column)'s shifted plane is.
        @inline(__always) func source(_ ch: Int, _ kw: Int) -> UnsafePointer<UInt16> { UnsafePointer(shifted + (ch * k + kw) * sStride) }
        typealias H = SIMD16<UInt16>
        for ch in 0..<c {
            let plane = UnsafePointer(planes + gap + ch * planeStride)
            for kw in 0..<k {
                // s[ih][ow] = plane[ih][ow * stride + shift], 0 outside the image's columns.
                let shift = kw - g.padLeft, s = shifted + (ch * k + kw) * sStride
                let owLo = min(max(0, (-shift + g.stride - 1) / g.stride), outW)
                let lastW = g.inW - 1 - shift  // (negative: no column inside; `/` would round it up to 0)
                let owHi = lastW < 0 ? owLo : max(owLo, min(outW, lastW / g.stride + 1))
                for ih in 0..<g.inH {
                    let src = plane + ih * g.inW + shift, out = s + ih * outW
                    if g.stride == 1 {
                        // Whole vectors: what lands past the row the next row rewrites (the
                        // last row's, the slack).
                        var ow = 0
                        while ow < outW {
                            UnsafeMutableRawPointer(out + ow).storeBytes(of: UnsafeRawPointer(src + ow).loadUnaligned(as: H.self), as: H.self)
                            ow += 16
                        }
                    } else {
                        for ow in owLo..<owHi { out[ow] = src[ow * g.stride] }
                    }
                    for ow in 0..<owLo { out[ow] = 0 }
                    for ow in owHi..<outW { out[ow] = 0 }
                }
            }
        }
        // The rows in order, so the 2-byte values stream out.
        var dst = col
        for kh in 0..<k {
            // The output rows whose input row is inside the image.
            let first = min(max(0, (g.padTop - kh + g.stride - 1) / g.stride), g.outH)
            let lastH = g.inH - 1 + g.padTop - kh  // (negative: no row inside)
            let end = lastH < 0 ? first : max(first, min(g.outH, lastH / g.stride + 1))
            for kw in 0..<k {
                for ch in 0..<c {
                    // (Each fill may run up to a vector past its end: what follows is written after it.)
                    let s = source(ch, kw)
                    fill(dst, count: first * outW)
                    if g.stride == 1 {
                        copy(s + (first - g.padTop + kh) * outW, to: dst + first * outW, count: (end - first) * outW)
                    } else {
                        for oh in first..<end { copy(s + (oh * g.stride - g.padTop + kh) * outW, to: dst + oh * outW, count: outW) }
                    }
                    // Then the rows below the image, and the k padding (it meets B's zeros: finite, so zeros).
                    fill(dst + end * outW, count: lda - end * outW)
                    dst += lda
                }
            }
        }
        return (UnsafePointer(col), lda)
    }

    /// Whether `shiftedPlanesBF16` serves this conv: stride 1, the output its input's size (SAME).
    public static func shiftedPlanesApply(_ g: Window) -> Bool { g.stride == 1 && g.outH == g.inH && g.outW == g.inW }

    /// A shifted plane's bf16 values: padTop zero rows, the image's rows, then zeros to where the
    /// last tap's row stops reading (its k padding included), and a vector of slack; 64-byte rows.
    static func shiftedPlaneStride(_ g: Window) -> Int {
        let read = max((g.padTop + g.inH) * g.outW, (g.kernel - 1) * g.outW + GemmBF16.paddedK(g.positions))
        return (read + 16 + 31) / 32 * 32
    }

    /// Floats of scratch `shiftedPlanesBF16` uses (the last plane's zero fill runs padTop rows past
    /// it), to a whole cache line: what follows can start one.
    public static func shiftedPlanesFloats(_ g: Window) -> Int {
        ((g.kernel * g.channels * shiftedPlaneStride(g) + g.padTop * g.outW + 1) / 2 + 15) / 16 * 16
    }

    /// A weight gradient's transposed patches (`transposedBF16`'s rows) without writing them, for a
    /// conv that `shiftedPlanesApply` to: block kw holds every channel's plane in bf16 shifted by
    /// kw - padLeft (zeros where the tap falls outside the image's columns) after padTop zero rows
    /// and followed by zeros. Tap (kh, kw)'s row for channel c is then one run in place, at
    /// `planes + (kw * channels + c) * stride + kh * outW`: a GEMM per tap reads its rows with
    /// `lda` = stride instead of a copy of kernel² x channels rows of every position. Over the
    /// positions a run holds `transposedBF16`'s values; over the k padding past them, finite values
    /// (the plane's later rows, or zeros) that meet B's zero rows: the same bits for finite data.
    /// Returns the planes and that stride.
    public static func shiftedPlanesBF16(_ g: Window, x: UnsafePointer<Float>, scratch: UnsafeMutablePointer<Float>) -> (UnsafePointer<UInt16>, Int) {
        precondition(shiftedPlanesApply(g), "shifted planes need a stride-1 SAME conv")
        let c = g.channels, k = g.kernel, w = g.outW, area = g.inH * g.inW
        let stride = shiftedPlaneStride(g), top = g.padTop * w
        let base = UnsafeMutableRawPointer(scratch).assumingMemoryBound(to: UInt16.self)
        // Block padLeft is the planes themselves. The transpose zero-fills each plane's row to the
        // stride: its bottom rows and the next plane's top rows (the last plane's fill runs padTop
        // rows into the next block, or past the blocks: `shiftedPlanesFloats` has room).
        let planes = base + g.padLeft * c * stride
        planes.update(repeating: 0, count: top)
        pt_bf16_pack_transposed(x, c, Int32(c), Int32(area), planes + top, stride)
        typealias H = SIMD16<UInt16>
        @inline(__always) func store(_ v: H, _ at: UnsafeMutablePointer<UInt16>) { UnsafeMutableRawPointer(at).storeBytes(of: v, as: H.self) }
        // (Signed lanes for the compares: Swift lowers an unsigned vector compare to a loop over lanes.)
        typealias L = SIMD16<Int16>
        let lane = L(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
        for kw in 0..<k where kw != g.padLeft {
            let shift = kw - g.padLeft
            let owLo = min(max(0, -shift), w), owHi = max(owLo, min(w, g.inW - shift))
            for ch in 0..<c {
                let plane = UnsafePointer(planes + ch * stride + top), s = base + (kw * c + ch) * stride
                // Whole vectors throughout: a vector past an end lands where a later store rewrites
                // it (the rows after, then the zeros below, whose last vector ends at the stride).
                var i = 0
                while i < top { store(H(), s + i); i += 16 }
                for ih in 0..<g.inH {
                    // Read from the plane's neighbours at the ends (its zeros, or the next row); the
                    // columns whose tap falls outside the image are zeros.
                    let src = plane + ih * w + shift, out = s + top + ih * w
                    var ow = 0
                    while ow < w {
                        let column = lane &+ L(repeating: Int16(ow))
                        let v = UnsafeRawPointer(src + ow).loadUnaligned(as: H.self)
                        store(v.replacing(with: 0, where: (column .< L(repeating: Int16(owLo))) .| (column .>= L(repeating: Int16(owHi)))), out + ow)
                        ow += 16
                    }
                }
                i = top + area
                while i + 16 < stride { store(H(), s + i); i += 16 }
                store(H(), s + stride - 16)
            }
        }
        return (UnsafePointer(base), stride)
    }

    /// Floats of scratch `weightGradientBF16` uses: the shifted planes, then dy packed; or (a conv
    /// they do not serve) the transposed patches.
    public static func weightGradientBF16Floats(_ g: Window, cout: Int) -> Int {
        shiftedPlanesApply(g) ? shiftedPlanesFloats(g) + GemmBF16.packedBFloats(k: g.positions, n: cout) : transposedBF16Floats(g)
    }

    /// dw (+)= colᵀ · dy in bf16, a sample of any conv: where `shiftedPlanesApply`, a GEMM per tap,
    /// its rows of the transposed patches read in place from the shifted planes, dy packed once for
    /// every tap; else one GEMM over `transposedBF16`'s rows. `scratch` holds
    /// `weightGradientBF16Floats`; `gemmScratch` is the GEMMs' own.
    public static func weightGradientBF16(_ g: Window, x: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>, cout: Int,
                                          into dw: UnsafeMutablePointer<Float>, accumulate: Bool, scratch: UnsafeMutablePointer<Float>,
                                          gemmScratch: UnsafeMutablePointer<Float>, path: BF16Path) {
        guard shiftedPlanesApply(g) else {
            let (colT, ldT) = transposedBF16(g, x: x, scratch: scratch)
            GemmBF16.multiply(m: g.patch, n: cout, k: g.positions, aBF16: colT, lda: ldT, b: .rowMajor(dy, cols: cout),
                              c: dw, ldc: cout, accumulate: accumulate, scratch: gemmScratch, path: path)
            return
        }
        let (planes, ld) = shiftedPlanesBF16(g, x: x, scratch: scratch)
        let packedDy = scratch + shiftedPlanesFloats(g), cin = g.channels, k = g.kernel
        GemmBF16.packB(k: g.positions, n: cout, b: .rowMajor(dy, cols: cout), panels: 0..<GemmBF16.packedBPanels(n: cout), into: packedDy)
        for kh in 0..<k {
            for kw in 0..<k {
                GemmBF16.multiply(m: cin, n: cout, k: g.positions, aBF16: planes + kw * cin * ld + kh * g.outW, lda: ld,
                                  b: .packed(packedDy), c: dw + (kh * k + kw) * cin * cout, ldc: cout,
                                  accumulate: accumulate, scratch: gemmScratch, path: path)
            }
        }
    }

    // Copies and zero fills of a few hundred bytes, inline. A copy of 16 or more ends with a
    // vector that overlaps the one before; `fill` writes whole vectors, up to 15 values past `count`.
    @inline(__always) static func copy(_ src: UnsafePointer<UInt16>, to dst: UnsafeMutablePointer<UInt16>, count: Int) {
        typealias H = SIMD16<UInt16>
        if count < 16 {
            for i in 0..<count { dst[i] = src[i] }
            return
        }
        var i = 0
        while i + 16 <= count {
            UnsafeMutableRawPointer(dst + i).storeBytes(of: UnsafeRawPointer(src + i).loadUnaligned(as: H.self), as: H.self)
            i += 16
        }
        if i < count {
            UnsafeMutableRawPointer(dst + count - 16).storeBytes(of: UnsafeRawPointer(src + count - 16).loadUnaligned(as: H.self), as: H.self)
        }
    }
    @inline(__always) static func fill(_ dst: UnsafeMutablePointer<UInt16>, count: Int) {
        var i = 0
        while i < count { UnsafeMutableRawPointer(dst + i).storeBytes(of: SIMD16<UInt16>(), as: SIMD16<UInt16>.self); i += 16 }
    }

    /// dx = col2im(dcol): every patch entry is added back to the pixel it came from. Each dx
    /// element is gathered in one pass, from 0, in the order of the positions it came from
    /// (ascending output row, then column), a vector of channels at a time: the order a scatter
    /// in position order has, so its bits, with dx written once (no zeroing pass, no
    /// read-modify-write of every pixel nine times).
    public static func backward(_ g: Window, dcol: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>) {
        let c = g.channels
        typealias V = SIMD16<Float>
        for ih in 0..<g.inH {
            let rows = positions(ih, pad: g.padTop, count: g.outH, g)
            for iw in 0..<g.inW {
                let cols = positions(iw, pad: g.padLeft, count: g.outW, g)
                let out = dx + (ih &* g.inW &+ iw) &* c
                var ch = 0
                // 64 channels at a time: the taps' bookkeeping once for four vectors.
                while ch &+ 64 <= c {
                    var s0 = V(), s1 = V(), s2 = V(), s3 = V()
                    gather(g, ih, iw, rows, cols) { at in
                        let p = dcol + (at &+ ch)
                        s0 += loadV(p); s1 += loadV(p + 16); s2 += loadV(p + 32); s3 += loadV(p + 48)
                    }
                    storeV(s0, out + ch); storeV(s1, out + ch + 16); storeV(s2, out + ch + 32); storeV(s3, out + ch + 48)
                    ch &+= 64
                }
                while ch &+ 16 <= c {
                    var sum = V()
                    gather(g, ih, iw, rows, cols) { at in sum += loadV(dcol + (at &+ ch)) }
                    storeV(sum, out + ch)
                    ch &+= 16
                }
                while ch < c {
                    var sum: Float = 0
                    gather(g, ih, iw, rows, cols) { at in sum += dcol[at &+ ch] }
                    out[ch] = sum
                    ch &+= 1
                }
            }
        }
    }

    /// The output rows (or columns) whose taps read input row (column) `i`: from `lo` through
    /// `hi` (empty when lo > hi). Tap = i + pad - position · stride.
    @inline(__always)
    static func positions(_ i: Int, pad: Int, count: Int, _ g: Window) -> (lo: Int, hi: Int) {
        let top = i &+ pad, s = g.stride, first = top &- g.kernel &+ 1
        if s == 1 { return (max(first, 0), min(top, count &- 1)) }
        return (first <= 0 ? 0 : (first &+ s &- 1) / s, min(top / s, count &- 1))
    }

    /// Calls `add` with the offset in dcol of every patch entry that came from input pixel
    /// (ih, iw), channel 0, in position order (ascending output row, then column).
    @inline(__always)
    static func gather(_ g: Window, _ ih: Int, _ iw: Int, _ rows: (lo: Int, hi: Int), _ cols: (lo: Int, hi: Int),
                       _ add: (Int) -> Void) {
        let k = g.kernel, s = g.stride, c = g.channels
        var oh = rows.lo
        while oh <= rows.hi {
            let kh = ih &+ g.padTop &- oh &* s
            var ow = cols.lo
            while ow <= cols.hi {
                let kw = iw &+ g.padLeft &- ow &* s
                add(((oh &* g.outW &+ ow) &* k &* k &+ kh &* k &+ kw) &* c)
                ow &+= 1
            }
            oh &+= 1
        }
    }
}
