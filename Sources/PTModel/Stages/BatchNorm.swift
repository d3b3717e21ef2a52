// Batch normalisation (`bn`) after a conv (PyTorch's BatchNorm2d: per channel over the batch's
// samples and positions) or a dense layer (BatchNorm1d), with the ReLU after it. Training
// normalises with the statistics of the whole global batch — every shard, every rank — summed in
// sample order, so the bits do not depend on `--threads` or the ranks; the running mean and
// (unbiased) variance follow with momentum 0.1, and eval and predict use them. γ (bnN.weight) and
// β (bnN.bias) are parameters like any other (the optimizer's weight decay applies to them, as
// torch.optim's does by default); the running statistics and the count of batches are the
// network's state (`Network.state`), saved in checkpoints under PyTorch's names.
//
// A sample's sums run over its positions in order — Σx, then the squares about the sample's own
// mean, Σ(x − Σx/P)² — and the batch's statistics add the samples' in sample order (under mpirun
// each rank's samples' sums are gathered first, once: every rank then adds all of them, in the
// same order). The batch's variance merges the samples' squares (Chan's formula,
// `BatchNorm.mergedVariance`): about as exact as a second pass of squares about the batch's mean, which
// would have to wait for every sample's Σx and read the batch again. The gradients of γ and β
// are summed by shard and the shards in order, which is how the conv stack's gradients are summed
// (`Network.reduceConvGradients`).
//
// Right after a conv, two passes run inside the conv's per-sample jobs, on a sample still in
// cache: the sample's sums (forward, after the conv writes its output) and the bn's input gradient
// (backward, just before the conv reads it, into the conv's scratch) — `ConvStage.batchNorm`.
// Right before a conv (also past a residual block's end and begin), two more: the normalisation
// of a sample, just before the conv reads it, and the ReLU's mask and the sums Σdy, Σdy·x̂ of a
// sample's output gradient, right after the conv's backward writes it
// (`ConvStage.inputBatchNorm`). Where the conv cuts a sample or a shard into parts, the bn runs
// those passes itself: the same functions on the same values.
import PTKernels
import PTRuntime

private let f = MemoryLayout<Float>.size

struct BatchNormStage: Stage {
    static let momentum: Float = 0.1, epsilon: Float = 1e-5
    var positions, channels: Int
    var relu: Bool
    var weight: Int, bias: Int  // γ and β, adjacent in the flat buffers
    var state: Int              // running_mean [C], running_var [C], num_batches_tracked [1] in Network.state
    /// In the conv stack: it runs on this rank's samples, and its gradients go through the shard buffers.
    var inConvStack: Bool
    /// Per sample, two sums per channel: Σx then Σ(x − Σx/P)² forward, Σdy then Σdy·x̂ backward.
    var sums: UnsafeMutablePointer<Float>!
    /// When it ends a residual block with an identity shortcut: the block's begin stage (whose
    /// input is the shortcut) and whether a ReLU follows the block. It then does the block end's
    /// work (`ResidualEndStage.addedByBatchNorm`): its normalisation adds the shortcut and applies
    /// that ReLU, its output is the block's, and backward it applies that ReLU's mask to its
    /// output gradient — the end's own gradient, one buffer with it — as it sums.
    var shortcut: (begin: Int, relu: Bool)?
    /// The ReLU its passes apply: its own, or that of the block it ends.
    var appliedRelu: Bool { relu || shortcut?.relu == true }
    /// [9][channels], one row per `Stat`.
    var stats: UnsafeMutablePointer<Float>!
    /// The rows of `stats`: training's mean, 1/σ and γ/σ; eval's (from the running statistics);
    /// the batch means of dy and dy·x̂; the batch variance.
    enum Stat: Int, CaseIterable { case mean, invstd, scale, evalMean, evalInvstd, evalScale, meanDy, meanDyXhat, variance }
    func stat(_ s: Stat) -> UnsafeMutablePointer<Float> { stats! + s.rawValue * channels }
    /// [shards][2 channels]: each shard's gradient of γ then β; and their sum.
    var partials, totals: UnsafeMutablePointer<Float>!

    /// bn after a conv or fc: bnN.weight (γ, 1 to start) and bnN.bias (β, 0), and in the state
    /// bnN.running_mean (0), bnN.running_var (1) and bnN.num_batches_tracked.
    static func plan(relu: Bool, _ p: inout StagePlanner) {
        let c = p.shape.c, n = p.number("bn")
        let w = p.addTensor("bn\(n).weight", [c], .vector)
        let b = p.addTensor("bn\(n).bias", [c], .bias)
        let s = p.addState("bn\(n).running_mean", [c], .vector)
        _ = p.addState("bn\(n).running_var", [c], .vector)
        _ = p.addState("bn\(n).num_batches_tracked", [1], .scalar)
        p.stages.append(BatchNormStage(positions: p.shape.h * p.shape.w, channels: c, relu: relu, weight: w, bias: b, state: s,
                                       inConvStack: !p.stages.contains { $0.batchWide }))
    }

