// What a spec becomes before any memory is taken: the stages with their geometry, each conv's
// path, which max-pools run inside the conv before them, where each parameter tensor lives in
// the flat buffers, what a worker's scratch holds, and how much memory a batch needs. A pure
// value: `Network.init` allocates the buffers it names, and tests read it without a network.
import Foundation
import PTKernels
import PTRuntime

/// How a convolution is computed, decided once from its geometry and place in the network.
public enum ConvPath: Sendable, Equatable {
    /// A first layer's 3x3 conv of a one-channel image, direct (`SingleChannelConv`) from the input
    /// zero-padded into scratch: no im2col, no packed weights, and no input gradient (only a first
    /// layer can do without one).
    case singleChannel
    /// 3x3 stride 1 with whole-vector channel counts: Winograd F(2x2, 3x3), 16 GEMMs a sample.
    case winograd
    /// im2col of a sample into scratch, then one GEMM.
    case im2col
    /// 1x1 stride 1: the input is its own im2col, one GEMM.
    case pointwise

    /// In bf16 no conv is Winograd: its transforms would round operands that no longer are the
    /// data and weights, and a direct conv's GEMM on bf16 units does 9/4 of the multiply-adds at
    /// several times the speed. A first layer's one-channel 3x3 conv stays direct in fp32 (its K of
    /// 9 pads to a 32-k tile, and per-sample packing made its bf16 GEMM measure 2x slower; it
    /// is 0.7% of the reference network's multiply-adds).
    static func choose(_ g: Window, cout: Int, firstLayer: Bool, precision: Precision = .fp32) -> ConvPath {
        if firstLayer && SingleChannelConv.applies(g, cout: cout) { return .singleChannel }
        if !precision.isBF16 && Winograd.applies(g, cout: cout) { return .winograd }
        return g.kernel == 1 && g.stride == 1 ? .pointwise : .im2col
    }
}

public struct NetworkPlan {
    var stages: [Stage]
    /// Each activation's per-sample shape: the input, then each stage's output (dense: 1 x 1 x units).
    public let shapes: [Shape]
    public let tensors: [ParameterTensor]
    public let parameterCount: Int
    /// Floats of conv parameters: a prefix of the flat buffers (the spec puts convolutions first).
    public let convParams: Int
    let scratch: ScratchLayout
    /// Floats of a worker's scratch: the GEMM packing area, then the conv or dense regions' part.
    let scratchFloats: Int
    /// Slices (start, count) of the parameters the Adam pass after backward updates: all but the
    /// dense weights, in `Network.adamChunk`-sized pieces.
    let adamSlices: [(start: Int, count: Int)]

    /// Each conv's path, in stage order.
    public var convPaths: [ConvPath] { stages.compactMap { if case let .conv(c) = $0 { return c.path }; return nil } }
    /// Whether each max-pool runs inside the conv before it, in stage order.
    public var fusedPools: [Bool] { stages.compactMap { if case let .pool(p) = $0, p.isMax { return p.fused }; return nil } }

