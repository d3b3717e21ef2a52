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

public struct Shape: Equatable, Sendable, CustomStringConvertible {
    public var h, w, c: Int
    public init(h: Int, w: Int, c: Int) { self.h = h; self.w = w; self.c = c }
    public var count: Int { h * w * c }
    public var description: String { "\(h)x\(w)x\(c)" }
}

public struct ShapeError: Error, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// One named parameter tensor inside the flat parameter buffer.
public struct ParameterTensor: Sendable {
    public enum Kind: Sendable {
        /// Stored [K, K, Cin, Cout].
        case convWeight(kernel: Int, inputs: Int, outputs: Int)
        /// Stored [in, out]; `input` is the per-sample shape flattened in (h, w, c) order.
        case denseWeight(input: Shape, outputs: Int)
        case bias
    }
    public var name: String
    public var offset: Int
    public var count: Int
    /// Shape in ptrain's own layout ([K, K, Cin, Cout], [in, out] or [out]).
    public var shape: [Int]
    public var kind: Kind
}

struct ConvStage {
    var window: Window
    var cout: Int
    var relu: Bool
    var weight: Int, bias: Int
    var viaCol: Bool  // false for a 1x1 stride-1 conv: the input is its own im2col
    // The weights packed once a step for the per-sample GEMMs: W as the forward's B, and Wᵀ as
    // the input gradient's B (not for the first layer, which needs no input gradient).
    var packedW: UnsafeMutablePointer<Float>!
    var packedWt: UnsafeMutablePointer<Float>?
    /// A 3x3 stride-1 conv with whole-vector channel counts runs as Winograd F(2x2, 3x3): then
    /// its weights are transformed once a step into `u` ([16][cin][cout]) and packed per position
    /// ξ as the GEMMs' B (`packedW`, 16 blocks of `packedStride`) and Bᵀ (`packedWt`).
    var winograd = false
    var u: UnsafeMutablePointer<Float>?
    /// A first-layer 3x3 conv of a one-channel image runs direct (`SingleChannelConv`), from the
    /// input zero-padded into the worker's scratch: no im2col, no packed weights.
    var singleChannel = false
    var packedStride = 0, packedStrideT = 0
    /// A max-pool right after this conv runs inside the conv's per-sample jobs: the conv's output
    /// and its gradient live only in the worker's scratch, and the pool applies the ReLU mask.
    var fusedPool: PoolStage?
}

struct PoolStage {
    var window: Window
    var isMax: Bool
    var argmax: UnsafeMutablePointer<Int32>?
    var masksRelu = false  // fused after a conv with ReLU: its backward applies the ReLU mask
    var fused = false      // run by the conv before it (see ConvStage.fusedPool)
}

struct DenseStage {
    var inputs, outputs: Int
    var relu: Bool
    var weight: Int, bias: Int
    // For the input gradient as dXᵀ = W · dYᵀ: dYᵀ packed as the GEMM's B, and dXᵀ with its
    // batch dimension padded to whole register tiles (so every tile is stored in place).
    var packedDy: UnsafeMutablePointer<Float>?
    var inputGradT: UnsafeMutablePointer<Float>?
    // dY packed as the weight gradient's B (dW is computed a few rows at a time, and B would
    // otherwise be packed again for each).
    var packedDyRows: UnsafeMutablePointer<Float>!
    var finiteSlot = 0  // its weights' slot in Network.finiteFlags
    /// Under mpirun: the partial sums of the forward chain, [capacity x outputs] by column blocks.
    var chainBuffer: UnsafeMutablePointer<Float>?
}

struct DropoutStage {
    var keep: Float
    var units: Int
    var scales: UnsafeMutablePointer<Float>!  // allocated with the other buffers
}

enum Stage {
    case conv(ConvStage)
    case pool(PoolStage)
    case dense(DenseStage)
    case dropout(DropoutStage)
}

public final class Network {
    public let spec: ModelSpec
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
    public let tensors: [ParameterTensor]
    public let parameterCount: Int

    /// Flat parameter, gradient and Adam moment buffers, each `parameterCount` long.
    public let weights, gradients, moment1, moment2: UnsafeMutablePointer<Float>
    /// The batch input [capacity, H, W, C], filled by the caller before `forward`.
    public var input: UnsafeMutablePointer<Float> { acts[0] }
    /// Labels of the batch, filled by the caller before `lossAndGradient`.
    public let labels: UnsafeMutablePointer<Int32>
    /// Each sample's loss of the last `lossAndGradient`.
    let sampleLosses: UnsafeMutablePointer<Float>
    public var logits: UnsafeMutablePointer<Float> { acts[stages.count] }

