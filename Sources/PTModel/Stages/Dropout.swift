// Dropout (training only, keep probability `keep`, inverted scaling): its plan, buffers, passes
// and job. Masks are keyed by (seed, step, sample, unit), so they do not depend on who runs them.
import PTKernels
import PTRuntime

private let f = MemoryLayout<Float>.size

struct DropoutStage: Stage {
    var keep: Float
    var units: Int
    var scales: UnsafeMutablePointer<Float>!  // allocated with the other buffers
    /// After a dense layer with a ReLU: its backward applies the ReLU's mask too (one pass over
    /// the gradient instead of two), and the dense layer leaves it (`DenseStage.reluMaskedAfter`).
    var masksRelu = false

    static func plan(keep: Float, _ p: inout StagePlanner) {
        var d = DropoutStage(keep: keep, units: p.shape.count, scales: nil)
        if var dense = p.stages.last as? DenseStage, dense.relu {
            dense.reluMaskedAfter = true
            p.stages[p.stages.count - 1] = dense
            d.masksRelu = true
        }
        p.stages.append(d)
    }

    var name: String { "dropout \(keep)" }
    /// Its scales (the mask over keep), one per unit.
    var extraFloatsPerSample: Int { units }

    mutating func allocate(_ layout: BufferLayout, index: Int, earlier: inout [any Stage]) {
        scales = layout.floats(units * layout.capacity)
    }

    func forward(_ net: Network, _ pass: StagePass) {
        net.pool.run(range: pass.samples, DropoutJob(d: self, x: pass.io.x, y: pass.io.y, mode: pass.training ? .train : .evaluate,
                                                     seed: pass.seed, step: pass.step))
    }

    func backward(_ net: Network, _ pass: StagePass, optimizer: OptimizerStep?) {
        guard pass.needsInputGradient else { return }
        net.pool.run(range: pass.samples, DropoutJob(d: self, x: pass.io.dx, y: pass.io.dy, mode: .backward, seed: 0, step: 0,
                                                     reluOutput: masksRelu ? pass.io.x : nil))
    }
}

struct DropoutJob: ParallelJob, @unchecked Sendable {  // an item writes its sample's output and mask
    var d: DropoutStage
    var x, y: UnsafeMutablePointer<Float>   // forward: y = x * mask; backward: x is dx, y is dy
    var mode: Mode
    var seed: UInt64, step: Int
    /// Backward: the ReLU output before this dropout, whose mask is applied here as well
    /// (`Elementwise.reluBackward`'s: 0 where it is not > 0).
    var reluOutput: UnsafeMutablePointer<Float>? = nil
    enum Mode { case train, evaluate, backward }
    func run(_ s: Int, _ worker: Int) {
        let m = d.scales + s * d.units, xs = x + s * d.units, ys = y + s * d.units
        switch mode {
        case .train:
            Dropout.fillScales(m, count: d.units, keep: d.keep, seed: seed, step: UInt64(step), sample: UInt64(s))
            for u in 0..<d.units { ys[u] = xs[u] * m[u] }
        case .evaluate:
            ys.update(from: xs, count: d.units)
        case .backward:
            if let r = reluOutput.map({ $0 + s * d.units }) {
                for u in 0..<d.units { xs[u] = r[u] > 0 ? ys[u] * m[u] : 0 }
            } else {
                for u in 0..<d.units { xs[u] = ys[u] * m[u] }
            }
        }
    }

    func bytesMoved(items: Int) -> Int { items * f * d.units * (mode == .evaluate ? 2 : 3) }
}
