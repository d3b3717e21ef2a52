// A whole network's bf16 forward and backward pass, stage by stage: every conv's and dense layer's
// output, weight gradient and input gradient against Float64 fed the same bf16-rounded operands
// (ptrain's own stored activations and gradients, rounded to bf16 as ptrain rounds them), and the
// bias gradients (fp32 sums of unrounded gradients). The tolerance is derived, not tuned: bf16
// products are exact in fp32, and any order of n fp32 additions is within (n + 2) u Σ|terms| of
// the exact sum (u = 2^-24; the +2 covers a loaded partial sum and the bias).
import Foundation
import PTKernels
import PTModel
import PTTestSupport
import Testing

let u = 0x1p-24

/// `got` against `want` element by element, each within (terms + 2) u size[i].
func expectWithinSumBound(_ got: [Float], _ want: [Double], size: [Double], terms: Int, _ what: String,
                          sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(got.count == want.count, sourceLocation: sourceLocation)
    for i in want.indices {
        let bound = Double(terms + 2) * u * size[i]
        if !(abs(Double(got[i]) - want[i]) <= bound) {  // (a NaN is outside)
            Issue.record("\(what)[\(i)] = \(got[i]), Float64 \(want[i]), bound \(bound)", sourceLocation: sourceLocation)
            return
        }
    }
}

func bf16(_ p: UnsafePointer<Float>, _ n: Int) -> [Float] { (0..<n).map { BF16.rounded(p[$0]) } }
func floats(_ p: UnsafePointer<Float>, _ n: Int) -> [Float] { Array(UnsafeBufferPointer(start: p, count: n)) }

/// Two networks of one shape: convs on the bf16 im2col GEMM path (3 and 4 input channels), or the
/// second on the implicit path (16 channels in and out: patches read in place, a kernel row's K
/// padded to a block; its input gradient one chain over taps and channels); fc layers on bf16 GEMMs.
struct BF16Case: Sendable, CustomStringConvertible {
    var spec: String, stride1: Int, channels: (Int, Int), paths: [ConvPath]
    var description: String { spec }
    static let all = [
        BF16Case(spec: "conv(4,3,stride=2) relu conv(6,3) relu avgpool(2) fc(16) relu fc(5)", stride1: 2, channels: (4, 6),
                 paths: [.im2col, .im2col]),
        BF16Case(spec: "conv(16,3) relu conv(16,3) relu avgpool(2) fc(16) relu fc(5)", stride1: 1, channels: (16, 16),
                 paths: [.im2col, .implicit]),
    ]
}

