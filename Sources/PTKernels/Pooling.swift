// Max and average pooling over one NHWC sample. Windows never read padding: pooling here is
// VALID (a window must fit); x is [H, W, C], y is [Ho, Wo, C].

public enum MaxPool {
    /// Writes y and, for the backward pass, the index into x of each output's maximum
    /// (the first one on ties). `rows` (default all): only those output rows.
    public static func forward(_ g: Window, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                               argmax: UnsafeMutablePointer<Int32>, rows: Range<Int>? = nil) {
        let rows = rows ?? 0..<g.outH
        if g.kernel == 2 {
            forward2x2(g, x: x, y: y, argmax: argmax, rows: rows)
            return
        }
        let c = g.channels
        let lanes = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
        for oh in rows {
            for ow in 0..<g.outW {
                let o = (oh * g.outW + ow) * c
                let first = ((oh * g.stride) * g.inW + ow * g.stride) * c
                var ch = 0
                // 16 channels at a time: the same strict '>' as the scalar tail, so ties keep the first.
                while ch + 16 <= c {
                    var best = loadV(x + first + ch)
                    var arg = lanes &+ Int32(first + ch)
                    for kh in 0..<g.kernel {
                        for kw in 0..<g.kernel where kh != 0 || kw != 0 {
                            let i = ((oh * g.stride + kh) * g.inW + ow * g.stride + kw) * c + ch
                            let v = loadV(x + i)
                            let greater = v .> best
                            best.replace(with: v, where: greater)
                            arg.replace(with: lanes &+ Int32(i), where: greater)
                        }
                    }
                    storeV(best, y + o + ch)
                    UnsafeMutableRawPointer(argmax + o + ch).storeBytes(of: arg, as: SIMD16<Int32>.self)
                    ch += 16
                }
                while ch < c {
                    var best = x[first + ch], arg = first + ch
                    for kh in 0..<g.kernel {
                        for kw in 0..<g.kernel where kh != 0 || kw != 0 {
                            let i = ((oh * g.stride + kh) * g.inW + ow * g.stride + kw) * c + ch
                            if x[i] > best { best = x[i]; arg = i }
                        }
                    }
                    y[o + ch] = best; argmax[o + ch] = Int32(arg)
                    ch += 1
                }
            }
        }
    }

    /// With `reluOutput` (this pool's output y, when its input came out of a ReLU) the ReLU's
    /// backward mask is applied here too: the input at an output's argmax is that output, so it
    /// was clamped exactly when y <= 0. That saves a pass over the larger input gradient.
    public static func backward(_ g: Window, dy: UnsafePointer<Float>, argmax: UnsafePointer<Int32>,
                                dx: UnsafeMutablePointer<Float>, reluOutput y: UnsafePointer<Float>? = nil) {
        if g.stride == g.kernel && g.outH * g.stride == g.inH && g.outW * g.stride == g.inW {
            tiledBackward(g, dy: dy, argmax: argmax, dx: dx, reluOutput: y)
            return
        }
        dx.update(repeating: 0, count: g.inputSize)
        if let y {
            for o in 0..<(g.positions * g.channels) where y[o] > 0 { dx[Int(argmax[o])] += dy[o] }
        } else {
            for o in 0..<(g.positions * g.channels) { dx[Int(argmax[o])] += dy[o] }
        }
    }
}

