// The per-sample parallel regions of a step, as ParallelJob values: the worker pool runs them
// without allocating (a closure would cost a heap allocation per region).
import PTKernels
import PTRuntime

struct Im2colJob: ParallelJob {
    var g: Window
    var x, col: UnsafeMutablePointer<Float>
    func run(_ s: Int, _ worker: Int) {
        Im2col.forward(g, x: x + s * g.inputSize, col: col + s * g.positions * g.patch)
    }
}

struct Col2imJob: ParallelJob {
    var g: Window
    var dcol, dx: UnsafeMutablePointer<Float>
    func run(_ s: Int, _ worker: Int) {
        Im2col.backward(g, dcol: dcol + s * g.positions * g.patch, dx: dx + s * g.inputSize)
    }
}

struct PoolJob: ParallelJob {
    var p: PoolStage
    var x, y: UnsafeMutablePointer<Float>   // forward: x -> y; backward: y is dy, x is dx
    var backward: Bool
    var output: UnsafeMutablePointer<Float>  // the pool's forward output (for the fused ReLU mask)
    func run(_ s: Int, _ worker: Int) {
        let g = p.window, inSize = g.inputSize, outSize = g.positions * g.channels
        switch (p.argmax, backward) {
        case let (am?, false): MaxPool.forward(g, x: x + s * inSize, y: y + s * outSize, argmax: am + s * outSize)
        case let (am?, true):
            MaxPool.backward(g, dy: y + s * outSize, argmax: am + s * outSize, dx: x + s * inSize,
                             reluOutput: p.masksRelu ? UnsafePointer(output + s * outSize) : nil)
        case (nil, false): AvgPool.forward(g, x: x + s * inSize, y: y + s * outSize)
        case (nil, true): AvgPool.backward(g, dy: y + s * outSize, dx: x + s * inSize)
        }
    }
}

/// dy = 0 where the ReLU output y was clamped, one sample of `size` floats per item.
struct ReluMaskJob: ParallelJob {
    var dy, y: UnsafeMutablePointer<Float>
    var size: Int
    func run(_ s: Int, _ worker: Int) {
        Elementwise.reluBackward(dy: dy + s * size, y: y + s * size, count: size)
    }
}

struct DropoutJob: ParallelJob {
    var d: DropoutStage
    var x, y: UnsafeMutablePointer<Float>   // forward: y = x * mask; backward: x is dx, y is dy
    var mode: Mode
    var seed: UInt64, step: Int
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
            for u in 0..<d.units { xs[u] = ys[u] * m[u] }
        }
    }
}

/// dst[cols, rows] = srcᵀ for a row-major src[rows, cols]; one item per column of src.
struct TransposeJob: ParallelJob {
    var src: UnsafeMutablePointer<Float>
    var rows, cols: Int
    var dst: UnsafeMutablePointer<Float>
    func run(_ j: Int, _ worker: Int) {
        for i in 0..<rows { dst[j * rows + i] = src[i * cols + j] }
    }
}

/// One sample's conv input gradient: dcol = dy · Wᵀ (wt is Wᵀ, [Cout, K]) into the worker's
/// scratch, then col2im into dx; for a 1x1 stride-1 conv dcol is dx itself. Splitting the
/// batch's GEMM by sample keeps every element's k order, so the bits match a whole-batch GEMM.
struct ConvInputGradJob: ParallelJob {
    var g: Window
    var cout: Int
    var dy, wt, dx: UnsafeMutablePointer<Float>
    var viaCol: Bool
    unowned(unsafe) var pool: WorkerPool
    func run(_ s: Int, _ worker: Int) {
        let P = g.positions, K = g.patch
        let scratch = pool.scratch(worker)
        let dcol = viaCol ? scratch + Gemm.scratchFloats : dx + s * P * K
        Gemm.multiply(m: P, n: K, k: cout, a: .rowMajor(dy + s * P * cout, cols: cout), b: .rowMajor(wt, cols: K),
                      c: dcol, ldc: K, accumulate: false, scratch: scratch)
        if viaCol { Im2col.backward(g, dcol: dcol, dx: dx + s * g.inputSize) }
    }
}
