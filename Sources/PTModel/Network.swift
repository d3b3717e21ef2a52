// A model built from a spec: its parameters, its activation and gradient buffers (allocated once
// for a maximum batch), and the forward and backward passes run on a worker pool.
//
// Layout: activations are NHWC per sample, samples contiguous. Conv weights are [K, K, Cin, Cout]
// (a [patch, Cout] matrix), dense weights are [in, out]; the flatten after the last conv/pool is
// in (h, w, c) order. Checkpoints convert to PyTorch's layouts.
//
// Work is split so that every floating-point sum has one owner and one order fixed by the batch:
// convolutions (with the max-pool after them) a sample at a time, their weight gradients per
// shard of the batch and then summed over the shards in shard order; dense layers as whole-batch
// GEMMs split by output tiles. That is why the result does not depend on the thread count
// (docs/ARCHITECTURE.md).
import Foundation
import PTKernels
import PTRuntime
public final class Network {
    public let spec: ModelSpec
    /// The arithmetic of convolutions and dense layers (fp32, or bf16 operands on a path).
    public let precision: Precision
    public let inputShape: Shape
    public let classes: Int
    /// The largest batch the buffers hold.
    public let capacity: Int
    public let pool: WorkerPool
    /// The processes the batch is split across (one, unless under mpirun): each runs the stages
    /// before the first dense layer on its whole shards of the batch, and owns a share of each
    /// dense layer's rows; sums that cross ranks are passed along them in rank order
    /// (docs/DISTRIBUTED.md).
    public let group: ProcessGroup
    public let parameters: ParameterBuffers
    public let state: StateBuffers

    /// The weights (`parameters.values`). Whoever takes them may write through them, so taking
    /// them marks the dense layers' bf16 copies of their weights stale (`packedWeightsCurrent`):
    /// the next forward pass rounds the weights afresh. Take them again after each training step
    /// before writing through them: a pointer kept across a step writes behind the copy's back.
    /// The stages use `parameters.values`.
    public var weights: UnsafeMutablePointer<Float> {
        packedWeightsCurrent = false
        return parameters.values
    }
    /// In bf16, whether each dense layer's packed bf16 copy of its weights (`DenseStage.packedWeights`)
    /// equals its weights rounded: true only after a fused backward pass updated and packed every
    /// row (`backward(count:optimizer:)`), and false again as soon as anything else may have
    /// changed a weight. The forward pass reads the copy only then, so it never reads a stale one.
    var packedWeightsCurrent = false
    /// Whether the next forward pass reads dense weights from a packed bf16 copy kept by the
    /// optimizer rather than rounding them afresh (the same bits either way; for tests and tools).
    public var readsPackedWeights: Bool {
        packedWeightsCurrent && stages.contains { ($0 as? DenseStage)?.packedWeights != nil }
    }
    /// The batch input [capacity, H, W, C], filled by the caller before `forward`.
    public var input: UnsafeMutablePointer<Float> { activations.values[0] }
    /// Labels of the batch, filled by the caller before `lossAndGradient`.
    public let labels: UnsafeMutablePointer<Int32>
    /// Each sample's loss of the last `lossAndGradient`.
    let sampleLosses: UnsafeMutablePointer<Float>
    public var logits: UnsafeMutablePointer<Float> { activations.values[stages.count] }
    /// Activation `i` (0: the input, i: stage i - 1's output, ReLU applied) of the last forward
    /// pass, and its gradient after a backward pass (for the output of a conv or dense layer with
    /// a ReLU: masked by it), `capacity` samples; nil for a conv's output that its fused max-pool
    /// keeps in the workers' scratch. A residual block's begin shares its input's buffer, and a bn
    /// that adds its block's shortcut writes the block's output in place of its own (so those
    /// activations are the block's). A conv's output gradient is not kept where the bn after it
    /// computes it in the conv's jobs (it stays in a worker's scratch). For tests and tools that
    /// check a pass stage by stage.
    public func activation(_ i: Int) -> UnsafePointer<Float>? {
        activations.sizes[i] > 0 && !scratchOnly(i) ? UnsafePointer(activations.values[i]) : nil
    }
    public func activationGradient(_ i: Int) -> UnsafePointer<Float>? {
        i > 0 && !scratchOnly(i) ? UnsafePointer(activations.gradients[i]) : nil
    }
    private func scratchOnly(_ i: Int) -> Bool { i > 0 && stages[i - 1].outputInScratch }