extension MaxPool {
    /// The 2x2 window as a tournament: (0 vs 1) and (2 vs 3), then the two winners, each with a
    /// strict '>' so a tie keeps the earlier element: the first maximum in the general loop's
    /// order, as there (only a NaN in a window can make them differ; training stops on a NaN
    /// loss anyway). Independent compare-selects: a chain of them on one running maximum came out
    /// of the compiler as scalar mask shuffles, 2.5x slower than the general loop; this is 2x faster.
    static func forward2x2(_ g: Window, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                           argmax: UnsafeMutablePointer<Int32>, rows: Range<Int>) {
        let c = g.channels, right = c, down = g.inW * c
        let lanes = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
        let rightV = SIMD16<Int32>(repeating: Int32(truncatingIfNeeded: right)), sixteen = SIMD16<Int32>(repeating: 16)
        let downV = SIMD16<Int32>(repeating: Int32(truncatingIfNeeded: down))
        let downRightV = SIMD16<Int32>(repeating: Int32(truncatingIfNeeded: down + right))
        for oh in rows {
            for ow in 0..<g.outW {
                let o = (oh * g.outW + ow) * c
                let first = (oh * g.stride * g.inW + ow * g.stride) * c
                var ch = 0
                // The indices as a running vector: a splat of `first + ch` each time came out of
                // the compiler as three lane permutes (recorded: the kernel ran at a third of its speed).
                var a0 = lanes &+ SIMD16<Int32>(repeating: Int32(truncatingIfNeeded: first))
                while ch + 16 <= c {
                    let at = x + first + ch
                    let v0 = loadV(at), v1 = loadV(at + right), v2 = loadV(at + down), v3 = loadV(at + down + right)
                    let g01 = v1 .> v0, g23 = v3 .> v2
                    let b01 = v0.replacing(with: v1, where: g01), b23 = v2.replacing(with: v3, where: g23)
                    let a01 = a0.replacing(with: a0 &+ rightV, where: g01)
                    let a23 = (a0 &+ downV).replacing(with: a0 &+ downRightV, where: g23)
                    let later = b23 .> b01
                    storeV(b01.replacing(with: b23, where: later), y + o + ch)
                    UnsafeMutableRawPointer(argmax + o + ch).storeBytes(of: a01.replacing(with: a23, where: later), as: SIMD16<Int32>.self)
                    a0 &+= sixteen
                    ch += 16
                }
                while ch < c {
                    let i0 = first + ch
                    let i01 = x[i0 + right] > x[i0] ? i0 + right : i0
                    let i23 = x[i0 + down + right] > x[i0 + down] ? i0 + down + right : i0 + down
                    let i = x[i23] > x[i01] ? i23 : i01
                    y[o + ch] = x[i]; argmax[o + ch] = Int32(i)
                    ch += 1
                }
            }
        }
    }

    /// When the windows tile the input exactly (stride = size, no remainder), every input is in
    /// one window: write each once, its window's gradient where it was the argmax and 0 elsewhere,
    /// 16 channels at a time. No clearing pass and no scatter. `+ 0` keeps the scatter's bits:
    /// there a -0 gradient lands on +0 and becomes +0.
    static func tiledBackward(_ g: Window, dy: UnsafePointer<Float>, argmax: UnsafePointer<Int32>,
                              dx: UnsafeMutablePointer<Float>, reluOutput y: UnsafePointer<Float>?) {
        let c = g.channels
        let lanes = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
        let zero = SIMD16<Float>(), sixteen = SIMD16<Int32>(repeating: 16)
        // An input's index in the window relative to the window's first (what an argmax minus the
        // first is compared with) steps by these across and down.
        let across = SIMD16<Int32>(repeating: Int32(truncatingIfNeeded: c))
        let down = SIMD16<Int32>(repeating: Int32(truncatingIfNeeded: g.inW * c))
        for oh in 0..<g.outH {
            for ow in 0..<g.outW {
                let o = (oh * g.outW + ow) * c
                let first = (oh * g.stride * g.inW + ow * g.stride) * c
                var ch = 0
                // The window's first indices as a running vector (a splat per step came out of
                // the compiler as three lane permutes).
                var base = lanes &+ SIMD16<Int32>(repeating: Int32(truncatingIfNeeded: first))
                while ch + 16 <= c {
                    let am = UnsafeRawPointer(argmax + o + ch).loadUnaligned(as: SIMD16<Int32>.self) &- base
                    var d = loadV(dy + o + ch)
                    if let y { d = zero.replacing(with: d, where: loadV(y + o + ch) .> zero) }
                    var rowOffset = SIMD16<Int32>()
                    for kh in 0..<g.kernel {
                        var offset = rowOffset
                        for kw in 0..<g.kernel {
                            let i = first + (kh * g.inW + kw) * c + ch
                            storeV(zero.replacing(with: d, where: am .== offset) + zero, dx + i)
                            offset &+= across
                        }
                        rowOffset &+= down
                    }
                    base &+= sixteen
                    ch += 16
                }
                for kh in 0..<g.kernel {
                    for kw in 0..<g.kernel {
                        let i = ((oh * g.stride + kh) * g.inW + ow * g.stride + kw) * c
                        var ch = ch
                        while ch < c {
                            let take = argmax[o + ch] == Int32(i + ch) && (y.map { $0[o + ch] > 0 } ?? true)
                            dx[i + ch] = (take ? dy[o + ch] : 0) + 0
                            ch += 1
                        }
                    }
                }
            }
        }
    }
}

