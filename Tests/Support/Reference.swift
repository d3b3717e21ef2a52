// Naive Float64 twins of the fast kernels, for tests only (a target of its own: not in the library
// product): obviously right, never fast.
import Foundation
import PTKernels

public enum Reference {
    /// C = A·B (+ bias, ReLU) in Float64; A is [m, k], B is [k, n], row-major.
    public static func gemm(m: Int, n: Int, k: Int, a: [Float], b: [Float], bias: [Float]? = nil,
                            relu: Bool = false) -> [Double] {
        var c = [Double](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k { s += Double(a[i * k + p]) * Double(b[p * n + j]) }
                if let bias { s += Double(bias[j]) }
                c[i * n + j] = relu ? max(s, 0) : s
            }
        }
        return c
    }

    /// Direct convolution of one NHWC sample with weights [K, K, Cin, Cout] and bias [Cout]: each
    /// output is its bias plus the products over (kh, kw, c) in that order.
    public static func conv(_ g: Window, x: [Float], w: [Float], bias: [Float], cout: Int) -> [Double] {
        conv(g, x: x.map(Double.init), w: w.map(Double.init)[...], bias: bias.map(Double.init)[...], cout: cout)
    }

    public static func conv(_ g: Window, x: [Double], w: ArraySlice<Double>, bias: ArraySlice<Double>, cout: Int) -> [Double] {
        let w0 = w.startIndex, b0 = bias.startIndex
        var y = [Double](repeating: 0, count: g.positions * cout)
        for oh in 0..<g.outH {
            for ow in 0..<g.outW {
                for o in 0..<cout {
                    var s = bias[b0 + o]
                    for kh in 0..<g.kernel {
                        for kw in 0..<g.kernel {
                            let ih = oh * g.stride - g.padTop + kh, iw = ow * g.stride - g.padLeft + kw
                            guard ih >= 0, ih < g.inH, iw >= 0, iw < g.inW else { continue }
                            for c in 0..<g.channels {
                                s += x[(ih * g.inW + iw) * g.channels + c] * w[w0 + ((kh * g.kernel + kw) * g.channels + c) * cout + o]
                            }
                        }
                    }
                    y[(oh * g.outW + ow) * cout + o] = s
                }
            }
        }
        return y
    }

    /// The direct convolution's gradients for output gradient dy: dx (each input's products with
    /// the weights over the outputs that read it) and dw (each weight's products over positions).
    public static func convGradients(_ g: Window, x: [Float], w: [Float], dy: [Float], cout: Int) -> (dx: [Double], dw: [Double]) {
        var dx = [Double](repeating: 0, count: g.inputSize), dw = [Double](repeating: 0, count: g.patch * cout)
        for oh in 0..<g.outH {
            for ow in 0..<g.outW {
                for kh in 0..<g.kernel {
                    for kw in 0..<g.kernel {
                        let ih = oh * g.stride - g.padTop + kh, iw = ow * g.stride - g.padLeft + kw
                        guard ih >= 0, ih < g.inH, iw >= 0, iw < g.inW else { continue }
                        for c in 0..<g.channels {
                            for o in 0..<cout {
                                let d = Double(dy[(oh * g.outW + ow) * cout + o]), wi = ((kh * g.kernel + kw) * g.channels + c) * cout + o
                                dx[(ih * g.inW + iw) * g.channels + c] += d * Double(w[wi])
                                dw[wi] += d * Double(x[(ih * g.inW + iw) * g.channels + c])
                            }
                        }
                    }
                }
            }
        }
        return (dx, dw)
    }

    /// Max or average over each VALID window.
    public static func pool(_ g: Window, x: [Float], max isMax: Bool) -> [Double] {
        pool(g, x: x.map(Double.init), max: isMax)
    }

    /// Each max-pool output's input index: the window's first maximum, row by row (a later equal
    /// value, -0 after +0 included, does not replace it).
    public static func maxPoolArgmax(_ g: Window, x: [Float]) -> [Int32] {
        var arg = [Int32](repeating: -1, count: g.positions * g.channels)
        for oh in 0..<g.outH {
            for ow in 0..<g.outW {
                for c in 0..<g.channels {
                    var best = -Float.infinity, first = -1
                    for kh in 0..<g.kernel {
                        for kw in 0..<g.kernel {
                            let i = ((oh * g.stride + kh) * g.inW + ow * g.stride + kw) * g.channels + c
                            if first < 0 || x[i] > best { best = x[i]; first = i }
                        }
                    }
                    arg[(oh * g.outW + ow) * g.channels + c] = Int32(first)
                }
            }
        }
        return arg
    }

    public static func pool(_ g: Window, x: [Double], max isMax: Bool) -> [Double] {
        var y = [Double](repeating: 0, count: g.positions * g.channels)
        for oh in 0..<g.outH {
            for ow in 0..<g.outW {
                for c in 0..<g.channels {
                    var best = -Double.infinity, sum = 0.0
                    for kh in 0..<g.kernel {
                        for kw in 0..<g.kernel {
                            let v = x[((oh * g.stride + kh) * g.inW + ow * g.stride + kw) * g.channels + c]
                            best = max(best, v); sum += v
                        }
                    }
                    y[(oh * g.outW + ow) * g.channels + c] = isMax ? best : sum / Double(g.kernel * g.kernel)
                }
            }
        }
        return y
    }

    public static func crossEntropy(logits: [Float], label: Int) -> Double {
        let l = logits.map(Double.init)
        let mx = l.max()!
        return log(l.map { exp($0 - mx) }.reduce(0, +)) + mx - l[label]
    }
}
