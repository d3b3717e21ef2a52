// Batch norm, residual blocks, global average pooling and convs without a bias (their gradients
// against finite differences are in GradientTests): a one-channel first layer's gradients, eval
// mode against the Float64 network fed the running statistics, the running statistics themselves,
// the same bits at any thread count, and the spec's one-line refusals.
import Foundation
import Testing
import PTKernels
import PTModel
import PTRuntime
import PTTestSupport

private func fill(_ net: Network, batch: Int, seed: UInt64) {
    var r = SplitMix64(seed: seed)
    for i in 0..<(batch * net.inputShape.count) { net.input[i] = Float(r.nextUnit() * 2 - 1) }
    for s in 0..<batch { net.labels[s] = Int32((s * 3 + 1) % net.classes) }
}

/// The one-channel direct conv without a bias, then batch norm (the usual stem of a small ResNet).
@Test func oneChannelStemWithoutBiasMatchesFiniteDifferences() throws {
    let spec = try ModelSpec(parsing: "conv(8,3,bias=false) bn relu maxpool(2) conv(4,3) bn relu gap fc(5)")
    let input = Shape(h: 8, w: 7, c: 1), batch = 4
    let net = try Network(spec: spec, input: input, classes: 5, capacity: batch, threads: 2, seed: 11)
    #expect(net.stageNames.first == "conv 3x3 1->8")
    fill(net, batch: batch, seed: 3)
    var r = SplitMix64(seed: 4)
    // γ and β away from 1 and 0, so that their gradients flow through generic values.
    for t in net.parameters.tensors where t.name.hasPrefix("bn") || t.name.hasSuffix(".bias") {
        for j in 0..<t.count { net.weights[t.offset + j] = Float(r.nextUnit() * 0.4 + (t.name.hasSuffix("weight") ? 0.8 : -0.2)) }
    }
    net.forward(count: batch, training: true)
    let loss = net.lossAndGradient(count: batch)
    net.backward(count: batch)
    let ref = ReferenceNet(spec: spec, input: input)
    let labels = (0..<batch).map { Int(net.labels[$0]) }
    var w = (0..<net.parameters.count).map { Double(net.weights[$0]) }
    let x = (0..<(batch * input.count)).map { Double(net.input[$0]) }
    func refLoss() -> Double { ref.loss(weights: w, tensors: net.parameters.tensors, x: x, labels: labels, training: true, step: 0, seed: 0).loss }
    #expect(abs(Double(loss) - refLoss()) < 1e-5 * max(1, refLoss()))
    let h = 1e-6
    var worst = 0.0, worstName = ""
    for t in net.parameters.tensors {
        for j in 0..<t.count {
            let i = t.offset + j, keep = w[i]
            w[i] = keep + h; let up = refLoss()
            w[i] = keep - h; let down = refLoss()
            w[i] = keep
            let fd = (up - down) / (2 * h), err = abs(Double(net.parameters.gradients[i]) - fd) / max(1e-2, abs(fd))
            if err > worst { worst = err; worstName = "\(t.name)[\(j)] analytic \(net.parameters.gradients[i]) fd \(fd)" }
        }
    }
    #expect(worst < 1e-3, "worst: \(worstName)")
}

