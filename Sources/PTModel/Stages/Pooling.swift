// Max- and average-pooling over VALID windows: its plan, buffers, passes and job. A max-pool
// right after a conv runs inside the conv's per-sample jobs (`ConvStage.fusedPool`).
import PTKernels
import PTRuntime

private let f = MemoryLayout<Float>.size

struct PoolingStage: Stage {
    var window: Window
    var isMax: Bool
    /// A max-pool's argmax per output: byte codes where `MaxPoolCodes` applies, else indices.
    var argmax: UnsafeMutablePointer<Int32>?
    var codes: UnsafeMutablePointer<UInt8>?
    var masksRelu = false  // fused after a conv with ReLU: its backward applies the ReLU mask
    var fused = false      // run by the conv before it (see ConvStage.fusedPool)

    /// maxpool(SIZE, STRIDE) / avgpool(SIZE, STRIDE); a max-pool right after a conv is fused into it.
    static func plan(size: Int, stride: Int, isMax: Bool, _ p: inout StagePlanner) throws {
        let shape = p.shape
        let g = Window(inH: shape.h, inW: shape.w, channels: shape.c, kernel: size, stride: stride, same: false)
        if g.outH == 0 || g.outW == 0 { throw p.refuse("needs at least a \(size)x\(size) input but gets \(shape)") }
        var pool = PoolingStage(window: g, isMax: isMax, argmax: nil)
        if isMax, var c = p.stages.last as? ConvStage {
            pool.masksRelu = c.relu
            pool.fused = true
            c.fusedPool = pool
            p.stages[p.stages.count - 1] = c
        }
        p.stages.append(pool)
        p.shape = Shape(h: g.outH, w: g.outW, c: shape.c)
    }

    /// A max-pool's argmax bytes per sample (0 for an average pool).
    var argmaxBytesPerSample: Int { !isMax ? 0 : codes != nil ? window.positions * window.channels : f * window.positions * window.channels }

    var name: String { "\(isMax ? "max" : "avg")pool \(window.kernel)\(fused ? " (in conv)" : "")" }
    /// A max-pool's argmax, one per output (a byte each as codes).
    var extraFloatsPerSample: Int { isMax ? codeWords(window.positions * window.channels) : 0 }
    /// Floats (4-byte words) that `outputs` argmaxes take.
    private func codeWords(_ outputs: Int) -> Int { MaxPoolCodes.apply(window) ? (outputs + 3) / 4 : outputs }

    mutating func allocate(_ layout: BufferLayout, index: Int, earlier: inout [any Stage]) {
        guard isMax else { return }
        let size = window.positions * window.channels, words = codeWords(size)
        let raw = layout.zeroed(words * layout.capacity, perNode: layout.bySample(index, words))
        if MaxPoolCodes.apply(window) {
            codes = raw.bindMemory(to: UInt8.self, capacity: 4 * words * layout.capacity)
        } else {
            argmax = raw.bindMemory(to: Int32.self, capacity: size * layout.capacity)
        }
        // The conv that runs a fused pool holds a copy of it.
        if fused, var c = earlier.last as? ConvStage {
            c.fusedPool = self
            earlier[earlier.count - 1] = c
        }
    }

    func forward(_ net: Network, _ pass: StagePass) {
        if fused { return }
        net.pool.run(range: pass.samples, PoolingJob(p: self, x: pass.io.x, y: pass.io.y, backward: false))
    }

    func backward(_ net: Network, _ pass: StagePass, optimizer: OptimizerStep?) {
        if fused || !pass.needsInputGradient { return }
        net.pool.run(range: pass.samples, PoolingJob(p: self, x: pass.io.dx, y: pass.io.dy, backward: true))
    }
}

struct PoolingJob: ParallelJob, @unchecked Sendable {  // an item writes its sample's output (and argmax)
    var p: PoolingStage
    var x, y: UnsafeMutablePointer<Float>   // forward: x -> y; backward: y is dy, x is dx
    var backward: Bool
    func run(_ s: Int, _ worker: Int) {
        let g = p.window, inSize = g.inputSize, outSize = g.positions * g.channels
        if let codes = p.codes {
            if backward {
                MaxPoolCodes.backward(g, dy: y + s * outSize, codes: codes + s * outSize, dx: x + s * inSize)
            } else {
                MaxPoolCodes.forward(g, x: x + s * inSize, y: y + s * outSize, codes: codes + s * outSize, reluMasked: false)
            }
            return
        }
        switch (p.argmax, backward) {
        case let (am?, false): MaxPool.forward(g, x: x + s * inSize, y: y + s * outSize, argmax: am + s * outSize)
        case let (am?, true):
            MaxPool.backward(g, dy: y + s * outSize, argmax: am + s * outSize, dx: x + s * inSize)
        case (nil, false): AvgPool.forward(g, x: x + s * inSize, y: y + s * outSize)
        case (nil, true): AvgPool.backward(g, dy: y + s * outSize, dx: x + s * inSize)
        }
    }

    /// A sample's input and output (and a max-pool's argmax).
    func bytesMoved(items: Int) -> Int {
        let g = p.window, out = g.positions * g.channels
        return items * (f * (g.inputSize + out) + p.argmaxBytesPerSample)
    }
}
