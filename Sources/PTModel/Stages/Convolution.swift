// A convolution (with the ReLU after it, and the max-pool after that when one follows): its
// plan, buffers, passes and their jobs, counts and parameter names.
import PTKernels
import PTRuntime

private let f = MemoryLayout<Float>.size

/// How a convolution is computed, decided once from its geometry and place in the network.
public enum ConvPath: Sendable, Equatable {
    /// A first layer's 3x3 conv of an image with 1 to 4 channels, direct (`FewChannelConv`) from
    /// the input zero-padded into scratch: no im2col, no packed weights, and no input gradient
    /// (only a first layer can do without one).
    case fewChannels
    /// 3x3 stride 1 SAME with 16 channels in and out, fp32: direct, a vector of output channels
    /// per pixel (`DirectConv`); Winograd's GEMMs are too thin there. (In bf16: `implicit`.)
    case direct
    /// 3x3 stride 1 with whole-vector channel counts: Winograd F(4x4, 3x3), 36 GEMMs, where the
    /// output is whole 4x4 tiles (at least 4), else F(2x2, 3x3), 16 GEMMs (`Winograd.tile(for:)`,
    /// the stage's `tile`); a GEMM takes several samples' tiles where one has fewer than 16 (`group`).
    case winograd
    /// im2col of a sample into scratch, then one GEMM.
    case im2col
    /// bf16, stride 1 SAME (`ImplicitConv.applies`): one GEMM that reads the patches in place from the padded
    /// input (`ImplicitConv`), the input gradient the same GEMM over the padded output gradient
    /// with the weights flipped, the weight gradient from shifted planes (`Im2col.shiftedPlanesBF16`).
    case implicit
    /// 1x1 stride 1: the input is its own im2col, one GEMM.
    case pointwise

    /// In bf16 no conv is Winograd: its transforms would round operands that no longer are the
    /// data and weights, and a direct conv's GEMM on bf16 units does 9/4 of the multiply-adds at
    /// several times the speed. A first layer's one-channel 3x3 conv stays direct in fp32 (its K of
    /// 9 pads to a 32-k tile, and per-sample packing made its bf16 GEMM measure 2x slower; it
    /// is 0.7% of the reference network's multiply-adds). With 2 to 4 channels (K of 18 to 36) a
    /// bf16 first layer stays a bf16 GEMM, so its multiply-adds take bf16 operands as the flag says.
    /// A bf16 conv that `ImplicitConv` serves takes it: no im2col, and a 16-channel conv's
    /// multiply-adds on the bf16 units instead of fp32 FMAs.
    static func choose(_ g: Window, cout: Int, firstLayer: Bool, precision: Precision = .fp32) -> ConvPath {
        if firstLayer && FewChannelConv.applies(g, cout: cout) && (g.channels == 1 || !precision.isBF16) { return .fewChannels }
        if precision.isBF16 && ImplicitConv.applies(g, cout: cout) { return .implicit }
        if !precision.isBF16 && DirectConv.applies(g, cout: cout) { return .direct }
        if !precision.isBF16 && Winograd.applies(g, cout: cout) { return .winograd }
        return g.kernel == 1 && g.stride == 1 ? .pointwise : .im2col
    }
}

struct ConvStage: Stage {
    var window: Window
    var cout: Int
    var relu: Bool
    var weight: Int
    /// Its bias in the flat buffers; nil for a conv without one (`bias=false`, as before a batch
    /// norm), whose kernels add `zeros` instead (which a direct conv also reads for the taps
    /// outside the image).
    var bias: Int?
    var zeros: UnsafeMutablePointer<Float>?
    var path: ConvPath
    /// The Winograd path's output tile (F(2x2) or F(4x4)), and how many samples' tiles its GEMMs
    /// take together (`Winograd.group(for:_:)`; 1 on the other paths). Its backward runs a shard's
    /// samples a group at a time; its forward's items are groups of samples where it does not cut
    /// its samples into parts and a worker would get two samples or more (else samples, one at a
    /// time: ungrouped, F(4x4) over an 8x8 output takes 1.6x F(2x2)'s time a sample, grouped 0.62x,
    /// so a group of 4 samples costs 1.55 ungrouped samples and beats them only when each worker
    /// would get two or more).
    var tile: Winograd.Tile = .f2
    var group = 1
    /// fp32, or bf16 multiply-adds (on the GEMM paths; the one-channel direct path stays fp32).
    var precision: Precision = .fp32
    // The weights packed once a step for the per-sample GEMMs: W as the forward's B, and Wᵀ as
    // the input gradient's B (not for the first layer, which needs no input gradient). None on
    // the first-layer direct path, which reads the weights as stored; on the direct path packedWt holds
    // the weights flipped and transposed (`Window.flipTranspose`).
    var packedW: UnsafeMutablePointer<Float>!
    var packedWt: UnsafeMutablePointer<Float>?
    /// On the Winograd path the weights are transformed once a step into `u` ([ξ][cin][cout], ξ
    /// the tile's 16 or 36 positions) and packed per position as the GEMMs' B (`packedW`, a block
    /// of `packedStride` each) and Bᵀ (`packedWt`, a block of `packedStrideT` each).
    var u: UnsafeMutablePointer<Float>?
    var packedStride = 0, packedStrideT = 0
    /// On the implicit path, the weights flipped and transposed once a step
    /// (`Window.flipTranspose`), then packed as the input gradient's B (`packedWt`).
    var flippedW: UnsafeMutablePointer<Float>?
    /// A max-pool right after this conv runs inside the conv's per-sample jobs: the conv's output
    /// and its gradient live only in the worker's scratch, and the pool applies the ReLU mask.
    var fusedPool: PoolingStage?
    /// The bn right after this conv, whose per-sample passes run inside the conv's jobs when a
    /// job holds a whole sample (forward) or shard (backward): the sample's sums (Σx and the
    /// squares about its own mean) after the conv writes it, and the bn's input gradient just
    /// before the conv reads it.
    var batchNorm: BatchNormFusion?
    /// The bn whose output this conv reads (right before it, or past a residual block's begin and
    /// an end that bn adds). Its normalisation runs in this conv's forward jobs, a sample just
    /// before the conv reads it, when a job holds a whole sample (`normalizesInput`): the conv
    /// then reads its input from cache, and the batch makes one pass over it fewer. Its
    /// per-sample gradient sums run in the conv's backward jobs (whole shards only), right after a
    /// sample's input gradient is written (and the shortcut's gradient added, past a block's begin).
    var inputBatchNorm: BatchNormFusion?
    /// The residual block's begin right before this conv, whose backward (dx += the shortcut's
    /// gradient) runs in the conv's backward jobs (whole shards only), right after a sample's
    /// input gradient is written.
    var residualBegin: Int?
    /// The fused max-pool when the first-layer direct conv runs it a pair of output rows at a
    /// time (`FewChannelConv.forwardPooled` and `weightGradientPooled`): byte codes, 2x2 tiling.
    var pooledInside: PoolingStage? {
        guard path == .fewChannels, let p = fusedPool, p.codes != nil, FewChannelConv.poolFuses(window, pool: p.window) else { return nil }
        return p
    }

