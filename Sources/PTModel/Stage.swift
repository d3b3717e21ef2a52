// What every stage kind provides. A stage is one layer of the spec (with the ReLU after it fused
// in). Each kind is one file in Stages/ — its plan from the spec, its buffers, its forward and
// backward regions with their jobs, its FLOP and byte counts and its parameters' names — so a new
// kind of layer is one new file plus its spec word. The network calls each stage once a pass
// through the protocol (a witness-table call, no allocation); the loops run in the stages' jobs,
// on concrete types.
import PTKernels
import PTRuntime

protocol Stage {
    /// A short name for profile tables and region labels: "conv 3x3 1->64 +relu", "maxpool 2".
    var name: String { get }
    /// Whether the stage works on the whole batch at once (a dense layer's GEMMs). The stages
    /// before the first such one work a sample (or a shard) at a time, on this rank's samples.
    var batchWide: Bool { get }
    /// Its parameters in the flat buffers (empty: none).
    var parameters: Range<Int> { get }
    /// Its output lives only in the workers' scratch (a conv whose max-pool runs inside it).
    var outputInScratch: Bool { get }
    /// Its output takes its input's buffer: the output is the input unchanged (a residual block's
    /// begin), or the stage before it already wrote the output there (a block's end whose sum its
    /// last bn computed).
    var outputIsInput: Bool { get }
    /// Its input gradient is its output gradient, at most masked in place by its ReLU (a residual
    /// block's end): the two share a buffer where the stage before it keeps its output gradient.
    var passesGradientThrough: Bool { get }
    /// Its input gradient is its output gradient with another added to it in place (a residual
    /// block's begin adds the shortcut's): the two share a buffer.
    var addsToOutputGradient: Bool { get }
    /// Its backward pass leaves its output gradient as it found it (no ReLU mask applied in place),
    /// so the buffer can be shared with a stage after it that reads it later (`passesGradientThrough`).
    var keepsOutputGradient: Bool { get }
    /// Floats a sample needs beyond the activations and their gradients (argmaxes, masks).
    var extraFloatsPerSample: Int { get }
    /// Floats it keeps whatever the batch, beyond its parameters, in a job of `processes` (a bf16
    /// dense layer's packed weights, kept by one process only).
    func fixedFloats(processes: Int) -> Int
    /// What its regions need of a worker's scratch.
    var scratchNeeds: ScratchNeeds { get }
    /// Multiply-adds x 2 of its forward pass for one sample; `asDirect` counts a convolution as a
    /// direct one whatever its path (how a model's FLOPs are usually quoted).
    func flopsPerSample(asDirect: Bool) -> Double
    /// Takes its own buffers for a batch of `layout.capacity`; `earlier` holds the stages before
    /// it, already allocated (a fused max-pool hands its buffers to the conv that runs it).
    mutating func allocate(_ layout: BufferLayout, index: Int, earlier: inout [any Stage])
    /// Sets its starting weights and state (drawn in stage order from one generator: the order is
    /// part of the bits).
    func initialize(_ net: Network, _ rng: inout SplitMix64)
    func forward(_ net: Network, _ pass: StagePass)
    /// `optimizer`: the step that a stage able to update its weights inside its backward pass
    /// takes there (`Network.backward(count:optimizer:)`); nil, gradients only.
    func backward(_ net: Network, _ pass: StagePass, optimizer: OptimizerStep?)
}

extension Stage {
    var batchWide: Bool { false }
    var parameters: Range<Int> { 0..<0 }
    var outputInScratch: Bool { false }
    var outputIsInput: Bool { false }
    var passesGradientThrough: Bool { false }
    var addsToOutputGradient: Bool { false }
    var keepsOutputGradient: Bool { false }
    var extraFloatsPerSample: Int { 0 }
    func fixedFloats(processes: Int) -> Int { 0 }
    var scratchNeeds: ScratchNeeds { ScratchNeeds() }
    func flopsPerSample(asDirect: Bool) -> Double { 0 }
    mutating func allocate(_ layout: BufferLayout, index: Int, earlier: inout [any Stage]) {}
    func initialize(_ net: Network, _ rng: inout SplitMix64) {}
}

/// One stage's pass over a batch.
struct StagePass {
    /// The stage's place in the network (0: it reads the input, so no input gradient is needed).
    var index: Int
    /// The batch.
    var count: Int
    /// The samples this rank runs the stage on: its own for per-sample stages, all from the first
    /// batch-wide stage on.
    var samples: Range<Int>
    var io: StageBuffers
    /// Forward only: dropout's masks are drawn from (seed, step, sample, unit) when training.
    var training = false, step = 0, seed: UInt64 = 0
    var needsInputGradient: Bool { index > 0 }
}

/// The buffers a stage reads and writes for the whole batch: its input and output and their
/// gradients. A conv with a fused max-pool reads and writes the pool's output (`y`, `dy`): its
/// own output and that output's gradient live only in a worker's scratch.
struct StageBuffers {
    var x, y, dx, dy: UnsafeMutablePointer<Float>
}

