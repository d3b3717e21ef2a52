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
    let adamStarts, adamCounts: UnsafeMutablePointer<Int>
    let adamSlices: Int
    /// Flags, one per worker, false when a gradient it handed to Adam was not finite: slot 0 for
    /// the Adam pass over conv parameters and biases, slot 1 + j for dense layer j's weights
    /// (whose gradient `backward(count:adam:)` does not store). `[slot * workers + worker]`.
    let finiteFlags: UnsafeMutablePointer<Bool>
    let finiteSlots: Int
    /// Under mpirun: 1 per slot where this rank saw a non-finite gradient, then the ranks' maximum.
    let finiteVotes: UnsafeMutablePointer<Int32>
    /// Whether the last backward pass was `backward(count:adam:)`, which leaves the dense weights'
    /// gradients unstored.
    var lastBackwardFused = false

    /// Where a step's time went, when `profiling` (`ptrain bench --profile`): nanoseconds summed
    /// over the steps since `resetProfile`.
    public struct Profile: Sendable {
        /// Each stage's forward and backward pass.
        public var forward, backward: [UInt64]
        /// The sum of the shards' conv gradients, and Adam over what the dense layers' backward
        /// passes do not update themselves.
        public var reduce: UInt64 = 0, adam: UInt64 = 0
        init(stages: Int) { forward = Array(repeating: 0, count: stages); backward = forward }
    }
    public var profiling = false
    public private(set) var profile = Profile(stages: 0)
    @inline(__always) func clock() -> UInt64 { profiling ? DispatchTime.now().uptimeNanoseconds : 0 }
    /// Names the regions that follow for a recording pool (`ptrain bench --model-cores`).
    @inline(__always) public func label(_ text: @autoclosure () -> String) {
        if let recorder = pool.recorder { recorder.label = text() }
    }
    /// A slot of `Profile` (an enum rather than a key path: a key path with an index allocates).
    enum ProfileSlot { case forward(Int), backward(Int), reduce, adam }
    @inline(__always) func charge(_ slot: ProfileSlot, since start: UInt64) {
        guard profiling else { return }
        let t = DispatchTime.now().uptimeNanoseconds &- start
        switch slot {
        case let .forward(i): profile.forward[i] &+= t
        case let .backward(i): profile.backward[i] &+= t
        case .reduce: profile.reduce &+= t
        case .adam: profile.adam &+= t
        }
    }
    public func resetProfile() { profile = Profile(stages: stages.count) }
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
    lazy var regionLabels: [(forward: String, backward: String)] = stageNames.map { ($0 + " fwd", $0 + " bwd") }


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
            throw ShapeError(message: String(format: "a batch of %d with this model needs about %.1f GiB but only %.1f GiB of memory is available; a smaller batch or model needs less",
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
            owned.append(raw)
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
                let rows = DenseUpdateJob.rows(items, of: parts, tiles: tiles, inputs: d.inputs)
                return ((base + rows.lowerBound * width)..<(base + rows.upperBound * width), nodes[k])
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
}
