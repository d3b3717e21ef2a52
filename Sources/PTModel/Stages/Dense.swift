// A dense (fully connected) layer with the ReLU after it: its plan, buffers, passes and their
// jobs, counts and parameter names; under mpirun, the chain that passes its forward sums from
// rank to rank and the exchange of its rows (docs/DISTRIBUTED.md).
import PTKernels
import PTRuntime

private let f = MemoryLayout<Float>.size

struct DenseStage: Stage {
    var inputs, outputs: Int
    var relu: Bool
    var weight: Int
    /// Its bias in the flat buffers; nil for a layer without one (`bias=false`, as before a batch norm).
    var bias: Int?
    var precision: Precision = .fp32
    /// A dropout follows and applies the ReLU's mask in its backward pass (`DropoutStage.masksRelu`).
    var reluMaskedAfter = false
    // For the input gradient as dXᵀ = W · dYᵀ: dYᵀ packed as the GEMM's B, and dXᵀ with its
    // batch dimension padded to whole register tiles (so every tile is stored in place).
    var packedDy: UnsafeMutablePointer<Float>?
    var inputGradT: UnsafeMutablePointer<Float>?
    // dY packed as the weight gradient's B (dW is computed a few rows at a time, and B would
    // otherwise be packed again for each).
    var packedDyRows: UnsafeMutablePointer<Float>!
    var finiteSlot = 0  // its weights' slot in Network.finite
    /// In bf16: the layer's input rounded once a step as the forward GEMM's A (each of the GEMM's
    /// column parts would otherwise round all of it again).
    var inputBF16: UnsafeMutablePointer<UInt16>?
    /// Under mpirun: the partial sums of the forward chain, [capacity x outputs] by column blocks.
    var chainBuffer: UnsafeMutablePointer<Float>?
    /// In bf16 (one process): W rounded and packed as the forward GEMM's B (`GemmBF16.packB`),
    /// rewritten a k-block at a time by the optimizer's step right after it updates those rows.
    /// The forward pass then reads 2 bytes a weight and rounds nothing, instead of reading W's
    /// 4 and rounding every weight each step; it is used only while `Network.packedWeightsCurrent`.
    var packedWeights: UnsafeMutablePointer<Float>?

    /// fc(OUT, bias): weights [in, out] named fcN.weight (the input flattened in (h, w, c) order), and fcN.bias.
    static func plan(out: Int, bias hasBias: Bool, relu: Bool, _ p: inout StagePlanner) {
        let n = p.number("fc")
        let w = p.addTensor("fc\(n).weight", [p.shape.count, out], .denseWeight(input: p.shape, outputs: out))
        let b = hasBias ? p.addTensor("fc\(n).bias", [out], .bias) : nil
        var d = DenseStage(inputs: p.shape.count, outputs: out, relu: relu, weight: w, bias: b, precision: p.precision)
        d.finiteSlot = n
        p.stages.append(d)
        p.shape = Shape(h: 1, w: 1, c: out)
    }

    var name: String { "fc \(inputs)->\(outputs)\(relu ? " +relu" : "")" }
    var batchWide: Bool { true }
    var parameters: Range<Int> { weight..<(bias.map { $0 + outputs } ?? weight + inputs * outputs) }
    /// In bf16, its input rounded.
    var extraFloatsPerSample: Int { precision.isBF16 ? inputs / 2 : 0 }
    /// In bf16 in one process, its packed weights (`packedWeights`).
    func fixedFloats(processes: Int) -> Int { precision.isBF16 && processes == 1 ? GemmBF16.packedBFloats(k: inputs, n: outputs) : 0 }
    /// A block of its weight gradient's rows (`DenseUpdateJob`).
    var scratchNeeds: ScratchNeeds { ScratchNeeds(denseRows: DenseUpdateJob.rows * outputs) }
    func flopsPerSample(asDirect: Bool) -> Double { 2 * Double(inputs * outputs) }

