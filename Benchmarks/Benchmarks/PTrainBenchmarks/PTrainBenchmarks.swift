// Kernels at the reference network's shapes, the FMA peak, Adam, and whole training steps.
// Throughput rows are iterations per second; each name says the work of one iteration, so
// GFLOP/s = MFLOP an iteration x throughput / 1000. mallocCountTotal shows what a step allocates.
import Benchmark
import Dispatch
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

    // (name, M, N, K): conv2 forward and weight gradient, fc1 forward, at batch 50.
    let shapes = [("conv2 forward", 9800, 128, 576), ("conv2 dW", 576, 128, 9800), ("fc1 forward", 50, 1024, 6272)]
    for (name, m, n, k) in shapes {
        let a = buffer(m * k, 1), b = buffer(k * n, 2), c = buffer(m * n, 3)
        let scratch = buffer(Gemm.scratchFloats, 4)
        let flops = 2 * m * n * k
        Benchmark("GEMM \(name) M=\(m) N=\(n) K=\(k), \(flops / 1_000_000) MFLOP an iteration") { benchmark in
            for _ in benchmark.scaledIterations {
                Gemm.multiply(m: m, n: n, k: k, a: .rowMajor(a, cols: k), b: .rowMajor(b, cols: n), c: c, ldc: n,
                              accumulate: false, scratch: scratch)
            }
        }
    }

    let pool = WorkerPool(threads: 2, scratchFloats: 16)
    struct Touch: ParallelJob {
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

    Benchmark("FMA peak, 1 core, 38.4 MFLOP an iteration") { benchmark in
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
        Benchmark("training step, reference network, batch 50, \(threads) threads, 6.36 GFLOP an iteration") { benchmark in
            for _ in benchmark.scaledIterations { blackHole(trainer.trainStep()) }
        }
    }
}