    /// conv(OUT, K, stride, same|valid, bias): weights [K, K, Cin, Cout] named convN.weight, and convN.bias.
    static func plan(out: Int, kernel k: Int, stride: Int, same: Bool, bias hasBias: Bool, relu: Bool, _ p: inout StagePlanner) throws {
        let shape = p.shape
        let g = Window(inH: shape.h, inW: shape.w, channels: shape.c, kernel: k, stride: stride, same: same)
        if g.outH == 0 || g.outW == 0 { throw p.refuse("needs at least a \(k)x\(k) input but gets \(shape)") }
        let n = p.number("conv")
        let w = p.addTensor("conv\(n).weight", [k, k, shape.c, out], .convWeight(kernel: k, inputs: shape.c, outputs: out))
        let b = hasBias ? p.addTensor("conv\(n).bias", [out], .bias) : nil
        let path = ConvPath.choose(g, cout: out, firstLayer: p.stages.isEmpty, precision: p.precision)
        if !p.openBlocks.isEmpty { p.openBlocks[p.openBlocks.count - 1].stride *= stride }
        let tile = path == .winograd ? Winograd.tile(for: g) : .f2
        p.stages.append(ConvStage(window: g, cout: out, relu: relu, weight: w, bias: b, path: path, tile: tile,
                                  group: path == .winograd ? Winograd.group(for: g, tile) : 1, precision: p.precision))
        p.shape = Shape(h: g.outH, w: g.outW, c: out)
    }

    var name: String {
        "conv \(window.kernel)x\(window.kernel) \(window.channels)->\(cout)\(relu ? " +relu" : "")\(path == .winograd ? (tile == .f4 ? " winograd 4x4" : " winograd") : path == .direct ? " direct" : path == .implicit ? " implicit" : "")"
    }
    var parameters: Range<Int> { weight..<(bias.map { $0 + cout } ?? weight + window.patch * cout) }
    /// Its zeros and packed (on the Winograd path, transformed and packed) weights, as `allocate`
    /// takes them (the input gradient's packing counted for a first layer too, which has none).
    func fixedFloats(processes: Int) -> Int {
        let g = window, zeroRow = path == .direct ? DirectConv.zeroFloats(channels: max(g.channels, cout)) : 0
        let zeros = bias == nil || zeroRow > 0 ? max(bias == nil ? cout : 0, zeroRow) : 0
        switch path {
        case .fewChannels: return zeros
        case .direct: return zeros + 9 * g.channels * cout
        case .winograd:
            return zeros + tile.positions * (g.channels * cout + Gemm.packedBFloats(k: g.channels, n: cout) + Gemm.packedBFloats(k: cout, n: g.channels))
        case .im2col, .pointwise:
            return zeros + Gemm.packedBFloats(k: g.patch, n: cout, precision: precision) + Gemm.packedBFloats(k: cout, n: g.patch, precision: precision)
        case .implicit:
            return zeros + ImplicitConv(forward: g).packedWeightsFloats(cout: cout) + g.patch * cout
                + ImplicitConv(inputGradientOf: g, cout: cout).packedWeightsFloats(cout: g.channels)
        }
    }
    var outputInScratch: Bool { fusedPool != nil }
    /// Its ReLU's mask goes into its output gradient in place, unless a fused pool's gradient
    /// (in scratch) takes it; and a bn after it writes its input gradient there (its own pass,
    /// where the conv cuts its shards; the conv's jobs otherwise keep it in scratch).
    var keepsOutputGradient: Bool { (!relu || fusedPool != nil) && batchNorm == nil }

    /// A sample's im2col (or Winograd's transformed input, or a padded input) and its output (a
    /// fused pool's input, or backward the gradient a bn after it computes in its jobs); on the
    /// Winograd path a group's transformed inputs and outputs, and the shard's dU.
    var scratchNeeds: ScratchNeeds {
        let g = window
        var n = ScratchNeeds(output: g.positions * cout * group)
        switch path {
        case .winograd:
            n.col = tile.positions * Winograd.matrixStride(g, channels: g.channels, tile, group: group)
            n.winograd = tile.positions * (Winograd.matrixStride(g, channels: cout, tile, group: group) + g.channels * cout)
        case .fewChannels: n.col = FewChannelConv.paddedFloats(g)
        case .direct: break  // reads its input and output gradient in place
        case .im2col:
            let weightGradient = Im2col.weightGradientBF16Floats(g, cout: cout)
            n.col = max(g.positions * g.patch + Im2col.slack, precision.isBF16 ? max(Im2col.bf16Floats(g), weightGradient) : 0)
        case .implicit:  // the padded input and the GEMM's rows; the weight gradient's planes; the padded dy and its rows
            n.col = max(ImplicitConv(forward: g).scratchFloats(n: cout), Im2col.weightGradientBF16Floats(g, cout: cout),
                        ImplicitConv(inputGradientOf: g, cout: cout).scratchFloats(n: g.channels))
        case .pointwise: break
        }
        return n
    }

    /// A Winograd conv does 16 multiply-adds per 2x2 tile and channel pair where a direct one does
    /// 36, or 36 per 4x4 tile where a direct one does 144.
    func flopsPerSample(asDirect: Bool) -> Double {
        if path == .winograd && !asDirect { return 2 * Double(tile.positions * Winograd.tiles(window, tile) * window.channels * cout) }
        return 2 * Double(window.positions * window.patch * cout)
    }