    var stages: [Stage] = []
    /// Floats of conv parameters (a prefix of the flat buffers), and one buffer of that many
    /// per shard of the batch for their gradients, summed in shard order at the end of backward.
    public let convParams: Int
    /// Where a worker's scratch holds a sample's im2col and conv output (after the GEMM packing area).
    let scratchLayout: ScratchLayout
    let shardGradients: UnsafeMutablePointer<Float>
    /// A batch rounded up to whole GEMM register tiles (the padded dimension of dXᵀ).
    static func paddedBatch(_ n: Int) -> Int { (n + Gemm.nr - 1) / Gemm.nr * Gemm.nr }
    /// The batch is cut into this many shards for the conv weight gradients: fixed by the batch
    /// alone, never by the thread count, so the reduction's order is too.
    public static func shardCount(batch: Int) -> Int { min(batch, 32) }
    /// The shards of a batch of `n` that `rank` computes: consecutive, whole shards.
    public func shards(batch n: Int, rank: Int) -> Range<Int> {
        ProcessGroup.share(Self.shardCount(batch: n), part: rank, of: group.size)
    }
    /// The samples of those shards.
    public func samples(batch n: Int, rank: Int) -> Range<Int> {
        let s = shards(batch: n, rank: rank), count = Self.shardCount(batch: n)
        return (s.lowerBound * n / count)..<(s.upperBound * n / count)
    }
    /// The first dense stage: the stages before it run on this rank's samples only; its input
    /// is gathered from every rank.
    var firstDense: Int {
        stages.firstIndex { if case .dense = $0 { return true }; return false } ?? stages.count
    }
    /// How each conv's pass is cut (`ConvParts`), per batch size and worker count: decided on
    /// first use, so a step allocates nothing.
    private struct ConvPartsKey: Hashable { var stage, batch, workers: Int; var backward: Bool }
    private var convPartsCache: [ConvPartsKey: ConvParts] = [:]
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
    var acts: [UnsafeMutablePointer<Float>] = []
    var grads: [UnsafeMutablePointer<Float>] = []
    var sizes: [Int] = []      // per-sample floats of each activation
    var shapes: [Shape] = []   // per-sample shape of each activation (dense: 1 x 1 x units)
    private var owned: [UnsafeMutableRawPointer] = []
    /// Slices (start, count) of the parameters Adam updates after the backward pass: all but the
    /// dense weights, which their own backward pass updates (`backward(count:adam:)`).
    private let adamStarts, adamCounts: UnsafeMutablePointer<Int>
    private let adamSlices: Int
    /// Flags, one per worker, false when a gradient it handed to Adam was not finite: slot 0 for
    /// the Adam pass over conv parameters and biases, slot 1 + j for dense layer j's weights
    /// (whose gradient `backward(count:adam:)` does not store). `[slot * workers + worker]`.
    private let finiteFlags: UnsafeMutablePointer<Bool>
    private let finiteSlots: Int
    /// Under mpirun: 1 per slot where this rank saw a non-finite gradient, then the ranks' maximum.
    private let finiteVotes: UnsafeMutablePointer<Int32>
    /// Whether the last backward pass was `backward(count:adam:)`, which leaves the dense weights'
    /// gradients unstored.
    private var lastBackwardFused = false

    /// When `profiling`, each stage's forward and backward time accumulates here (nanoseconds,
    /// `[2 * stage]` forward, `[2 * stage + 1]` backward) for `ptrain bench --profile`.
    public var profiling = false
    public private(set) var stageNanos: [UInt64] = []
    @inline(__always) func clock() -> UInt64 { profiling ? DispatchTime.now().uptimeNanoseconds : 0 }
    /// Names the regions that follow for a recording pool (`ptrain bench --model-cores`).
    @inline(__always) public func label(_ text: @autoclosure () -> String) {
        if let recorder = pool.recorder { recorder.label = text() }
    }
    @inline(__always) func charge(_ slot: Int, since start: UInt64) {
        if profiling { stageNanos[slot] &+= DispatchTime.now().uptimeNanoseconds &- start }
    }
    /// The last two slots: the conv-gradient reduction, and Adam over the parameters that the
    /// dense layers' backward passes do not update themselves.
    public func resetProfile() { stageNanos = Array(repeating: 0, count: 2 * stages.count + 2) }
    /// A short name per stage for profile tables: "conv 3x3 1->64 +relu", "maxpool 2", "fc 6272->1024".
    /// (Built once: a recording labels every region with one, and building it each time would
    /// count as the step's serial part.)
    public private(set) lazy var stageNames: [String] = {
        stages.map { s in
            switch s {
            case let .conv(c): return "conv \(c.window.kernel)x\(c.window.kernel) \(c.window.channels)->\(c.cout)\(c.relu ? " +relu" : "")\(c.winograd ? " winograd" : "")"
            case let .pool(p): return "\(p.isMax ? "max" : "avg")pool \(p.window.kernel)\(p.fused ? " (in conv)" : "")"
            case let .dense(d): return "fc \(d.inputs)->\(d.outputs)\(d.relu ? " +relu" : "")"
            case let .dropout(d): return "dropout \(d.keep)"
            }
        }
    }()
    private lazy var regionLabels: [(forward: String, backward: String)] = stageNames.map { ($0 + " fwd", $0 + " bwd") }
    /// Multiply-adds x 2 that each stage executes for one sample: (forward, backward). A Winograd
    /// conv does 16 multiply-adds per 2x2 tile and channel pair where a direct one does 36.
    public var stageFlopsPerSample: [(Double, Double)] { flopsPerSample(asDirect: false) }

    /// The same counted as the model's arithmetic: every conv as a direct convolution, which is
    /// how FLOPs of a network are usually quoted (127.1 MFLOP a training sample for the reference).
    public var modelStageFlopsPerSample: [(Double, Double)] { flopsPerSample(asDirect: true) }

    private func flopsPerSample(asDirect: Bool) -> [(Double, Double)] {
        stages.enumerated().map { idx, s in
            let passes = idx == 0 ? 1.0 : 2.0
            switch s {
            case let .conv(c) where c.winograd && !asDirect:
                let f = 2 * Double(16 * Winograd.tiles(c.window) * c.window.channels * c.cout); return (f, passes * f)
            case let .conv(c): let f = 2 * Double(c.window.positions * c.window.patch * c.cout); return (f, passes * f)
            case let .dense(d): let f = 2 * Double(d.inputs * d.outputs); return (f, passes * f)
            default: return (0, 0)
            }
        }
    }

    /// Bytes the buffers of a model of this spec would take at this capacity (for up-front refusal).
    public private(set) var bufferBytes = 0

