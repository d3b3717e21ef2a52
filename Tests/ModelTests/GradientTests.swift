// Every layer's forward against a naive Float64 network, and every parameter's gradient (which
// flows through every later layer's backward) against central finite differences of that
// Float64 network.
import Foundation
import Testing
import PTKernels
import PTModel
import PTTestSupport

let gradientSpecs = [
    "conv(3,3) relu maxpool(2) fc(5)",
    "conv(4,3,stride=2) relu conv(3,2,pad=valid) relu avgpool(2,1) fc(6) relu fc(5)",
    "conv(2,5,pad=valid) relu avgpool(2) fc(7) relu dropout(0.6) fc(5)",
    "conv(3,1) relu maxpool(3,2) conv(2,3) relu fc(5)",
    "fc(9) relu dropout(0.5) fc(8) relu fc(5)",
    "conv(3,3) maxpool(2) conv(4,3) relu maxpool(2,1) fc(5)",
    "conv(2,3) relu maxpool(2) fc(70) relu fc(5)",
    // The second conv runs as Winograd F(2x2, 3x3) (3x3, stride 1, whole vectors of channels):
    // with its max-pool fused, and with edge tiles hanging over a 7x6 output; SAME with 32.
    "conv(16,3) relu conv(16,3,pad=valid) relu maxpool(2) fc(5)",
    "conv(32,3) relu conv(32,3) fc(5)",
    // 16 channels in and out, SAME: the direct channels-last conv (input and weight gradients).
    "conv(16,3) relu conv(16,3) fc(5)",
    // A one-channel 3x3 conv that is not the first layer takes the im2col path (it needs dx).
    "conv(1,1) relu conv(16,3) relu fc(5)",
    // Batch norm (training mode: the batch's statistics) after convs with and without a bias and
    // after dense layers, global average pooling, and a Winograd conv without a bias.
    "conv(4,3,bias=false) bn relu maxpool(2) fc(5)",
    "conv(3,3) bn conv(4,3,stride=2,bias=false) bn relu gap fc(6) bn relu fc(5)",
    "conv(16,3,bias=false) bn relu conv(16,3,bias=false) bn relu gap fc(5)",
    "fc(9) bn relu dropout(0.5) fc(8,bias=false) bn fc(5)",
    // Residual blocks: an identity shortcut and a strided 1x1 projection; a block as the first
    // layer; a projection that changes only the channels; Winograd convs inside a block.
    "conv(4,3,bias=false) bn relu res(conv(4,3,bias=false) bn relu conv(4,3,bias=false) bn) relu res(conv(6,3,stride=2,bias=false) bn relu conv(6,3,bias=false) bn) relu gap fc(5)",
    "res(conv(2,3) relu conv(2,3)) relu fc(5)",
    "res(conv(8,1)) maxpool(2) fc(5)",
    "conv(16,3) relu res(conv(16,3,bias=false) bn relu conv(16,3,bias=false) bn) relu fc(5)",
    // Blocks whose last stage masks its output gradient in place by its ReLU: their ends keep
    // the shortcut's gradient in a buffer of its own (with and without the ReLU after the block).
    "res(conv(4,3) relu) res(conv(4,3,bias=false) bn relu) relu fc(5)",
    // A one-conv block whose bn adds the shortcut, with no ReLU after the block.
    "conv(4,3,bias=false) bn relu res(conv(4,3,bias=false) bn) fc(5)",
]

@Test(arguments: gradientSpecs)
func backwardMatchesFiniteDifferences(_ text: String) throws {
    try checkGradients(text, input: Shape(h: 7, w: 6, c: 2))
}

/// Winograd F(4x4, 3x3) (a 32-channel conv with a 16x16 output: 16 whole 4x4 tiles), with a bias
/// and without one before a bn, against finite differences on every 7th parameter of the larger
/// tensors (the Float64 network runs twice per parameter checked).
@Test(arguments: ["conv(16,3) relu conv(32,3) relu gap fc(5)", "conv(16,3) relu conv(32,3,bias=false) bn relu gap fc(5)"])
func winogradF4BackwardMatchesFiniteDifferences(_ text: String) throws {
    let input = Shape(h: 16, w: 16, c: 1)
    #expect(try NetworkPlan(spec: ModelSpec(parsing: text), input: input, classes: 5).winogradTiles.allSatisfy { $0 == .f4 })
    try checkGradients(text, input: input, batch: 2, every: 7)
}

