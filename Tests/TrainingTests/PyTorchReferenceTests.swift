// ptrain against PyTorch on networks that take every conv path (one-channel direct, 16-channel
// direct, Winograd, im2col with stride 2 and VALID padding), max and average pooling and two dense layers: the
// logits, the loss, every gradient, and the weights after 1 and 3 steps of Adam, of AdamW with a
// step-decay schedule and of SGD with momentum, weight decay and a cosine schedule (PyTorch's own
// optimizers and schedulers), against a reference
// PyTorch computed in float64 (scripts/pytorch-reference.py wrote pytorch-reference.safetensors;
// the README says how to regenerate it). No PyTorch is needed to run this.
import Foundation
import Testing
import PTKernels
import PTModel
import PTTraining

/// ptrain computes in float32 and sums in its own orders (Winograd's transforms, blocked GEMMs, direct convs' tap order), so
/// it meets a float64 reference only to float32 rounding: every value within `tolerance` times
/// the largest magnitude of its tensor: 2e-6, about 16 float32 ulps of that magnitude (the worst
/// seen on the first network is 3.8e-7, conv1's bias gradient). Where the reference also records
/// how far PyTorch's own float32 computation of a tensor lands from float64 (`float32_error.*`,
/// the ResNet file), ptrain may be as far as 4 times that: the tensor's conditioning, measured.
private let tolerance: Float = 2e-6

/// The largest difference allowed for `ref` (absolute): the bound above, plus `carried` (what a
/// weight's update carries of its gradient's difference; see `carriedThroughSteps`).
private func allowed(_ ref: SafetensorsTensor, _ key: String, _ all: [String: SafetensorsTensor], carried: Float = 0) -> Float {
    let scale = ref.values.map(abs).max() ?? 0
    return max(tolerance * scale, 4 * (all["float32_error." + key]?.values.first ?? 0)) + carried
}

private func within(_ mine: UnsafePointer<Float>, _ key: String, _ all: [String: SafetensorsTensor], _ what: String,
                    carried: Float = 0) throws {
    let ref = try #require(all[key], "\(key) missing from the reference")
    let limit = allowed(ref, key, all, carried: carried), scale = max(ref.values.map(abs).max() ?? 0, 1e-30)
    var worst: Float = 0
    for i in ref.values.indices { worst = max(worst, abs(mine[i] - ref.values[i])) }
    #expect(worst <= limit, "\(what): largest difference \(worst / scale) of its largest magnitude (\(scale)); allowed \(limit / scale)")
}

@Test(arguments: [1, 2])
func matchesPyTorchOnEveryConvPathPoolAndDenseLayer(threads: Int) throws {
    try compareWithPyTorch("pytorch-reference.safetensors", threads: threads)
}

/// The ResNet-style network: batch norm in training mode (after a one-channel direct conv, 16-channel
/// direct, Winograd and im2col convs without a bias, and a dense layer), an identity and a projected residual block,
/// global average pooling; then the running statistics after 3 Adam steps and eval mode's logits.
@Test(arguments: [1, 2])
func matchesPyTorchOnBatchNormResidualBlocksAndGlobalPooling(threads: Int) throws {
    try compareWithPyTorch("pytorch-reference-resnet.safetensors", threads: threads)
}