    /// The rows of W (in tiles of Gemm.mr rows) that part `rank` of `parts` updates: under
    /// mpirun each rank's share of the layer. They are also the rank's share of the forward's K,
    /// whose sums continue from rank to rank: in bf16 a share starts at a multiple of 32 rows (a
    /// tile instruction's k-block), so the chain runs the same instructions as one process.
    func ownedTiles(rank: Int, of parts: Int) -> Range<Int> {
        let tiles = (inputs + Gemm.mr - 1) / Gemm.mr, perUnit = tileUnit
        let units = ProcessGroup.share((tiles + perUnit - 1) / perUnit, part: rank, of: parts)
        return min(units.lowerBound * perUnit, tiles)..<min(units.upperBound * perUnit, tiles)
    }

    /// The tiles (of Gemm.mr rows) that shares and blocks of W's rows are whole multiples of:
    /// in bf16 the fewest that make a multiple of 32 rows (a k-block of the packed weights, and
    /// of the forward chain's sums), so every block starts a k-block; in fp32 one.
    var tileUnit: Int {
        guard precision.isBF16 else { return 1 }
        var rows = 32
        while rows % Gemm.mr != 0 { rows += 32 }
        return rows / Gemm.mr
    }

    mutating func allocate(_ layout: BufferLayout, index: Int, earlier: inout [any Stage]) {
        let capacity = layout.capacity
        packedDyRows = layout.floats(Gemm.packedBFloats(k: capacity, n: outputs, precision: precision))
        if precision.isBF16 {
            inputBF16 = UnsafeMutableRawPointer(layout.floats(GemmBF16.rowsFloats(rows: capacity, k: inputs)))
                .bindMemory(to: UInt16.self, capacity: 2 * GemmBF16.rowsFloats(rows: capacity, k: inputs))
        }
        if layout.group.size > 1 { chainBuffer = layout.floats(capacity * outputs) }
        // (Under mpirun a rank's forward is a chain over its share of W's rows, which reads W as stored.)
        if fixedFloats(processes: layout.group.size) > 0 { packedWeights = layout.floats(fixedFloats(processes: layout.group.size)) }
        if index > 0 {
            let batch = Network.paddedBatch(capacity)
            packedDy = layout.floats(Gemm.packedBFloats(k: outputs, n: capacity, precision: precision))
            inputGradT = layout.floats(inputs * batch, perNode: layout.denseRows(self, width: batch, from: 0))
        }
    }

    func initialize(_ net: Network, _ rng: inout SplitMix64) {
        drawWeights(net.parameters.values + weight, count: inputs * outputs, fanIn: inputs, fanOut: outputs, relu: relu, &rng)
    }

    /// One GEMM over the whole batch, split by output tiles; under mpirun, a chain along the ranks.
    func forward(_ net: Network, _ pass: StagePass) {
        let n = pass.count, x = pass.io.x, y = pass.io.y, W = net.parameters.values
        if net.group.size > 1 { chainedForward(net, count: n, x: x, y: y); return }
        var job = GemmJob(m: n, n: outputs, k: inputs, a: .rowMajor(x, cols: inputs),
                          b: .rowMajor(W + weight, cols: outputs), c: y, ldc: outputs,
                          bias: bias.map { UnsafePointer(W + $0) }, relu: relu, precision: precision)
        if let xh = inputBF16 {
            let round = PackRowsJob(src: x, rows: n, k: inputs, into: xh)
            net.pool.run(items: round.items, round)
            job.aBF16 = UnsafePointer(xh); job.aBF16Stride = GemmBF16.paddedK(inputs)
            if net.packedWeightsCurrent, let packedWeights { job.bPackedBF16 = UnsafePointer(packedWeights) }
        }
        net.pool.gemm(job)
    }