    mutating func allocate(_ layout: BufferLayout, index: Int, earlier: inout [any Stage]) {
        let g = window
        // Zeros for a missing bias, and for a direct conv's taps outside the image (its input's
        // and, backward, its output gradient's).
        let zeroRow = path == .direct ? DirectConv.zeroFloats(channels: max(g.channels, cout)) : 0
        if bias == nil || zeroRow > 0 { zeros = layout.floats(max(bias == nil ? cout : 0, zeroRow)) }
        switch path {
        case .fewChannels:
            break  // the weights are read as stored: nothing to pack
        case .direct:
            if index > 0 { packedWt = layout.floats(9 * g.channels * cout) }
        case .winograd:
            u = layout.floats(tile.positions * g.channels * cout)
            packedStride = Gemm.packedBFloats(k: g.channels, n: cout)
            packedStrideT = Gemm.packedBFloats(k: cout, n: g.channels)
            packedW = layout.floats(tile.positions * packedStride)
            if index > 0 { packedWt = layout.floats(tile.positions * packedStrideT) }
        case .im2col, .pointwise:
            packedW = layout.floats(Gemm.packedBFloats(k: g.patch, n: cout, precision: precision))
            if index > 0 { packedWt = layout.floats(Gemm.packedBFloats(k: cout, n: g.patch, precision: precision)) }
        case .implicit:
            packedW = layout.floats(ImplicitConv(forward: g).packedWeightsFloats(cout: cout))
            if index > 0 {
                packedWt = layout.floats(ImplicitConv(inputGradientOf: g, cout: cout).packedWeightsFloats(cout: g.channels))
                flippedW = layout.floats(g.patch * cout)
            }
        }
        // (A residual block's projection is allocated with no stages before it: none is its bn.)
        if index > 1, earlier.count == index, earlier[index - 1] is ResidualBeginStage { residualBegin = index - 1 }
        if earlier.count == index {
            // Past the stages whose output is their input (a block's begin, an end its bn adds):
            // their gradients share the conv's input gradient's buffer too.
            var before = index - 1
            while before >= 0 && earlier[before].outputIsInput { before -= 1 }
            if before >= 0, let bn = earlier[before] as? BatchNormStage, bn.inConvStack { inputBatchNorm = bn.fusion(index: before) }
        }
    }

    /// Whether its forward jobs (for a batch of `n`, it being stage `index`) run the bn's
    /// normalisation (`inputBatchNorm`): they do unless they cut a sample into parts.
    func normalizesInput(_ net: Network, index: Int, batch n: Int) -> Bool {
        inputBatchNorm != nil && net.convParts(index, self, batch: n, backward: false).count == 1
    }

    func initialize(_ net: Network, _ rng: inout SplitMix64) {
        let fanIn = window.patch
        drawWeights(net.parameters.values + weight, count: fanIn * cout, fanIn: fanIn, fanOut: window.kernel * window.kernel * cout, relu: relu, &rng)
    }

    func forward(_ net: Network, _ pass: StagePass) { forward(net, pass, finishing: nil) }

    /// A sample at a time (or a part of one, or a Winograd conv's group of samples): its im2col is
    /// built in the worker's scratch and used from cache. The weights are packed (or transformed)
    /// once first. A residual block's projection `finishing` the block's sum writes that sum
    /// instead of its own output.
    func forward(_ net: Network, _ pass: StagePass, finishing sum: ResidualSum?) {
        let pool = net.pool, W = net.parameters.values
        switch path {
        case .winograd:
            let pairs = window.channels * cout
            let transform = WinogradWeightsJob(tile: tile, w: W + weight, pairs: pairs, u: u!, chunks: min(pairs / 16, 4 * pool.splitCount))
            pool.run(items: transform.chunks, transform)
            pool.run(items: tile.positions, PackWinogradJob(c: self))
        case .im2col, .pointwise:
            let pack = PackBJob(k: window.patch, n: cout, b: .rowMajor(W + weight, cols: cout), into: packedW,
                                workers: pool.splitCount, precision: precision)
            pool.run(items: pack.items, pack)
        case .implicit:
            pool.run(items: 1, PackImplicitJob(c: self, w: W + weight, inputGradient: false))
        case .fewChannels, .direct:
            break  // reads the weights as stored
        }
        let parts = net.convParts(pass.index, self, batch: pass.count, backward: false)
        let range = pass.samples
        let normalization = inputBatchNorm.flatMap { bn in
            normalizesInput(net, index: pass.index, batch: pass.count)
                ? (net.stages[bn.index] as? BatchNormStage)?.normalization(net, index: bn.index, training: pass.training) : nil
        }
        // Parts of one sample would each normalise the whole sample while others read it.
        precondition(normalization == nil || parts.count == 1, "a bn's normalisation in a conv that cuts its samples")
        precondition(sum == nil || parts.count == 1, "a block's sum in a conv that cuts its samples")
        let job = ConvForwardJob(
            c: self, x: pass.io.x, y: pass.io.y, weights: W, scratch: net.scratchLayout, parts: parts, samples: range,
            group: parts.count == 1 && range.count > pool.splitCount ? group : 1,
            batchNorm: pass.training && parts.count == 1 ? batchNorm : nil, inputNormalization: normalization,
            residualSum: sum, pool: pool)
        if job.group > 1 {
            // Group i is samples [i·group, (i+1)·group), those of them in the range.
            pool.run(range: (range.lowerBound / group)..<((range.upperBound + group - 1) / group), job)
        } else {
            pool.run(range: (range.lowerBound * parts.count)..<(range.upperBound * parts.count), job)
        }
    }

    func backward(_ net: Network, _ pass: StagePass, optimizer: OptimizerStep?) { backward(net, pass, optimizer: optimizer, starting: nil) }

    /// A shard at a time (or a part of one), into the shard's gradient buffers; the network sums
    /// the shards afterwards (`Network.reduceConvGradients`). `blockEnd`: a residual block end's
    /// backward, which a projection's jobs run on each sample before reading its gradient.
    func backward(_ net: Network, _ pass: StagePass, optimizer: OptimizerStep?, starting blockEnd: ResidualGradient?) {
        let pool = net.pool, n = pass.count
        let wt = pass.needsInputGradient ? packedWt : nil
        if let wt, path == .direct {
            pool.run(items: 1, FlipTransposeJob(w: net.parameters.values + weight, window: window, cout: cout, into: wt))
        } else if wt != nil, path == .implicit {
            pool.run(items: 1, PackImplicitJob(c: self, w: net.parameters.values + weight, inputGradient: true))
        } else if let wt, path != .winograd {  // (a Winograd conv packed its Uᵀ in the forward pass)
            let pack = PackBJob(k: cout, n: window.patch, b: .transposed(net.parameters.values + weight, cols: cout), into: wt,
                                workers: pool.splitCount, precision: precision)
            pool.run(items: pack.items, pack)
        }
        let shards = Network.shardCount(batch: n), mine = net.shards(batch: n, rank: net.group.rank)
        let parts = net.convParts(pass.index, self, batch: n, backward: true)
        let io = pass.io, g = net.parameters.shardGradients
        let bn = parts.count == 1 ? batchNorm : nil, bnBefore = parts.count == 1 && wt != nil ? inputBatchNorm : nil
        let shortcut = residualBegin.flatMap { b -> UnsafeMutablePointer<Float>? in
            guard let begin = net.stages[b] as? ResidualBeginStage, begin.addedByFirstConv(net, index: b, batch: n) else { return nil }
            return begin.shortcut(net)
        }
        // Parts of one shard would each mask and copy the same samples while others read them.
        precondition(blockEnd == nil || parts.count == 1, "a block end's gradient in a conv that cuts its shards")
        pool.run(range: (mine.lowerBound * parts.count)..<(mine.upperBound * parts.count), ConvBackwardJob(
            c: self, x: io.x, y: io.y, dy: io.dy, dx: wt == nil ? nil : io.dx, wt: wt, scratch: net.scratchLayout, samples: n,
            shards: shards, gw: g + weight, gb: bias.map { g + $0 }, shardStride: net.parameters.convCount, parts: parts,
            batchNorm: bn, bnDy: bn.map { net.activations.io[$0.index].dy },
            inputBatchNorm: bnBefore, inputBN: bnBefore.map { net.activations.io[$0.index] }, shortcutGradient: shortcut,
            blockEnd: blockEnd,
            pool: pool))
    }
}