/// Training's forward passes move the running statistics as PyTorch's do (momentum 0.1, the
/// unbiased variance), and eval normalises with them: its logits equal the Float64 network's fed
/// the same running statistics.
@Test(arguments: [("conv(6,3,bias=false) bn relu avgpool(2) fc(7) bn relu fc(4)", 6), ("conv(16,3,bias=false) bn relu gap fc(4)", 16)])
func evalUsesTheRunningStatistics(_ text: String, _ c: Int) throws {
    let spec = try ModelSpec(parsing: text)
    let input = Shape(h: 6, w: 6, c: 2), batch = 5
    let net = try Network(spec: spec, input: input, classes: 4, capacity: batch, threads: 2, seed: 2)
    let bn1 = try #require(net.state.tensors.first { $0.name == "bn1.running_mean" }).offset
    #expect((0..<c).allSatisfy { net.state.values[bn1 + $0] == 0 && net.state.values[bn1 + c + $0] == 1 })
    // One training pass from fresh statistics: running = 0.1 · the batch's mean, 0.9 + 0.1 · its unbiased variance.
    fill(net, batch: batch, seed: 1)
    net.forward(count: batch, training: true)
    let w1 = try #require(net.parameters.tensors.first { $0.name == "conv1.weight" })
    let weights = (0..<w1.count).map { Double(net.weights[w1.offset + $0]) }[...]
    let conv = (0..<batch).flatMap { s in
        Reference.conv(Window(inH: 6, inW: 6, channels: 2, kernel: 3, stride: 1, same: true),
                       x: (0..<input.count).map { Double(net.input[s * input.count + $0]) }, w: weights,
                       bias: ArraySlice(repeating: 0, count: c), cout: c)
    }
    let m = Double(conv.count / c)
    for ch in 0..<c {
        let values = stride(from: ch, to: conv.count, by: c).map { conv[$0] }
        let mean = values.reduce(0, +) / m, unbiased = values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / (m - 1)
        #expect(abs(Double(net.state.values[bn1 + ch]) - 0.1 * mean) < 1e-6)
        #expect(abs(Double(net.state.values[bn1 + c + ch]) - (0.9 + 0.1 * unbiased)) < 1e-5)
    }
    #expect(net.state.values[bn1 + 2 * c] == 1)  // num_batches_tracked
    for step in 2...4 { fill(net, batch: batch, seed: UInt64(step)); net.forward(count: batch, training: true) }
    #expect(net.state.values[bn1 + 2 * c] == 4)
    fill(net, batch: batch, seed: 9)
    net.forward(count: batch, training: false)
    let ref = ReferenceNet(spec: spec, input: input).loss(
        weights: (0..<net.parameters.count).map { Double(net.weights[$0]) }, tensors: net.parameters.tensors,
        x: (0..<(batch * input.count)).map { Double(net.input[$0]) }, labels: Array(repeating: 0, count: batch),
        training: false, step: 0, seed: 0, state: (0..<net.state.count).map { Double(net.state.values[$0]) }, stateTensors: net.state.tensors)
    for s in 0..<batch { for j in 0..<4 { #expect(abs(Double(net.logits[s * 4 + j]) - ref.logits[s][j]) < 1e-5) } }
    // Eval leaves the statistics alone.
    #expect(net.state.values[bn1 + 2 * c] == 4)
}

/// The same step at 1..16 threads: gradients, weights after the fused optimizer step and the
/// running statistics, bit for bit (the statistics are sums over the whole batch in sample order),
/// in fp32 and in bf16 on this CPU's fastest path and on the portable one.
@Test(arguments: [2, 3, 7, 16], [Precision.fp32, .bf16(.best), .bf16(.portable)])
func resNetStagesAreIndependentOfThreads(_ threads: Int, _ precision: Precision) throws {
    let spec = try ModelSpec(parsing: "conv(8,3,bias=false) bn relu maxpool(2) res(conv(8,3,bias=false) bn relu conv(8,3,bias=false) bn) relu res(conv(16,3,stride=2,bias=false) bn relu conv(16,3,bias=false) bn) relu gap fc(12) bn relu dropout(0.5) fc(10)")
    func run(_ t: Int) throws -> [UInt32] {
        let net = try Network(spec: spec, input: Shape(h: 12, w: 11, c: 3), classes: 10, capacity: 13, threads: t, seed: 5,
                              precision: precision)
        var bits: [UInt32] = []
        for step in 1...2 {
            fill(net, batch: 13, seed: UInt64(step))
            net.forward(count: 13, training: true, step: step, seed: 2)
            _ = net.lossAndGradient(count: 13)
            #expect(net.backward(count: 13, adam: AdamStep(lr: 1e-2, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, t: step)))
            bits += (0..<net.parameters.count).map { net.parameters.gradients[$0].bitPattern }
        }
        bits += (0..<net.parameters.count).map { net.weights[$0].bitPattern } + (0..<net.state.count).map { net.state.values[$0].bitPattern }
        net.forward(count: 13, training: false)
        return bits + (0..<130).map { net.logits[$0].bitPattern }
    }
    let one = try run(1), other = try run(threads)
    #expect(one.count == other.count && !one.indices.contains { one[$0] != other[$0] })
}

@Test(arguments: [
    ("bn conv(4,3) fc(10)", "column 1: bn must directly follow a conv or fc layer"),
    ("conv(4,3) relu bn fc(10)", "column 16: bn must directly follow a conv or fc layer"),
    ("conv(4,3) bn bn fc(10)", "column 14: bn must directly follow a conv or fc layer"),
    ("conv(4,3) gap relu fc(10)", "column 15: relu must directly follow a conv, fc, bn or res(...) block"),
    ("gap fc(10)", "column 1: a pool cannot be the first layer"),
    ("fc(8) gap fc(10)", "column 7: 'gap' comes after a fc layer; convolutions and pools must come first"),
    ("conv(4,3,bias=no) fc(10)", "column 10: bias=no: must be true or false"),
    ("conv(4,3) bn(2) fc(10)", "column 14: bn takes at most 0 plain arguments"),
    ("res(conv(4,3) maxpool(2)) fc(10)", "column 15: 'maxpool(2)' cannot be inside res(...): only conv, bn and relu can"),
    ("res(conv(4,3) fc(10)", "column 1: res( has no closing ')'"),
    ("conv(4,3)) fc(10)", "column 10: ')' without a res( to close"),
    ("res(res(conv(4,3))) fc(10)", "column 5: a res(...) block cannot be inside another"),
    ("res(bn) fc(10)", "column 1: a res(...) block must begin with a conv"),
    ("fc(8) res(conv(4,3)) fc(10)", "column 7: 'res(' comes after a fc layer; residual blocks must come before"),
    ("res conv(4,3) fc(10)", "column 5: res needs its layers in parentheses, as in res(conv(16,3) relu conv(16,3))"),
    ("conv(4,3) res(conv(4,3)) bn fc(10)", "column 26: bn must directly follow a conv or fc layer"),
])
func batchNormAndGlobalPoolingMisusesAreRefused(_ c: (String, String)) {
    #expect(throws: SpecError.self) { try ModelSpec(parsing: c.0) }
    do { _ = try ModelSpec(parsing: c.0) } catch { #expect("\(error)" == "model spec, \(c.1)") }
}

@Test func newSpecWordsRoundTrip() throws {
    let s = try ModelSpec(parsing: "conv(16,3,bias=false) batchnorm relu res( conv(16,3) relu ) relu globalavgpool fc(10)")
    #expect(s.layers == [.conv(out: 16, kernel: 3, stride: 1, same: true, bias: false), .batchNorm, .relu, .residualBegin,
                         .conv(out: 16, kernel: 3, stride: 1, same: true), .relu, .residualEnd, .relu, .globalAvgPool, .dense(out: 10)])
    #expect(s.text == "conv(16,3,bias=false) bn relu res(conv(16,3) relu) relu gap fc(10)")
    #expect(try ModelSpec(parsing: s.text).layers == s.layers)
}

/// A block that changes the size other than by a stride has no 1x1 projection: refused with the shapes.
@Test func aBlockWhoseShapeNoProjectionMatchesIsRefused() throws {
    let spec = try ModelSpec(parsing: "res(conv(4,3,pad=valid)) fc(10)")
    #expect(throws: ShapeError.self) { try NetworkPlan(spec: spec, input: Shape(h: 8, w: 8, c: 1), classes: 10) }
    do { _ = try NetworkPlan(spec: spec, input: Shape(h: 8, w: 8, c: 1), classes: 10) } catch {
        #expect("\(error)" == "model spec, column 24: ) closes a block that takes 8x8x1 to 6x6x4: its shortcut, a 1x1 conv with the block's stride 1, would give 8x8 (a VALID conv inside changes the size otherwise)")
    }
    // A VALID conv that happens to halve the size is not a stride: refused, not given a stride-2 shortcut.
    #expect(throws: ShapeError.self) {
        try NetworkPlan(spec: try ModelSpec(parsing: "res(conv(8,3,pad=valid)) fc(10)"), input: Shape(h: 4, w: 4, c: 1), classes: 10)
    }
    // Two strided convs on an odd size (5 -> 3 -> 2): the shortcut's stride is 4, their product;
    // one row (1x8 -> 1x4) is a stride-2 block like any other.
    for (text, input) in [("res(conv(4,3,2) conv(4,3,2)) fc(10)", Shape(h: 5, w: 5, c: 2)), ("res(conv(4,3,2)) fc(10)", Shape(h: 1, w: 8, c: 2))] {
        let net = try Network(spec: try ModelSpec(parsing: text), input: input, classes: 10, capacity: 1, threads: 1, seed: 1)
        #expect(net.stageNames.last { $0.hasPrefix("res end") }!.hasSuffix("proj 1x1/\(text.contains("2) conv") ? 4 : 2) 2->4"), "\(net.stageNames)")
    }
    // Identity and projection shortcuts, with their parameters' names.
    let ok = try Network(spec: try ModelSpec(parsing: "res(conv(4,3)) res(conv(8,3,2) relu conv(8,3)) relu gap fc(10)"),
                         input: Shape(h: 8, w: 8, c: 4), classes: 10, capacity: 2, threads: 1, seed: 1)
    #expect(ok.parameters.tensors.map(\.name) == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight", "conv3.bias",
                                       "res2.proj.weight", "res2.proj.bias", "fc1.weight", "fc1.bias"])
    #expect(ok.stageNames == ["res begin", "conv 3x3 4->4", "res end", "res begin", "conv 3x3 4->8 +relu", "conv 3x3 8->8",
                              "res end +relu proj 1x1/2 4->8", "gap 16 positions", "fc 8->10"])
}