    var name: String { "bn \(channels)\(relu ? " +relu" : shortcut == nil ? "" : " +shortcut\(appliedRelu ? " +relu" : "")")" }
    var parameters: Range<Int> { weight..<(bias + channels) }
    /// Without a ReLU of its own it writes nothing back into its output gradient (the mask of a
    /// block's ReLU it applies for the block's end is the end's own, on the end's own buffer).
    var keepsOutputGradient: Bool { !relu }
    var extraFloatsPerSample: Int { 2 * channels }

    mutating func allocate(_ layout: BufferLayout, index: Int, earlier: inout [any Stage]) {
        sums = layout.floats(layout.capacity * 2 * channels)
        stats = layout.floats(Stat.allCases.count * channels)
        partials = layout.floats(Network.shardCount(batch: layout.capacity) * 2 * channels)
        totals = layout.floats(2 * channels)
        if inConvStack, var conv = earlier[index - 1] as? ConvStage {
            conv.batchNorm = fusion(index: index)
            earlier[index - 1] = conv
        }
    }

    /// Its per-sample passes as a conv next to it runs them (it being stage `index`).
    func fusion(index: Int) -> BatchNormFusion {
        BatchNormFusion(index: index, positions: positions, channels: channels, relu: appliedRelu, sums: sums,
                        mean: stat(.mean), invstd: stat(.invstd), scale: stat(.scale), meanDy: stat(.meanDy), meanDyXhat: stat(.meanDyXhat))
    }

    /// Whether the conv before it (`ConvStage.batchNorm`) runs this pass's per-sample part in its
    /// own jobs: it does unless it cuts a sample (forward) or a shard (backward) into parts.
    private func inConv(_ net: Network, _ pass: StagePass, backward: Bool) -> Bool {
        inConvStack && net.convParts(ofStage: pass.index - 1, batch: pass.count, backward: backward)?.count == 1
    }

    /// The conv that reads its output, right after it or past stages whose output is their input
    /// (a residual block's end that this bn adds, a block's begin), when that conv runs this
    /// bn's passes (`ConvStage.inputBatchNorm`); and its place.
    private func consumer(_ net: Network, _ pass: StagePass) -> (conv: ConvStage, index: Int)? {
        var j = pass.index + 1
        while j < net.stages.count && net.stages[j].outputIsInput { j += 1 }
        guard j < net.stages.count, let conv = net.stages[j] as? ConvStage, conv.inputBatchNorm?.index == pass.index else { return nil }
        return (conv, j)
    }

    /// Whether the conv that reads its output runs its backward's gradient sums
    /// (`ConvStage.inputBatchNorm`): it does unless it cuts its shards into parts.
    private func sumsInConsumer(_ net: Network, _ pass: StagePass) -> Bool {
        guard let (conv, j) = consumer(net, pass) else { return false }
        return net.convParts(j, conv, batch: pass.count, backward: true).count == 1
    }

    func initialize(_ net: Network, _ rng: inout SplitMix64) {
        (net.parameters.values + weight).update(repeating: 1, count: channels)
        (net.state.values + state).update(repeating: 0, count: channels)
        (net.state.values + state + channels).update(repeating: 1, count: channels)
        net.state.values[state + 2 * channels] = 0
    }

    /// A pass's job, normalising with training's statistics or, `eval`, the running ones.
    private func job(_ mode: BatchNormJob.Mode, _ io: StageBuffers, _ net: Network, eval: Bool = false) -> BatchNormJob {
        BatchNormJob(mode: mode, positions: positions, channels: channels, relu: appliedRelu, io: io, sums: sums,
                     mean: stat(eval ? .evalMean : .mean), invstd: stat(eval ? .evalInvstd : .invstd),
                     scale: stat(eval ? .evalScale : .scale), shift: net.parameters.values + bias,
                     meanDy: stat(.meanDy), meanDyXhat: stat(.meanDyXhat),
                     shortcut: mode == .normalize ? shortcut.map { net.activations.io[$0.begin].x } : nil)
    }

