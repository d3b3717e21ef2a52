// A residual block, `res(F)`: y = x + F(x) (then ReLU when one follows the block), F being the
// stages between the block's two marker stages. When F changes the shape, x goes through a 1x1
// conv with F's stride and channel count (resN.proj.weight and resN.proj.bias), as the projection
// shortcut of He et al.
// - The begin stage's output is its input (one buffer, no copy). Backward it adds the shortcut's
//   gradient to F's input gradient in place — inside F's first conv's jobs where that conv runs
//   whole shards.
// - The end stage adds the shortcut forward and hands its gradient to both paths backward (one
//   buffer for its output and input gradients where F's last stage does not mask its output
//   gradient in place, as a bn without a ReLU does not). With an identity shortcut after such a
//   bn, that bn does both passes' work as it normalises and sums. With a projection, the
//   projection's jobs do it, a sample at a time: forward they add F's output to the sample's
//   projection in their scratch (`ResidualSum`), backward they mask (and copy) the sample's
//   gradient just before reading it (`ResidualGradient`).
// Everything runs a sample at a time (a block lives in the conv stack), so the bits do not depend
// on the threads or the ranks.
import PTKernels
import PTRuntime

private let f = MemoryLayout<Float>.size

/// `res(`: y = x (the same buffer), and dx = dy + the shortcut's gradient (in dy's buffer).
struct ResidualBeginStage: Stage {
    var size: Int
    /// The end stage's index, set when it is planned.
    var end = 0
    /// The shortcut's gradient: the projection's input gradient (allocated by the end stage); nil
    /// for an identity shortcut, whose gradient is the end stage's output gradient itself.
    var shortcutGradient: UnsafeMutablePointer<Float>?

    static func plan(_ p: inout StagePlanner) {
        p.openBlocks.append((p.stages.count, p.shape, 1))
        p.stages.append(ResidualBeginStage(size: p.shape.count))
    }

    var name: String { "res begin" }
    var outputIsInput: Bool { true }
    var addsToOutputGradient: Bool { true }

    /// The shortcut's gradient for the whole batch.
    func shortcut(_ net: Network) -> UnsafeMutablePointer<Float> { shortcutGradient ?? net.activations.io[end].dy }

    /// Whether F's first conv (`ConvStage.residualBegin`) adds the shortcut's gradient in its own
    /// backward jobs, right after each sample's input gradient: it does unless it cuts its shards
    /// into parts (batch `n`, this stage at `index`; a block that begins the network needs none).
    func addedByFirstConv(_ net: Network, index: Int, batch n: Int) -> Bool {
        index > 0 && net.convParts(ofStage: index + 1, batch: n, backward: true)?.count == 1
    }

    func forward(_ net: Network, _ pass: StagePass) {}

    func backward(_ net: Network, _ pass: StagePass, optimizer: OptimizerStep?) {
        guard pass.needsInputGradient, !addedByFirstConv(net, index: pass.index, batch: pass.count) else { return }
        let sum = ResidualSum(f: pass.io.dy, into: pass.io.dx, size: size, relu: false)
        net.pool.run(range: pass.samples, ResidualJob(work: .sum(sum, adding: shortcut(net))))
    }
}

/// `)`: y = ReLU?(F(x) + x or its projection); backward, F's output gradient and the shortcut's.
struct ResidualEndStage: Stage {
    var size: Int
    var relu: Bool
    var begin: Int
    /// The 1x1 conv of the shortcut when F changes the shape; it runs on the block's input.
    var projection: ConvStage?
    /// The projection's input gradient (the begin stage adds it). (Its output stays in the
    /// workers' scratch: its forward jobs add it to F's output, `ResidualSum`.)
    var shortcutGradient: UnsafeMutablePointer<Float>?
    /// F's last stage, a bn, does this stage's work (`BatchNormStage.shortcut`): forward it writes
    /// the block's sum (and ReLU) into F's output, which is this stage's output too; backward it
    /// masks this stage's gradient (one buffer for its input and output gradients, since that bn
    /// has no ReLU of its own) as it reads it. Neither pass has anything left to do here.
    var addedByBatchNorm = false