/// A direct conv's weights flipped and transposed for its input gradient (9 · cin · cout floats: one item).
struct FlipTransposeJob: ParallelJob, @unchecked Sendable {  // the one item writes `into`
    var w: UnsafeMutablePointer<Float>
    var window: Window
    var cout: Int
    var into: UnsafeMutablePointer<Float>
    func run(_ item: Int, _ worker: Int) { window.flipTranspose(w, cout: cout, into: into) }
    func bytesMoved(items: Int) -> Int { 2 * f * window.patch * cout }
}

/// An implicit conv's weights packed as its forward GEMM's B, or flipped and transposed, then packed
/// as its input gradient's (one item).
struct PackImplicitJob: ParallelJob, @unchecked Sendable {  // the one item writes packedW, or flippedW and packedWt
    var c: ConvStage
    var w: UnsafeMutablePointer<Float>
    var inputGradient: Bool
    func run(_ item: Int, _ worker: Int) {
        let g = c.window
        if inputGradient {
            guard let flipped = c.flippedW, let wt = c.packedWt else { preconditionFailure("no input gradient buffers") }
            g.flipTranspose(w, cout: c.cout, into: flipped)
            ImplicitConv(inputGradientOf: g, cout: c.cout).packWeights(flipped, cout: g.channels, into: wt)
        } else {
            ImplicitConv(forward: g).packWeights(w, cout: c.cout, into: c.packedW)
        }
    }
    func bytesMoved(items: Int) -> Int { f * c.window.patch * c.cout * (inputGradient ? 3 : 2) }
}

/// U = G g Gᵀ of a Winograd conv's weights, a slice of the (cin, cout) pairs per item.
struct WinogradWeightsJob: ParallelJob, @unchecked Sendable {  // an item writes its (cin, cout) pairs of U
    var tile: Winograd.Tile
    var w: UnsafeMutablePointer<Float>
    var pairs: Int
    var u: UnsafeMutablePointer<Float>
    var chunks: Int
    func run(_ item: Int, _ worker: Int) {
        let vectors = pairs / 16
        Winograd.transformWeights(tile, w, pairs: pairs, range: (item * vectors / chunks * 16)..<((item + 1) * vectors / chunks * 16), into: u)
    }
}

/// Packs U_ξ (the forward's B) and U_ξᵀ (the input gradient's B) of a Winograd conv, one position ξ per item.
struct PackWinogradJob: ParallelJob, @unchecked Sendable {  // an item writes its position ξ's packed U and Uᵀ
    var c: ConvStage
    func run(_ xi: Int, _ worker: Int) {
        let cin = c.window.channels, u = c.u! + xi * cin * c.cout
        for block in 0..<Gemm.packedBBlocks(k: cin, n: c.cout) {
            Gemm.packB(k: cin, n: c.cout, b: .rowMajor(u, cols: c.cout), block: block, into: c.packedW + xi * c.packedStride)
        }
        if let wt = c.packedWt {
            for block in 0..<Gemm.packedBBlocks(k: c.cout, n: cin) {
                Gemm.packB(k: c.cout, n: cin, b: .transposed(u, cols: c.cout), block: block, into: wt + xi * c.packedStrideT)
            }
        }
    }
}

/// Parts a sample's (forward) or a shard's (backward) work on a conv is cut into when there are
/// too few samples or shards to keep the workers equally busy. Each part is its own arithmetic,
/// so the parts change no bit. The forward cuts a sample's output rows (a row of Winograd tiles,
/// two or four rows; two on the direct paths: a row of a fused 2x2 max-pool's windows) on the
/// Winograd, direct and first-layer paths; the backward cuts a shard's input channels on the
/// Winograd path (dU's rows, dV's columns, dx's channels). Not cut: the im2col path (its columns interleave the input channels
/// and its input gradient sums over every output channel), a first-layer direct conv's backward (its
/// part would read a strided slice of every activation: recorded 70% more work for two parts),
/// and a forward whose fused pool is not 2x2 with stride 2 (its windows would straddle parts).
struct ConvParts: Hashable {
    var count: Int
    /// Rows or channels a block is made of, and of how many in all.
    var unit: Int
    var extent: Int
    static let one = ConvParts(count: 1, unit: 1, extent: 1)

    /// The rows (forward) or channels (backward) of part `p`.
    func block(_ p: Int) -> Range<Int> {
        let units = (extent + unit - 1) / unit
        return min(p * units / count * unit, extent)..<min((p + 1) * units / count * unit, extent)
    }

    /// The most parts a conv's pass can be cut into (1: not cut), and what each doubling of the
    /// parts costs in repeated work (a fraction of the region's work; see `choose`).
    static func limit(_ c: ConvStage, backward: Bool) -> (parts: ConvParts, cost: Double) {
        let g = c.window
        if !backward {
            guard c.path == .winograd || c.path == .fewChannels || c.path == .direct else { return (.one, 0) }
            if let p = c.fusedPool, !(p.window.kernel == 2 && p.window.stride == 2) { return (.one, 0) }
            // Recorded at batch 50 cut for 16 workers (4 parts): the one-channel conv1 did 23% more
            // work; the Winograd conv 60% more (each part of its GEMMs reads all of the packed U).
            // (A direct conv's part is charged as the first-layer conv's: both read their rows' inputs again.)
            let unit = c.path == .winograd ? c.tile.m : 2
            return (ConvParts(count: (g.outH + unit - 1) / unit, unit: unit, extent: g.outH), c.path == .winograd ? 0.3 : 0.12)
        }
        // The cut GEMM reads its panels of the packed Uᵀ at an offset: one KC x NC block only.
        guard c.path == .winograd, c.cout <= Gemm.packedBlockRows, g.channels <= Gemm.packedBlockColumns,
              g.channels % Gemm.nr == 0 else { return (.one, 0) }
        return (ConvParts(count: g.channels / Gemm.nr, unit: Gemm.nr, extent: g.channels), 0.25)
    }