/// The network's loss and logits against the Float64 network's, and the gradients of its
/// parameters (of every `every`-th one in tensors of more than 100) against central differences.
func checkGradients(_ text: String, input: Shape, batch: Int = 3, every: Int = 1) throws {
    let spec = try ModelSpec(parsing: text)
    let classes = 5
    let net = try Network(spec: spec, input: input, classes: classes, capacity: batch, threads: 2, seed: 42)
    var r = SplitMix64(seed: 9)
    for i in 0..<(batch * input.count) { net.input[i] = Float(r.nextUnit() * 2 - 1) }
    let labels = Array([1, 4, 2].prefix(batch))
    for (s, l) in labels.enumerated() { net.labels[s] = Int32(l) }
    // Biases start at zero; perturb them so their gradients (and ReLU patterns) are generic.
    for t in net.parameters.tensors where t.name.hasSuffix(".bias") {
        for j in 0..<t.count { net.weights[t.offset + j] = Float(r.nextUnit() * 0.2 - 0.1) }
    }
    let step = 3, seed: UInt64 = 77
    net.forward(count: batch, training: true, step: step, seed: seed)
    let loss = net.lossAndGradient(count: batch)
    net.backward(count: batch)

    let ref = ReferenceNet(spec: spec, input: input)
    var w = (0..<net.parameters.count).map { Double(net.weights[$0]) }
    let x = (0..<(batch * input.count)).map { Double(net.input[$0]) }
    let base = ref.loss(weights: w, tensors: net.parameters.tensors, x: x, labels: labels, training: true, step: step, seed: seed)
    // Forward: logits and loss agree with the Float64 network.
    #expect(abs(Double(loss) - base.loss) < 1e-5 * max(1, base.loss))
    for s in 0..<batch {
        for j in 0..<classes {
            #expect(abs(Double(net.logits[s * classes + j]) - base.logits[s][j]) < 1e-5)
        }
    }
    // Backward: every parameter (these nets are small) against central differences.
    let h = 1e-6
    var worst = 0.0, worstName = ""
    for t in net.parameters.tensors {
        for j in stride(from: 0, to: t.count, by: t.count > 100 ? every : 1) {
            let i = t.offset + j
            let keep = w[i]
            w[i] = keep + h
            let up = ref.loss(weights: w, tensors: net.parameters.tensors, x: x, labels: labels, training: true, step: step, seed: seed).loss
            w[i] = keep - h
            let down = ref.loss(weights: w, tensors: net.parameters.tensors, x: x, labels: labels, training: true, step: step, seed: seed).loss
            w[i] = keep
            let fd = (up - down) / (2 * h)
            let err = abs(Double(net.parameters.gradients[i]) - fd) / max(1e-2, abs(fd))
            if err > worst { worst = err; worstName = "\(t.name)[\(j)] analytic \(net.parameters.gradients[i]) fd \(fd)" }
        }
    }
    #expect(worst < 1e-3, "worst: \(worstName)")
}

/// Winograd convs whose GEMMs take groups of samples' tiles (F(4x4) over an 8x8 output: groups of
/// 4) at batch 160, whose 32 shards hold 5 samples each (the backward's groups of 4 and 1, dU's
/// sums going on from one group to the next): the gradient against central differences of the
/// Float64 network along random directions (the whole gradient at once, where each parameter's
/// would run the Float64 network twice per parameter).
@Test func groupedWinogradGradientMatchesDirectionalDifferences() throws {
    let text = "conv(16,3) relu conv(32,3,bias=false) bn relu conv(32,3) gap fc(5)"
    let spec = try ModelSpec(parsing: text)
    let input = Shape(h: 8, w: 8, c: 1), batch = 160, classes = 5
    #expect(try NetworkPlan(spec: spec, input: input, classes: classes).winogradGroups == [4, 4])
    let net = try Network(spec: spec, input: input, classes: classes, capacity: batch, threads: 2, seed: 42)
    var r = SplitMix64(seed: 9)
    for i in 0..<(batch * input.count) { net.input[i] = Float(r.nextUnit() * 2 - 1) }
    let labels = (0..<batch).map { ($0 * 3) % classes }
    for (s, l) in labels.enumerated() { net.labels[s] = Int32(l) }
    for t in net.parameters.tensors where t.name.hasSuffix(".bias") {
        for j in 0..<t.count { net.weights[t.offset + j] = Float(r.nextUnit() * 0.2 - 0.1) }
    }
    net.forward(count: batch, training: true, step: 1, seed: 5)
    _ = net.lossAndGradient(count: batch)
    net.backward(count: batch)
    let ref = ReferenceNet(spec: spec, input: input)
    let w = (0..<net.parameters.count).map { Double(net.weights[$0]) }
    let x = (0..<(batch * input.count)).map { Double(net.input[$0]) }
    // The step of the per-parameter check: a longer one (1e-4, ~7e-3 along d) crossed ReLU kinks.
    let h = 1e-6
    for _ in 0..<3 {
        let d = w.map { _ in r.nextUnit() * 2 - 1 }
        func loss(_ sign: Double) -> Double {
            ref.loss(weights: zip(w, d).map { $0 + sign * h * $1 }, tensors: net.parameters.tensors, x: x, labels: labels,
                     training: true, step: 1, seed: 5).loss
        }
        let fd = (loss(1) - loss(-1)) / (2 * h)
        let analytic = d.indices.reduce(0.0) { $0 + Double(net.parameters.gradients[$1]) * d[$1] }
        // Each float32 gradient is within ~1e-5 of its value relative to itself (F(4x4)'s kernel
        // errors are below that), so the sum is within 1e-5 · Σ|g_i d_i| (~9e-4 here); one sample's
        // share missing or counted twice moves it by about |Σ g_i d_i| / 160 (~7e-3). (Central
        // differences along d cross a few ReLU kinks among 160 x 4,096 activations: up to 3e-5.)
        let scale = d.indices.reduce(0.0) { $0 + abs(Double(net.parameters.gradients[$1]) * d[$1]) }
        #expect(abs(analytic - fd) <= 1e-5 * scale, "analytic \(analytic) fd \(fd) scale \(scale)")
    }
}