    /// Closes the innermost open block: an identity shortcut when F kept the shape, else a 1x1
    /// conv with F's stride (the product of its convs').
    static func plan(relu: Bool, _ p: inout StagePlanner) throws {
        let (begin, input, stride) = p.openBlocks.removeLast()
        let output = p.shape, n = p.number("res")
        var end = ResidualEndStage(size: output.count, relu: relu, begin: begin)
        // A 1x1 SAME conv with F's stride gives the size F gives unless F shrinks otherwise (a VALID conv).
        let g = Window(inH: input.h, inW: input.w, channels: input.c, kernel: 1, stride: stride, same: true)
        guard g.outH == output.h, g.outW == output.w else {
            throw p.refuse("closes a block that takes \(input) to \(output): its shortcut, a 1x1 conv with the block's stride \(stride), would give \(g.outH)x\(g.outW) (a VALID conv inside changes the size otherwise)")
        }
        if output != input {
            let w = p.addTensor("res\(n).proj.weight", [1, 1, input.c, output.c], .convWeight(kernel: 1, inputs: input.c, outputs: output.c))
            let b = p.addTensor("res\(n).proj.bias", [output.c], .bias)
            end.projection = ConvStage(window: g, cout: output.c, relu: false, weight: w, bias: b,
                                       path: ConvPath.choose(g, cout: output.c, firstLayer: false, precision: p.precision),
                                       precision: p.precision)
        }
        // With an identity shortcut, a bn without a ReLU at F's end adds the shortcut (and applies
        // the block's ReLU) as it normalises: one pass over the block's output instead of two.
        if end.projection == nil, var bn = p.stages.last as? BatchNormStage, !bn.relu, bn.inConvStack {
            bn.shortcut = (begin, relu)
            p.stages[p.stages.count - 1] = bn
            end.addedByBatchNorm = true
        }
        if var b = p.stages[begin] as? ResidualBeginStage {
            b.end = p.stages.count
            p.stages[begin] = b
        }
        p.stages.append(end)
    }

    var name: String {
        if addedByBatchNorm { return "res end\(relu ? " +relu" : "") (in its bn)" }
        let shortcut = projection.map { " proj 1x1/\($0.window.stride) \($0.window.channels)->\($0.cout)" } ?? ""
        return "res end\(relu ? " +relu" : "")" + shortcut
    }
    var parameters: Range<Int> { projection?.parameters ?? 0..<0 }
    var passesGradientThrough: Bool { true }
    var outputIsInput: Bool { addedByBatchNorm }
    var extraFloatsPerSample: Int { projection?.window.inputSize ?? 0 }
    var scratchNeeds: ScratchNeeds { projection?.scratchNeeds ?? ScratchNeeds() }
    func flopsPerSample(asDirect: Bool) -> Double { projection?.flopsPerSample(asDirect: asDirect) ?? 0 }

    mutating func allocate(_ layout: BufferLayout, index: Int, earlier: inout [any Stage]) {
        guard var proj = projection else { return }
        var none: [any Stage] = []
        proj.allocate(layout, index: begin > 0 ? 1 : 0, earlier: &none)  // Wᵀ packed only where an input gradient is needed
        projection = proj
        shortcutGradient = layout.floats(layout.capacity * proj.window.inputSize, perNode: layout.bySample(begin, proj.window.inputSize))
        if var b = earlier[begin] as? ResidualBeginStage {
            b.shortcutGradient = shortcutGradient
            earlier[begin] = b
        }
    }

    func initialize(_ net: Network, _ rng: inout SplitMix64) { projection?.initialize(net, &rng) }