    /// The ReLU's mask (unless a dropout after it applies it), then `DenseUpdateJob`: dXᵀ and dW
    /// by blocks of W's rows, with the optimizer's step on those rows when `optimizer` is given
    /// (the bias is left to the pass over the remaining parameters).
    func backward(_ net: Network, _ pass: StagePass, optimizer: OptimizerStep?) {
        let pool = net.pool, group = net.group, n = pass.count
        let x = pass.io.x, dy = pass.io.dy, dx = pass.needsInputGradient ? pass.io.dx : nil
        if relu && !reluMaskedAfter { pool.run(range: pass.samples, ReluMaskJob(dy: dy, y: pass.io.y, size: outputs)) }
        let np = Network.paddedBatch(n)
        let packRows = PackBJob(k: n, n: outputs, b: .rowMajor(dy, cols: outputs), into: packedDyRows, workers: pool.splitCount,
                                precision: precision)
        var packedDyT: UnsafeMutablePointer<Float>?
        if dx != nil, let packedDy {
            let pack = PackBJob(k: outputs, n: n, b: .transposed(dy, cols: outputs), into: packedDy, workers: pool.splitCount,
                                precision: precision)
            let both = PackTwoJob(first: packRows, second: pack)
            pool.run(items: both.items, both)
            packedDyT = packedDy
        } else {
            pool.run(items: packRows.items, packRows)
        }
        // Under mpirun each rank owns a share of W's rows: it alone computes their dXᵀ and dW rows
        // and takes their optimizer step (keeping their moments), and the ranks exchange dXᵀ's
        // rows. Each row is the same chain of sums whichever rank computes it.
        let rowTiles = ownedTiles(rank: group.rank, of: group.size)
        let parts = DenseUpdateJob.parts(tiles: rowTiles, unit: tileUnit, workers: pool.splitCount)
        let sums = ColumnSumJob(m: dy, rows: n, cols: outputs, out: net.parameters.gradients + (bias ?? 0))
        let sumChunks = bias == nil ? 0 : sums.chunks(workers: pool.splitCount)
        let update = DenseUpdateJob(
            inputs: inputs, outputs: outputs, batch: n, x: x, dy: dy, packedDy: packedDyRows,
            packedDyT: packedDyT, dxT: packedDyT == nil ? nil : inputGradT, paddedBatch: np,
            w: net.parameters.values + weight, g: net.parameters.gradients + weight, m: net.parameters.moment1 + weight, v: net.parameters.moment2.map { $0 + weight },
            optimizer: optimizer, packedW: optimizer == nil ? nil : packedWeights,
            finite: net.finite.flags(slot: finiteSlot), tiles: rowTiles, unit: tileUnit, parts: parts, sums: sums,
            sumChunks: sumChunks, rows: net.scratchLayout.denseRows, precision: precision, pool: pool)
        if pool.rangeNodes.count > 1 {
            // On several nodes the row blocks alone are dealt by node, so that each node's workers
            // take the rows placed on it (`BufferLayout.denseRows`); the bias sums follow as their own region.
            pool.run(items: parts, update)
            pool.run(range: parts..<(parts + sumChunks), update)
        } else {
            pool.run(items: parts + sumChunks, update)
        }
        if group.size > 1 {
            if packedDyT != nil, let dxT = inputGradT { gatherRows(net, dxT, width: np) }
            if optimizer == nil { gatherRows(net, net.parameters.gradients + weight, width: outputs) }
        }
        if let dx, let dxT = inputGradT, packedDyT != nil {
            let transpose = TransposeOutJob(inputs: inputs, paddedBatch: np, samples: n, dxT: dxT, dx: dx)
            pool.run(items: transpose.items, transpose)
        }
    }

    /// Every rank receives the other ranks' rows of a [inputs, width] matrix split as `ownedTiles`.
    func gatherRows(_ net: Network, _ matrix: UnsafeMutablePointer<Float>, width: Int) {
        let group = net.group
        group.allgather(matrix) { r in
            let t = ownedTiles(rank: r, of: group.size)
            return (min(t.lowerBound * Gemm.mr, inputs) * width)..<(min(t.upperBound * Gemm.mr, inputs) * width)
        }
    }

