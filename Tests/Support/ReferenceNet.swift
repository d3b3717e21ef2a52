// A Float64 interpreter of a model spec (test support only): the network the gradient tests
// differentiate by finite differences, built from Reference's conv and pool. It runs the whole
// batch layer by layer, as batch norm's statistics couple the samples.
import Foundation
import PTKernels
import PTModel

/// A Float64 interpreter of a spec, using the network's weights (found by name), dropout masks
/// and, for batch norm in eval mode, its running statistics.
public struct ReferenceNet {
    public let spec: ModelSpec
    public let input: Shape
    public init(spec: ModelSpec, input: Shape) { self.spec = spec; self.input = input }

    /// Batch norm's epsilon, as PyTorch's default.
    public static let epsilon = 1e-5

    /// The mean loss and each sample's logits. `state` (named as `Network.state.tensors`) holds the
    /// running statistics that batch norm uses when not `training`.
    public func loss(weights w: [Double], tensors: [ParameterTensor], x: [Double], labels: [Int],
                     training: Bool, step: Int, seed: UInt64,
                     state: [Double] = [], stateTensors: [ParameterTensor] = []) -> (loss: Double, logits: [[Double]]) {
        func find(_ list: [ParameterTensor], _ name: String) -> ParameterTensor? { list.first { $0.name == name } }
        func values(_ name: String) -> ArraySlice<Double> {
            let t = find(tensors, name)!
            return w[t.offset..<(t.offset + t.count)]
        }
        func stateValues(_ name: String) -> [Double] {
            let t = find(stateTensors, name)!
            return Array(state[t.offset..<(t.offset + t.count)])
        }
        let n = labels.count
        var a = (0..<n).map { s in Array(x[(s * input.count)..<((s + 1) * input.count)]) }
        var shape = input
        var convs = 0, fcs = 0, bns = 0, blocks = 0
        var saved: [([[Double]], Shape, Int)] = []  // each open residual block's input, and its convs' stride so far
        let layers = spec.layers
        var i = 0
        while i < layers.count {
            let relu = i + 1 < layers.count && layers[i + 1] == .relu
            func activate(_ v: [Double]) -> [Double] { relu ? v.map { max($0, 0) } : v }
            switch layers[i] {
            case let .conv(out, k, stride, same, bias):
                convs += 1
                let g = Window(inH: shape.h, inW: shape.w, channels: shape.c, kernel: k, stride: stride, same: same)
                if !saved.isEmpty { saved[saved.count - 1].2 *= stride }
                let W = values("conv\(convs).weight")
                let B = bias ? values("conv\(convs).bias") : ArraySlice(repeating: 0, count: out)
                a = a.map { activate(Reference.conv(g, x: $0, w: W, bias: B, cout: out)) }
                shape = Shape(h: g.outH, w: g.outW, c: out)
            case .batchNorm:
                bns += 1
                let c = shape.c, positions = shape.h * shape.w
                let gamma = Array(values("bn\(bns).weight")), beta = Array(values("bn\(bns).bias"))
                var mean = [Double](repeating: 0, count: c), variance = mean
                if training {
                    for v in a { for p in 0..<positions { for ch in 0..<c { mean[ch] += v[p * c + ch] } } }
                    mean = mean.map { $0 / Double(n * positions) }
                    for v in a { for p in 0..<positions { for ch in 0..<c { variance[ch] += pow(v[p * c + ch] - mean[ch], 2) } } }
                    variance = variance.map { $0 / Double(n * positions) }
                } else {
                    mean = stateValues("bn\(bns).running_mean")
                    variance = stateValues("bn\(bns).running_var")
                }
                a = a.map { v in
                    activate(v.indices.map { j in
                        let ch = j % c
                        return (v[j] - mean[ch]) / (variance[ch] + Self.epsilon).squareRoot() * gamma[ch] + beta[ch]
                    })
                }
            case let .maxPool(size, stride), let .avgPool(size, stride):
                var isMax = false
                if case .maxPool = layers[i] { isMax = true }
                let g = Window(inH: shape.h, inW: shape.w, channels: shape.c, kernel: size, stride: stride, same: false)
                a = a.map { Reference.pool(g, x: $0, max: isMax) }
                shape = Shape(h: g.outH, w: g.outW, c: shape.c)
            case .globalAvgPool:
                let c = shape.c, positions = shape.h * shape.w
                a = a.map { v in (0..<c).map { ch in (0..<positions).reduce(0.0) { $0 + v[$1 * c + ch] } / Double(positions) } }
                shape = Shape(h: 1, w: 1, c: c)
            case let .dense(out, bias):
                fcs += 1
                let W = values("fc\(fcs).weight"), B = bias ? values("fc\(fcs).bias") : ArraySlice(repeating: 0, count: out)
                a = a.map { v in
                    activate((0..<out).map { o in
                        var y = B[B.startIndex + o]
                        for j in 0..<v.count { y += v[j] * W[W.startIndex + j * out + o] }
                        return y
                    })
                }
                shape = Shape(h: 1, w: 1, c: out)
            case let .dropout(keep):
                if training {
                    a = a.enumerated().map { s, v in
                        var m = [Float](repeating: 0, count: v.count)
                        Dropout.fillScales(&m, count: m.count, keep: keep, seed: seed, step: UInt64(step), sample: UInt64(s))
                        return zip(v, m).map { $0 * Double($1) }
                    }
                }
            case .residualBegin:
                saved.append((a, shape, 1))
            case .residualEnd:
                blocks += 1
                var (shortcut, inShape, stride) = saved.removeLast()
                if inShape != shape {  // the 1x1 projection, with the block's stride
                    let g = Window(inH: inShape.h, inW: inShape.w, channels: inShape.c, kernel: 1, stride: stride, same: true)
                    let W = values("res\(blocks).proj.weight"), B = values("res\(blocks).proj.bias")
                    shortcut = shortcut.map { Reference.conv(g, x: $0, w: W, bias: B, cout: shape.c) }
                    inShape = shape
                }
                a = zip(a, shortcut).map { v, x in activate(zip(v, x).map { $0 + $1 }) }
            case .relu: break
            }
            i += relu ? 2 : 1
        }
        var total = 0.0
        for (s, label) in labels.enumerated() {
            let mx = a[s].max()!
            total += log(a[s].map { exp($0 - mx) }.reduce(0, +)) + mx - a[s][label]
        }
        return (total / Double(n), a)
    }
}
