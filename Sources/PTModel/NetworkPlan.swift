// What a spec becomes before any memory is taken: the stages with their geometry, each conv's
// path, which max-pools run inside the conv before them, where each parameter tensor lives in
// the flat buffers, what a worker's scratch holds, and how much memory a batch needs. A pure
// value: `Network.init` allocates the buffers it names, and tests read it without a network.
import Foundation
import PTKernels
import PTRuntime

public struct NetworkPlan {
    var stages: [any Stage]
    /// Each activation's per-sample shape: the input, then each stage's output (dense: 1 x 1 x units).
    public let shapes: [Shape]
    public let tensors: [ParameterTensor]
    public let parameterCount: Int
    /// The network's state besides its parameters (batch norm's running statistics).
    public let stateTensors: [ParameterTensor]
    public let stateCount: Int
    /// Floats of the conv stack's parameters (convs, their batch norms and shortcuts): a prefix of
    /// the flat buffers (the spec puts the conv stack first), whose gradients go by shard.
    public let convParams: Int
    let scratch: ScratchLayout
    /// Floats of a worker's scratch: the GEMM packing area, then the conv or dense regions' part.
    let scratchFloats: Int
    /// Slices (start, count) of the parameters the optimizer pass after backward updates: all but
    /// the dense weights, in `Network.optimizerChunk`-sized pieces.
    let optimizerSlices: [(start: Int, count: Int)]

    /// Each conv's path, in stage order.
    public var convPaths: [ConvPath] { stages.compactMap { ($0 as? ConvStage)?.path } }
    /// The Winograd convs' output tiles, and how many samples' tiles their GEMMs take together, in order.
    public var winogradTiles: [Winograd.Tile] { stages.compactMap { ($0 as? ConvStage).flatMap { $0.path == .winograd ? $0.tile : nil } } }
    public var winogradGroups: [Int] { stages.compactMap { ($0 as? ConvStage).flatMap { $0.path == .winograd ? $0.group : nil } } }
    /// Whether each max-pool runs inside the conv before it, in stage order.
    public var fusedPools: [Bool] { stages.compactMap { ($0 as? PoolingStage).flatMap { $0.isMax ? $0.fused : nil } } }

    /// Throws a `ShapeError` naming the spec's column when a layer does not fit its input, or when
    /// the last layer's outputs are not the data's classes.
    public init(spec: ModelSpec, input: Shape, classes: Int, precision: Precision = .fp32) throws {
        try spec.validateOrder()
        var planner = StagePlanner(input: input, precision: precision)
        var shapes = [input]
        let layers = spec.layers
        var i = 0
        while i < layers.count {
            let layer = layers[i]
            let followedByRelu = i + 1 < layers.count && layers[i + 1] == .relu
            planner.column = spec.columns[i]
            planner.text = layer.text
            switch layer {
            case let .conv(out, k, stride, same, bias):
                try ConvStage.plan(out: out, kernel: k, stride: stride, same: same, bias: bias, relu: followedByRelu, &planner)
            case .batchNorm:
                BatchNormStage.plan(relu: followedByRelu, &planner)
            case .globalAvgPool:
                GlobalPoolingStage.plan(&planner)
            case let .maxPool(size, stride):
                try PoolingStage.plan(size: size, stride: stride, isMax: true, &planner)
            case let .avgPool(size, stride):
                try PoolingStage.plan(size: size, stride: stride, isMax: false, &planner)
            case let .dense(out, bias):
                DenseStage.plan(out: out, bias: bias, relu: followedByRelu, &planner)
            case let .dropout(keep):
                DropoutStage.plan(keep: keep, &planner)
            case .residualBegin:
                ResidualBeginStage.plan(&planner)
            case .residualEnd:
                try ResidualEndStage.plan(relu: followedByRelu, &planner)
            case .relu:
                break  // fused into the stage before it (the spec guarantees one that can take it)
            }
            if shapes.count <= planner.stages.count { shapes.append(planner.shape) }
            i += followedByRelu ? 2 : 1
        }
        if planner.shape.count != classes {
            throw ShapeError(message: "model spec, column \(spec.columns.last ?? 1): the last layer has \(planner.shape.count) outputs but the data has \(classes) classes")
        }
        stages = planner.stages
        self.shapes = shapes
        tensors = planner.tensors
        parameterCount = planner.offset
        stateTensors = planner.stateTensors
        stateCount = planner.stateCount
        convParams = stages[..<stages.firstDense].reduce(0) { max($0, $1.parameters.upperBound) }
        (scratch, scratchFloats) = ScratchLayout.fitting(stages.reduce(ScratchNeeds()) { $0.merged($1.scratchNeeds) })
        optimizerSlices = Self.optimizerSlices(tensors)
    }

    /// The parameters the optimizer pass after backward updates (all but the dense weights, which
    /// their backward passes update), in `Network.optimizerChunk`-sized slices.
    private static func optimizerSlices(_ tensors: [ParameterTensor]) -> [(start: Int, count: Int)] {
        var slices: [(start: Int, count: Int)] = []
        for t in tensors {
            if case .denseWeight = t.kind { continue }
            var lo = t.offset
            while lo < t.offset + t.count {
                let n = min(Network.optimizerChunk, t.offset + t.count - lo)
                if let last = slices.last, last.start + last.count == lo, last.count + n <= Network.optimizerChunk {
                    slices[slices.count - 1].count += n  // contiguous with the previous slice
                } else {
                    slices.append((lo, n))
                }
                lo += n
            }
        }
        return slices
    }

    /// The first batch norm to which a training batch of `batch` gives a single value per channel
    /// (after a dense layer or global pooling, at batch 1), by name: its statistics would be that
    /// value itself, and PyTorch refuses to train so too.
    public func batchNormWithOneValue(batch: Int) -> String? {
        for case let b as BatchNormStage in stages where batch * b.positions < 2 {
            return tensors.first { $0.offset == b.weight }.map { String($0.name.dropLast(".weight".count)) }
        }
        return nil
    }

    /// The bytes a network of this plan holds for a batch of `capacity` on `threads` workers:
    /// parameters with their gradients and moments, activations and their gradients, argmaxes and
    /// dropout scales, the workers' scratch and the shards' conv gradients.
    public func memoryEstimate(capacity: Int, threads: Int, processes: Int = 1) -> Int {
        // The activations that take buffers of their own (the same rule the network allocates by).
        let own = Activations.ownBuffers(count: shapes.count, stages: stages)
        let activations = shapes.indices.reduce(0) { sum, i in
            own.scratchOnly.contains(i) ? sum : sum + shapes[i].count * ((own.values[i] ? 1 : 0) + (own.gradients[i] ? 1 : 0))
        }
        let perSample = activations + stages.reduce(0) { $0 + $1.extraFloatsPerSample }
        let fixed = stages.reduce(0) { $0 + $1.fixedFloats(processes: processes) }
        return 4 * (4 * parameterCount + fixed + perSample * capacity + threads * scratchFloats + Network.shardCount(batch: capacity) * convParams)
    }
}