    /// Column blocks of a dense layer's output that the forward chain passes from rank to rank,
    /// each a whole number of register tiles. More blocks shorten the chain's start and end
    /// (R ranks take (blocks + R - 1) / blocks of one rank's share), but a narrower GEMM re-reads
    /// its A operand more often: measured at 2 ranks on fc1, 8 blocks made each rank's GEMMs 1.8x
    /// slower than 1, and 2 blocks gave the shortest chain (docs/DISTRIBUTED.md).
    static func chainBlocks(outputs: Int, ranks: Int) -> Int { min(max(2, ranks), (outputs + Gemm.nr - 1) / Gemm.nr) }

    /// The forward pass when each rank owns a share of W's rows: y = x·W + b as one chain of sums
    /// over W's rows, as one process computes it, passed along the ranks. Rank 0 sums its rows for
    /// a block of output columns and sends the partial sums to rank 1, which continues them over
    /// its rows (a GEMM that loads C goes on exactly where the sums stopped), and so on; the last
    /// rank adds the bias and ReLU, and broadcasts y. Blocks of columns pipeline the chain: rank 1
    /// works on block 0 while rank 0 works on block 1.
    func chainedForward(_ net: Network, count n: Int, x: UnsafeMutablePointer<Float>, y: UnsafeMutablePointer<Float>) {
        let group = net.group, r = group.rank, last = group.size - 1
        let t = ownedTiles(rank: r, of: group.size)
        let k0 = min(t.lowerBound * Gemm.mr, inputs), k1 = min(t.upperBound * Gemm.mr, inputs)
        let blocks = Self.chainBlocks(outputs: outputs, ranks: group.size), tiles = (outputs + Gemm.nr - 1) / Gemm.nr
        func columns(_ j: Int) -> Range<Int> { min(j * tiles / blocks * Gemm.nr, outputs)..<min((j + 1) * tiles / blocks * Gemm.nr, outputs) }
        let link = chainBuffer!  // block j at n * columns(j).lowerBound, n x width floats
        if r > 0 {
            for j in 0..<blocks { _ = group.receive(link + n * columns(j).lowerBound, count: n * columns(j).count, from: r - 1, tag: j) }
        }
        for j in 0..<blocks {
            let c = columns(j), part = link + n * c.lowerBound
            if r > 0 {
                group.wait(j)
                Elementwise.copy(rows: n, cols: c.count, from: part, fromStride: c.count, to: y + c.lowerBound, toStride: outputs)
            }
            net.pool.gemm(GemmJob(m: n, n: c.count, k: k1 - k0, a: .rowMajor(x + k0, cols: inputs),
                                  b: .rowMajor(net.parameters.values + weight + k0 * outputs + c.lowerBound, cols: outputs),
                                  c: y + c.lowerBound, ldc: outputs, accumulate: r > 0,
                                  bias: r == last ? bias.map { UnsafePointer(net.parameters.values + $0 + c.lowerBound) } : nil, relu: r == last && relu,
                                  precision: precision))
            if r < last {
                Elementwise.copy(rows: n, cols: c.count, from: y + c.lowerBound, fromStride: outputs, to: part, toStride: c.count)
                group.send(part, count: n * c.count, to: r + 1, tag: j)
            }
        }
        group.waitAll()
        group.broadcast(y, count: n * outputs, root: last)
    }
}