    /// Parts for `sizes` (samples per item: 1 for each sample forward, each shard's samples
    /// backward) on `workers`: the count (1, 2, 4, ...) whose busiest worker (items dealt in order
    /// to whichever worker is free, as the pool deals them) finishes first, each doubling charged
    /// `cost` of the work. A backward part repeats the pool's and dM's gradients and reads its
    /// channels' strided slice of the activations: recorded with `ptrain bench --model-cores` on
    /// the reference network, two parts did 20-30% more work than one (forward: see `limit`).
    /// Depends on the batch and the worker count only.
    static func choose(_ limit: (parts: ConvParts, cost: Double), sizes: [Int], workers: Int) -> ConvParts {
        guard workers > 1, limit.parts.count > 1, !sizes.isEmpty else { return .one }
        var best = limit.parts, bestCost = Double.infinity
        var parts = 1, charge = 1.0
        while parts <= limit.parts.count {
            // In units of 1/parts of a sample.
            let items = sizes.flatMap { Array(repeating: UInt64($0), count: parts) }
            let cost = Double(ScalingModel.makespan(items[...], workers: workers)) / Double(parts) * charge
            if cost < bestCost { bestCost = cost; best.count = parts }
            parts *= 2
            charge += limit.cost
        }
        return best
    }
}

/// One sample of a convolution (or a block of its output rows, `parts`) by the conv's path:
/// im2col into the worker's scratch (the input itself on the pointwise path) and one GEMM with
/// bias and ReLU, or the implicit GEMM over the padded input (bf16), or Winograd, or a direct
/// conv; and, when a max-pool follows, the pool (then `y` is the pool's output and the conv's
/// output stays in scratch), or for a residual block's projection the block's sum (then `y` is
/// the block's output, and the projection stays in scratch). Item i is sample i / parts.count, or
/// with `group` > 1 (a Winograd conv's, `runGroup`) the group i of samples.
struct ConvForwardJob: ParallelJob, @unchecked Sendable {  // an item writes its sample's (part's) output, and its worker's scratch
    var c: ConvStage
    var x, y: UnsafeMutablePointer<Float>
    var weights: UnsafeMutablePointer<Float>   // the flat parameters: the conv's bias, and its weights as stored
    var scratch: ScratchLayout
    var parts = ConvParts.one
    /// The pass's samples, and how many of them an item takes (a Winograd conv's group, or 1).
    var samples: Range<Int>
    var group: Int
    /// The bn after it whose sample sums (Σx, the squares about the sample's mean) this job
    /// computes (training, whole samples only).
    var batchNorm: BatchNormFusion?
    /// The bn before it whose normalisation of a sample (its output, this conv's input) this job
    /// runs first (`ConvStage.inputBatchNorm`; whole samples only).
    var inputNormalization: BatchNormJob?
    /// A residual block's sum this job finishes with, the conv (a projection) keeping its own
    /// output in scratch (whole samples only).
    var residualSum: ResidualSum?
    unowned(unsafe) var pool: WorkerPool
    func run(_ item: Int, _ worker: Int) {
        if group > 1 { return runGroup(item, worker) }
        let g = c.window, cout = c.cout, bias = UnsafePointer(c.bias.map { weights + $0 } ?? c.zeros!)
        let s = item / parts.count
        inputNormalization?.run(s, worker)
        // This part's output rows (whole units of `ConvParts`: pairs, or a F(4x4) conv's fours, but
        // for the last).
        let rows = parts.count == 1 ? 0..<g.outH : parts.block(item % parts.count)
        let area = pool.scratch(worker)
        let out = c.fusedPool == nil && residualSum == nil ? y + s * g.positions * cout : area + scratch.output
        switch c.path {
        case .fewChannels:
            let xp = area + scratch.col
            FewChannelConv.pad(g, x: x + s * g.inputSize, into: xp)
            if let p = c.pooledInside, let codes = p.codes {
                // The pool inside, a pair of rows at a time (a part's rows are whole pairs).
                let size = p.window.positions * p.window.channels
                FewChannelConv.forwardPooled(g, cout: cout, xp: xp, w: weights + c.weight, bias: bias, relu: c.relu,
                                                pool: p.window, pooledRows: rows.lowerBound / 2..<rows.upperBound / 2,
                                                pair: out, y: y + s * size, codes: codes + s * size)
                return
            }
            FewChannelConv.forward(g, cout: cout, xp: xp, w: weights + c.weight, bias: bias, relu: c.relu, rows: rows, y: out)
        case .direct:
            DirectConv.forward(height: g.outH, width: g.outW, cin: g.channels, cout: cout, x: x + s * g.inputSize, zeros: c.zeros!,
                               w: weights + c.weight, bias: bias, relu: c.relu, rows: rows, y: out)
        case .winograd:
            // V = Bᵀ d B, then M_ξ = V_ξ · U_ξ for the tile's 16 or 36 positions ξ, then
            // y = Aᵀ M A + bias; a part computes its rows of tiles of V, M and y.
            let tile = c.tile, side = tile.m, cin = g.channels, tilesW = (g.outW + side - 1) / side
            let vStride = Winograd.matrixStride(g, channels: cin, tile), mStride = Winograd.matrixStride(g, channels: cout, tile)
            let tiles = (rows.lowerBound / side * tilesW)..<((rows.upperBound + side - 1) / side * tilesW)
            let v = area + scratch.col, m = area + scratch.winograd
            Winograd.transformInput(g, tile, x: x + s * g.inputSize, tiles: tiles, into: v)
            for xi in 0..<tile.positions {
                let packed = c.packedW + xi * c.packedStride
                Gemm.multiply(m: tiles.count, n: cout, k: cin, a: .rowMajor(v + xi * vStride + tiles.lowerBound * cin, cols: cin),
                              b: .packed(packed), c: m + xi * mStride + tiles.lowerBound * cout, ldc: cout,
                              accumulate: false, scratch: area)
            }
            Winograd.transformOutput(g, tile, cout: cout, m: m, bias: bias, relu: c.relu, tiles: tiles, into: out)
        case .implicit:
            // The GEMM reads the patches in the padded input (no im2col).
            ImplicitConv(forward: g).run(x + s * g.inputSize, packed: c.packedW, n: cout, bias: bias, relu: c.relu, into: out,
                                         scratch: area + scratch.col, gemmScratch: area, path: c.precision.bf16Path!)
        case .im2col where c.precision.isBF16:
            // The patches straight into bf16 rows: no fp32 im2col, no packing pass.
            let path = c.precision.bf16Path!
            let (col, lda) = Im2col.forwardBF16(g, x: x + s * g.inputSize, scratch: area + scratch.col)
            GemmBF16.multiply(m: g.positions, n: cout, k: g.patch, aBF16: col, lda: lda, b: .packed(c.packedW),
                              c: out, ldc: cout, accumulate: false, bias: bias, relu: c.relu, scratch: area, path: path)
        case .im2col, .pointwise:
            let col = c.path == .im2col ? area + scratch.col : x + s * g.inputSize
            if c.path == .im2col { Im2col.forward(g, x: x + s * g.inputSize, col: col) }
            Gemm.multiply(m: g.positions, n: cout, k: g.patch, a: .rowMajor(col, cols: g.patch), b: .packed(c.packedW),
                          c: out, ldc: cout, accumulate: false, bias: bias, relu: c.relu, scratch: area, precision: c.precision)
        }
        finish(out, s, rows)
    }

