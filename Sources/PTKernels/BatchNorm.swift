// Batch normalisation's loops over one sample's [positions, channels] activations (NHWC; a dense
// layer's output is one position). Every per-channel sum runs over the positions in order, one
// accumulator per channel, SIMD lanes and the scalar tail adding alike: the sums a network
// combines across samples in sample order (`BatchNormStage`).

public enum BatchNorm {
    /// A sample's statistics: out[c] = Σ_p x[p, c] (`Elementwise.columnSums`, in position order)
    /// and out[channels + c] = Σ_p (x[p, c] − μ[c])² about the sample's own mean μ = that sum /
    /// positions. Both passes read the sample while it is in cache; `batchSquares` merges the
    /// samples exactly (no Σx² − (Σx)² cancellation). The squares run in four chains over the
    /// positions (p mod 4), added (0 + 1) + (2 + 3): one chain is bound by the add's latency.
    public static func sampleStatistics(_ x: UnsafePointer<Float>, positions: Int, channels c: Int,
                                        into out: UnsafeMutablePointer<Float>) {
        Elementwise.columnSums(x, rows: positions, ld: c, cols: 0..<c, into: out)
        let count = Float(positions), quads = positions / 4 * 4
        var ch = 0
        while ch + 16 <= c {
            let m = loadV(out + ch) / count
            var a0 = SIMD16<Float>(), a1 = SIMD16<Float>(), a2 = SIMD16<Float>(), a3 = SIMD16<Float>()
            var p = 0
            while p < quads {
                let r = x + p * c + ch
                let d0 = loadV(r) - m, d1 = loadV(r + c) - m, d2 = loadV(r + 2 * c) - m, d3 = loadV(r + 3 * c) - m
                a0 += d0 * d0; a1 += d1 * d1; a2 += d2 * d2; a3 += d3 * d3
                p += 4
            }
            while p < positions {
                let d = loadV(x + p * c + ch) - m
                a0 += d * d
                p += 1
            }
            storeV((a0 + a1) + (a2 + a3), out + c + ch)
            ch += 16
        }
        while ch < c {
            let m = out[ch] / count
            var a0: Float = 0, a1: Float = 0, a2: Float = 0, a3: Float = 0
            var p = 0
            while p < quads {
                let r = x + p * c + ch
                let d0 = r[0] - m, d1 = r[c] - m, d2 = r[2 * c] - m, d3 = r[3 * c] - m
                a0 += d0 * d0; a1 += d1 * d1; a2 += d2 * d2; a3 += d3 * d3
                p += 4
            }
            while p < positions {
                let d = x[p * c + ch] - m
                a0 += d * d
                p += 1
            }
            out[c + ch] = (a0 + a1) + (a2 + a3)
            ch += 1
        }
    }

    /// out[c] = Σ_s [M2_s[c] + positions · (μ_s[c] − mean[c])²] over `count` samples in order: the
    /// batch's sum of squares about its mean from the samples' `sampleStatistics` (`stride` floats
    /// apart: Σx at 0, M2 at `channels`), μ_s computed as `sampleStatistics` computes it.
    public static func batchSquares(_ stats: UnsafePointer<Float>, count: Int, stride: Int, positions: Int, channels c: Int,
                                    mean: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        let n = Float(positions)
        for ch in 0..<c {
            var acc: Float = 0
            for s in 0..<count {
                let sample = stats + s * stride
                let d = sample[ch] / n - mean[ch]
                acc += sample[c + ch] + n * (d * d)
            }
            out[ch] = acc
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
