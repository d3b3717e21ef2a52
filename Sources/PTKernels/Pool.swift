// Max and average pooling over one NHWC sample. Windows never read padding: pooling here is
// VALID (a window must fit); x is [H, W, C], y is [Ho, Wo, C].

public enum MaxPool {
    /// Writes y and, for the backward pass, the index into x of each output's maximum
    /// (the first one on ties).
    public static func forward(_ g: Window, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                               argmax: UnsafeMutablePointer<Int32>) {
        let c = g.channels
        for oh in 0..<g.outH {
            for ow in 0..<g.outW {
                let o = (oh * g.outW + ow) * c
                let first = ((oh * g.stride) * g.inW + ow * g.stride) * c
                for ch in 0..<c { y[o + ch] = x[first + ch]; argmax[o + ch] = Int32(first + ch) }
                for kh in 0..<g.kernel {
                    for kw in 0..<g.kernel where kh != 0 || kw != 0 {
                        let i = ((oh * g.stride + kh) * g.inW + ow * g.stride + kw) * c
                        for ch in 0..<c where x[i + ch] > y[o + ch] {
                            y[o + ch] = x[i + ch]; argmax[o + ch] = Int32(i + ch)
                        }
                    }
                }
            }
        }
    }

    public static func backward(_ g: Window, dy: UnsafePointer<Float>, argmax: UnsafePointer<Int32>,
                                dx: UnsafeMutablePointer<Float>) {
        dx.update(repeating: 0, count: g.inputSize)
        for o in 0..<(g.positions * g.channels) { dx[Int(argmax[o])] += dy[o] }
    }
}

public enum AvgPool {
    public static func forward(_ g: Window, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        let c = g.channels
        let scale = 1 / Float(g.kernel * g.kernel)
        for oh in 0..<g.outH {
            for ow in 0..<g.outW {
                let o = (oh * g.outW + ow) * c
                for ch in 0..<c { y[o + ch] = 0 }
                for kh in 0..<g.kernel {
                    for kw in 0..<g.kernel {
                        let i = ((oh * g.stride + kh) * g.inW + ow * g.stride + kw) * c
                        for ch in 0..<c { y[o + ch] += x[i + ch] }
                    }
                }
                for ch in 0..<c { y[o + ch] *= scale }
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
                        for ch in 0..<c { dx[i + ch] += dy[o + ch] * scale }
                    }
                }
            }
        }
    }
}