    /// The shortcut's conv pass: on the block's input, into the block's output (its forward
    /// writes the block's sum there), and into the begin stage's shortcut gradient.
    private func shortcutPass(_ net: Network, _ pass: StagePass, dy: UnsafeMutablePointer<Float>) -> StagePass {
        StagePass(index: begin, count: pass.count, samples: pass.samples,
                  io: StageBuffers(x: net.activations.io[begin].x, y: pass.io.y, dx: shortcutGradient!, dy: dy), training: pass.training)
    }

    func forward(_ net: Network, _ pass: StagePass) {
        if addedByBatchNorm { return }
        if let projection {
            // The projection's jobs add F's output to each sample of theirs, still in cache.
            let sum = ResidualSum(f: pass.io.x, into: pass.io.y, size: size, relu: relu)
            projection.forward(net, shortcutPass(net, pass, dy: pass.io.dy), finishing: sum)
            return
        }
        let sum = ResidualSum(f: pass.io.x, into: pass.io.y, size: size, relu: relu)
        net.pool.run(range: pass.samples, ResidualJob(work: .sum(sum, adding: net.activations.io[begin].x)))
    }

    func backward(_ net: Network, _ pass: StagePass, optimizer: OptimizerStep?) {
        if addedByBatchNorm { precondition(pass.io.dx == pass.io.dy, "a block end's work done by its bn needs one gradient buffer"); return }
        // F's output gradient is dy (masked by the ReLU); so is the shortcut's output gradient.
        // Where the two share a buffer, only the mask is left to do. A projection's jobs do it a
        // sample at a time, just before they read the sample's gradient.
        let end = ResidualGradient(dy: pass.io.dy, y: pass.io.y, into: pass.io.dx, size: size, relu: relu)
        if let projection {
            projection.backward(net, shortcutPass(net, pass, dy: pass.io.dx), optimizer: optimizer, starting: end)
        } else if pass.io.dx != pass.io.dy || relu {
            net.pool.run(range: pass.samples, ResidualJob(work: .endGradient(end)))
        }
    }
}

/// A sample's residual sum, into = ReLU?(f + the other term), f added first: a block's output
/// (f being F's output, the other its input or projection), or backward a block's input gradient
/// (f being F's input gradient, the other the shortcut's). A projection's forward jobs finish a
/// sample with it; otherwise it is a region of its own (`ResidualJob`).
struct ResidualSum {
    var f, into: UnsafeMutablePointer<Float>
    var size: Int
    var relu: Bool
    @inline(__always) func add(_ other: UnsafePointer<Float>, sample s: Int) {
        Elementwise.add(f + s * size, other, count: size, relu: relu, into: into + s * size)
    }
}

/// A block end's backward for a sample: the end's gradient masked by the block's ReLU (its output
/// y) in place, and copied into F's and the shortcut's output gradient where that is another
/// buffer. A projection's backward jobs start a sample with it; otherwise it is a region of its
/// own (`ResidualJob`).
struct ResidualGradient {
    var dy, y, into: UnsafeMutablePointer<Float>
    var size: Int
    var relu: Bool
    @inline(__always) func run(sample s: Int) {
        let g = dy + s * size
        if relu { Elementwise.reluBackward(dy: g, y: y + s * size, count: size) }
        if into != dy { (into + s * size).update(from: g, count: size) }
    }
}

/// One sample of a residual block's elementwise work, as a region of its own.
struct ResidualJob: ParallelJob, @unchecked Sendable {  // an item writes its sample of the sum's output, or of the end's gradients
    enum Work {
        case sum(ResidualSum, adding: UnsafeMutablePointer<Float>)
        case endGradient(ResidualGradient)
    }
    var work: Work
    func run(_ s: Int, _ worker: Int) {
        switch work {
        case let .sum(sum, other): sum.add(other + s * sum.size, sample: s)
        case let .endGradient(end): end.run(sample: s)
        }
    }
    func bytesMoved(items: Int) -> Int {
        switch work {
        case let .sum(sum, _): return items * f * sum.size * 3
        case let .endGradient(end): return items * f * end.size * ((end.relu ? 3 : 0) + (end.into != end.dy ? 2 : 0))
        }
    }
}