/// A 2x2 max-pool with stride 2 that tiles its input, keeping each output's argmax as a byte: which
/// input of its window won (0, 1 on the top row, 2, 3 below), plus 4 where no gradient passes
/// (`reluMasked`, and the output is not > 0: the ReLU before the pool clamped it). A quarter of the
/// bytes of `MaxPool`'s Int32 indices, and the backward pass reads no output (for conv1 of the
/// reference network, 125 KB a sample less to write and read back). The same tournament,
/// maxima and ties as `MaxPool.forward`, the same gradients as `MaxPool.backward`: the same bits.
public enum MaxPoolCodes {
    /// Whether a max-pool can keep codes: 2x2 windows, stride 2, tiling the input exactly, whole
    /// vectors of channels.
    public static func apply(_ g: Window) -> Bool {
        g.kernel == 2 && g.stride == 2 && g.outH * 2 == g.inH && g.outW * 2 == g.inW && g.channels % 16 == 0
    }

    typealias I = SIMD16<Int32>

    /// y and the codes of output `rows` (default all). `xFirstRow`: the input row `x` points at
    /// (a conv that pools inside keeps only the rows being pooled).
    public static func forward(_ g: Window, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                               codes: UnsafeMutablePointer<UInt8>, reluMasked: Bool, rows: Range<Int>? = nil,
                               xFirstRow: Int = 0) {
        let c = g.channels, down = g.inW * c, zero = SIMD16<Float>()
        let one = I(repeating: 1), two = I(repeating: 2), three = I(repeating: 3), four = I(repeating: 4)
        for oh in rows ?? 0..<g.outH {
            let row = x + (2 * oh - xFirstRow) * down
            for ow in 0..<g.outW {
                let o = (oh * g.outW + ow) * c, at = row + 2 * ow * c
                for ch in stride(from: 0, to: c, by: 16) {
                    let v0 = loadV(at + ch), v1 = loadV(at + ch + c), v2 = loadV(at + ch + down), v3 = loadV(at + ch + down + c)
                    // Strict '>' in each match: a tie keeps the earlier input, as MaxPool's does.
                    let g01 = v1 .> v0, g23 = v3 .> v2
                    let b01 = v0.replacing(with: v1, where: g01), b23 = v2.replacing(with: v3, where: g23)
                    let later = b23 .> b01
                    let best = b01.replacing(with: b23, where: later)
                    var code = I().replacing(with: one, where: g01).replacing(with: two.replacing(with: three, where: g23), where: later)
                    if reluMasked { code.replace(with: code &+ four, where: .!(best .> zero)) }
                    storeV(best, y + o + ch)
                    UnsafeMutableRawPointer(codes + o + ch).storeBytes(of: SIMD16<UInt8>(truncatingIfNeeded: code), as: SIMD16<UInt8>.self)
                }
            }
        }
    }

