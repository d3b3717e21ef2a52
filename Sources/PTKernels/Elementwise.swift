// Elementwise and reduction loops on flat buffers.

import CBF16

public enum Elementwise {
    /// A rows x cols block from one row-major matrix to another (row strides in floats).
    public static func copy(rows: Int, cols: Int, from src: UnsafePointer<Float>, fromStride: Int,
                            to dst: UnsafeMutablePointer<Float>, toStride: Int) {
        for i in 0..<rows { (dst + i * toStride).update(from: src + i * fromStride, count: cols) }
    }

    /// dst[c, r] = src[r, c] for a rows x cols block (row strides in floats): 16 x 16 blocks
    /// transposed in registers where the CPU has AVX-512, the ragged edges element by element.
    public static func transpose(rows: Int, cols: Int, from src: UnsafePointer<Float>, fromStride: Int,
                                 to dst: UnsafeMutablePointer<Float>, toStride: Int) {
        pt_transpose32(src, fromStride, Int32(rows), Int32(cols), dst, toStride)
    }

    /// dy[i] = 0 where the ReLU output y[i] was clamped.
    public static func reluBackward(dy: UnsafeMutablePointer<Float>, y: UnsafePointer<Float>, count: Int) {
        var i = 0
        while i + 16 <= count {
            storeV(loadV(dy + i).replacing(with: 0, where: .!(loadV(y + i) .> 0)), dy + i)
            i += 16
        }
        while i < count {
            if !(y[i] > 0) { dy[i] = 0 }
            i += 1
        }
    }

    /// out[j] = sum over rows i (in order 0, 1, 2, ...) of m[i, j], for j in cols.
    /// One accumulator per column, rows in order: the bias gradient's fixed summation order.
    public static func columnSums(_ m: UnsafePointer<Float>, rows: Int, ld: Int, cols: Range<Int>,
                                  into out: UnsafeMutablePointer<Float>, accumulate: Bool = false) {
        var j = cols.lowerBound
        // Four vectors of columns at a time: four independent chains of adds (one chain is bound
        // by the add's latency: 784 rows x 64 took 4.0–4.5 µs, now 2.7); each column's sum is in
        // row order either way.
        while j + 64 <= cols.upperBound {
            var a0 = accumulate ? loadV(out + j) : SIMD16<Float>(), a1 = accumulate ? loadV(out + j + 16) : SIMD16<Float>()
            var a2 = accumulate ? loadV(out + j + 32) : SIMD16<Float>(), a3 = accumulate ? loadV(out + j + 48) : SIMD16<Float>()
            for i in 0..<rows {
                let r = m + i * ld + j
                a0 += loadV(r); a1 += loadV(r + 16); a2 += loadV(r + 32); a3 += loadV(r + 48)
            }
            storeV(a0, out + j); storeV(a1, out + j + 16); storeV(a2, out + j + 32); storeV(a3, out + j + 48)
            j += 64
        }
        while j + 16 <= cols.upperBound {
            var acc = accumulate ? loadV(out + j) : SIMD16<Float>()
            for i in 0..<rows { acc += loadV(m + i * ld + j) }
            storeV(acc, out + j)
            j += 16
        }
        while j < cols.upperBound {
            var acc: Float = accumulate ? out[j] : 0
            for i in 0..<rows { acc += m[i * ld + j] }
            out[j] = acc
            j += 1
        }
    }

    /// out[i] = out[i] + src[i] + src[stride + i] + ..., `count` terms in that order: a sum that
    /// `sumInOrder` (or another process) began goes on exactly where it stopped.
    public static func addInOrder(_ src: UnsafePointer<Float>, count: Int, stride: Int, length: Int,
                                  into out: UnsafeMutablePointer<Float>) {
        chain(from: out, src, count: count, stride: stride, length: length, into: out)
    }