/// Two training steps of `spec` (8x8x1 inputs, batch 5) with the work cut for `split` workers and
/// run on one thread, recorded: the gradients, weights and state, bit for bit, and how many
/// regions ran `job`.
private func recordedSteps(_ spec: String, split: Int, seed: UInt64, job: String) throws -> (bits: [UInt32], regions: Int) {
    let n = 5
    let net = try Network(spec: ModelSpec(parsing: spec), input: Shape(h: 8, w: 8, c: 1), classes: 10, capacity: n, threads: 1, seed: seed)
    net.pool.splitCount = split
    let recorder = RegionRecorder()
    net.pool.recorder = recorder
    var bits: [UInt32] = []
    for step in 1...2 {
        fill(net, batch: n, seed: UInt64(step))
        net.forward(count: n, training: true)
        _ = net.lossAndGradient(count: n)
        #expect(net.backward(count: n, adam: AdamStep(lr: 1e-2, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, t: step)))
        bits += (0..<net.parameters.count).map { net.parameters.gradients[$0].bitPattern }
    }
    net.pool.recorder = nil
    bits += (0..<net.parameters.count).map { net.weights[$0].bitPattern } + (0..<net.state.count).map { net.state.values[$0].bitPattern }
    return (bits, recorder.regions.filter { $0.job == job }.count)
}