    var stages: [any Stage] = []
    /// Where a worker's scratch holds a sample's im2col and conv output (after the GEMM packing area).
    let scratchLayout: ScratchLayout
    /// A batch rounded up to whole GEMM register tiles (the padded dimension of dXᵀ).
    static func paddedBatch(_ n: Int) -> Int { (n + Gemm.nr - 1) / Gemm.nr * Gemm.nr }
    /// The batch is cut into this many shards for the conv weight gradients: fixed by the batch
    /// alone, never by the thread count, so the reduction's order is too.
    public static func shardCount(batch: Int) -> Int { min(batch, 32) }
    /// The shards of a batch of `n` that `rank` of `ranks` computes: consecutive, whole shards.
    static func shards(batch n: Int, rank: Int, of ranks: Int) -> Range<Int> {
        ProcessGroup.share(shardCount(batch: n), part: rank, of: ranks)
    }
    /// The samples of those shards.
    static func samples(batch n: Int, rank: Int, of ranks: Int) -> Range<Int> {
        let s = shards(batch: n, rank: rank, of: ranks), count = shardCount(batch: n)
        return (s.lowerBound * n / count)..<(s.upperBound * n / count)
    }
    public func shards(batch n: Int, rank: Int) -> Range<Int> { Self.shards(batch: n, rank: rank, of: group.size) }
    public func samples(batch n: Int, rank: Int) -> Range<Int> { Self.samples(batch: n, rank: rank, of: group.size) }
    /// The first dense stage: the stages before it run on this rank's samples only; its input
    /// is gathered from every rank.
    var firstDense: Int { stages.firstDense }
    /// How each conv's pass is cut (`ConvParts`), per batch size and worker count: decided on
    /// first use, so a step allocates nothing.
    private struct ConvPartsKey: Hashable { var stage, batch, workers: Int; var backward: Bool }
    private var convPartsCache: [ConvPartsKey: ConvParts] = [:]
    /// The parts of stage `idx` when it is a conv (nil otherwise): what a bn or a block's begin
    /// next to it asks, to know whether the conv's jobs do its per-sample passes.
    func convParts(ofStage idx: Int, batch n: Int, backward: Bool) -> ConvParts? {
        guard stages.indices.contains(idx), let c = stages[idx] as? ConvStage else { return nil }
        return convParts(idx, c, batch: n, backward: backward)
    }
    func convParts(_ idx: Int, _ c: ConvStage, batch n: Int, backward: Bool) -> ConvParts {
        let key = ConvPartsKey(stage: idx, batch: n, workers: pool.splitCount, backward: backward)
        if let parts = convPartsCache[key] { return parts }
        let sizes: [Int]
        if backward {
            let count = Self.shardCount(batch: n)
            sizes = shards(batch: n, rank: group.rank).map { ($0 + 1) * n / count - $0 * n / count }
        } else {
            sizes = Array(repeating: 1, count: samples(batch: n, rank: group.rank).count)
        }
        let parts = ConvParts.choose(ConvParts.limit(c, backward: backward), sizes: sizes, workers: pool.splitCount)
        convPartsCache[key] = parts
        return parts
    }
    /// Each activation for the batch and its gradient, and what each stage reads and writes.
    let activations: Activations
    private var owned: [UnsafeMutableRawPointer] = []
    /// What the optimizer pass after the backward pass updates.
    let optimizerSlices: OptimizerSlices
    /// Whether each gradient the optimizer took was finite, per slot and worker.
    let finite: FiniteChecks
    /// Whether the last backward pass was `backward(count:optimizer:)`, which leaves the dense weights'
    /// gradients unstored.
    var lastBackwardFused = false

