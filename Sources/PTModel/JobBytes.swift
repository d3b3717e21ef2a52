// What each parallel region reads and writes in memory, counted from its operands' sizes (each
// operand once; a worker's scratch and a conv's packed weights stay in cache): the bandwidth floor
// of `ptrain bench --model-cores` (ScalingModel).
import PTKernels
import PTRuntime

private let f = MemoryLayout<Float>.size

extension SplitGemm {
    func bytesMoved(items: Int) -> Int {
        // (A already in bf16 is half the bytes.)
        (job.aBF16 == nil ? f : 2) * job.m * job.k + f * (job.k * job.n + job.m * job.n * (job.accumulate ? 2 : 1))
    }
}

extension PoolJob {
    /// A sample's input and output (and a max-pool's argmax).
    func bytesMoved(items: Int) -> Int {
        let g = p.window, out = g.positions * g.channels
        return items * f * (g.inputSize + out + (p.argmax == nil ? 0 : out))
    }
}

extension ReluMaskJob {
    func bytesMoved(items: Int) -> Int { items * f * 3 * size }
}

extension DropoutJob {
    func bytesMoved(items: Int) -> Int { items * f * d.units * (mode == .evaluate ? 2 : 3) }
}

extension PackRowsJob {
    /// Its rows in fp32, and in bf16.
    func bytesMoved(items: Int) -> Int { min(items * 8, rows) * k * (f + 2) }
}

extension PackBJob {
    func bytesMoved(items: Int) -> Int { f * 2 * k * n * items / max(self.items, 1) }
}

extension PackTwoJob {
    func bytesMoved(items: Int) -> Int { first.bytesMoved(items: first.items) + second.bytesMoved(items: second.items) }
}

extension WinogradWeightsJob {
    func bytesMoved(items: Int) -> Int { f * (9 + 16) * pairs * items / max(chunks, 1) }
}

extension PackWinogradJob {
    func bytesMoved(items: Int) -> Int { items * f * c.window.channels * c.cout * (c.packedWt == nil ? 2 : 3) }
}

extension ConvForwardJob {
    /// A sample's input and what it stores: the conv's output, or the fused pool's output and argmax.
    func bytesMoved(items: Int) -> Int {
        let g = c.window, out: Int
        if let p = c.fusedPool { out = 2 * p.window.positions * p.window.channels } else { out = g.positions * c.cout }
        return items * f * (g.inputSize + out) / parts.count
    }
}

extension ConvBackwardJob {
    /// Per sample its input, output gradient (or the pool's, with its output and argmax) and input
    /// gradient; per shard its weight-gradient buffer.
    func bytesMoved(items: Int) -> Int {
        let perSample: Int
        if let p = c.fusedPool { perSample = 3 * p.window.positions * p.window.channels } else { perSample = 2 * g.positions * cout }
        let samplesPerShard = (samples + shards - 1) / max(shards, 1)
        let shardsRun = (items + parts.count - 1) / parts.count
        return f * (shardsRun * samplesPerShard * (g.inputSize * (dx == nil ? 1 : 2) + perSample) + shardsRun * (g.patch + 1) * cout)
    }
}

extension ShardReduceJob {
    public func bytesMoved(items: Int) -> Int { f * (count + (continues ? 2 : 1)) * min(items * Self.chunk, total) }
}

extension TransposeOutJob {
    func bytesMoved(items: Int) -> Int { f * 2 * samples * min(items * Self.rows, inputs) }
}

extension DenseUpdateJob {
    /// W's rows (and with Adam their moments) read and written, dXᵀ's rows, and x and dY once.
    func bytesMoved(items: Int) -> Int {
        let rows = min(tiles.count * Gemm.mr, inputs)
        let perRow = outputs * (optimizer == nil ? 2 : 6) + (dxT == nil ? 0 : paddedBatch)
        return f * (rows * perRow + batch * (inputs + outputs))
    }
}

extension OptimizerRangesJob {
    /// w, g, m, v read; w, m, v written.
    func bytesMoved(items: Int) -> Int { f * 7 * (0..<items).reduce(0) { $0 + counts[$1] } }
}
