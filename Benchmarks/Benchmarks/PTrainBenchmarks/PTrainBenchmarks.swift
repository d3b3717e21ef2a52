// Kernels at the reference network's shapes, the FMA peak, Adam, and whole training steps.
// Throughput rows are iterations per second; each name says the work of one iteration, so
// GFLOP/s = MFLOP an iteration x throughput / 1000. mallocCountTotal shows what a step allocates.
import Benchmark
import Dispatch
import Foundation
import PTKernels
import PTModel
import PTRuntime
import PTTraining

func buffer(_ n: Int, _ seed: UInt64) -> UnsafeMutablePointer<Float> {
    let p = UnsafeMutablePointer<Float>.allocate(capacity: n)
    var r = SplitMix64(seed: seed)
    for i in 0..<n { p[i] = Float(r.nextUnit() - 0.5) }
    return p
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .throughput, .mallocCountTotal],
                                           maxDuration: .seconds(3), maxIterations: 1000)

    // (name, M, N, K, A transposed, accumulate): conv2's GEMMs on the im2col path (a sample at a
    // time: forward, weight gradient with A = im2colᵀ accumulated into the shard's buffer, input
    // gradient) — the path of convs that Winograd does not take; the step runs conv2 by Winograd
    // (benchmarked below) — and fc1's forward and weight gradient at batch 50.
    let shapes = [("conv2 forward, one sample", 196, 128, 576, false, false),
                  ("conv2 dW, one sample", 576, 128, 196, true, true),
                  ("conv2 dX, one sample", 196, 576, 128, false, false),
                  ("fc1 forward", 50, 1024, 6272, false, false),
                  ("fc1 dW", 6272, 1024, 50, true, false)]
    // Each GEMM in fp32, then with bf16 operands (rounded and packed in the call, as a step does
    // for a view; fp32 sums) on each bf16 unit this CPU has (the portable path is for correctness only).
    let precisions = [Precision.fp32] + BF16Path.available.filter { $0 != .portable }.map(Precision.bf16)
    for precision in precisions {
        for (name, m, n, k, transposedA, accumulate) in shapes {
            let a = buffer(m * k, 1), b = buffer(k * n, 2), c = buffer(m * n, 3)
            let scratch = buffer(Gemm.scratchFloats, 4)
            let flops = 2 * m * n * k
            let av: MatrixView = transposedA ? .transposed(a, cols: m) : .rowMajor(a, cols: k)
            let kind = precision.bf16Path.map { "bf16 on \($0) " } ?? ""
            Benchmark("GEMM \(kind)\(name) M=\(m) N=\(n) K=\(k), \(String(format: "%.1f", Double(flops) / 1e6)) MFLOP an iteration") { benchmark in
                for _ in benchmark.scaledIterations {
                    Gemm.multiply(m: m, n: n, k: k, a: av, b: .rowMajor(b, cols: n), c: c, ldc: n,
                                  accumulate: accumulate, scratch: scratch, precision: precision)
                }
            }
        }
    }
    // conv2 forward by Winograd F(2x2, 3x3), one sample, as the training step runs it: input
    // transform, 16 GEMMs [49 tiles x 64]·[64 x 128] against U packed once, output transform with
    // bias and ReLU. 12.8 MFLOP executed for the 28.9 MFLOP of the direct convolution.
    do {
        let g = Window(inH: 14, inW: 14, channels: 64, kernel: 3, stride: 1, same: true)
        let cout = 128, t = Winograd.tiles(g, .f2), pairs = 64 * cout
        let x = buffer(g.inputSize + 16, 1), w = buffer(9 * pairs, 2), bias = buffer(cout, 3)
        let vs = Winograd.matrixStride(g, channels: 64, .f2), ms = Winograd.matrixStride(g, channels: cout, .f2)
        let u = buffer(16 * pairs, 4), v = buffer(16 * vs, 5), m = buffer(16 * ms, 6), y = buffer(g.positions * cout, 7)
        let stride = Gemm.packedBFloats(k: 64, n: cout)
        let packed = buffer(16 * stride, 8), scratch = buffer(Gemm.scratchFloats, 9)
        Winograd.transformWeights(.f2, w, pairs: pairs, range: 0..<pairs, into: u)
        for xi in 0..<16 {
            for block in 0..<Gemm.packedBBlocks(k: 64, n: cout) {
                Gemm.packB(k: 64, n: cout, b: .rowMajor(u + xi * pairs, cols: cout), block: block, into: packed + xi * stride)
            }
        }
        Benchmark("Winograd conv2 forward, one sample, 28.9 MFLOP as a direct conv (12.8 executed) an iteration") { benchmark in
            for _ in benchmark.scaledIterations {
                Winograd.transformInput(g, .f2, x: x, into: v)
                for xi in 0..<16 {
                    Gemm.multiply(m: t, n: cout, k: 64, a: .rowMajor(v + xi * vs, cols: 64), b: .packed(packed + xi * stride),
                                  c: m + xi * ms, ldc: cout, accumulate: false, scratch: scratch)
                }
                Winograd.transformOutput(g, .f2, cout: cout, m: m, bias: bias, relu: true, into: y)
            }
        }
    }
    // ResNet-20's 32-channel conv (16x16 output) forward, one sample, by F(2x2) (64 tiles, 16
    // GEMMs) and F(4x4) (16 tiles, 36 GEMMs), as the step runs them: 4.7 MFLOP as a direct conv.
    for tile in [Winograd.Tile.f2, .f4] {
        let g = Window(inH: 16, inW: 16, channels: 32, kernel: 3, stride: 1, same: true)
        let c = 32, t = Winograd.tiles(g, tile), pairs = c * c, positions = tile.positions
        let x = buffer(g.inputSize + 16, 1), w = buffer(9 * pairs, 2), bias = buffer(c, 3)
        let vs = Winograd.matrixStride(g, channels: c, tile)
        let u = buffer(positions * pairs, 4), v = buffer(positions * vs, 5), m = buffer(positions * vs, 6), y = buffer(g.positions * c, 7)
        let stride = Gemm.packedBFloats(k: c, n: c)
        let packed = buffer(positions * stride, 8), scratch = buffer(Gemm.scratchFloats, 9)
        Winograd.transformWeights(tile, w, pairs: pairs, range: 0..<pairs, into: u)
        for xi in 0..<positions {
            Gemm.packB(k: c, n: c, b: .rowMajor(u + xi * pairs, cols: c), block: 0, into: packed + xi * stride)
        }
        Benchmark("Winograd \(tile == .f2 ? "F(2x2)" : "F(4x4)") forward, one sample, 16x16x32 -> 32, 4.7 MFLOP as a direct conv an iteration") { benchmark in
            for _ in benchmark.scaledIterations {
                Winograd.transformInput(g, tile, x: x, into: v)
                for xi in 0..<positions {
                    Gemm.multiply(m: t, n: c, k: c, a: .rowMajor(v + xi * vs, cols: c), b: .packed(packed + xi * stride),
                                  c: m + xi * vs, ldc: c, accumulate: false, scratch: scratch)
                }
                Winograd.transformOutput(g, tile, cout: c, m: m, bias: bias, relu: true, into: y)
            }
        }
    }
    // The reference network's conv1 (one input channel, 64 outputs), direct: one sample's forward
    // and weight gradient (0.9 MFLOP each, from L1).
    do {
        let g = Window(inH: 28, inW: 28, channels: 1, kernel: 3, stride: 1, same: true), cout = 64
        let xp = buffer(FewChannelConv.paddedFloats(g), 1), w = buffer(9 * cout, 2), bias = buffer(cout, 3)
        let y = buffer(g.positions * cout, 4), dw = buffer(9 * cout, 5), db = buffer(cout, 6)
        Benchmark("conv1 direct forward, one sample, 28x28x1 -> 64, 0.9 MFLOP an iteration") { benchmark in
            for _ in benchmark.scaledIterations {
                FewChannelConv.forward(g, cout: cout, xp: xp, w: w, bias: bias, relu: true, y: y)
            }
        }
        Benchmark("conv1 direct weight gradient, one sample, 28x28x1 -> 64, 0.9 MFLOP an iteration") { benchmark in
            for _ in benchmark.scaledIterations {
                FewChannelConv.weightGradient(g, cout: cout, xp: xp, dy: y, dw: dw, db: db)
            }
        }
    }
    // A small ResNet's 16->16 3x3 conv at 32x32, direct: one sample's forward (the input
    // gradient runs the same kernel) and weight gradient, 4.7 MFLOP each, from L2.
    do {
        let (h, c) = (32, 16)
        let x = buffer(h * h * c, 1), w = buffer(9 * c * c, 2)
        let zeros = UnsafeMutablePointer<Float>.allocate(capacity: DirectConv.zeroFloats(channels: c))
        zeros.initialize(repeating: 0, count: DirectConv.zeroFloats(channels: c))
        let bias = buffer(c, 3), y = buffer(h * h * c, 4), dw = buffer(9 * c * c, 5)
        Benchmark("direct conv forward, one sample, 32x32x16 -> 16, 4.7 MFLOP an iteration") { benchmark in
            for _ in benchmark.scaledIterations {
                DirectConv.forward(height: h, width: h, cin: c, cout: c, x: x, zeros: zeros, w: w, bias: bias, relu: true, rows: 0..<h, y: y)
            }
        }
        Benchmark("direct conv weight gradient, one sample, 32x32x16 -> 16, 4.7 MFLOP an iteration") { benchmark in
            for _ in benchmark.scaledIterations {
                DirectConv.weightGradient(height: h, width: h, cin: c, cout: c, x: x, zeros: zeros, dy: y, dw: dw, accumulate: false)
            }
        }
    }
    // fc1's input gradient as dXᵀ = W · dYᵀ: W read in place, dYᵀ packed once, the batch padded
    // to 64 columns (whole tiles); 822 MFLOP computed for the 642 MFLOP of the 50 real columns.
    do {
        let (m, n, k) = (6272, 64, 1024)
        let w = buffer(m * k, 1), dyT = buffer(k * n, 2), c = buffer(m * n, 3)
        let packed = buffer(Gemm.packedBFloats(k: k, n: 50), 4), scratch = buffer(Gemm.scratchFloats, 5)
        for block in 0..<Gemm.packedBBlocks(k: k, n: 50) {
            Gemm.packB(k: k, n: 50, b: .rowMajor(dyT, cols: n), block: block, into: packed)
        }
        Benchmark("GEMM fc1 dXT M=\(m) N=\(n) (50 used) K=\(k), 642 MFLOP of the batch an iteration") { benchmark in
            for _ in benchmark.scaledIterations {
                Gemm.multiply(m: m, n: n, k: k, a: .rowMajor(w, cols: k), b: .packed(packed), c: c, ldc: n,
                              accumulate: false, scratch: scratch)
            }
        }
    }

    let pool = WorkerPool(threads: 2, scratchFloats: 16)
    struct Touch: ParallelJob, @unchecked Sendable {  // an item writes its own slot
        var sink: UnsafeMutablePointer<Float>
        func run(_ item: Int, _ worker: Int) { sink[item] += 1 }
    }
    let touch = Touch(sink: buffer(2, 9))
    Benchmark("WorkerPool.run, 2 threads, 2 items (an empty parallel region)") { benchmark in
        for _ in benchmark.scaledIterations { pool.run(items: 2, touch) }
    }
    // The alternative the runtime was measured against: Dispatch's shared pool (no pinning, no
    // control over which thread runs an item, so no NUMA placement either).
    Benchmark("DispatchQueue.concurrentPerform, 2 iterations (an empty parallel region)") { benchmark in
        for _ in benchmark.scaledIterations { DispatchQueue.concurrentPerform(iterations: 2) { touch.run($0, 0) } }
    }

    // The all-reduce of a step: the reference network's conv gradients (74,560 floats) in 32 shard
    // buffers, summed in shard order by parameter slices on 2 workers (33 x 298 KB = 9.8 MB moved).
    let convParams = 74_560
    let reduce = ShardReduceJob(shards: buffer(32 * convParams, 10), count: 32, stride: convParams,
                                out: buffer(convParams, 11), total: convParams)
    Benchmark("all-reduce, 32 shards x 74,560 floats, 2 threads, 9.8 MB moved an iteration") { benchmark in
        for _ in benchmark.scaledIterations { pool.run(items: reduce.chunks, reduce) }
    }

    Benchmark("FMA peak, 1 core, 384 MFLOP an iteration") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(FMAPeak.spin(iterations: 1_000_000, seed: 1))
        }
    }

    let params = 6_508_298
    let w = buffer(params, 5), g = buffer(params, 6), m1 = buffer(params, 7), m2 = buffer(params, 8)
    for i in 0..<params { m2[i] = abs(m2[i]) }
    Benchmark("Adam, reference network, 182 MB moved an iteration") { benchmark in
        for _ in benchmark.scaledIterations {
            AdamUpdate.apply(AdamStep(lr: 1e-4, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, t: 10), w: w, g: g, m: m1, v: m2, count: params)
        }
    }

    let data = Bench.synthetic(count: 2000, rows: 28, cols: 28, seed: 1)
    for threads in [1, 2] {
        var config = TrainConfig()
        config.threads = threads
        let trainer = try! Trainer(config: config, data: data)
        for _ in 0..<3 { trainer.trainStep() }  // first steps allocate the workers' scratch
        Benchmark("training step, reference network, batch 50, \(threads) threads, 6.36 GFLOP (convs counted as direct) an iteration") { benchmark in
            for _ in benchmark.scaledIterations { blackHole(trainer.trainStep()) }
        }
    }

    // The reference network in bf16 on this CPU's fastest path (0 mallocs a step as well).
    for batch in [50, 256] {
        var config = TrainConfig()
        config.threads = 2; config.batch = batch; config.precision = .bf16(.best)
        let trainer = try! Trainer(config: config, data: data)
        for _ in 0..<3 { trainer.trainStep() }
        Benchmark("training step, reference network in bf16 on \(BF16Path.best), batch \(batch), 2 threads") { benchmark in
            for _ in benchmark.scaledIterations { blackHole(trainer.trainStep()) }
        }
    }

    // Colour images with every per-step option on: augmentation, SGD with momentum and decay, a
    // cosine schedule inside its warmup (0 mallocs a step as well).
    var rgb = Bench.synthetic(count: 2000, rows: 32, cols: 96, seed: 2)
    rgb.shape = Shape(h: 32, w: 32, c: 3)
    var options = TrainConfig()
    options.threads = 2
    options.spec = try! ModelSpec(parsing: "conv(32,3) relu maxpool(2) conv(64,3) relu maxpool(2) fc(256) relu fc(10)")
    options.augmentation = Augmentation(flip: true, crop: 4)
    options.optimizer.kind = .sgd; options.optimizer.weightDecay = 5e-4; options.optimizer.schedule = .cosine(steps: 100_000)
    options.optimizer.warmup = 50_000
    let colour = try! Trainer(config: options, data: rgb)
    for _ in 0..<3 { colour.trainStep() }
    Benchmark("training step, 32x32 RGB, augment flip,crop=4, sgd, cosine with warmup, batch 50, 2 threads") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(colour.trainStep()) }
    }

    // A ResNet-20 (16/32/64 channels: batch norm, identity and projection shortcuts, global
    // pooling, convs without a bias) on 32x32 RGB, batch 128, the same options (0 mallocs a step as well).
    func block(_ c: Int, stride: Int = 1) -> String {
        "res(conv(\(c),3,\(stride),bias=false) bn relu conv(\(c),3,bias=false) bn) relu"
    }
    let stages = [16, 32, 64].enumerated().map { i, c in
        (0..<3).map { block(c, stride: i > 0 && $0 == 0 ? 2 : 1) }.joined(separator: " ")
    }
    var resnet = options
    resnet.batch = 128
    resnet.spec = try! ModelSpec(parsing: "conv(16,3,bias=false) bn relu " + stages.joined(separator: " ") + " gap fc(10)")
    let resnetTrainer = try! Trainer(config: resnet, data: rgb)
    for _ in 0..<3 { resnetTrainer.trainStep() }
    Benchmark("training step, ResNet-20 (16/32/64), 32x32 RGB, augment, sgd, batch 128, 2 threads") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(resnetTrainer.trainStep()) }
    }
}