    /// Where a step's time went, when `enabled` (`ptrain bench --profile`): nanoseconds summed
    /// over the steps since `startProfiling`.
    public struct Profile: Sendable {
        public var enabled = false
        /// Each stage's forward and backward pass.
        public var forward, backward: [UInt64]
        /// The sum of the shards' conv gradients, and the optimizer over what the dense layers'
        /// backward passes do not update themselves.
        public var reduce: UInt64 = 0, optimizer: UInt64 = 0
        init(stages: Int) { forward = Array(repeating: 0, count: stages); backward = forward }
    }
    public private(set) var profile = Profile(stages: 0)
    /// Times every stage's passes from now on, from zero.
    public func startProfiling() { profile = Profile(stages: stages.count); profile.enabled = true }
    public func stopProfiling() { profile.enabled = false }
    @inline(__always) func clock() -> UInt64 { profile.enabled ? DispatchTime.now().uptimeNanoseconds : 0 }
    /// Names the regions that follow for a recording pool (`ptrain bench --model-cores`).
    @inline(__always) public func label(_ text: @autoclosure () -> String) {
        if let recorder = pool.recorder { recorder.label = text() }
    }
    /// A slot of `Profile` (an enum rather than a key path: a key path with an index allocates).
    enum ProfileSlot { case forward(Int), backward(Int), reduce, optimizer }
    @inline(__always) func charge(_ slot: ProfileSlot, since start: UInt64) {
        guard profile.enabled else { return }
        let t = DispatchTime.now().uptimeNanoseconds &- start
        switch slot {
        case let .forward(i): profile.forward[i] &+= t
        case let .backward(i): profile.backward[i] &+= t
        case .reduce: profile.reduce &+= t
        case .optimizer: profile.optimizer &+= t
        }
    }
    /// A short name per stage for profile tables: "conv 3x3 1->64 +relu", "maxpool 2", "fc 6272->1024".
    /// (Built once: a recording labels every region with one, and building it each time would
    /// count as the step's serial part.)
    public private(set) lazy var stageNames: [String] = stages.map(\.name)
    lazy var regionLabels: [(forward: String, backward: String)] = stageNames.map { ($0 + " fwd", $0 + " bwd") }


    /// `numa`: the machine's topology (a stand-in in tests of placement).
    /// `precision`: the arithmetic of the convolutions' and dense layers' multiply-adds.
    /// `secondMoment`: whether the optimizer keeps one (Adam and AdamW do; SGD does not).
    public init(spec: ModelSpec, input: Shape, classes: Int, capacity: Int, threads: Int, seed: UInt64,
                precision: Precision = .fp32, group: ProcessGroup = .single, numa: Numa = .shared, secondMoment: Bool = true) throws {
        let plan = try NetworkPlan(spec: spec, input: input, classes: classes, precision: precision)
        self.precision = precision
        // Refuse up front what would not fit, rather than dying in the middle of allocation.
        let estimate = plan.memoryEstimate(capacity: capacity, threads: threads, processes: group.size), available = AvailableMemory.bytes() ?? 0
        if available > 0 && estimate > available {
            throw ShapeError(message: String(format: "a batch of %d with this model needs about %.1f GiB but only %.1f GiB of memory is available; a smaller batch or model needs less",
                                             capacity, Double(estimate) / 1_073_741_824, Double(available) / 1_073_741_824))
        }
        self.spec = spec
        self.group = group
        self.inputShape = input
        self.classes = classes
        self.capacity = capacity
        scratchLayout = plan.scratch
        pool = WorkerPool(threads: threads, scratchFloats: plan.scratchFloats, numa: numa)
        optimizerSlices = OptimizerSlices(plan.optimizerSlices)
        finite = FiniteChecks(slots: 1 + plan.stages.filter { $0 is DenseStage }.count, workers: pool.count)
        labels = .allocate(capacity: capacity)
        labels.initialize(repeating: 0, count: capacity)
        sampleLosses = .allocate(capacity: capacity)
        sampleLosses.initialize(repeating: 0, count: capacity)
        owned = [UnsafeMutableRawPointer(labels), UnsafeMutableRawPointer(sampleLosses)]

        let layout = BufferLayout(pool: pool, group: group, numa: numa, capacity: capacity, stages: plan.stages)
        let weightRows = layout.denseWeightRows(plan.stages)
        let count = plan.parameterCount, convCount = plan.convParams
        let myShards = Self.shards(batch: capacity, rank: group.rank, of: group.size)
        parameters = ParameterBuffers(
            tensors: plan.tensors, count: count, convCount: convCount,
            values: layout.floats(count, perNode: weightRows), gradients: layout.floats(count, perNode: weightRows),
            moment1: layout.floats(count, perNode: weightRows), moment2: secondMoment ? layout.floats(count, perNode: weightRows) : nil,
            shardGradients: layout.floats(Self.shardCount(batch: capacity) * convCount,
                                          perNode: layout.byNode(myShards.count, size: convCount, from: myShards.lowerBound * convCount)))
        state = StateBuffers(tensors: plan.stateTensors, count: plan.stateCount, values: layout.floats(max(plan.stateCount, 1)))
        stages = layout.allocate(plan.stages)
        activations = Activations(sizes: plan.shapes.map(\.count), stages: stages, layout: layout)
        owned += layout.owned
        profile = Profile(stages: stages.count)
        initialize(seed: seed)
    }

