// Batch normalisation's loops over one sample's [positions, channels] activations (NHWC; a dense
// layer's output is one position). Every per-channel sum runs over the positions in order, one
// accumulator per channel, SIMD lanes and the scalar tail adding alike: the sums a network
// combines across samples in sample order (`BatchNormStage`).

public enum BatchNorm {
    /// A sample's moments: out[c] = Σ_p x[p, c], then out[C + c] = Σ_p (x[p, c] − out[c] / P)²,
    /// the squares about the sample's own mean (P positions). Both are sums over the positions in
    /// order; the second pass reads the sample again while it is still in cache.
    public static func sampleMoments(_ x: UnsafePointer<Float>, positions: Int, channels c: Int,
                                     into out: UnsafeMutablePointer<Float>) {
        Elementwise.columnSums(x, rows: positions, ld: c, cols: 0..<c, into: out)
        let count = Float(positions), squares = out + c
        var ch = 0
        while ch + 16 <= c {
            let m = loadV(out + ch) / SIMD16(repeating: count)
            var acc = SIMD16<Float>()
            for p in 0..<positions { let d = loadV(x + p * c + ch) - m; acc += d * d }
            storeV(acc, squares + ch)
            ch += 16
        }
        while ch < c {
            let m = out[ch] / count
            var acc: Float = 0
            for p in 0..<positions { let d = x[p * c + ch] - m; acc += d * d }
            squares[ch] = acc
            ch += 1
        }
    }

    /// The batch's variance from its samples' moments (`sampleMoments`, n samples `stride` floats
    /// apart, each P positions) and the batch's mean over all n·P values: Chan's merge,
    /// (Σ_s M2_s + Σ_s P · (mean_s − mean)²) / (n·P), each sum in sample order. About as exact as
    /// the squares about the batch's mean, without a second pass over the batch.
    public static func mergedVariance(_ moments: UnsafePointer<Float>, samples n: Int, stride: Int, positions: Int,
                                      channels c: Int, mean: UnsafePointer<Float>, into variance: UnsafeMutablePointer<Float>) {
        let count = Float(positions), total = Float(n * positions)
        Elementwise.sumInOrder(moments + c, count: n, stride: stride, length: c, into: variance)
        // A vector of channels at a time, each lane its channel's sum in sample order.
        var ch = 0
        while ch + 16 <= c {
            let m = loadV(mean + ch), p = SIMD16<Float>(repeating: count)
            var spread = SIMD16<Float>()
            for s in 0..<n {
                let d = loadV(moments + s * stride + ch) / p - m
                spread += p * (d * d)
            }
            storeV((loadV(variance + ch) + spread) / SIMD16(repeating: total), variance + ch)
            ch += 16
        }
        while ch < c {
            var spread: Float = 0
            for s in 0..<n {
                let d = moments[s * stride + ch] / count - mean[ch]
                spread += count * (d * d)
            }
            variance[ch] = (variance[ch] + spread) / total
            ch += 1
        }
    }

    /// y = (x − mean) · scale + shift (scale = γ / σ, shift = β), plus `shortcut` when given (a
    /// residual block's sum, added as `Elementwise.add` adds it), then ReLU when `relu`.
    public static func normalize(_ x: UnsafePointer<Float>, positions: Int, channels c: Int, mean: UnsafePointer<Float>,
                                 scale: UnsafePointer<Float>, shift: UnsafePointer<Float>, adding shortcut: UnsafePointer<Float>? = nil,
                                 relu: Bool, into y: UnsafeMutablePointer<Float>) {
        for p in 0..<positions {
            let xs = x + p * c, ys = y + p * c
            var ch = 0
            while ch + 16 <= c {
                var v = (loadV(xs + ch) - loadV(mean + ch)) * loadV(scale + ch) + loadV(shift + ch)
                if let shortcut { v = v + loadV(shortcut + p * c + ch) }
                if relu { v = v.replacing(with: 0, where: .!(v .> 0)) }
                storeV(v, ys + ch)
                ch += 16
            }
            while ch < c {
                var v = (xs[ch] - mean[ch]) * scale[ch] + shift[ch]
                if let shortcut { v = v + shortcut[p * c + ch] }
                if relu && !(v > 0) { v = 0 }
                ys[ch] = v
                ch += 1
            }
        }
    }

    /// sumDy[c] = Σ_p dy[p, c] and sumDyXhat[c] = Σ_p dy[p, c] · (x[p, c] − mean[c]) · invstd[c]:
    /// the sample's parts of β's and γ's gradients.
    public static func gradientSums(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, positions: Int, channels c: Int,
                                    mean: UnsafePointer<Float>, invstd: UnsafePointer<Float>,
                                    sumDy: UnsafeMutablePointer<Float>, sumDyXhat: UnsafeMutablePointer<Float>) {
        var ch = 0
        while ch + 16 <= c {
            let m = loadV(mean + ch), s = loadV(invstd + ch)
            var a = SIMD16<Float>(), b = SIMD16<Float>()
            for p in 0..<positions {
                let g = loadV(dy + p * c + ch)
                a += g
                b += g * ((loadV(x + p * c + ch) - m) * s)
            }
            storeV(a, sumDy + ch); storeV(b, sumDyXhat + ch)
            ch += 16
        }
        while ch < c {
            var a: Float = 0, b: Float = 0
            for p in 0..<positions {
                let g = dy[p * c + ch]
                a += g
                b += g * ((x[p * c + ch] - mean[ch]) * invstd[ch])
            }
            sumDy[ch] = a; sumDyXhat[ch] = b
            ch += 1
        }
    }

    /// dx = scale · (dy − meanDy − x̂ · meanDyXhat), x̂ = (x − mean) · invstd, scale = γ · invstd,
    /// the means over the whole batch's positions: the gradient through the batch's statistics.
    public static func inputGradient(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, positions: Int, channels c: Int,
                                     mean: UnsafePointer<Float>, invstd: UnsafePointer<Float>, scale: UnsafePointer<Float>,
                                     meanDy: UnsafePointer<Float>, meanDyXhat: UnsafePointer<Float>,
                                     into dx: UnsafeMutablePointer<Float>) {
        for p in 0..<positions {
            let gs = dy + p * c, xs = x + p * c, out = dx + p * c
            var ch = 0
            while ch + 16 <= c {
                let xhat = (loadV(xs + ch) - loadV(mean + ch)) * loadV(invstd + ch)
                storeV(loadV(scale + ch) * (loadV(gs + ch) - loadV(meanDy + ch) - xhat * loadV(meanDyXhat + ch)), out + ch)
                ch += 16
            }
            while ch < c {
                let xhat = (xs[ch] - mean[ch]) * invstd[ch]
                out[ch] = scale[ch] * (gs[ch] - meanDy[ch] - xhat * meanDyXhat[ch])
                ch += 1
            }
        }
    }
}