extension BufferLayout {
    /// A dense layer's rows (`width` floats each, from `base`), placed by node: its backward pass
    /// with the optimizer deals this rank's row blocks by node.
    func denseRows(_ d: DenseStage, width: Int, from base: Int) -> [(Range<Int>, Int)] {
        let tiles = d.ownedTiles(rank: group.rank, of: group.size)
        let parts = DenseUpdateJob.parts(tiles: tiles, unit: d.tileUnit, workers: pool.splitCount), nodes = pool.rangeNodes
        return pool.nodeRanges(parts).enumerated().map { k, items in
            let rows = DenseUpdateJob.rows(items, of: parts, tiles: tiles, unit: d.tileUnit, inputs: d.inputs)
            return ((base + rows.lowerBound * width)..<(base + rows.upperBound * width), nodes[k])
        }
    }
}

/// dy = 0 where the ReLU output y was clamped, one sample of `size` floats per item.
struct ReluMaskJob: ParallelJob, @unchecked Sendable {  // an item writes its sample's gradient
    var dy, y: UnsafeMutablePointer<Float>
    var size: Int
    func run(_ s: Int, _ worker: Int) {
        Elementwise.reluBackward(dy: dy + s * size, y: y + s * size, count: size)
    }
    func bytesMoved(items: Int) -> Int { items * f * 3 * size }
}

/// dx[s, :] = column s of dXᵀ, for a block of `rows` inputs per item: the block's rows of dXᵀ
/// (rows x paddedBatch floats) are transposed 16 x 16 at a time into every sample's run of dx.
struct TransposeOutJob: ParallelJob, @unchecked Sendable {  // an item writes its block of dx's columns
    static let rows = 64
    var inputs, paddedBatch, samples: Int
    var dxT, dx: UnsafeMutablePointer<Float>
    var items: Int { (inputs + Self.rows - 1) / Self.rows }
    func run(_ item: Int, _ worker: Int) {
        let lo = item * Self.rows, hi = min(lo + Self.rows, inputs)
        Elementwise.transpose(rows: hi - lo, cols: samples, from: dxT + lo * paddedBatch, fromStride: paddedBatch,
                              to: dx + lo, toStride: inputs)
    }
}

/// A dense layer's backward pass, by ranges of W's rows (tile-aligned, so every output element
/// is summed as one GEMM over the whole layer would sum it). For each block of `rows` rows of W:
/// dXᵀ's rows (reading those W rows), then dW's rows — into `g` when `optimizer` is nil; otherwise into
/// the worker's scratch and straight into the optimizer on exactly those rows of W, m and v, while W and
/// the gradient rows are in cache (the gradient never goes to memory: writing fc1's 25.7 MB would
/// also read it first, for ownership). dXᵀ row i needs only W row i, so updating a row right after
/// its dXᵀ never feeds a new weight into an old gradient. Where the layer keeps its weights packed
/// in bf16, the block's updated rows (a k-block: blocks start at multiples of 32 rows) are packed
/// there too while they are in cache.
struct DenseUpdateJob: ParallelJob, @unchecked Sendable {  // an item writes its rows of W, m, v and dXᵀ (or its bias columns), and its worker's flag
    static let rows = 32  // also a k-block of the packed bf16 weights: blocks start at multiples of it
    var inputs, outputs, batch: Int
    var x: UnsafeMutablePointer<Float>             // [batch, inputs]
    var dy, packedDy: UnsafeMutablePointer<Float>  // dY [batch, outputs], and packed as dW's B
    var packedDyT, dxT: UnsafeMutablePointer<Float>?  // dYᵀ packed as dXᵀ's B, dXᵀ [inputs, paddedBatch]; nil: no input gradient
    var paddedBatch: Int
    var w, g, m: UnsafeMutablePointer<Float>       // this layer's weights, gradient and first moment in the flat buffers
    var v: UnsafeMutablePointer<Float>?            // and its second moment (nil for SGD)
    var optimizer: OptimizerStep?
    var packedW: UnsafeMutablePointer<Float>?      // the layer's bf16 packed weights to keep current (`DenseStage.packedWeights`)
    var finite: UnsafeMutablePointer<Bool>         // one flag per worker, and-ed
    var tiles: Range<Int>                          // the tiles of Gemm.mr rows of W this process updates (under mpirun, its share)
    var unit: Int                                  // blocks are whole multiples of this many tiles (`DenseStage.tileUnit`)
    var parts: Int
    var sums: ColumnSumJob                         // the bias gradient, items parts..<parts + sumChunks
    var sumChunks: Int
    var rows: Int                                  // where a block of dW's rows goes in the worker's scratch
    var precision: Precision
    unowned(unsafe) var pool: WorkerPool

