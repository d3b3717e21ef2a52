// A Float64 interpreter of a model spec (test support only): the network the gradient tests
// differentiate by finite differences, built from Reference's conv and pool.
import Foundation
import PTKernels
import PTModel

/// A Float64 interpreter of a spec, using the network's weights and dropout masks.
public struct ReferenceNet {
    public let spec: ModelSpec
    public let input: Shape
    public init(spec: ModelSpec, input: Shape) { self.spec = spec; self.input = input }

    public func loss(weights w: [Double], tensors: [ParameterTensor], x: [Double], labels: [Int],
                     training: Bool, step: Int, seed: UInt64) -> (loss: Double, logits: [[Double]]) {
        var total = 0.0
        var allLogits: [[Double]] = []
        for (s, label) in labels.enumerated() {
            var a = Array(x[(s * input.count)..<((s + 1) * input.count)])
            var shape = input
            var t = 0  // next tensor
            var i = 0
            let layers = spec.layers
            while i < layers.count {
                let relu = i + 1 < layers.count && layers[i + 1] == .relu
                switch layers[i] {
                case let .conv(out, k, stride, same):
                    let g = Window(inH: shape.h, inW: shape.w, channels: shape.c, kernel: k, stride: stride, same: same)
                    let W = tensors[t], B = tensors[t + 1]; t += 2
                    let y = Reference.conv(g, x: a, w: w[W.offset..<(W.offset + W.count)], bias: w[B.offset..<(B.offset + B.count)], cout: out)
                    a = relu ? y.map { max($0, 0) } : y; shape = Shape(h: g.outH, w: g.outW, c: out)
                case let .maxPool(size, stride), let .avgPool(size, stride):
                    var isMax = false
                    if case .maxPool = layers[i] { isMax = true }
                    let g = Window(inH: shape.h, inW: shape.w, channels: shape.c, kernel: size, stride: stride, same: false)
                    a = Reference.pool(g, x: a, max: isMax); shape = Shape(h: g.outH, w: g.outW, c: shape.c)
                case let .dense(out):
                    let W = tensors[t], B = tensors[t + 1]; t += 2
                    var y = [Double](repeating: 0, count: out)
                    for o in 0..<out {
                        var v = w[B.offset + o]
                        for j in 0..<a.count { v += a[j] * w[W.offset + j * out + o] }
                        y[o] = relu ? max(v, 0) : v
                    }
                    a = y; shape = Shape(h: 1, w: 1, c: out)
                case let .dropout(keep):
                    if training {
                        var m = [Float](repeating: 0, count: a.count)
                        Dropout.fillScales(&m, count: m.count, keep: keep, seed: seed, step: UInt64(step), sample: UInt64(s))
                        a = zip(a, m).map { $0 * Double($1) }
                    }
                case .relu: break
                }
                i += relu ? 2 : 1
            }
            let mx = a.max()!
            total += log(a.map { exp($0 - mx) }.reduce(0, +)) + mx - a[label]
            allLogits.append(a)
        }
        return (total / Double(labels.count), allLogits)
    }
}