private let identityBlock = "res(conv(64,3,bias=false) bn relu conv(64,3,bias=false) bn) relu"

/// A bn right after a conv runs its per-sample passes (a sample's sums forward, its input
/// gradient backward) inside the conv's jobs, and a bn whose output a conv reads (right after it,
/// or past a residual block's end and begin: the bn ending an identity block, the stem's bn before
/// the first block) its normalisation and its gradient sums inside that conv's forward and
/// backward jobs; where the conv cuts its samples or shards into parts (here: for 64 workers), the
/// bn runs them as regions of its own. Both give the same bits. A step's bn regions:
/// (Counts are forward + backward regions.)
/// - two convs, uncut: the second bn's normalisation and its gradient sums (global pooling
///   follows it; the first's run in the Winograd conv after it): 1 + 1. Cut: both bns' sums and
///   normalisations (both convs cut their samples forward); both bns' gradient sums and the
///   second's input gradient (its Winograd conv cuts its shards by input channels; the
///   first-layer conv never does): 4 + 3.
/// - a stem and two identity blocks, uncut: the last bn's normalisation and gradient sums: 1 + 1.
///   Cut: each bn's sums and normalisation; its gradient sums, and the input gradients of the four
///   bns after a Winograd conv: 10 + 9.
@Test(arguments: [("conv(64,3,bias=false) bn relu conv(64,3,bias=false) bn relu gap fc(10)", 2, 7),
                  ("conv(64,3,bias=false) bn relu \(identityBlock) \(identityBlock) gap fc(10)", 2, 19)])