    /// out[i] = src[i] + src[stride + i] + src[2 stride + i] + ..., `count` terms in that order.
    public static func sumInOrder(_ src: UnsafePointer<Float>, count: Int, stride: Int, length: Int,
                                  into out: UnsafeMutablePointer<Float>) {
        chain(from: src, src + stride, count: max(count, 1) - 1, stride: stride, length: length, into: out)
    }

    /// out[i] = first[i] + src[i] + src[stride + i] + ..., `count` terms after `first`, in order;
    /// SIMD lanes and the scalar tail do the same IEEE additions.
    @inline(__always)
    static func chain(from first: UnsafePointer<Float>, _ src: UnsafePointer<Float>, count: Int, stride: Int, length: Int,
                      into out: UnsafeMutablePointer<Float>) {
        var i = 0
        // Eight vectors at a time: eight independent chains of adds (a single chain waits on the
        // add's latency at every term) and 512 bytes of each term read in one run (the all-reduce's
        // terms are 32 shard buffers apart). Each element's additions are the same either way.
        while i + 128 <= length {
            var a0 = loadV(first + i), a1 = loadV(first + i + 16), a2 = loadV(first + i + 32), a3 = loadV(first + i + 48)
            var a4 = loadV(first + i + 64), a5 = loadV(first + i + 80), a6 = loadV(first + i + 96), a7 = loadV(first + i + 112)
            for s in 0..<count {
                let p = src + s * stride + i
                a0 += loadV(p); a1 += loadV(p + 16); a2 += loadV(p + 32); a3 += loadV(p + 48)
                a4 += loadV(p + 64); a5 += loadV(p + 80); a6 += loadV(p + 96); a7 += loadV(p + 112)
            }
            storeV(a0, out + i); storeV(a1, out + i + 16); storeV(a2, out + i + 32); storeV(a3, out + i + 48)
            storeV(a4, out + i + 64); storeV(a5, out + i + 80); storeV(a6, out + i + 96); storeV(a7, out + i + 112)
            i += 128
        }
        while i + 16 <= length {
            var acc = loadV(first + i)
            for s in 0..<count { acc += loadV(src + s * stride + i) }
            storeV(acc, out + i)
            i += 16
        }
        while i < length {
            var acc = first[i]
            for s in 0..<count { acc += src[s * stride + i] }
            out[i] = acc
            i += 1
        }
    }
}

public enum Dropout {
    /// A counter-based 64-bit hash (SplitMix64's finaliser over the key): the same
    /// (seed, step, sample, unit) always gives the same bits, whichever thread asks.
    @inline(__always)
    public static func hash(_ seed: UInt64, _ step: UInt64, _ sample: UInt64, _ unit: UInt64) -> UInt64 {
        var z = mix(seed &+ 0x9E37_79B9_7F4A_7C15, step)
        z = mix(z, sample)
        return mix(z, unit)
    }

    @inline(__always) static func mix(_ h: UInt64, _ v: UInt64) -> UInt64 {
        var z = (h ^ v) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 31)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 29)
    }

    /// Inverted dropout scales: keep / 1 with probability keep, else 0.
    public static func fillScales(_ scales: UnsafeMutablePointer<Float>, count: Int, keep: Float,
                                  seed: UInt64, step: UInt64, sample: UInt64) {
        let threshold = UInt64(Double(keep) * 9_007_199_254_740_992)  // keep * 2^53
        let scale = 1 / keep
        for u in 0..<count {
            let r = hash(seed, step, sample, UInt64(u)) >> 11
            scales[u] = r < threshold ? scale : 0
        }
    }

}

extension Elementwise {
    /// out = a + b, then ReLU when `relu` (a residual block's sum).
    public static func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int, relu: Bool,
                           into out: UnsafeMutablePointer<Float>) {
        var i = 0
        while i + 16 <= count {
            var v = loadV(a + i) + loadV(b + i)
            if relu { v = v.replacing(with: 0, where: .!(v .> 0)) }
            storeV(v, out + i)
            i += 16
        }
        while i < count {
            var v = a[i] + b[i]
            if relu && !(v > 0) { v = 0 }
            out[i] = v
            i += 1
        }
    }
}