@Test(arguments: BF16Path.available, BF16Case.all)
func bf16PassesMatchFloat64OnRoundedOperandsStageByStage(_ path: BF16Path, _ c: BF16Case) throws {
    let spec = try ModelSpec(parsing: c.spec)
    let input = Shape(h: 9, w: 8, c: 3), n = 3, classes = 5
    let net = try Network(spec: spec, input: input, classes: classes, capacity: n, threads: 2, seed: 42, precision: .bf16(path))
    #expect(try NetworkPlan(spec: spec, input: input, classes: classes, precision: .bf16(path)).convPaths == c.paths)
    var r = SplitMix64(seed: 9)
    for i in 0..<(n * input.count) { net.input[i] = Float(r.nextUnit() * 2 - 1) }
    for (s, l) in [1, 4, 2].enumerated() { net.labels[s] = Int32(l) }
    for t in net.parameters.tensors where t.name.hasSuffix(".bias") {
        for j in 0..<t.count { net.weights[t.offset + j] = Float(r.nextUnit() * 0.2 - 0.1) }
    }
    net.forward(count: n, training: true)
    _ = net.lossAndGradient(count: n)
    net.backward(count: n)
    func tensor(_ name: String) -> ParameterTensor { net.parameters.tensors.first { $0.name == name }! }
    let abs1 = { (v: [Float]) in v.map { abs($0) } }

    // conv1 (x: the input, no ReLU before it) and conv2 (x: conv1's ReLU output).
    let g1 = Window(inH: 9, inW: 8, channels: 3, kernel: 3, stride: c.stride1, same: true)
    let g2 = Window(inH: g1.outH, inW: g1.outW, channels: c.channels.0, kernel: 3, stride: 1, same: true)
    for (i, g, cout) in [(0, g1, c.channels.0), (1, g2, c.channels.1)] {
        let w = tensor("conv\(i + 1).weight"), b = tensor("conv\(i + 1).bias")
        let wr = bf16(net.weights + w.offset, w.count), bias = floats(net.weights + b.offset, b.count)
        let outSize = g.positions * cout
        var dw = [Double](repeating: 0, count: w.count), dwSize = dw, db = [Double](repeating: 0, count: cout), dbSize = db
        for s in 0..<n {
            let xr = bf16(net.activation(i)! + s * g.inputSize, g.inputSize)
            let want = Reference.conv(g, x: xr, w: wr, bias: bias, cout: cout).map { max($0, 0) }
            let size = Reference.conv(g, x: abs1(xr), w: abs1(wr), bias: abs1(bias), cout: cout)
            expectWithinSumBound(floats(net.activation(i + 1)! + s * outSize, outSize), want, size: size, terms: g.patch,
                                 "\(path) conv\(i + 1) output, sample \(s)")
            let dz = floats(net.activationGradient(i + 1)! + s * outSize, outSize), dzr = dz.map(BF16.rounded)
            let grads = Reference.convGradients(g, x: xr, w: wr, dy: dzr, cout: cout)
            let sizes = Reference.convGradients(g, x: abs1(xr), w: abs1(wr), dy: abs1(dzr), cout: cout)
            for j in dw.indices { dw[j] += grads.dw[j]; dwSize[j] += sizes.dw[j] }
            for p in 0..<g.positions { for o in 0..<cout { db[o] += Double(dz[p * cout + o]); dbSize[o] += abs(Double(dz[p * cout + o])) } }
            if i > 0 {
                // dx, masked by conv1's ReLU (its backward applied the mask in place).
                let y = floats(net.activation(i)! + s * g.inputSize, g.inputSize)
                let want = zip(grads.dx, y).map { $1 > 0 ? $0 : 0 }
                expectWithinSumBound(floats(net.activationGradient(i)! + s * g.inputSize, g.inputSize), want, size: sizes.dx,
                                     terms: g.kernel * g.kernel * cout, "\(path) conv\(i + 1) input gradient, sample \(s)")
            }
        }
        expectWithinSumBound(floats(net.parameters.gradients + w.offset, w.count), dw, size: dwSize, terms: n * g.positions,
                             "\(path) conv\(i + 1) weight gradient")
        expectWithinSumBound(floats(net.parameters.gradients + b.offset, b.count), db, size: dbSize, terms: n * g.positions,
                             "\(path) conv\(i + 1) bias gradient")
    }

    // fc1 (x: the average pool's output) and fc2 (x: fc1's ReLU output; its dz is the loss's gradient).
    let pooled = g2.outH / 2 * (g2.outW / 2) * c.channels.1
    for (i, inputs, outputs, relu) in [(3, pooled, 16, true), (4, 16, 5, false)] {
        let w = tensor("fc\(i - 2).weight"), b = tensor("fc\(i - 2).bias")
        let wr = bf16(net.weights + w.offset, w.count), bias = floats(net.weights + b.offset, b.count)
        let xr = bf16(net.activation(i)!, n * inputs), y = floats(net.activation(i + 1)!, n * outputs)
        let dz = floats(net.activationGradient(i + 1)!, n * outputs), dzr = dz.map(BF16.rounded)
        var want = [Double](repeating: 0, count: n * outputs), size = want
        var dw = [Double](repeating: 0, count: w.count), dwSize = dw, dx = [Double](repeating: 0, count: n * inputs), dxSize = dx
        var db = [Double](repeating: 0, count: outputs), dbSize = db
        for s in 0..<n {
            for j in 0..<outputs {
                var sum = Double(bias[j]), total = abs(Double(bias[j]))
                for k in 0..<inputs {
                    let t = Double(xr[s * inputs + k]) * Double(wr[k * outputs + j])
                    sum += t; total += abs(t)
                    let g = Double(xr[s * inputs + k]) * Double(dzr[s * outputs + j])
                    dw[k * outputs + j] += g; dwSize[k * outputs + j] += abs(g)
                    let d = Double(dzr[s * outputs + j]) * Double(wr[k * outputs + j])
                    dx[s * inputs + k] += d; dxSize[s * inputs + k] += abs(d)
                }
                want[s * outputs + j] = relu ? max(sum, 0) : sum
                size[s * outputs + j] = total
                db[j] += Double(dz[s * outputs + j]); dbSize[j] += abs(Double(dz[s * outputs + j]))
            }
        }
        expectWithinSumBound(y, want, size: size, terms: inputs, "\(path) fc\(i - 2) output")
        expectWithinSumBound(floats(net.parameters.gradients + w.offset, w.count), dw, size: dwSize, terms: n, "\(path) fc\(i - 2) weight gradient")
        expectWithinSumBound(floats(net.parameters.gradients + b.offset, b.count), db, size: dbSize, terms: n, "\(path) fc\(i - 2) bias gradient")
        // fc2's input gradient is masked by fc1's ReLU; fc1's (the pool's output) is not.
        let mask = i == 4 ? floats(net.activation(i)!, n * inputs).map { $0 > 0 } : [Bool](repeating: true, count: n * inputs)
        expectWithinSumBound(floats(net.activationGradient(i)!, n * inputs), zip(dx, mask).map { $1 ? $0 : 0 }, size: dxSize,
                             terms: outputs, "\(path) fc\(i - 2) input gradient")
    }
}