/// A grouped Winograd conv (F(4x4) over 8x8 outputs: groups of 4) gives the same bits whether its
/// forward runs groups (1 and 2 workers) or samples one at a time, cut into rows (split for 256
/// workers), after two training steps at batch 70 (shards of 2 and 3 samples) and at batch 160
/// (shards of 5: groups of 4 and 1).
@Test(arguments: [70, 160])
func groupedWinogradGivesTheSameBitsGroupedOrNot(_ batch: Int) throws {
    let spec = try ModelSpec(parsing: "conv(16,3) relu conv(32,3,bias=false) bn relu conv(32,3) relu maxpool(2) fc(10)")
    func run(_ threads: Int, split: Int) throws -> [UInt32] {
        let net = try Network(spec: spec, input: Shape(h: 8, w: 8, c: 3), classes: 10, capacity: batch, threads: threads, seed: 5)
        net.pool.splitCount = split
        var r = SplitMix64(seed: 1)
        for step in 1...2 {
            for i in 0..<(batch * 8 * 8 * 3) { net.input[i] = Float(r.nextUnit()) }
            for s in 0..<batch { net.labels[s] = Int32((s + step) % 10) }
            net.forward(count: batch, training: true, step: step, seed: 2)
            _ = net.lossAndGradient(count: batch)
            _ = net.backward(count: batch, adam: AdamStep(lr: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, t: step))
        }
        return (0..<net.parameters.count).map { net.weights[$0].bitPattern } + (0..<net.state.count).map { net.state.values[$0].bitPattern }
    }
    let one = try run(1, split: 1)
    #expect(try run(2, split: 2) == one)
    #expect(try run(2, split: 256) == one)
}

/// The same pass split across 1...16 threads gives the same bits.
@Test(arguments: [2, 3, 7, 16])
func forwardAndBackwardAreIndependentOfThreads(_ threads: Int) throws {
    let spec = try ModelSpec(parsing: "conv(8,3) relu maxpool(2) conv(16,3,stride=2) relu avgpool(2,1) fc(40) relu dropout(0.5) fc(10)")
    func run(_ t: Int) throws -> [UInt32] {
        let net = try Network(spec: spec, input: Shape(h: 12, w: 11, c: 3), classes: 10, capacity: 13, threads: t, seed: 5)
        var r = SplitMix64(seed: 1)
        for i in 0..<(13 * 12 * 11 * 3) { net.input[i] = Float(r.nextUnit()) }
        for s in 0..<13 { net.labels[s] = Int32(s % 10) }
        net.forward(count: 13, training: true, step: 1, seed: 2)
        _ = net.lossAndGradient(count: 13)
        net.backward(count: 13)
        return (0..<net.parameters.count).map { net.parameters.gradients[$0].bitPattern }
    }
    let one = try run(1), other = try run(threads)
    #expect(one.count == other.count && !one.indices.contains { one[$0] != other[$0] })
}