/// Floats of a worker's scratch that a stage's regions need, by region (`ScratchLayout`).
struct ScratchNeeds {
    var col = 0, output = 0, winograd = 0, denseRows = 0
    func merged(_ o: ScratchNeeds) -> ScratchNeeds {
        ScratchNeeds(col: max(col, o.col), output: max(output, o.output), winograd: max(winograd, o.winograd),
                     denseRows: max(denseRows, o.denseRows))
    }
}

/// Offsets into a worker's scratch (after the GEMM packing area). The conv regions and the dense
/// region overlap: conv and dense stages never run at once.
struct ScratchLayout {
    var col: Int       // one sample's im2col, then its gradient (Winograd: a group's transformed input V, then dV)
    var output: Int    // one sample's conv output (Winograd: a group's), then its gradient, when a max-pool
                       // is fused; or a projection's output before its block's sum; or the output
                       // gradient a bn after the conv computes in its backward jobs
    var winograd: Int  // Winograd: a group's transformed outputs M (then dM), and after them the shard's dU
    var denseRows: Int // a dense layer's backward pass: a block of its weight gradient's rows

    /// The layout for stages that need `n`, and the scratch's floats in all: each worker holds one
    /// sample's im2col (then its gradient), convolutions running a sample at a time so that it
    /// never leaves the worker's cache; a dense layer's backward pass holds a block of its weight
    /// gradient's rows in the same place (the conv regions are idle then).
    static func fitting(_ n: ScratchNeeds) -> (ScratchLayout, Int) {
        let layout = ScratchLayout(col: Gemm.scratchFloats, output: Gemm.scratchFloats + n.col,
                                   winograd: Gemm.scratchFloats + n.col + n.output, denseRows: Gemm.scratchFloats)
        return (layout, Gemm.scratchFloats + max(n.col + n.output + n.winograd, n.denseRows))
    }
}

/// Builds the stages of a plan from the spec's layers, one layer at a time: each kind's `plan`
/// adds its stage, its parameter tensors (with PyTorch's names) and its output shape.
struct StagePlanner {
    var stages: [any Stage] = []
    var tensors: [ParameterTensor] = []
    /// What the network keeps besides its parameters (batch norm's running statistics), in `Network.state`.
    var stateTensors: [ParameterTensor] = []
    private(set) var stateCount = 0
    /// The shape the next layer gets.
    var shape: Shape
    var precision: Precision
    /// Floats of parameters so far.
    private(set) var offset = 0
    /// The layer being planned, for errors: its column in the spec and its text.
    var column = 1, text = ""
    private var numbers: [String: Int] = [:]
    /// The residual blocks begun and not yet ended: the begin stage's index, the block's input
    /// shape, and the product of its convs' strides so far (its projection's stride).
    var openBlocks: [(begin: Int, input: Shape, stride: Int)] = []

    init(input: Shape, precision: Precision) { shape = input; self.precision = precision }

    /// The next number for a layer named `prefix` (conv1, conv2, ...; fc1, ...), as PyTorch's
    /// state_dict names a `nn.Sequential`'s layers by kind in scripts/ptrain_checkpoint.py.
    mutating func number(_ prefix: String) -> Int {
        let n = (numbers[prefix] ?? 0) + 1
        numbers[prefix] = n
        return n
    }

    /// Adds a parameter tensor after the others; returns its offset.
    mutating func addTensor(_ name: String, _ shape: [Int], _ kind: ParameterTensor.Kind) -> Int {
        let count = shape.reduce(1, *)
        tensors.append(ParameterTensor(name: name, offset: offset, count: count, shape: shape, kind: kind))
        offset += count
        return offset - count
    }

    /// Adds a state tensor after the others; returns its offset in the state buffer.
    mutating func addState(_ name: String, _ shape: [Int], _ kind: ParameterTensor.Kind) -> Int {
        let count = shape.reduce(1, *)
        stateTensors.append(ParameterTensor(name: name, offset: stateCount, count: count, shape: shape, kind: kind))
        stateCount += count
        return stateCount - count
    }

    /// The error for a layer that does not fit its input.
    func refuse(_ why: String) -> ShapeError { ShapeError(message: "model spec, column \(column): \(text) \(why)") }
}

extension [any Stage] {
    /// The index of the first batch-wide stage (or the count): the stages before it are the conv
    /// stack, which works a sample (or shard) at a time.
    var firstDense: Int { firstIndex { $0.batchWide } ?? count }
}

/// He-normal weights before a ReLU, Glorot-uniform otherwise (`count` of them at `w`).
func drawWeights(_ w: UnsafeMutablePointer<Float>, count: Int, fanIn: Int, fanOut: Int, relu: Bool, _ rng: inout SplitMix64) {
    if relu {
        let std = (2.0 / Double(fanIn)).squareRoot()
        for i in 0..<count { w[i] = Float(rng.nextNormal() * std) }
    } else {
        let limit = (6.0 / Double(fanIn + fanOut)).squareRoot()
        for i in 0..<count { w[i] = Float((rng.nextUnit() * 2 - 1) * limit) }
    }
}