    /// dx of output `rows` (default all): each input its window's gradient where its code names
    /// it, else 0 (`+ 0`: a -0 gradient lands as +0, as MaxPool's scatter leaves it).
    /// `dxFirstRow`: the input row `dx` points at.
    public static func backward(_ g: Window, dy: UnsafePointer<Float>, codes: UnsafePointer<UInt8>,
                                dx: UnsafeMutablePointer<Float>, rows: Range<Int>? = nil, dxFirstRow: Int = 0) {
        let c = g.channels, down = g.inW * c, zero = SIMD16<Float>()
        let one = I(repeating: 1), two = I(repeating: 2), three = I(repeating: 3)
        for oh in rows ?? 0..<g.outH {
            let row = dx + (2 * oh - dxFirstRow) * down
            for ow in 0..<g.outW {
                let o = (oh * g.outW + ow) * c, at = row + 2 * ow * c
                for ch in stride(from: 0, to: c, by: 16) {
                    let code = I(truncatingIfNeeded: UnsafeRawPointer(codes + o + ch).loadUnaligned(as: SIMD16<UInt8>.self))
                    let d = loadV(dy + o + ch)
                    storeV(zero.replacing(with: d, where: code .== I()) + zero, at + ch)
                    storeV(zero.replacing(with: d, where: code .== one) + zero, at + ch + c)
                    storeV(zero.replacing(with: d, where: code .== two) + zero, at + ch + down)
                    storeV(zero.replacing(with: d, where: code .== three) + zero, at + ch + down + c)
                }
            }
        }
    }
}

public enum AvgPool {
    // SIMD16 over channels with a scalar tail; both add the window in the same (kh, kw) order.
    public static func forward(_ g: Window, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        let c = g.channels
        let scale = 1 / Float(g.kernel * g.kernel)
        for oh in 0..<g.outH {
            for ow in 0..<g.outW {
                let o = (oh * g.outW + ow) * c
                @inline(__always) func at(_ kh: Int, _ kw: Int) -> Int { ((oh * g.stride + kh) * g.inW + ow * g.stride + kw) * c }
                var ch = 0
                while ch + 16 <= c {
                    var acc = SIMD16<Float>()
                    for kh in 0..<g.kernel { for kw in 0..<g.kernel { acc += loadV(x + at(kh, kw) + ch) } }
                    storeV(acc * scale, y + o + ch)
                    ch += 16
                }
                while ch < c {
                    var acc: Float = 0
                    for kh in 0..<g.kernel { for kw in 0..<g.kernel { acc += x[at(kh, kw) + ch] } }
                    y[o + ch] = acc * scale
                    ch += 1
                }
            }
        }
    }

    public static func backward(_ g: Window, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>) {
        let c = g.channels
        let scale = 1 / Float(g.kernel * g.kernel)
        dx.update(repeating: 0, count: g.inputSize)
        for oh in 0..<g.outH {
            for ow in 0..<g.outW {
                let o = (oh * g.outW + ow) * c
                for kh in 0..<g.kernel {
                    for kw in 0..<g.kernel {
                        let i = ((oh * g.stride + kh) * g.inW + ow * g.stride + kw) * c
                        var ch = 0
                        while ch + 16 <= c {
                            storeV(loadV(dx + i + ch) + loadV(dy + o + ch) * scale, dx + i + ch)
                            ch += 16
                        }
                        while ch < c { dx[i + ch] += dy[o + ch] * scale; ch += 1 }
                    }
                }
            }
        }
    }
}

/// Global average pooling: each channel's mean over a sample's positions ([positions, channels] in,
/// [channels] out), the positions summed in order.
public enum GlobalAvgPool {
    public static func forward(positions: Int, channels c: Int, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        Elementwise.columnSums(x, rows: positions, ld: c, cols: 0..<c, into: y)
        let scale = 1 / Float(positions)
        for ch in 0..<c { y[ch] *= scale }
    }

    public static func backward(positions: Int, channels c: Int, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>) {
        let scale = 1 / Float(positions)
        for p in 0..<positions {
            let row = dx + p * c
            for ch in 0..<c { row[ch] = dy[ch] * scale }
        }
    }
}