    /// Under mpirun, every rank gets every rank's samples' sums (the conv stack runs on a rank's own samples).
    private func gatherSums(_ net: Network, batch n: Int) {
        guard inConvStack, net.group.size > 1 else { return }
        let width = 2 * channels
        net.group.allgather(sums) { r in let p = net.samples(batch: n, rank: r); return (p.lowerBound * width)..<(p.upperBound * width) }
    }

    /// The batch's mean: the samples' Σx added in sample order, over `m` values.
    private func batchMean(batch n: Int, over m: Float, into out: UnsafeMutablePointer<Float>) {
        Elementwise.sumInOrder(sums!, count: n, stride: 2 * channels, length: channels, into: out)
        for c in 0..<channels { out[c] /= m }
    }

    func forward(_ net: Network, _ pass: StagePass) {
        let c = channels, W = net.parameters.values, pool = net.pool
        if !pass.training {
            let mean = stat(.evalMean), invstd = stat(.evalInvstd), scale = stat(.evalScale), running = net.state.values + state
            for ch in 0..<c {
                mean[ch] = running[ch]
                invstd[ch] = 1 / (running[c + ch] + Self.epsilon).squareRoot()
                scale[ch] = W[weight + ch] * invstd[ch]
            }
            if !normalizedByConsumer(net, pass) { pool.run(range: pass.samples, job(.normalize, pass.io, net, eval: true)) }
            return
        }
        let n = pass.count, m = Float(n * positions)
        let mean = stat(.mean), invstd = stat(.invstd), scale = stat(.scale), variance = stat(.variance)
        if !inConv(net, pass, backward: false) { pool.run(range: pass.samples, job(.sums, pass.io, net)) }
        gatherSums(net, batch: n)
        batchMean(batch: n, over: m, into: mean)
        BatchNorm.mergedVariance(sums, samples: n, stride: 2 * c, positions: positions, channels: c, mean: mean, into: variance)
        let running = net.state.values + state, k = Self.momentum
        // PyTorch's running variance is the unbiased one.
        precondition(m > 1, "batch norm over one value a channel (Trainer refuses such a batch)")
        let unbiased = m / (m - 1)
        for ch in 0..<c {
            invstd[ch] = 1 / (variance[ch] + Self.epsilon).squareRoot()
            scale[ch] = W[weight + ch] * invstd[ch]
            running[ch] = (1 - k) * running[ch] + k * mean[ch]
            running[c + ch] = (1 - k) * running[c + ch] + k * (variance[ch] * unbiased)
        }
        running[2 * c] += 1
        if !normalizedByConsumer(net, pass) { pool.run(range: pass.samples, job(.normalize, pass.io, net)) }
    }

    /// Whether the conv that reads its output (`ConvStage.inputBatchNorm`) normalises each
    /// sample in its own forward jobs, just before reading it.
    private func normalizedByConsumer(_ net: Network, _ pass: StagePass) -> Bool {
        guard let (conv, j) = consumer(net, pass) else { return false }
        return conv.normalizesInput(net, index: j, batch: pass.count)
    }

    /// Its normalisation pass as a job (with training's statistics, or eval's), for the conv
    /// that runs it (stage `index` being this one).
    func normalization(_ net: Network, index: Int, training: Bool) -> BatchNormJob {
        job(.normalize, net.activations.io[index], net, eval: !training)
    }

    func backward(_ net: Network, _ pass: StagePass, optimizer: OptimizerStep?) {
        let c = channels, n = pass.count, m = Float(n * positions), pool = net.pool
        let sums = sums!, partials = partials!, totals = totals!
        if !sumsInConsumer(net, pass) { pool.run(range: pass.samples, job(.gradientSums, pass.io, net)) }
        gatherSums(net, batch: n)
        // γ's and β's gradients by shard, then the shards in order.
        let shards = Network.shardCount(batch: n), width = 2 * c
        for k in 0..<shards {
            let lo = k * n / shards, hi = (k + 1) * n / shards, part = partials + k * width
            Elementwise.sumInOrder(sums + lo * width + c, count: hi - lo, stride: width, length: c, into: part)  // Σ dy·x̂
            Elementwise.sumInOrder(sums + lo * width, count: hi - lo, stride: width, length: c, into: part + c)  // Σ dy
            if inConvStack { (net.parameters.shardGradients + k * net.parameters.convCount + weight).update(from: part, count: width) }
        }
        Elementwise.sumInOrder(partials, count: shards, stride: width, length: width, into: totals)
        if !inConvStack { (net.parameters.gradients + weight).update(from: totals, count: width) }
        guard pass.needsInputGradient else { return }
        let meanDy = stat(.meanDy), meanDyXhat = stat(.meanDyXhat)
        for ch in 0..<c { meanDyXhat[ch] = totals[ch] / m; meanDy[ch] = totals[c + ch] / m }
        if !inConv(net, pass, backward: true) { pool.run(range: pass.samples, job(.inputGradient, pass.io, net)) }
    }
}