    /// Items the row blocks of `tiles` (in whole `unit`s of tiles) are cut into for `workers`:
    /// about four a worker.
    static func parts(tiles: Range<Int>, unit: Int, workers: Int) -> Int { min((tiles.count + unit - 1) / unit, 4 * workers) }

    /// The rows of W that items `items` (of `parts` over `tiles`, cut at whole `unit`s of tiles)
    /// update: the job's items and `Network`'s placement of those rows by node both read it from here.
    static func rows(_ items: Range<Int>, of parts: Int, tiles: Range<Int>, unit: Int, inputs: Int) -> Range<Int> {
        let units = (tiles.count + unit - 1) / unit, p = max(parts, 1)
        func row(_ item: Int) -> Int { min(min(tiles.lowerBound + item * units / p * unit, tiles.upperBound) * Gemm.mr, inputs) }
        return row(items.lowerBound)..<row(items.upperBound)
    }

    func run(_ item: Int, _ worker: Int) {
        if item >= parts { sums.run(chunk: item - parts, of: sumChunks); return }
        let block = Self.rows(item..<(item + 1), of: parts, tiles: tiles, unit: unit, inputs: inputs)
        let lo = block.lowerBound, hi = block.upperBound
        let scratch = pool.scratch(worker)
        var ok = true
        var r0 = lo
        while r0 < hi {
            let r = min(Self.rows, hi - r0)
            if let packedDyT, let dxT {
                Gemm.multiply(m: r, n: paddedBatch, k: outputs, a: .rowMajor(w + r0 * outputs, cols: outputs),
                              b: .packed(packedDyT), c: dxT + r0 * paddedBatch, ldc: paddedBatch,
                              accumulate: false, scratch: scratch, precision: precision)
            }
            let at = r0 * outputs
            let gradient = optimizer == nil ? g + at : scratch + rows
            Gemm.multiply(m: r, n: outputs, k: batch, a: MatrixView.transposed(x, cols: inputs).offset(row: r0, col: 0),
                          b: .packed(packedDy), c: gradient, ldc: outputs,
                          accumulate: false, scratch: scratch, precision: precision)
            if let optimizer {
                ok = OptimizerUpdate.apply(optimizer, w: w + at, g: gradient, m: m + at, v: v.map { $0 + at }, count: r * outputs) && ok
                if let packedW {
                    assert(r0 % 32 == 0, "a block of W's rows starts inside a k-block of the packed copy")
                    GemmBF16.packB(k: inputs, n: outputs, b: .rowMajor(w, cols: outputs), kBlock: r0 / 32, into: packedW)
                }
            }
            r0 += r
        }
        if !ok { finite[worker] = false }
    }
}

extension TransposeOutJob {
    func bytesMoved(items: Int) -> Int { f * 2 * samples * min(items * Self.rows, inputs) }
}

extension DenseUpdateJob {
    /// W's rows (and with Adam their moments) read and written, dXᵀ's rows, and x and dY once.
    func bytesMoved(items: Int) -> Int {
        let rows = min(tiles.count * Gemm.mr, inputs)
        // (The packed bf16 weights: 2 bytes a weight, half a float.)
        let perRow = outputs * (optimizer == nil ? 2 : 6) + (dxT == nil ? 0 : paddedBatch) + (packedW == nil ? 0 : outputs / 2)
        return f * (rows * perRow + batch * (inputs + outputs))
    }
}
