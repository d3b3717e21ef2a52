// ptrain against PyTorch on a network that takes every conv path (one-channel direct, Winograd,
// im2col with stride 2 and VALID padding), max and average pooling and two dense layers: the
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

/// ptrain computes in float32 and sums in its own orders (Winograd's transforms, blocked GEMMs), so
/// it meets a float64 reference only to float32 rounding: every value within `tolerance` times
/// the largest magnitude of its tensor: 2e-6, about 16 float32 ulps of that magnitude (the worst
/// seen is 3.8e-7, conv1's bias gradient).
private let tolerance: Float = 2e-6

private func within(_ mine: UnsafePointer<Float>, _ ref: SafetensorsTensor, _ what: String) {
    let scale = max(ref.values.map(abs).max() ?? 0, 1e-30)
    var worst: Float = 0
    for i in ref.values.indices { worst = max(worst, abs(mine[i] - ref.values[i]) / scale) }
    #expect(worst <= tolerance, "\(what): largest difference \(worst) of its largest magnitude (\(scale))")
}

@Test(arguments: [1, 2])
func matchesPyTorchOnEveryConvPathPoolAndDenseLayer(threads: Int) throws {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("pytorch-reference.safetensors").path
    let (ref, meta) = try Safetensors.read(path)
    func tensor(_ name: String) throws -> SafetensorsTensor { try #require(ref[name], "\(name) missing from \(path)") }
    let spec = try ModelSpec(parsing: try #require(meta["spec"]))
    let input = try tensor("input"), n = input.shape[0]
    let net = try Network(spec: spec, input: Shape(h: input.shape[1], w: input.shape[2], c: input.shape[3]), classes: 10,
                          capacity: n, threads: threads, seed: 1)
    #expect(net.tensors.map(\.name).sorted() == ref.keys.filter { $0.hasPrefix("weights.") }.map { String($0.dropFirst(8)) }.sorted())
    for t in net.tensors {
        let w = try tensor("weights." + t.name)
        try #require(w.values.count == t.count, "\(t.name): \(w.values.count) values for \(t.count) parameters")
        for i in 0..<t.count { net.weights[t.offset + i] = w.values[i] }
    }
    for i in input.values.indices { net.input[i] = input.values[i] }
    for (s, label) in try tensor("labels").values.enumerated() { net.labels[s] = Int32(label) }

    // The paths this test is about.
    let names = net.stageNames
    #expect(names.contains { $0.hasPrefix("conv 3x3 1->16") })
    #expect(names.contains { $0.hasPrefix("conv 3x3 16->16") && $0.hasSuffix("winograd") })
    #expect(names.filter { $0.hasPrefix("conv 3x3 16->16") && !$0.hasSuffix("winograd") }.count == 1)
    #expect(names.contains { $0.hasPrefix("avgpool") } && names.contains { $0.hasPrefix("maxpool") })

    net.forward(count: n, training: true)
    within(net.logits, try tensor("logits"), "logits")
    let loss = net.lossAndGradient(count: n)
    #expect(abs(loss - (try tensor("loss")).values[0]) <= tolerance * abs((try tensor("loss")).values[0]))
    net.backward(count: n)
    for t in net.tensors { within(net.gradients + t.offset, try tensor("grad." + t.name), "gradient of \(t.name)") }

    let (lr, b1, b2, eps) = try (Double(#require(meta["lr"]))!, Double(#require(meta["beta1"]))!,
                                 Double(#require(meta["beta2"]))!, Double(#require(meta["epsilon"]))!)
    func number(_ key: String) throws -> Double {
        let text = try #require(meta[key], "\(key) missing from the reference's metadata")
        return try #require(Double(text))
    }
    let (decay, sgdLR, momentum, sgdDecay) = try (number("adamw_decay"), number("sgd_lr"), number("sgd_momentum"), number("sgd_decay"))
    // Each optimizer from the same start: the rate of step t from ptrain's schedules, which
    // PyTorch's StepLR(1, 0.5) and CosineAnnealingLR(3) should match.
    let halving = LRSchedule.step(every: 1, factor: 0.5), cosine = LRSchedule.cosine(steps: 3)
    let runs: [(prefix: String, name: String, step: (Int) -> OptimizerStep)] = [
        ("", "Adam", { .adam(AdamStep(lr: lr, beta1: b1, beta2: b2, epsilon: eps, t: $0)) }),
        ("adamw_", "AdamW", { t in .adam(AdamStep(lr: lr * halving.factor(step: t, warmup: 0), beta1: b1, beta2: b2, epsilon: eps, t: t,
                                                  weightDecay: decay, decoupled: true)) }),
        ("sgd_", "SGD", { t in .sgd(SGDStep(lr: sgdLR * cosine.factor(step: t, warmup: 0), momentum: momentum, weightDecay: sgdDecay)) }),
    ]
    for run in runs {
        for t in net.tensors {
            let w = try tensor("weights." + t.name)
            for i in 0..<t.count { net.weights[t.offset + i] = w.values[i] }
        }
        net.moment1.update(repeating: 0, count: net.parameterCount)
        net.moment2.update(repeating: 0, count: net.parameterCount)
        for step in 1...3 {
            net.forward(count: n, training: true)
            _ = net.lossAndGradient(count: n)
            #expect(net.backward(count: n, optimizer: run.step(step)))
            if step == 1 || step == 3 {
                for t in net.tensors {
                    within(net.weights + t.offset, try tensor("\(run.prefix)step\(step)." + t.name), "\(t.name) after \(step) \(run.name) steps")
                }
            }
        }
    }
}