    /// A Winograd conv's group `item` of samples (`ConvStage.group`): each sample normalised (when
    /// a bn's normalisation runs here) and transformed into its rows of V, the GEMMs over all of
    /// their tiles, then each sample's output and what follows it, as `run` does for one.
    func runGroup(_ item: Int, _ worker: Int) {
        let g = c.window, cout = c.cout, cin = g.channels, bias = UnsafePointer(c.bias.map { weights + $0 } ?? c.zeros!)
        let tile = c.tile, t = Winograd.tiles(g, tile)
        let members = max(item * group, samples.lowerBound)..<min((item + 1) * group, samples.upperBound)
        let area = pool.scratch(worker), v = area + scratch.col, m = area + scratch.winograd
        let vStride = Winograd.matrixStride(g, channels: cin, tile, group: group)
        let mStride = Winograd.matrixStride(g, channels: cout, tile, group: group)
        for s in members {
            inputNormalization?.run(s, worker)
            Winograd.transformInput(g, tile, x: x + s * g.inputSize, group: group, into: v + (s - members.lowerBound) * t * cin)
        }
        for xi in 0..<tile.positions {
            Gemm.multiply(m: members.count * t, n: cout, k: cin, a: .rowMajor(v + xi * vStride, cols: cin),
                          b: .packed(c.packedW + xi * c.packedStride), c: m + xi * mStride, ldc: cout, accumulate: false, scratch: area)
        }
        for s in members {
            let k = s - members.lowerBound
            let out = c.fusedPool == nil && residualSum == nil ? y + s * g.positions * cout : area + scratch.output + k * g.positions * cout
            Winograd.transformOutput(g, tile, cout: cout, m: m + k * t * cout, bias: bias, relu: c.relu, group: group, into: out)
            finish(out, s, 0..<g.outH)
        }
    }

    /// What follows sample `s`'s conv output `rows` in `out`: the fused pool, the bn's sums, the
    /// block's sum.
    @inline(__always) func finish(_ out: UnsafeMutablePointer<Float>, _ s: Int, _ rows: Range<Int>) {
        poolAfter(out, s, rows)
        batchNorm?.sums(out, sample: s)
        residualSum?.add(out, sample: s)
    }

    /// The fused pool over the conv's output `rows` (a part's: whole 2x2 windows, `ConvParts`).
    @inline(__always) func poolAfter(_ out: UnsafeMutablePointer<Float>, _ s: Int, _ rows: Range<Int>) {
        if let p = c.fusedPool {
            let size = p.window.positions * p.window.channels
            let pooled = rows.count == c.window.outH ? nil : (rows.lowerBound / 2)..<min(rows.upperBound / 2, p.window.outH)
            if let codes = p.codes {
                MaxPoolCodes.forward(p.window, x: out, y: y + s * size, codes: codes + s * size, reluMasked: p.masksRelu, rows: pooled)
            } else {
                MaxPool.forward(p.window, x: out, y: y + s * size, argmax: p.argmax! + s * size, rows: pooled)
            }
        }
    }
}

/// One shard of the batch through a convolution's backward pass, a sample at a time in sample
/// order (a Winograd conv's group of samples at a time, `ConvStage.group`): the fused max-pool's
/// backward (into scratch) or the ReLU mask, im2col again (cheaper than keeping the batch's), the shard's weight and bias gradients accumulated into its own
/// buffers, and the input gradient (dcol = dy · Wᵀ, wt being Wᵀ packed, then col2im); on the
/// implicit path (bf16) the weight gradient from shifted planes and the input gradient the
/// implicit GEMM over the padded dy; or the same through Winograd's transforms
/// (`backwardWinograd`), or a direct conv's kernels (the first layer's has no input gradient). Which worker runs a shard changes nothing: its sums run in sample order.
/// A Winograd conv's shard may be cut into `parts` (blocks of input channels, `ConvParts`): item i
/// is shard i / parts.count.
struct ConvBackwardJob: ParallelJob, @unchecked Sendable {  // an item writes its shard's (part's) gradients and samples' dx, and its worker's scratch
    var c: ConvStage
    var x, y, dy: UnsafeMutablePointer<Float>   // with a fused pool, y and dy are the pool's output and its gradient
                                                // (a projection's y is its block's output, not read)
    var dx, wt: UnsafeMutablePointer<Float>?    // wt: Wᵀ packed (Winograd: its packed U_ξᵀ, a block per ξ)
    var scratch: ScratchLayout
    var samples, shards: Int
    var gw: UnsafeMutablePointer<Float>       // shard 0's weight gradient; shard i is i * shardStride on
    var gb: UnsafeMutablePointer<Float>?      // and its bias gradient (nil: no bias)
    var shardStride: Int
    var parts = ConvParts.one
    /// The bn after it whose input gradient (this conv's output gradient, into scratch) this job
    /// computes a sample at a time, from the bn's output gradient `bnDy` (whole shards only).
    var batchNorm: BatchNormFusion?
    var bnDy: UnsafeMutablePointer<Float>?
    /// The bn before it whose gradient sums this job computes a sample at a time, right after the
    /// sample's dx (the bn's output gradient) is written; `inputBN` is that bn's buffers.
    var inputBatchNorm: BatchNormFusion?
    var inputBN: StageBuffers?
    /// The residual block's shortcut gradient this job adds to each sample's dx (`residualBegin`).
    var shortcutGradient: UnsafeMutablePointer<Float>?
    /// The block end's backward a projection's job runs on each sample before reading its dy.
    var blockEnd: ResidualGradient?
    unowned(unsafe) var pool: WorkerPool
    var g: Window { c.window }
    var cout: Int { c.cout }