/// The training step's backward pass takes the Adam step itself (dense weights a block of rows at
/// a time, inside their backward pass): it must give exactly the bits of `backward` followed by
/// Adam over the flat buffers, at any thread count. The sizes are awkward on purpose: dense
/// inputs that are not whole 8-row tiles (3·3·5 = 45 and 37) and outputs that are not whole
/// 32-column panels, more rows than one block of the fused job, and a dense first layer.
@Test(arguments: ["conv(5,3) relu maxpool(2) fc(37) relu dropout(0.5) fc(10)",
                  "fc(70) relu fc(33) relu fc(10)",
                  "conv(8,3,bias=false) bn relu res(conv(8,3,bias=false) bn relu conv(16,3,2,bias=false) bn) relu gap fc(37,bias=false) bn relu fc(10)"],
      [1, 2, 3])
func backwardWithAdamEqualsBackwardThenAdam(_ text: String, _ threads: Int) throws {
    let spec = try ModelSpec(parsing: text)
    let input = Shape(h: 7, w: 7, c: 2), batch = 11, classes = 10
    func step(_ net: Network, _ t: Int) {
        var r = SplitMix64(seed: UInt64(t))
        for i in 0..<(batch * input.count) { net.input[i] = Float(r.nextUnit() * 2 - 1) }
        for s in 0..<batch { net.labels[s] = Int32((s * 7 + t) % classes) }
        net.forward(count: batch, training: true, step: t, seed: 3)
        _ = net.lossAndGradient(count: batch)
    }
    let fused = try Network(spec: spec, input: input, classes: classes, capacity: batch, threads: threads, seed: 8)
    let plain = try Network(spec: spec, input: input, classes: classes, capacity: batch, threads: 1, seed: 8)
    let count = plain.parameters.count
    for t in 1...3 {
        let adam = AdamStep(lr: 1e-2, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, t: t)
        step(fused, t)
        #expect(fused.backward(count: batch, adam: adam))
        step(plain, t)
        plain.backward(count: batch)
        #expect(AdamUpdate.apply(adam, w: plain.weights, g: plain.parameters.gradients, m: plain.parameters.moment1, v: plain.parameters.moment2!, count: count))
        for (name, a, b) in [("weights", fused.weights, plain.weights), ("moment1", fused.parameters.moment1, plain.parameters.moment1),
                             ("moment2", fused.parameters.moment2!, plain.parameters.moment2!)] {
            let first = (0..<count).first { a[$0].bitPattern != b[$0].bitPattern }
            #expect(first == nil, "step \(t): \(name) differ first at \(first ?? -1)")
        }
        // The fused step stores every gradient but the dense weights' (those go straight into Adam).
        for tensor in plain.parameters.tensors {
            if case .denseWeight = tensor.kind { continue }
            let first = (tensor.offset..<(tensor.offset + tensor.count)).first { fused.parameters.gradients[$0].bitPattern != plain.parameters.gradients[$0].bitPattern }
            #expect(first == nil, "step \(t): \(tensor.name)'s gradient differs first at \(first ?? -1)")
        }
    }
    // The step moved the weights (a fused pass that skipped Adam would also "match" a no-op).
    let fresh = try Network(spec: spec, input: input, classes: classes, capacity: batch, threads: 1, seed: 8)
    #expect((0..<count).contains { fresh.weights[$0] != fused.weights[$0] })
}

/// A non-finite gradient is reported by the fused step, and the tensor named, although the fused
/// step does not store dense weights' gradients: the first such tensor, in either pass.
@Test(arguments: [true, false])
func nonFiniteGradientsAreReportedAndNamed(_ fused: Bool) throws {
    let spec = try ModelSpec(parsing: "fc(40) relu fc(10)")
    let input = Shape(h: 4, w: 4, c: 1)
    let net = try Network(spec: spec, input: input, classes: 10, capacity: 4, threads: 2, seed: 1)
    // Finite first: nothing to name.
    for i in 0..<(4 * input.count) { net.input[i] = 0.5 }
    for s in 0..<4 { net.labels[s] = Int32(s) }
    let adam = AdamStep(lr: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, t: 1)
    net.forward(count: 4, training: true, step: 1, seed: 1)
    _ = net.lossAndGradient(count: 4)
    if fused { #expect(net.backward(count: 4, adam: adam)) } else { net.backward(count: 4) }
    #expect(net.nonFiniteGradient() == nil)
    // An infinite input pixel: every gradient is NaN from fc1's output on; fc1.weight comes first.
    net.input[5] = .infinity
    net.forward(count: 4, training: true, step: 2, seed: 1)
    _ = net.lossAndGradient(count: 4)
    if fused { #expect(!net.backward(count: 4, adam: adam)) } else { net.backward(count: 4) }
    #expect(net.nonFiniteGradient() == "fc1.weight")
}