    /// Throws a `ShapeError` naming the spec's column when a layer does not fit its input, or when
    /// the last layer's outputs are not the data's classes.
    public init(spec: ModelSpec, input: Shape, classes: Int, precision: Precision = .fp32) throws {
        var stages: [Stage] = [], shapes = [input], tensors: [ParameterTensor] = []
        var shape = input, offset = 0, convIndex = 0, denseIndex = 0
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
                if g.outH == 0 || g.outW == 0 { throw refuse("needs at least a \(k)x\(k) input but gets \(shape)") }
                convIndex += 1
                let w = addTensor("conv\(convIndex).weight", [k, k, shape.c, out], .convWeight(kernel: k, inputs: shape.c, outputs: out))
                let b = addTensor("conv\(convIndex).bias", [out], .bias)
                let path = ConvPath.choose(g, cout: out, firstLayer: stages.isEmpty, precision: precision)
                stages.append(.conv(ConvStage(window: g, cout: out, relu: followedByRelu, weight: w, bias: b, path: path,
                                              precision: precision)))
                shape = Shape(h: g.outH, w: g.outW, c: out)
            case let .maxPool(size, stride), let .avgPool(size, stride):
                let g = Window(inH: shape.h, inW: shape.w, channels: shape.c, kernel: size, stride: stride, same: false)
                if g.outH == 0 || g.outW == 0 { throw refuse("needs at least a \(size)x\(size) input but gets \(shape)") }
                var p = PoolStage(window: g, isMax: false, argmax: nil)
                if case .maxPool = layer { p.isMax = true }
                // A max-pool right after a conv runs inside the conv's per-sample jobs.
                if p.isMax, case var .conv(c)? = stages.last {
                    p.masksRelu = c.relu
                    p.fused = true
                    c.fusedPool = p
                    stages[stages.count - 1] = .conv(c)
                }
                stages.append(.pool(p))
                shape = Shape(h: g.outH, w: g.outW, c: shape.c)
            case let .dense(out):
                denseIndex += 1
                let w = addTensor("fc\(denseIndex).weight", [shape.count, out], .denseWeight(input: shape, outputs: out))
                let b = addTensor("fc\(denseIndex).bias", [out], .bias)
                var d = DenseStage(inputs: shape.count, outputs: out, relu: followedByRelu, weight: w, bias: b, precision: precision)
                d.finiteSlot = denseIndex
                stages.append(.dense(d))
                shape = Shape(h: 1, w: 1, c: out)
            case let .dropout(keep):
                stages.append(.dropout(DropoutStage(keep: keep, units: shape.count, scales: nil)))
            case .relu:
                break  // fused into the conv or fc before it (the spec guarantees one is there)
            }
            if shapes.count <= stages.count { shapes.append(shape) }
            i += followedByRelu ? 2 : 1
        }
        if shape.count != classes {
            throw ShapeError(message: "model spec, column \(spec.columns.last ?? 1): the last layer has \(shape.count) outputs but the data has \(classes) classes")
        }
        self.stages = stages
        self.shapes = shapes
        self.tensors = tensors
        parameterCount = offset
        convParams = stages.reduce(0) { most, s in
            if case let .conv(c) = s { return max(most, c.bias + c.cout) }
            return most
        }
        (scratch, scratchFloats) = Self.scratchLayout(stages)
        adamSlices = Self.adamSlices(tensors)
    }

    /// Each worker holds one sample's im2col (then its gradient): convolutions run a sample at a
    /// time so that it never leaves the worker's cache. Winograd convs also hold a sample's
    /// transformed outputs (then their gradient) and the shard's weight gradient in the
    /// transformed domain; a conv with a fused max-pool, one sample's output (then its gradient).
    /// A dense layer's backward pass holds a block of its weight gradient's rows in the same place
    /// (the conv regions are idle then).
    private static func scratchLayout(_ stages: [Stage]) -> (ScratchLayout, Int) {
        var col = 0, winograd = 0, output = 0, denseRows = 0
        for s in stages {
            switch s {
            case let .conv(c):
                let g = c.window
                switch c.path {
                case .winograd:
                    col = max(col, 16 * Winograd.tiles(g) * g.channels)
                    winograd = max(winograd, 16 * Winograd.tiles(g) * c.cout + 16 * g.channels * c.cout)
                case .singleChannel: col = max(col, SingleChannelConv.paddedFloats(g))
                case .im2col: col = max(col, g.positions * g.patch + Im2col.slack, c.precision.isBF16 ? Im2col.bf16Floats(g) : 0)
                case .pointwise: break
                }
                output = max(output, g.positions * c.cout)
            case let .dense(d): denseRows = max(denseRows, DenseUpdateJob.rows * d.outputs)
            default: break
            }
        }
        let layout = ScratchLayout(col: Gemm.scratchFloats, output: Gemm.scratchFloats + col,
                                   winograd: Gemm.scratchFloats + col + output, denseRows: Gemm.scratchFloats)
        return (layout, Gemm.scratchFloats + max(col + output + winograd, denseRows))
    }

    private static func adamSlices(_ tensors: [ParameterTensor]) -> [(start: Int, count: Int)] {
        var slices: [(start: Int, count: Int)] = []
        for t in tensors {
            if case .denseWeight = t.kind { continue }
            var lo = t.offset
            while lo < t.offset + t.count {
                let n = min(Network.adamChunk, t.offset + t.count - lo)
                if let last = slices.last, last.start + last.count == lo, last.count + n <= Network.adamChunk {
                    slices[slices.count - 1].count += n  // contiguous with the previous slice
                } else {
                    slices.append((lo, n))
                }
                lo += n
            }
        }
        return slices
    }

    /// The bytes a network of this plan holds for a batch of `capacity` on `threads` workers:
    /// parameters with their gradients and moments, activations and their gradients, argmaxes and
    /// dropout scales, the workers' scratch and the shards' conv gradients.
    public func memoryEstimate(capacity: Int, threads: Int) -> Int {
        let perSample = shapes.reduce(0) { $0 + 2 * $1.count } + stages.reduce(0) { sum, s in
            switch s {
            case let .pool(p): return sum + (p.isMax ? p.window.positions * p.window.channels : 0)
            case let .dropout(d): return sum + d.units
            case let .dense(d) where d.precision.isBF16: return sum + d.inputs / 2  // its input rounded to bf16
            default: return sum
            }
        }
        return 4 * (4 * parameterCount + perSample * capacity + threads * scratchFloats + Network.shardCount(batch: capacity) * convParams)
    }
}