/// One sample's part of a batch norm pass (`BatchNormStage`).
struct BatchNormJob: ParallelJob, @unchecked Sendable {  // an item writes its sample's sums, output or input gradient
    enum Mode { case sums, normalize, gradientSums, inputGradient }
    var mode: Mode
    var positions, channels: Int
    var relu: Bool
    var io: StageBuffers
    var sums: UnsafeMutablePointer<Float>
    /// The statistics it normalises with (training's or eval's: `BatchNormStage.Stat`), β, and
    /// the batch means of dy and dy·x̂ the input gradient needs.
    var mean, invstd, scale, shift: UnsafeMutablePointer<Float>
    var meanDy, meanDyXhat: UnsafeMutablePointer<Float>
    /// A residual block's shortcut that the normalisation adds (`BatchNormStage.shortcut`).
    var shortcut: UnsafeMutablePointer<Float>?
    func run(_ s: Int, _ worker: Int) {
        let c = channels, size = positions * c, x = io.x + s * size, sample = sums + s * 2 * c
        switch mode {
        case .sums: BatchNorm.sampleMoments(x, positions: positions, channels: c, into: sample)
        case .normalize:
            BatchNorm.normalize(x, positions: positions, channels: c, mean: mean, scale: scale, shift: shift,
                                adding: shortcut.map { UnsafePointer($0 + s * size) }, relu: relu, into: io.y + s * size)
        case .gradientSums:
            let dy = io.dy + s * size
            if relu { Elementwise.reluBackward(dy: dy, y: io.y + s * size, count: size) }
            BatchNorm.gradientSums(dy: dy, x: x, positions: positions, channels: c, mean: mean, invstd: invstd,
                                   sumDy: sample, sumDyXhat: sample + c)
        case .inputGradient:
            BatchNorm.inputGradient(dy: io.dy + s * size, x: x, positions: positions, channels: c, mean: mean, invstd: invstd,
                                    scale: scale, meanDy: meanDy, meanDyXhat: meanDyXhat, into: io.dx + s * size)
        }
    }
    /// A sample's activations in (and out, or its gradient), and its sums.
    func bytesMoved(items: Int) -> Int {
        let size = positions * channels
        switch mode {
        case .sums: return items * f * (size + 2 * channels)
        case .normalize: return items * f * (shortcut == nil ? 2 : 3) * size
        case .gradientSums: return items * f * ((relu ? 4 : 2) * size + 2 * channels)
        case .inputGradient: return items * f * 3 * size
        }
    }
}

/// The per-sample passes of a bn that a conv right before it runs in its own jobs
/// (`ConvStage.batchNorm`): pointers into the bn's buffers.
struct BatchNormFusion {
    /// The bn's place in the network (its output gradient is that stage's dy).
    var index: Int
    var positions, channels: Int
    /// The ReLU it applies (its own, or that of the residual block it ends).
    var relu: Bool
    var sums, mean, invstd, scale, meanDy, meanDyXhat: UnsafeMutablePointer<Float>

    /// Training's forward: sample s's moments (Σx, and the squares about its own mean) of the
    /// conv's output `x`, as the bn's own pass computes them.
    @inline(__always) func sums(_ x: UnsafePointer<Float>, sample s: Int) {
        BatchNorm.sampleMoments(x, positions: positions, channels: channels, into: sums + s * 2 * channels)
    }

    /// Backward, for the conv after it: sample s's output gradient `dy` masked by the ReLU (its
    /// output y) in place, then its sums Σdy and Σdy·x̂ (its input x).
    @inline(__always) func gradientSums(x: UnsafePointer<Float>, y: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>, sample s: Int) {
        if relu { Elementwise.reluBackward(dy: dy, y: y, count: positions * channels) }
        let sample = sums + s * 2 * channels
        BatchNorm.gradientSums(dy: dy, x: x, positions: positions, channels: channels, mean: mean, invstd: invstd,
                               sumDy: sample, sumDyXhat: sample + channels)
    }

    /// Backward: the bn's input gradient of one sample (its input x, its output gradient dy) into dx.
    @inline(__always) func inputGradient(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, into dx: UnsafeMutablePointer<Float>) {
        BatchNorm.inputGradient(dy: dy, x: x, positions: positions, channels: channels, mean: mean, invstd: invstd,
                                scale: scale, meanDy: meanDy, meanDyXhat: meanDyXhat, into: dx)
    }
}