    /// `numa`: the machine's topology (a stand-in in tests of placement).
    public init(spec: ModelSpec, input: Shape, classes: Int, capacity: Int, threads: Int, seed: UInt64,
                group: ProcessGroup = .single, numa: Numa = .shared) throws {
        self.spec = spec
        self.group = group
        self.inputShape = input
        self.classes = classes
        self.capacity = capacity
        var plan: [(Stage, Shape)] = []
        var tensors: [ParameterTensor] = []
        var shape = input
        var offset = 0
        var convIndex = 0, denseIndex = 0
        func addTensor(_ name: String, _ shape: [Int], _ kind: ParameterTensor.Kind) -> Int {
            let count = shape.reduce(1, *)
            tensors.append(ParameterTensor(name: name, offset: offset, count: count, shape: shape, kind: kind))
            offset += count
            return offset - count
        }
        let layers = spec.layers
        var i = 0
        while i < layers.count {
            let layer = layers[i], column = spec.columns[i]
            let followedByRelu = i + 1 < layers.count && layers[i + 1] == .relu
            func refuse(_ why: String) -> ShapeError {
                ShapeError(message: "model spec, column \(column): \(layer.text) \(why)")
            }
            switch layer {
            case let .conv(out, k, stride, same):
                let g = Window(inH: shape.h, inW: shape.w, channels: shape.c, kernel: k, stride: stride, same: same)
                if g.outH == 0 || g.outW == 0 {
                    throw refuse("needs at least a \(k)x\(k) input but gets \(shape)")
                }
                convIndex += 1
                let w = addTensor("conv\(convIndex).weight", [k, k, shape.c, out], .convWeight(kernel: k, inputs: shape.c, outputs: out))
                let b = addTensor("conv\(convIndex).bias", [out], .bias)
                var c = ConvStage(window: g, cout: out, relu: followedByRelu, weight: w, bias: b, viaCol: !(k == 1 && stride == 1))
                // Which path it takes, decided here once (the buffers below are sized from it).
                // The direct one-channel conv computes no input gradient, so only a first layer takes it.
                c.singleChannel = plan.isEmpty && SingleChannelConv.applies(g, cout: out)
                c.winograd = !c.singleChannel && Winograd.applies(g, cout: out)
                plan.append((.conv(c), Shape(h: g.outH, w: g.outW, c: out)))
                shape = Shape(h: g.outH, w: g.outW, c: out)
            case let .maxPool(size, stride), let .avgPool(size, stride):
                let g = Window(inH: shape.h, inW: shape.w, channels: shape.c, kernel: size, stride: stride, same: false)
                if g.outH == 0 || g.outW == 0 {
                    throw refuse("needs at least a \(size)x\(size) input but gets \(shape)")
                }
                var isMax = false
                if case .maxPool = layer { isMax = true }
                shape = Shape(h: g.outH, w: g.outW, c: shape.c)
                plan.append((.pool(PoolStage(window: g, isMax: isMax, argmax: nil)), shape))
            case let .dense(out):
                denseIndex += 1
                let inputs = shape.count
                let w = addTensor("fc\(denseIndex).weight", [inputs, out], .denseWeight(input: shape, outputs: out))
                let b = addTensor("fc\(denseIndex).bias", [out], .bias)
                plan.append((.dense(DenseStage(inputs: inputs, outputs: out, relu: followedByRelu, weight: w, bias: b)),
                             Shape(h: 1, w: 1, c: out)))
                shape = Shape(h: 1, w: 1, c: out)
            case let .dropout(keep):
                plan.append((.dropout(DropoutStage(keep: keep, units: shape.count, scales: nil)), shape))
            case .relu:
                break  // fused into the conv or fc before it (the spec guarantees one is there)
            }
            i += followedByRelu ? 2 : 1
        }
        if shape.count != classes {
            throw ShapeError(message: "model spec, column \(spec.columns.last ?? 1): the last layer has \(shape.count) outputs but the data has \(classes) classes")
        }
        // Refuse up front what would not fit, rather than dying in the middle of allocation.
        let perSample = ([input] + plan.map(\.1)).reduce(0) { $0 + 2 * $1.count }
            + plan.reduce(0) { sum, p in
                switch p.0 {
                case let .pool(pl): return sum + (pl.isMax ? pl.window.positions * pl.window.channels : 0)
                case let .dropout(d): return sum + d.units
                default: return sum
                }
            }
        // Each worker holds one sample's im2col (and then its gradient): convolutions run a sample
        // at a time so that it never leaves the worker's cache.
        let colFloats = plan.reduce(0) { most, p in
            guard case let .conv(c) = p.0 else { return most }
            if c.winograd { return max(most, 16 * Winograd.tiles(c.window) * c.window.channels) }
            if c.singleChannel { return max(most, SingleChannelConv.paddedFloats(c.window)) }
            return c.viaCol ? max(most, c.window.positions * c.window.patch + Im2col.slack) : most
        }
        // Winograd convs also hold a sample's transformed outputs (then their gradient) and the
        // shard's weight gradient in the transformed domain.
        let winoFloats = plan.reduce(0) { most, p in
            guard case let .conv(c) = p.0, c.winograd else { return most }
            return max(most, 16 * Winograd.tiles(c.window) * c.cout + 16 * c.window.channels * c.cout)
        }
        // ... and one sample's conv output (then its gradient) when a max-pool is fused after it.
        let convOutFloats = plan.reduce(0) { most, p in
            if case let .conv(c) = p.0 { return max(most, c.window.positions * c.cout) }
            return most
        }
        // Conv parameters come first in the flat buffers (the spec puts convolutions before fc).
        let convParams = plan.reduce(0) { most, p in
            if case let .conv(c) = p.0 { return max(most, c.bias + c.cout) }
            return most
        }
        // A dense layer's backward pass holds a block of its weight gradient's rows in the same
        // place (the conv regions are idle then).
        let denseRowFloats = plan.reduce(0) { most, p in
            if case let .dense(d) = p.0 { return max(most, DenseUpdateJob.rows * d.outputs) }
            return most
        }
        let scratchFloats = Gemm.scratchFloats + max(colFloats + convOutFloats + winoFloats, denseRowFloats)
        let shardSlots = convParams > 0 ? Self.shardCount(batch: capacity) : 0
        let estimate = 4 * (4 * offset + perSample * capacity + threads * scratchFloats + shardSlots * convParams)
        let available = Self.availableMemory()
        if available > 0 && estimate > available {
            throw ShapeError(message: String(format: "a batch of %d with this model needs about %.1f GiB but only %.1f GiB of memory is available; use a smaller --batch or model",
                                             capacity, Double(estimate) / 1_073_741_824, Double(available) / 1_073_741_824))
        }
        self.tensors = tensors
        parameterCount = offset
        pool = WorkerPool(threads: threads, scratchFloats: scratchFloats, numa: numa)
        scratchLayout = ScratchLayout(col: Gemm.scratchFloats, output: Gemm.scratchFloats + colFloats,
                                    winograd: Gemm.scratchFloats + colFloats + convOutFloats, denseRows: Gemm.scratchFloats)
        self.convParams = convParams
        // Adam's slices outside the dense weights, at most `AdamRangesJob`-sized chunks each.
        let denseWeights = Set(tensors.filter { if case .denseWeight = $0.kind { return true }; return false }.map(\.offset))
        var slices: [(Int, Int)] = []
        for t in tensors where !denseWeights.contains(t.offset) {
            var lo = t.offset
            while lo < t.offset + t.count {
                let n = min(Self.adamChunk, t.offset + t.count - lo)
                if let last = slices.last, last.0 + last.1 == lo, last.1 + n <= Self.adamChunk {
                    slices[slices.count - 1].1 += n  // contiguous with the previous slice
                } else {
                    slices.append((lo, n))
                }
                lo += n
            }
        }
        adamSlices = slices.count
        adamStarts = .allocate(capacity: max(slices.count, 1))
        adamCounts = .allocate(capacity: max(slices.count, 1))
        for (i, sl) in slices.enumerated() { adamStarts[i] = sl.0; adamCounts[i] = sl.1 }
        finiteSlots = 1 + plan.reduce(0) { n, p in if case .dense = p.0 { return n + 1 }; return n }
        finiteFlags = .allocate(capacity: finiteSlots * pool.count)
        finiteFlags.initialize(repeating: true, count: finiteSlots * pool.count)
        finiteVotes = .allocate(capacity: finiteSlots)
        finiteVotes.initialize(repeating: 0, count: finiteSlots)

        // Buffers.
        var bytes = 0
        var owned: [UnsafeMutableRawPointer] = [UnsafeMutableRawPointer(adamStarts), UnsafeMutableRawPointer(adamCounts),
                                                UnsafeMutableRawPointer(finiteFlags), UnsafeMutableRawPointer(finiteVotes)]
        // Every buffer has `Im2col.slack` floats to spare: im2col may read that far past a conv's
        // input. On several nodes, `perNode` (float ranges and nodes) places parts of it by owner
        // before it is first touched (docs/SCALING.md, "NUMA"); the rest comes from node 0.
        let pool = self.pool, group = self.group
        // (Floats and Int32s alike are 4 bytes: ranges are in elements.)
        func zeroed(_ n: Int, perNode: [(Range<Int>, Int)]) -> UnsafeMutableRawPointer {
            let raw = UnsafeMutableRawPointer.allocate(byteCount: 4 * (n + Im2col.slack), alignment: 4096)
            for (range, node) in perNode { numa.place(raw + 4 * range.lowerBound, bytes: 4 * range.count, node: node) }
            raw.initializeMemory(as: UInt32.self, repeating: 0, count: n + Im2col.slack)
            owned.append(raw); bytes += 4 * n
            return raw
        }
        func floats(_ n: Int, perNode: [(Range<Int>, Int)] = []) -> UnsafeMutablePointer<Float> {
            zeroed(n, perNode: perNode).bindMemory(to: Float.self, capacity: n + Im2col.slack)
        }
        /// `count` things of `size` floats from `base`, dealt to nodes as the pool deals a region's items.
        func byNode(_ count: Int, size: Int, from base: Int = 0) -> [(Range<Int>, Int)] {
            let nodes = pool.rangeNodes
            return pool.nodeRanges(count).enumerated().map { k, r in ((base + r.lowerBound * size)..<(base + r.upperBound * size), nodes[k]) }
        }
        // A dense layer's rows: the backward + Adam deals its row blocks by node (this rank's rows).
        func denseRows(_ d: DenseStage, width: Int, from base: Int) -> [(Range<Int>, Int)] {
            let tiles = ProcessGroup.share((d.inputs + Gemm.mr - 1) / Gemm.mr, part: group.rank, of: group.size)
            let parts = min(tiles.count, 4 * pool.count), nodes = pool.rangeNodes
            return pool.nodeRanges(parts).enumerated().map { k, items in
                let t0 = tiles.lowerBound + items.lowerBound * tiles.count / max(parts, 1)
                let t1 = tiles.lowerBound + items.upperBound * tiles.count / max(parts, 1)
                return ((base + min(t0 * Gemm.mr, d.inputs) * width)..<(base + min(t1 * Gemm.mr, d.inputs) * width), nodes[k])
            }
        }
        let denseWeightRows = plan.flatMap { stage, _ -> [(Range<Int>, Int)] in
            guard case let .dense(d) = stage else { return [] }
            return denseRows(d, width: d.outputs, from: d.weight)
        }
        weights = floats(offset, perNode: denseWeightRows); gradients = floats(offset, perNode: denseWeightRows)
        moment1 = floats(offset, perNode: denseWeightRows); moment2 = floats(offset, perNode: denseWeightRows)
        let myShards = ProcessGroup.share(shardSlots, part: group.rank, of: group.size)
        shardGradients = floats(shardSlots * convParams, perNode: byNode(myShards.count, size: convParams, from: myShards.lowerBound * convParams))
        // The conv stack's activations, gradients and argmaxes by sample: its regions deal samples
        // (shards) by node. This rank's samples, as `samples(batch:rank:)` cuts them.
        let convStages = plan.firstIndex { if case .dense = $0.0 { return true }; return false } ?? plan.count
        let shardsHere = Self.shardCount(batch: capacity)
        let mySamples = (myShards.lowerBound * capacity / shardsHere)..<(myShards.upperBound * capacity / shardsHere)
        func bySample(_ i: Int, _ size: Int) -> [(Range<Int>, Int)] {
            i <= convStages ? byNode(mySamples.count, size: size, from: mySamples.lowerBound * size) : []
        }
        labels = .allocate(capacity: capacity)
        labels.initialize(repeating: 0, count: capacity)
        owned.append(UnsafeMutableRawPointer(labels))
        sampleLosses = .allocate(capacity: capacity)
        sampleLosses.initialize(repeating: 0, count: capacity)
        owned.append(UnsafeMutableRawPointer(sampleLosses))
        shapes = [input] + plan.map(\.1)
        sizes = shapes.map(\.count)
        for (index, (stage, _)) in plan.enumerated() {
            switch stage {
            case .conv(var c):
                let g = c.window
                if c.singleChannel {
                    // The weights are read as stored: nothing to pack.
                } else if c.winograd {
                    c.u = floats(16 * g.channels * c.cout)
                    c.packedStride = Gemm.packedBFloats(k: g.channels, n: c.cout)
                    c.packedStrideT = Gemm.packedBFloats(k: c.cout, n: g.channels)
                    c.packedW = floats(16 * c.packedStride)
                    if index > 0 { c.packedWt = floats(16 * c.packedStrideT) }
                } else {
                    c.packedW = floats(Gemm.packedBFloats(k: g.patch, n: c.cout))
                    if index > 0 { c.packedWt = floats(Gemm.packedBFloats(k: c.cout, n: g.patch)) }
                }
                stages.append(.conv(c))
            case .pool(var p):
                if p.isMax {
                    let size = p.window.positions * p.window.channels
                    p.argmax = zeroed(size * capacity, perNode: bySample(index, size)).bindMemory(to: Int32.self, capacity: size * capacity)
                    if case var .conv(c)? = stages.last {
                        p.masksRelu = c.relu
                        p.fused = true
                        c.fusedPool = p
                        stages[stages.count - 1] = .conv(c)
                    }
                }
                stages.append(.pool(p))
            case .dropout(var d):
                d.scales = floats(d.units * capacity)
                stages.append(.dropout(d))
            case .dense(var d):
                d.finiteSlot = 1 + stages.reduce(0) { n, s in if case .dense = s { return n + 1 }; return n }
                d.packedDyRows = floats(Gemm.packedBFloats(k: capacity, n: d.outputs))
                if group.size > 1 { d.chainBuffer = floats(capacity * d.outputs) }
                if index > 0 {
                    d.packedDy = floats(Gemm.packedBFloats(k: d.outputs, n: capacity))
                    d.inputGradT = floats(d.inputs * Self.paddedBatch(capacity), perNode: denseRows(d, width: Self.paddedBatch(capacity), from: 0))
                }
                stages.append(.dense(d))
            }
        }
        // A conv with a fused max-pool never stores its output or that output's gradient.
        let fusedOutputs = Set(stages.indices.filter { i in
            if case let .conv(c) = stages[i] { return c.fusedPool != nil }
            return false
        }.map { $0 + 1 })
        acts = sizes.enumerated().map { i, size in fusedOutputs.contains(i) ? floats(0) : floats(size * capacity, perNode: bySample(i, size)) }
        grads = sizes.enumerated().map { i, size in
            i == 0 ? acts[0] : fusedOutputs.contains(i) ? floats(0) : floats(size * capacity, perNode: bySample(i, size))
        }
        self.owned = owned
        bufferBytes = bytes
        resetProfile()
        initialize(seed: seed)
    }