    func run(_ item: Int, _ worker: Int) {
        let shard = item / parts.count, part = item % parts.count
        let P = g.positions, K = g.patch
        let area = pool.scratch(worker)
        let gws = gw + shard * shardStride, gbs = gb.map { $0 + shard * shardStride }
        // A Winograd conv sums the shard's weight gradient as dU (transformed), then transforms it once.
        let du = area + scratch.winograd + c.tile.positions * Winograd.matrixStride(g, channels: cout, c.tile, group: c.group)
        // The shard's first sample starts the weight gradient's sums (no clearing pass; the same bits).
        let first = shard * samples / shards, end = (shard + 1) * samples / shards
        if first == end {
            if part == 0 { gws.update(repeating: 0, count: K * cout); gbs?.update(repeating: 0, count: cout) }
            return
        }
        if c.path == .fewChannels { gws.update(repeating: 0, count: K * cout) }
        // Part 0 sums the bias gradient.
        let biasColumns = part == 0 && gbs != nil ? 0..<cout : 0..<0
        gbs?.update(repeating: 0, count: biasColumns.count)
        let pooledConv = c.pooledInside
        var start = first
        while start < end {
            // The shard's samples in order, a group at a time on a Winograd conv (`ConvStage.group`).
            let members = start..<min(start + c.group, end)
            start = members.upperBound
            if c.path == .winograd {
                for s in members {
                    blockEnd?.run(sample: s)
                    outputGradient(s, slot: s - members.lowerBound, area)
                }
                backwardWinograd(members, du, accumulate: members.lowerBound > first, area,
                                 parts.count == 1 ? 0..<g.channels : parts.block(part))
                for s in members {
                    if let gbs {
                        Elementwise.columnSums(gradientSlot(s, slot: s - members.lowerBound, area), rows: P, ld: cout,
                                               cols: biasColumns, into: gbs, accumulate: true)
                    }
                    finishSample(s)
                }
                continue
            }
            let s = members.lowerBound
            blockEnd?.run(sample: s)
            if let p = pooledConv {
                // The pool's backward a pair of rows at a time, into the sums (`weightGradientPooled`).
                let size = p.window.positions * p.window.channels, xp = area + scratch.col
                FewChannelConv.pad(g, x: x + s * g.inputSize, into: xp)
                FewChannelConv.weightGradientPooled(g, cout: cout, xp: xp, pool: p.window, dy: dy + s * size,
                                                       codes: p.codes! + s * size, pair: area + scratch.output,
                                                       dw: gws, db: biasColumns.isEmpty ? nil : gbs)
                continue
            }
            let dys = outputGradient(s, slot: 0, area)
            switch c.path {
            case .fewChannels:
                let xp = area + scratch.col
                FewChannelConv.pad(g, x: x + s * g.inputSize, into: xp)
                FewChannelConv.weightGradient(g, cout: cout, xp: xp, dy: dys, dw: gws)
                if let gbs { Elementwise.columnSums(dys, rows: P, ld: cout, cols: biasColumns, into: gbs, accumulate: true) }
            case .direct:
                // dW from the input; dx = dy through the flipped, transposed weights.
                DirectConv.weightGradient(height: g.outH, width: g.outW, cin: g.channels, cout: cout, x: x + s * g.inputSize,
                                          zeros: c.zeros!, dy: dys, dw: gws, accumulate: s > first)
                if let gbs { Elementwise.columnSums(dys, rows: P, ld: cout, cols: 0..<cout, into: gbs, accumulate: true) }
                if let dx, let wt {
                    DirectConv.forward(height: g.inH, width: g.inW, cin: cout, cout: g.channels, x: dys, zeros: c.zeros!, w: wt,
                                       bias: nil, relu: false, rows: 0..<g.inH, y: dx + s * g.inputSize)
                }
            case .winograd:
                preconditionFailure("a Winograd conv's samples run by groups")
            case .im2col, .pointwise, .implicit:
                let viaCol = c.path != .pointwise
                let col = viaCol ? area + scratch.col : x + s * g.inputSize
                if viaCol, let path = c.precision.bf16Path {
                    // The patches in bf16, shifted planes or transposed rows, in `col` (the input
                    // gradient below overwrites them).
                    Im2col.weightGradientBF16(g, x: x + s * g.inputSize, dy: dys, cout: cout, into: gws, accumulate: s > first,
                                              scratch: col, gemmScratch: area, path: path)
                } else {
                    if viaCol { Im2col.forward(g, x: x + s * g.inputSize, col: col) }
                    Gemm.multiply(m: K, n: cout, k: P, a: .transposed(col, cols: K), b: .rowMajor(dys, cols: cout),
                                  c: gws, ldc: cout, accumulate: s > first, scratch: area, precision: c.precision)
                }
                if let gbs { Elementwise.columnSums(dys, rows: P, ld: cout, cols: 0..<cout, into: gbs, accumulate: true) }
                if let dx, let wt, c.path == .implicit {
                    // dy padded through the flipped weights (over the planes: no col2im).
                    ImplicitConv(inputGradientOf: g, cout: cout).run(dys, packed: wt, n: g.channels, bias: nil, relu: false,
                                                                     into: dx + s * g.inputSize, scratch: col, gemmScratch: area,
                                                                     path: c.precision.bf16Path!)
                } else if let dx, let wt {
                    // The im2col is no longer needed: its gradient goes over it.
                    let dcol = viaCol ? col : dx + s * P * K
                    Gemm.multiply(m: P, n: K, k: cout, a: .rowMajor(dys, cols: cout), b: .packed(wt),
                                  c: dcol, ldc: K, accumulate: false, scratch: area, precision: c.precision)
                    if viaCol { Im2col.backward(g, dcol: dcol, dx: dx + s * g.inputSize) }
                }
            }
            finishSample(s)
        }
        if c.path == .winograd {
            let ci = parts.count == 1 ? 0..<g.channels : parts.block(part)
            Winograd.weightGradient(c.tile, du, pairs: g.channels * cout, range: (ci.lowerBound * cout)..<(ci.upperBound * cout), into: gws)
        }
    }

    /// Where sample `s`'s output gradient is read from: the `slot`-th sample's place in the
    /// worker's scratch when this job computes it (a fused pool's backward, a bn's input
    /// gradient), else the gradient buffer.
    func gradientSlot(_ s: Int, slot: Int, _ area: UnsafeMutablePointer<Float>) -> UnsafeMutablePointer<Float> {
        let P = g.positions
        return c.fusedPool != nil || (batchNorm != nil && bnDy != nil) ? area + scratch.output + slot * P * cout : dy + s * P * cout
    }