    deinit {
        for p in owned { p.deallocate() }
        optimizerSlices.deallocate()
        finite.deallocate()
    }
}

/// Each activation of the batch (0: the input, i: stage i - 1's output) and its gradient, and what
/// each stage reads and writes of them.
struct Activations {
    /// Per-sample floats of each activation.
    let sizes: [Int]
    let values, gradients: [UnsafeMutablePointer<Float>]
    /// Stage i's buffers. A conv with a fused max-pool reads and writes the pool's output: its own
    /// output and that output's gradient are never stored (0 floats).
    let io: [StageBuffers]

    /// Which activations take a buffer of their own (the rest share a neighbour's), for `count`
    /// activations of `stages`. A value shares the one before it where its stage's output is its
    /// input. A gradient shares the one after it where its stage adds to its output gradient in
    /// place, or passes that gradient through as its input gradient and the stage before it would
    /// not change it in place before the block's begin reads it; the input has no gradient (its
    /// slot is the input itself). A conv's output that its fused pool keeps in scratch has a
    /// buffer of no floats (`scratchOnly`).
    static func ownBuffers(count: Int, stages: [any Stage]) -> (values: [Bool], gradients: [Bool], scratchOnly: Set<Int>) {
        let values = (0..<count).map { i in !(i > 0 && stages[i - 1].outputIsInput) }
        let gradients = (0..<count).map { i in
            i > 0 && !(i < stages.count
                       && (stages[i].addsToOutputGradient || stages[i].passesGradientThrough && stages[i - 1].keepsOutputGradient))
        }
        return (values, gradients, Set(stages.indices.filter { stages[$0].outputInScratch }.map { $0 + 1 }))
    }

    init(sizes: [Int], stages: [any Stage], layout: BufferLayout) {
        let own = Self.ownBuffers(count: sizes.count, stages: stages)
        func buffer(_ i: Int) -> UnsafeMutablePointer<Float> {
            own.scratchOnly.contains(i) ? layout.floats(0) : layout.floats(sizes[i] * layout.capacity, perNode: layout.bySample(i, sizes[i]))
        }
        var values: [UnsafeMutablePointer<Float>] = []
        for i in sizes.indices { values.append(own.values[i] ? buffer(i) : values[i - 1]) }
        var gradients = [UnsafeMutablePointer<Float>](repeating: values[0], count: sizes.count)
        for i in sizes.indices.reversed() where i > 0 { gradients[i] = own.gradients[i] ? buffer(i) : gradients[i + 1] }
        self.sizes = sizes
        self.values = values
        self.gradients = gradients
        io = stages.indices.map { i in
            let out = stages[i].outputInScratch ? i + 2 : i + 1
            return StageBuffers(x: values[i], y: values[out], dx: gradients[i], dy: gradients[out])
        }
    }
}