    deinit {
        for p in owned { p.deallocate() }
    }

    /// MemAvailable from /proc/meminfo in bytes (0 when unknown).
    static func availableMemory() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let kb = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
            return kb * 1024
        }
        return 0
    }

    /// He-normal weights for layers followed by ReLU, Glorot-uniform for the others; zero biases.
    public func initialize(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        for s in stages {
            switch s {
            case let .conv(c):
                let fanIn = c.window.patch, count = fanIn * c.cout
                fill(c.weight, count, fanIn: fanIn, fanOut: c.window.kernel * c.window.kernel * c.cout, relu: c.relu, &rng)
            case let .dense(d):
                fill(d.weight, d.inputs * d.outputs, fanIn: d.inputs, fanOut: d.outputs, relu: d.relu, &rng)
            default: break
            }
        }
        for t in tensors where t.name.hasSuffix(".bias") { weights.advanced(by: t.offset).update(repeating: 0, count: t.count) }
        moment1.update(repeating: 0, count: parameterCount)
        moment2.update(repeating: 0, count: parameterCount)
    }

    private func fill(_ at: Int, _ count: Int, fanIn: Int, fanOut: Int, relu: Bool, _ rng: inout SplitMix64) {
        let w = weights + at
        if relu {
            let std = (2.0 / Double(fanIn)).squareRoot()
            for i in 0..<count { w[i] = Float(rng.nextNormal() * std) }
        } else {
            let limit = (6.0 / Double(fanIn + fanOut)).squareRoot()
            for i in 0..<count { w[i] = Float((rng.nextUnit() * 2 - 1) * limit) }
        }
    }

    /// Multiply-adds x 2 of one training step per sample: forward, weight gradients and the
    /// input gradients that are needed (none for the first layer).
    /// Counted as the model's arithmetic (`modelStageFlopsPerSample`); `executedFlopsPerSample`
    /// is what the FMA units actually do.
    public var trainingFlopsPerSample: Double { modelStageFlopsPerSample.reduce(0) { $0 + $1.0 + $1.1 } }
    public var executedFlopsPerSample: Double { stageFlopsPerSample.reduce(0) { $0 + $1.0 + $1.1 } }

    // MARK: Forward

    /// Runs the first `count` samples of `input` through the network into `logits`.
    /// Dropout is applied only when `training`, with masks keyed by (seed, step, sample, unit).
    public func forward(count n: Int, training: Bool, step: Int = 0, seed: UInt64 = 0) {
        precondition(n >= 1 && n <= capacity)
        let W = weights
        let split = firstDense, mine = samples(batch: n, rank: group.rank)
        for (idx, stage) in stages.enumerated() {
            let x = acts[idx], y = acts[idx + 1]
            let start = clock()
            defer { charge(2 * idx, since: start) }
            label(regionLabels[idx].forward)
            // Per-sample stages run on this rank's samples; from the first dense layer on, on all.
            let range = idx < split ? mine : 0..<n
            if idx == split && split > 0 && group.size > 1 {
                let size = sizes[idx]
                group.allgather(x) { r in let p = samples(batch: n, rank: r); return (p.lowerBound * size)..<(p.upperBound * size) }
            }
            switch stage {
            case let .conv(c):
                // A sample at a time: its im2col is built in the worker's scratch and used from cache.
                if c.winograd {
                    let pairs = c.window.channels * c.cout
                    let transform = WinogradWeightsJob(w: W + c.weight, pairs: pairs, u: c.u!, chunks: min(pairs / 16, 4 * pool.splitCount))
                    pool.run(items: transform.chunks, transform)
                    pool.run(items: 16, PackWinogradJob(c: c))
                } else if !c.singleChannel {
                    let pack = PackBJob(k: c.window.patch, n: c.cout, b: .rowMajor(W + c.weight, cols: c.cout), into: c.packedW,
                                        workers: pool.splitCount)
                    pool.run(items: pack.items, pack)
                }
                let parts = convParts(idx, c, batch: n, backward: false)
                pool.run(range: (range.lowerBound * parts.count)..<(range.upperBound * parts.count), ConvForwardJob(
                    g: c.window, cout: c.cout, x: x, y: c.fusedPool == nil ? y : acts[idx + 2],
                    w: c.singleChannel ? W + c.weight : c.packedW, bias: W + c.bias, relu: c.relu,
                    viaCol: c.viaCol, winograd: c.winograd ? c : nil, singleChannel: c.singleChannel,
                    fusedPool: c.fusedPool, scratch: scratchLayout, parts: parts, pool: pool))
            case let .pool(p):
                if p.fused { break }
                pool.run(range: range, PoolJob(p: p, x: x, y: y, backward: false))
            case let .dense(d):
                if group.size > 1 {
                    chainedDenseForward(d, count: n, x: x, y: y)
                } else {
                    pool.gemm(GemmJob(m: n, n: d.outputs, k: d.inputs, a: .rowMajor(x, cols: d.inputs),
                                      b: .rowMajor(W + d.weight, cols: d.outputs), c: y, ldc: d.outputs,
                                      bias: W + d.bias, relu: d.relu))
                }
            case let .dropout(d):
                pool.run(range: range, DropoutJob(d: d, x: x, y: y, mode: training ? .train : .evaluate, seed: seed, step: step))
            }
        }
    }

    /// Softmax cross-entropy of the first `count` logits against `labels`; writes the gradient of
    /// the batch-mean loss into the logits' gradient buffer and returns that mean.
    /// Each sample's loss and gradient on the pool; the losses are summed in sample order.
    public func lossAndGradient(count n: Int) -> Float {
        let out = stages.count
        label("loss")
        pool.run(items: n, LossJob(logits: acts[out], dlogits: grads[out], labels: labels, classes: classes,
                                   scale: 1 / Float(n), losses: sampleLosses))
        var sum: Float = 0
        for s in 0..<n { sum += sampleLosses[s] }
        return sum / Float(n)
    }

    // MARK: Backward

    /// Parameters per slice of an Adam job item.
    static let adamChunk = 1 << 14

    /// Fills `gradients` with d(mean loss)/d(parameters) for the last forward pass.
    public func backward(count n: Int) {
        lastBackwardFused = false
        backward(count: n, fusedAdam: nil)
    }

    /// Computes the gradients as `backward(count:)` does and takes one Adam step on every
    /// parameter, with the same bits as `backward(count:)` followed by Adam over the flat buffers.
    /// A dense layer's weights are updated inside its backward pass, a block of rows as soon as
    /// their gradient is known, from a block of gradient rows in the worker's scratch: fc1's 25.7 MB
    /// of weights is read from memory once instead of twice, and its gradient never goes to
    /// memory. So `gradients` holds every gradient except the dense weights'. Returns false when a
    /// gradient was not finite (the update has been applied all the same; `nonFiniteGradient`
    /// names the first such tensor).
    public func backward(count n: Int, adam: AdamStep) -> Bool {
        finiteFlags.update(repeating: true, count: finiteSlots * pool.count)
        lastBackwardFused = true
        backward(count: n, fusedAdam: adam)
        let start = clock()
        label("adam (rest)")
        pool.run(items: adamSlices, AdamRangesJob(adam: adam, w: weights, g: gradients, m: moment1, v: moment2,
                                                  starts: adamStarts, counts: adamCounts, finite: finiteFlags))
        charge(2 * stages.count + 1, since: start)
        if group.size > 1 {
            // A rank saw only its rows of each dense layer's gradient: the ranks vote, slot by slot.
            for slot in 0..<finiteSlots {
                finiteVotes[slot] = (0..<pool.count).contains { !finiteFlags[slot * pool.count + $0] } ? 1 : 0
            }
            group.maximum(finiteVotes, count: finiteSlots)
            for slot in 0..<finiteSlots where finiteVotes[slot] != 0 { finiteFlags[slot * pool.count] = false }
        }
        return !(0..<(finiteSlots * pool.count)).contains { !finiteFlags[$0] }
    }

    /// The name of the first parameter tensor whose last gradient was not finite, if any.
    public func nonFiniteGradient() -> String? {
        var denseSlot = 0
        for t in tensors {
            if case .denseWeight = t.kind {
                denseSlot += 1
                if lastBackwardFused {
                    if (0..<pool.count).contains(where: { !finiteFlags[denseSlot * pool.count + $0] }) { return t.name }
                    continue
                }
            }
            if (0..<t.count).contains(where: { !gradients[t.offset + $0].isFinite }) { return t.name }
        }
        return nil
    }

    private func backward(count n: Int, fusedAdam: AdamStep?) {
        let W = weights
        let split = firstDense, mine = samples(batch: n, rank: group.rank)
        for idx in stages.indices.reversed() {
            let range = idx < split ? mine : 0..<n
            let x = acts[idx], y = acts[idx + 1], dy = grads[idx + 1], dx = grads[idx]
            let outSize = sizes[idx + 1]
            let needInput = idx > 0
            let start = clock()
            defer { charge(2 * idx + 1, since: start) }
            label(regionLabels[idx].backward)
            switch stages[idx] {
            case let .conv(c):
                let wt = needInput ? c.packedWt : nil
                if let wt, !c.winograd {  // (a Winograd conv packed its Uᵀ in the forward pass)
                    let pack = PackBJob(k: c.cout, n: c.window.patch, b: .transposed(W + c.weight, cols: c.cout), into: wt,
                                        workers: pool.splitCount)
                    pool.run(items: pack.items, pack)
                }
                let shards = Self.shardCount(batch: n), mine = self.shards(batch: n, rank: group.rank)
                let parts = convParts(idx, c, batch: n, backward: true)
                pool.run(range: (mine.lowerBound * parts.count)..<(mine.upperBound * parts.count), ConvBackwardJob(
                    g: c.window, cout: c.cout, relu: c.relu && c.fusedPool == nil, viaCol: c.viaCol,
                    x: x, y: y, dy: c.fusedPool == nil ? dy : grads[idx + 2], dx: wt == nil ? nil : dx, wt: wt,
                    winograd: c.winograd ? c : nil, singleChannel: c.singleChannel,
                    fusedPool: c.fusedPool, pooled: acts[idx + 2 < acts.count ? idx + 2 : idx + 1],
                    scratch: scratchLayout, samples: n, shards: shards,
                    gw: shardGradients + c.weight, gb: shardGradients + c.bias, shardStride: convParams, parts: parts, pool: pool))
            case let .pool(p):
                if p.fused { break }
                pool.run(range: range, PoolJob(p: p, x: dx, y: dy, backward: true))
            case let .dense(d):
                if d.relu && !reluMaskedByDropout(after: idx) { pool.run(range: range, ReluMaskJob(dy: dy, y: y, size: outSize)) }
                denseBackward(d, count: n, x: x, dy: dy, dx: needInput ? dx : nil, adam: fusedAdam)
            case let .dropout(d):
                pool.run(range: range, DropoutJob(d: d, x: dx, y: dy, mode: .backward, seed: 0, step: 0,
                                                  reluOutput: reluMaskedByDropout(after: idx - 1) ? x : nil))
            }
        }
        let start = clock()
        label("conv grad all-reduce")
        reduceConvGradients(count: n)
        charge(2 * stages.count, since: start)
    }

    /// Whether stage `idx` is a dense layer with a ReLU followed by dropout, whose backward pass
    /// applies the ReLU's mask too (one pass over the gradient instead of two).
    func reluMaskedByDropout(after idx: Int) -> Bool {
        guard idx >= 0, idx + 1 < stages.count, case let .dense(d) = stages[idx], d.relu, case .dropout = stages[idx + 1] else { return false }
        return true
    }

    /// A dense layer's backward pass (see `DenseUpdateJob`), with the Adam step of its weights
    /// when `adam` is given (its bias is left to the Adam pass over the remaining parameters).
    private func denseBackward(_ d: DenseStage, count n: Int, x: UnsafeMutablePointer<Float>,
                               dy: UnsafeMutablePointer<Float>, dx: UnsafeMutablePointer<Float>?, adam: AdamStep?) {
        let np = Self.paddedBatch(n)
        let packRows = PackBJob(k: n, n: d.outputs, b: .rowMajor(dy, cols: d.outputs), into: d.packedDyRows, workers: pool.splitCount)
        var packedDyT: UnsafeMutablePointer<Float>?
        if dx != nil, let packedDy = d.packedDy {
            let pack = PackBJob(k: d.outputs, n: n, b: .transposed(dy, cols: d.outputs), into: packedDy, workers: pool.splitCount)
            let both = PackTwoJob(first: packRows, second: pack)
            pool.run(items: both.items, both)
            packedDyT = packedDy
        } else {
            pool.run(items: packRows.items, packRows)
        }
        // Under mpirun each rank owns a share of W's rows: it alone computes their dXᵀ and dW rows
        // and takes their Adam step (keeping their moments), and the ranks exchange dXᵀ's rows.
        // Each row is the same chain of sums whichever rank computes it.
        let rowTiles = ownedTiles(d, rank: group.rank, of: group.size)
        let parts = min(rowTiles.count, 4 * pool.splitCount)
        let sums = ColumnSumJob(m: dy, rows: n, cols: d.outputs, out: gradients + d.bias)
        let sumChunks = sums.chunks(workers: pool.splitCount)
        let update = DenseUpdateJob(
            inputs: d.inputs, outputs: d.outputs, batch: n, x: x, dy: dy, packedDy: d.packedDyRows,
            packedDyT: packedDyT, dxT: packedDyT == nil ? nil : d.inputGradT, paddedBatch: np,
            w: weights + d.weight, g: gradients + d.weight, m: moment1 + d.weight, v: moment2 + d.weight,
            adam: adam, finite: finiteFlags + d.finiteSlot * pool.count, tiles: rowTiles, parts: parts, sums: sums,
            sumChunks: sumChunks, rows: scratchLayout.denseRows, pool: pool)
        if pool.rangeNodes.count > 1 {
            // On several nodes the row blocks alone are dealt by node, so that each node's workers
            // take the rows placed on it (Network.init); the bias sums follow as their own region.
            pool.run(items: parts, update)
            pool.run(range: parts..<(parts + sumChunks), update)
        } else {
            pool.run(items: parts + sumChunks, update)
        }
        if group.size > 1 {
            if packedDyT != nil, let dxT = d.inputGradT { gatherRows(d, dxT, width: np) }
            if adam == nil { gatherRows(d, gradients + d.weight, width: d.outputs) }
        }
        if let dx, let dxT = d.inputGradT, packedDyT != nil {
            let transpose = TransposeOutJob(inputs: d.inputs, paddedBatch: np, samples: n, dxT: dxT, dx: dx)
            pool.run(items: transpose.items, transpose)
        }
    }

    /// The rows of a dense layer's W (in tiles of Gemm.mr rows) that part `rank` of `parts` updates.
    func ownedTiles(_ d: DenseStage, rank: Int, of parts: Int) -> Range<Int> {
        ProcessGroup.share((d.inputs + Gemm.mr - 1) / Gemm.mr, part: rank, of: parts)
    }

    /// Every rank receives the other ranks' rows of a [d.inputs, width] matrix split as `ownedTiles`.
    private func gatherRows(_ d: DenseStage, _ matrix: UnsafeMutablePointer<Float>, width: Int) {
        group.allgather(matrix) { r in
            let t = ownedTiles(d, rank: r, of: group.size)
            return (min(t.lowerBound * Gemm.mr, d.inputs) * width)..<(min(t.upperBound * Gemm.mr, d.inputs) * width)
        }
    }

    /// Under mpirun a rank keeps only its rows of each dense layer's W and their Adam moments
    /// current: this gives every rank all of them (before a checkpoint is written). Every rank
    /// must call it.
    public func gatherDenseState() {
        if group.size == 1 { return }
        for case let .dense(d) in stages {
            for buffer in [weights, moment1, moment2] { gatherRows(d, buffer + d.weight, width: d.outputs) }
        }
    }

    /// The conv gradients' sum over the shards under mpirun, in the order one process sums them:
    /// the first rank with shards sums its own, in order; each next rank receives that partial sum
    /// and adds its shards to it, in order; the last broadcasts the total. A rank receives 0.3 MB
    /// (the reference network's conv parameters) twice instead of every shard's 298 KB. Blocks of
    /// parameters pipeline the chain.
    private func chainedConvReduce(count n: Int) {
        let ranks = (0..<group.size).filter { !shards(batch: n, rank: $0).isEmpty }
        let me = group.rank, at = ranks.firstIndex(of: me)
        let blocks = 8
        func params(_ b: Int) -> Range<Int> { (b * convParams / blocks)..<((b + 1) * convParams / blocks) }
        if let at {
            let mine = shards(batch: n, rank: me)
            if at > 0 {
                for b in 0..<blocks { _ = group.receive(gradients + params(b).lowerBound, count: params(b).count, from: ranks[at - 1], tag: 100 + b) }
            }
            for b in 0..<blocks {
                let p = params(b)
                if at > 0 { group.wait(b) }
                let job = ShardReduceJob(shards: shardGradients + mine.lowerBound * convParams + p.lowerBound, count: mine.count,
                                         stride: convParams, out: gradients + p.lowerBound, total: p.count, continues: at > 0)
                pool.run(items: job.chunks, job)
                if at < ranks.count - 1 { group.send(gradients + p.lowerBound, count: p.count, to: ranks[at + 1], tag: 100 + b) }
            }
            group.waitAll()
        }
        group.broadcast(gradients, count: convParams, root: ranks.last!)
    }

    /// Column blocks of a dense layer's output that the forward chain passes from rank to rank,
    /// each a whole number of register tiles. More blocks shorten the chain's start and end
    /// (R ranks take (blocks + R - 1) / blocks of one rank's share), but a narrower GEMM re-reads
    /// its A operand more often: measured at 2 ranks on fc1, 8 blocks made each rank's GEMMs 1.8x
    /// slower than 1, and 2 blocks gave the shortest chain (docs/DISTRIBUTED.md).
    static func chainBlocks(outputs: Int, ranks: Int) -> Int { min(max(2, ranks), (outputs + Gemm.nr - 1) / Gemm.nr) }

    /// A dense layer's forward pass when each rank owns a share of W's rows: y = x·W + b as one
    /// chain of sums over W's rows, as one process computes it, passed along the ranks. Rank 0
    /// sums its rows for a block of output columns and sends the partial sums to rank 1, which
    /// continues them over its rows (a GEMM that loads C goes on exactly where the sums stopped),
    /// and so on; the last rank adds the bias and ReLU, and broadcasts y. Blocks of columns
    /// pipeline the chain: rank 1 works on block 0 while rank 0 works on block 1.
    private func chainedDenseForward(_ d: DenseStage, count n: Int, x: UnsafeMutablePointer<Float>, y: UnsafeMutablePointer<Float>) {
        let r = group.rank, last = group.size - 1
        let t = ownedTiles(d, rank: r, of: group.size)
        let k0 = min(t.lowerBound * Gemm.mr, d.inputs), k1 = min(t.upperBound * Gemm.mr, d.inputs)
        let blocks = Self.chainBlocks(outputs: d.outputs, ranks: group.size), tiles = (d.outputs + Gemm.nr - 1) / Gemm.nr
        func columns(_ j: Int) -> Range<Int> { min(j * tiles / blocks * Gemm.nr, d.outputs)..<min((j + 1) * tiles / blocks * Gemm.nr, d.outputs) }
        let link = d.chainBuffer!  // block j at n * columns(j).lowerBound, n x width floats
        if r > 0 {
            for j in 0..<blocks { _ = group.receive(link + n * columns(j).lowerBound, count: n * columns(j).count, from: r - 1, tag: j) }
        }
        for j in 0..<blocks {
            let c = columns(j), part = link + n * c.lowerBound
            if r > 0 {
                group.wait(j)
                Elementwise.copy(rows: n, cols: c.count, from: part, fromStride: c.count, to: y + c.lowerBound, toStride: d.outputs)
            }
            pool.gemm(GemmJob(m: n, n: c.count, k: k1 - k0, a: .rowMajor(x + k0, cols: d.inputs),
                              b: .rowMajor(weights + d.weight + k0 * d.outputs + c.lowerBound, cols: d.outputs),
                              c: y + c.lowerBound, ldc: d.outputs, accumulate: r > 0,
                              bias: r == last ? weights + d.bias + c.lowerBound : nil, relu: r == last && d.relu))
            if r < last {
                Elementwise.copy(rows: n, cols: c.count, from: y + c.lowerBound, fromStride: d.outputs, to: part, toStride: c.count)
                group.send(part, count: n * c.count, to: r + 1, tag: j)
            }
        }
        group.waitAll()
        group.broadcast(y, count: n * d.outputs, root: last)
    }

    /// The all-reduce of the conv gradients: each worker sums a slice of the parameters over the
    /// shards in shard order 0, 1, 2, ... into `gradients` (elementwise, so the slicing across
    /// workers cannot change a bit). Under mpirun the sum is passed along the ranks in rank order
    /// (`chainedConvReduce`).
    func reduceConvGradients(count n: Int) {
        if convParams == 0 { return }
        if group.size > 1 { chainedConvReduce(count: n); return }
        let job = ShardReduceJob(shards: shardGradients, count: Self.shardCount(batch: n), stride: convParams,
                                 out: gradients, total: convParams)
        pool.run(items: job.chunks, job)
    }

    /// Bytes the conv-gradient reduction of a batch of `n` reads and writes (for GB/s).
    public func reduceBytes(batch n: Int) -> Int { convParams == 0 ? 0 : 4 * convParams * (Self.shardCount(batch: n) + 1) }
}

/// SplitMix64: a small seeded generator for initialisation and shuffling.
public struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1) with 53 random bits.
    public mutating func nextUnit() -> Double { Double(next() >> 11) * 0x1p-53 }
    /// Standard normal by Box-Muller.
    public mutating func nextNormal() -> Double {
        let u1 = 1 - nextUnit(), u2 = nextUnit()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}