    /// Sample `s`'s output gradient, at `gradientSlot`: the fused pool's backward, or the bn's
    /// input gradient; then the ReLU's mask.
    @discardableResult
    func outputGradient(_ s: Int, slot: Int, _ area: UnsafeMutablePointer<Float>) -> UnsafeMutablePointer<Float> {
        let P = g.positions, dys = gradientSlot(s, slot: slot, area)
        if let p = c.fusedPool {
            let size = p.window.positions * p.window.channels
            // A Winograd conv's part needs every output channel's gradient (its input channels'
            // sums run over all of them).
            if let codes = p.codes {
                MaxPoolCodes.backward(p.window, dy: dy + s * size, codes: codes + s * size, dx: dys)
            } else {
                MaxPool.backward(p.window, dy: dy + s * size, argmax: p.argmax! + s * size, dx: dys,
                                 reluOutput: p.masksRelu ? UnsafePointer(y + s * size) : nil)
            }
        } else {
            // The bn's input gradient, the conv's output gradient, lives only in scratch: nothing
            // reads it after this sample (64 KB a 16-channel sample not written back).
            if let bn = batchNorm, let bnDy { bn.inputGradient(x: y + s * P * cout, dy: bnDy + s * P * cout, into: dys) }
            if c.relu { Elementwise.reluBackward(dy: dys, y: y + s * P * cout, count: P * cout) }
        }
        return dys
    }

    /// What follows sample `s`'s input gradient: a block begin's shortcut gradient added, and the
    /// gradient sums of the bn whose output this conv reads.
    func finishSample(_ s: Int) {
        guard let dx else { return }
        let size = g.inputSize
        if let shortcutGradient {
            // The begin's backward, as its own pass adds (dy + the shortcut's gradient), in place.
            let d = dx + s * size
            Elementwise.add(d, shortcutGradient + s * size, count: size, relu: false, into: d)
        }
        if let bn = inputBatchNorm, let io = inputBN {
            // Past a block's begin: its sum above is the bn's output gradient.
            bn.gradientSums(x: io.x + s * size, y: io.y + s * size, dy: dx + s * size, sample: s)
        }
    }

    /// A group of a shard's samples through a Winograd conv, for the input channels `ci`: each
    /// sample's V (recomputed from x; ci's columns) and dM = A dy Aᵀ into its rows, then
    /// dU_ξ += V_ξᵀ dM_ξ over all of their tiles (ci's rows of dU), and when the input gradient is
    /// needed, dV_ξ = dM_ξ U_ξᵀ (ci's columns, over V; its panels of the packed U_ξᵀ) and each
    /// sample's dx = Σ B dV Bᵀ.
    func backwardWinograd(_ members: Range<Int>, _ du: UnsafeMutablePointer<Float>, accumulate: Bool,
                          _ area: UnsafeMutablePointer<Float>, _ ci: Range<Int>) {
        let tile = c.tile, group = c.group, t = Winograd.tiles(g, tile), rows = members.count * t, cin = g.channels, c0 = ci.lowerBound
        let vStride = Winograd.matrixStride(g, channels: cin, tile, group: group)
        let mStride = Winograd.matrixStride(g, channels: cout, tile, group: group)
        let v = area + scratch.col, dm = area + scratch.winograd
        for s in members {
            let k = s - members.lowerBound
            Winograd.transformInput(g, tile, x: x + s * g.inputSize, channels: ci, group: group, into: v + k * t * cin)
            Winograd.transformOutputGradient(g, tile, cout: cout, dy: gradientSlot(s, slot: k, area), group: group,
                                             into: dm + k * t * cout)
        }
        for xi in 0..<tile.positions {
            Gemm.multiply(m: ci.count, n: cout, k: rows, a: .transposed(v + xi * vStride + c0, cols: cin),
                          b: .rowMajor(dm + xi * mStride, cols: cout),
                          c: du + xi * cin * cout + c0 * cout, ldc: cout, accumulate: accumulate, scratch: area)
        }
        guard let dx, let wt else { return }
        for xi in 0..<tile.positions {
            let packed = wt + xi * c.packedStrideT + c0 * cout
            Gemm.multiply(m: rows, n: ci.count, k: cout, a: .rowMajor(dm + xi * mStride, cols: cout), b: .packed(packed),
                          c: v + xi * vStride + c0, ldc: cin, accumulate: false, scratch: area)
        }
        for s in members {
            Winograd.inputGradient(g, tile, dv: v + (s - members.lowerBound) * t * cin, channels: ci, group: group,
                                   into: dx + s * g.inputSize)
        }
    }
}

extension WinogradWeightsJob {
    func bytesMoved(items: Int) -> Int { f * (9 + tile.positions) * pairs * items / max(chunks, 1) }
}

extension PackWinogradJob {
    func bytesMoved(items: Int) -> Int { items * f * c.window.channels * c.cout * (c.packedWt == nil ? 2 : 3) }
}

extension ConvForwardJob {
    /// A sample's input and what it stores: the conv's output, or the fused pool's output and argmax.
    func bytesMoved(items: Int) -> Int {
        let g = c.window, out: Int
        if let p = c.fusedPool {
            out = f * p.window.positions * p.window.channels + p.argmaxBytesPerSample
        } else {
            out = f * g.positions * c.cout * (residualSum == nil ? 1 : 2)  // (the block's F(x) read, its sum written)
        }
        let samples = min(items * group, self.samples.count)  // (a grouped conv's items are groups, the first and last maybe short)
        return samples * (f * g.inputSize + out) / parts.count + (inputNormalization?.bytesMoved(items: samples) ?? 0)
    }
}

extension ConvBackwardJob {
    /// Per sample its input, output gradient (or the pool's, with its argmax, and its output for
    /// the ReLU's mask unless the argmax is codes) and input gradient; per shard its weight-gradient buffer.
    func bytesMoved(items: Int) -> Int {
        let perSample: Int
        if let p = c.fusedPool {
            let out = p.window.positions * p.window.channels
            perSample = f * out * (p.codes == nil && p.masksRelu ? 2 : 1) + p.argmaxBytesPerSample
        } else {
            perSample = f * 2 * g.positions * cout
        }
        // A block end's mask (its output and gradient read, the gradient written) and copy.
        let blockEndBytes = blockEnd.map { f * $0.size * ($0.relu ? 3 : 0) + f * $0.size * ($0.into != $0.dy ? 2 : 0) } ?? 0
        let samplesPerShard = (samples + shards - 1) / max(shards, 1)
        let shardsRun = (items + parts.count - 1) / parts.count
        return shardsRun * samplesPerShard * (f * g.inputSize * (dx == nil ? 1 : 2) + perSample + blockEndBytes)
            + f * shardsRun * (g.patch + 1) * cout
    }
}