func batchNormPassesInsideTheConvOrOnTheirOwnGiveTheSameBits(_ c: (spec: String, whole: Int, cut: Int)) throws {
    let whole = try recordedSteps(c.spec, split: 1, seed: 4, job: "BatchNormJob")
    let cut = try recordedSteps(c.spec, split: 64, seed: 4, job: "BatchNormJob")
    #expect(whole.bits == cut.bits)
    #expect(whole.regions == 2 * c.whole)
    #expect(cut.regions == 2 * c.cut)
}

/// A block's begin stores no copy of its input. Where the block's last stage is a bn without a
/// ReLU, that bn writes the block's sum over its own output (the end's output shares that buffer),
/// and the end shares one buffer for its output and input gradients (the bn leaves its output
/// gradient alone); where the last stage masks its output gradient in place (a bn with a ReLU),
/// neither.
@Test func residualBlocksShareBuffersOnlyWhereNothingWritesThemInPlace() throws {
    let net = try Network(spec: ModelSpec(parsing: "conv(4,3,bias=false) bn relu res(conv(4,3,bias=false) bn) relu res(conv(4,3,bias=false) bn relu) relu gap fc(5)"),
                          input: Shape(h: 6, w: 6, c: 1), classes: 5, capacity: 2, threads: 1, seed: 1)
    // Stages: 0 conv, 1 bn, 2 res begin, 3 conv, 4 bn, 5 res end, 6 res begin, 7 conv, 8 bn +relu, 9 res end.
    #expect(net.activation(2) == net.activation(3) && net.activation(6) == net.activation(7))
    #expect(net.activation(1) != net.activation(2))
    #expect(net.activation(5) == net.activation(6) && net.activation(9) != net.activation(10))
    // A begin adds the shortcut's gradient into its output gradient's buffer.
    #expect(net.activationGradient(2) == net.activationGradient(3) && net.activationGradient(6) == net.activationGradient(7))
    #expect(net.activationGradient(5) == net.activationGradient(6))
    #expect(net.activationGradient(9) != net.activationGradient(10))
    #expect(net.activationGradient(4) != net.activationGradient(5))
}

/// A residual block's begin adds the shortcut's gradient inside its first conv's backward jobs;
/// where that conv cuts its shards into parts (here: for 64 workers), the begin adds it as a
/// region of its own. Both give the same bits.
@Test func residualGradientAddedInsideTheConvOrOnItsOwnGivesTheSameBits() throws {
    let spec = "conv(64,3,bias=false) bn relu res(conv(64,3,bias=false) bn relu conv(64,3,bias=false) bn) relu gap fc(10)"
    let whole = try recordedSteps(spec, split: 1, seed: 6, job: "ResidualJob")
    let cut = try recordedSteps(spec, split: 64, seed: 6, job: "ResidualJob")
    #expect(whole.bits == cut.bits)
    // Uncut, no residual region at all (the bn adds the block's sum forward, the conv the
    // shortcut's gradient backward); cut, the begin's add each step.
    #expect(whole.regions == 0)
    #expect(cut.regions == 2)
}

/// A projected block's end has no regions of its own: the projection's forward jobs write the
/// block's sum (and ReLU) from their scratch, and its backward jobs mask (and, where the block's
/// last stage keeps its own gradient buffer, copy) each sample's gradient before reading it. The
/// bits are those of the same step with the work cut for 64 workers.
@Test(arguments: ["conv(16,3,bias=false) bn relu res(conv(32,3,2,bias=false) bn relu conv(32,3,bias=false) bn) relu gap fc(10)",
                  "conv(16,3,bias=false) bn relu res(conv(32,3,2,bias=false) bn relu) relu gap fc(10)",
                  "conv(16,3,bias=false) bn relu res(conv(32,3,bias=false) bn relu) gap fc(10)"])
func projectedBlockEndsRunInTheProjectionsJobs(_ spec: String) throws {
    let whole = try recordedSteps(spec, split: 1, seed: 8, job: "ResidualJob")
    let cut = try recordedSteps(spec, split: 64, seed: 8, job: "ResidualJob")
    #expect(whole.bits == cut.bits)
    #expect(whole.regions == 0)
    #expect(cut.regions == 0)
}