private func compareWithPyTorch(_ file: String, threads: Int) throws {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(file).path
    let (ref, meta) = try Safetensors.read(path)
    func tensor(_ name: String) throws -> SafetensorsTensor { try #require(ref[name], "\(name) missing from \(path)") }
    let measured = ref.keys.contains { $0.hasPrefix("float32_error.") }
    let spec = try ModelSpec(parsing: try #require(meta["spec"]))
    let input = try tensor("input"), n = input.shape[0]
    let net = try Network(spec: spec, input: Shape(h: input.shape[1], w: input.shape[2], c: input.shape[3]), classes: 10,
                          capacity: n, threads: threads, seed: 1)
    let fresh = (0..<net.state.count).map { net.state.values[$0] }  // running statistics of a new module
    #expect(net.parameters.tensors.map(\.name).sorted() == ref.keys.filter { $0.hasPrefix("weights.") }.map { String($0.dropFirst(8)) }.sorted())
    #expect(net.state.tensors.map(\.name).sorted() == ref.keys.filter { $0.hasPrefix("state.step3.") }.map { String($0.dropFirst(12)) }.sorted())
    for t in net.parameters.tensors {
        let w = try tensor("weights." + t.name)
        try #require(w.values.count == t.count, "\(t.name): \(w.values.count) values for \(t.count) parameters")
        for i in 0..<t.count { net.weights[t.offset + i] = w.values[i] }
    }
    for i in input.values.indices { net.input[i] = input.values[i] }
    for (s, label) in try tensor("labels").values.enumerated() { net.labels[s] = Int32(label) }

    // The paths this test is about.
    let names = net.stageNames
    if net.state.count == 0 {
        #expect(names.contains { $0.hasPrefix("conv 3x3 1->16") })
        #expect(names.contains { $0.hasPrefix("conv 3x3 16->16") && $0.hasSuffix("direct") })
        #expect(names.filter { $0.hasPrefix("conv 3x3 16->16") && !$0.hasSuffix("direct") }.count == 1)
        #expect(names.contains { $0.hasPrefix("avgpool") } && names.contains { $0.hasPrefix("maxpool") })
    } else {
        let paths = try NetworkPlan(spec: spec, input: net.inputShape, classes: 10).convPaths
        // (The block's 16-channel convs run direct; its 32-channel one, Winograd.)
        #expect(paths == [.fewChannels, .direct, .direct, .im2col, .winograd], "\(paths)")
        #expect(names.contains("res end +relu (in its bn)") && names.contains("res end +relu proj 1x1/2 16->32") && names.contains("gap 36 positions"))
    }

    let (lr, b1, b2, eps) = try (Double(#require(meta["lr"]))!, Double(#require(meta["beta1"]))!,
                                 Double(#require(meta["beta2"]))!, Double(#require(meta["epsilon"]))!)
    func number(_ key: String) throws -> Double {
        let text = try #require(meta[key], "\(key) missing from the reference's metadata")
        return try #require(Double(text))
    }
    let momentum = try number("sgd_momentum")
    net.forward(count: n, training: true)
    try within(net.logits, "logits", ref, "logits")
    let loss = net.lossAndGradient(count: n)
    try within([loss], "loss", ref, "loss")
    net.backward(count: n)
    for t in net.parameters.tensors { try within(net.parameters.gradients + t.offset, "grad." + t.name, ref, "gradient of \(t.name)") }
    /// What k steps carry of a gradient's allowed difference Δg into the weights (only where the
    /// reference measured its conditioning; the first network's gradients are accurate enough for
    /// the plain bound): Adam moves w by lr·m̂/(√v̂ + ε), which changes by at most Δg/ε when the
    /// gradient changes by Δg, so k steps carry Σ lr_t·Δg/ε; SGD with momentum μ carries
    /// Σ lr_t·Δg·(1 + μ + … + μ^(t-1)). (A small gradient summed in Winograd's transformed domain
    /// carries an absolute error near float32's rounding of the tensor's largest, which Adam's
    /// division by |g| + ε magnifies where |g| ≲ ε.)
    func carriedThroughSteps(_ name: String, prefix: String, steps: Int, rate: (Int) -> Double, sgd: Bool) throws -> Float {
        guard measured else { return 0 }
        let g = allowed(try tensor("grad." + name), "grad." + name, ref)
        return (1...steps).reduce(Float(0)) { sum, t in
            sum + Float(rate(t)) * g * (sgd ? (0..<t).reduce(Float(0)) { $0 + pow(Float(momentum), Float($1)) } : 1 / Float(eps))
        }
    }

    let (decay, sgdLR, sgdDecay) = try (number("adamw_decay"), number("sgd_lr"), number("sgd_decay"))
    // Each optimizer from the same start: the rate of step t from ptrain's schedules, which
    // PyTorch's StepLR(1, 0.5) and CosineAnnealingLR(3) should match.
    let halving = LRSchedule.step(every: 1, factor: 0.5), cosine = LRSchedule.cosine(steps: 3)
    let runs: [(prefix: String, name: String, rate: (Int) -> Double, step: (Int) -> OptimizerStep)] = [
        ("", "Adam", { _ in lr }, { .adam(AdamStep(lr: lr, beta1: b1, beta2: b2, epsilon: eps, t: $0)) }),
        ("adamw_", "AdamW", { lr * halving.factor(step: $0, warmup: 0) },
         { t in .adam(AdamStep(lr: lr * halving.factor(step: t, warmup: 0), beta1: b1, beta2: b2, epsilon: eps, t: t,
                               weightDecay: decay, decoupled: true)) }),
        ("sgd_", "SGD", { sgdLR * cosine.factor(step: $0, warmup: 0) },
         { t in .sgd(SGDStep(lr: sgdLR * cosine.factor(step: t, warmup: 0), momentum: momentum, weightDecay: sgdDecay)) }),
    ]
    for run in runs {
        for t in net.parameters.tensors {
            let w = try tensor("weights." + t.name)
            for i in 0..<t.count { net.weights[t.offset + i] = w.values[i] }
        }
        net.parameters.moment1.update(repeating: 0, count: net.parameters.count)
        net.parameters.moment2!.update(repeating: 0, count: net.parameters.count)
        for i in fresh.indices { net.state.values[i] = fresh[i] }
        for step in 1...3 {
            net.forward(count: n, training: true)
            _ = net.lossAndGradient(count: n)
            #expect(net.backward(count: n, optimizer: run.step(step)))
            if step == 1 || step == 3 {
                for t in net.parameters.tensors {
                    let carried = try carriedThroughSteps(t.name, prefix: run.prefix, steps: step, rate: run.rate, sgd: run.prefix == "sgd_")
                    try within(net.weights + t.offset, "\(run.prefix)step\(step)." + t.name, ref, "\(t.name) after \(step) \(run.name) steps",
                               carried: carried)
                }
            }
        }
        if run.prefix.isEmpty && net.state.count > 0 {
            // Batch norm's running statistics after the 3 steps, and eval mode's logits with them.
            for t in net.state.tensors { try within(net.state.values + t.offset, "state.step3." + t.name, ref, "\(t.name) after 3 Adam steps") }
            net.forward(count: n, training: false)
            try within(net.logits, "eval_logits.step3", ref, "eval-mode logits after 3 Adam steps")
        }
    }
}