/// The dense layers' packed bf16 weights, kept by the optimizer a block of rows at a time, give
/// the bits of rounding the weights afresh (a network whose weights are taken through `weights`
/// before each forward pass, which marks the copy stale); and a weight written through `weights`
/// after a step reaches the next forward pass. fc1's 392 inputs end in a partial k-block and its
/// 40 outputs in a partial column panel; 3 threads cut the row blocks unevenly.
@Test(arguments: BF16Path.available)
func bf16PackedWeightsGiveTheBitsOfRoundingWeightsAfresh(_ path: BF16Path) throws {
    let spec = try ModelSpec(parsing: "conv(8,3) relu maxpool(2) fc(40) relu dropout(0.5) fc(10)")
    func make() throws -> Network {
        try Network(spec: spec, input: Shape(h: 14, w: 14, c: 1), classes: 10, capacity: 13, threads: 3, seed: 9,
                    precision: .bf16(path))
    }
    let kept = try make(), afresh = try make()
    func step(_ net: Network, _ t: Int) -> [UInt32] {
        var r = SplitMix64(seed: UInt64(t))
        for i in 0..<(13 * net.inputShape.count) { net.input[i] = Float(r.nextUnit() * 2 - 1) }
        for s in 0..<13 { net.labels[s] = Int32((s * 7 + t) % 10) }
        net.forward(count: 13, training: true, step: t, seed: 4)
        _ = net.lossAndGradient(count: 13)
        #expect(net.backward(count: 13, adam: AdamStep(lr: 1e-2, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, t: t)))
        return (0..<130).map { net.logits[$0].bitPattern }
    }
    #expect(!kept.readsPackedWeights, "a new network has no packed copy yet")
    for t in 1...4 {
        let a = step(kept, t)
        _ = afresh.weights
        #expect(!afresh.readsPackedWeights)
        let b = step(afresh, t)
        #expect(a == b, "step \(t): logits differ")
        #expect(kept.readsPackedWeights, "step \(t): the fused optimizer step left no packed copy")
    }
    #expect((0..<kept.parameters.count).allSatisfy { kept.weights[$0].bitPattern == afresh.weights[$0].bitPattern })
    // Written through `weights` after a step, a weight reaches the next forward pass: its logits
    // are those of a new network (which has no copy) given the same weights.
    let halved = kept.weights, fresh = try make()
    for i in 0..<kept.parameters.count { halved[i] *= 0.5 }
    #expect(!kept.readsPackedWeights)
    fresh.weights.update(from: halved, count: kept.parameters.count)
    fresh.input.update(from: kept.input, count: 13 * kept.inputShape.count)
    for net in [kept, fresh] { net.forward(count: 13, training: false) }
    #expect((0..<130).allSatisfy { kept.logits[$0].bitPattern == fresh.logits[$0].bitPattern })
}
