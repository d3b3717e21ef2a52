// `ptrain bench`: timed training steps at several thread counts, on synthetic images of the
// data's shape (timing does not depend on pixel values), reported as medians.
import Foundation
import PTKernels
import PTModel
import PTRuntime

public struct BenchRow: Sendable {
    /// Processes (mpirun ranks) and worker threads in each.
    public var ranks: Int
    public var threads: Int
    public var medianStepSec: Double
    public var samplesPerSec: Double
    public var speedup: Double
    public var efficiency: Double
    /// The model's arithmetic per second (convolutions counted as direct ones) and that against
    /// the peak measured beside each step (the median of the steps' ratios).
    public var gflops: Double
    public var percentOfPeak: Double
    /// The arithmetic the FMA units did (a Winograd conv does 4/9 or 1/4 of a direct one's) against the peak.
    public var executedPercentOfPeak: Double
    /// The peak those are of: GFLOP/s per core with all the row's workers running it at once
    /// (the FMAs', or in bf16 the tile kernel's), the median of the measurements beside each step.
    public var peakPerCore: Double
    /// Under mpirun: the median step's time in collectives (waiting for the slowest rank
    /// included), the rest of it, and the bytes this rank received per step.
    public var medianCommSec: Double
    public var medianComputeSec: Double
    public var bytesPerStep: Double
}

/// Each item runs the peak loop (the FMAs', or the bf16 tile kernel's) for a few milliseconds on
/// its worker and writes the GFLOP/s it timed. One item per worker, all at once: the rate each
/// core gets while the others run too.
private struct PeakProbeJob: ParallelJob, @unchecked Sendable {  // item i writes rates[i] only
    var precision: Precision
    var rates: UnsafeMutablePointer<Double>
    func run(_ item: Int, _ worker: Int) {
        switch precision {
        case .fp32:
            let iterations = 1_000_000  // 384 MFLOP: ~2.5 ms at 150 GFLOP/s
            let start = DispatchTime.now().uptimeNanoseconds
            _ = FMAPeak.spin(iterations: iterations, seed: Float(item))
            rates[item] = FMAPeak.flops(iterations: iterations) / Double(DispatchTime.now().uptimeNanoseconds - start)
        case let .bf16(path):
            // A few milliseconds on each path (one tile: 1.2 MFLOP).
            rates[item] = BF16Peak.gflops(path: path, tiles: path == .amx ? 2000 : path == .avx512 ? 200 : 20)
        }
    }
}

public enum Bench {
    /// The peak per core (GFLOP/s) of `cores` cores running it at once: the FMAs', or in bf16
    /// the tile kernel's (`probePeak` on a pool of its own).
    public static func peakGFLOPS(cores: Int, precision: Precision = .fp32) -> Double {
        let pool = WorkerPool(threads: cores, scratchFloats: 16)
        let rates = UnsafeMutablePointer<Double>.allocate(capacity: cores)
        defer { rates.deallocate() }
        return probePeak(pool, precision: precision, rates: rates)
    }

    /// The peak per core of `pool`'s workers running at once (GFLOP/s), measured just before a
    /// timed step. The machine's speed drifts (2x between minutes on a shared host), so a step is
    /// set against the peak of its own moment, with as many workers busy as it has, and the row
    /// reports the median of those ratios. The probe is the better of two runs: the higher peak,
    /// the stricter ratio. (With more threads than cores the workers share cores, and their rates
    /// add up to about the cores'.)
    static func probePeak(_ pool: WorkerPool, precision: Precision, rates: UnsafeMutablePointer<Double>) -> Double {
        var best = 0.0
        for _ in 0..<2 {
            pool.run(items: pool.count, PeakProbeJob(precision: precision, rates: rates))
            best = max(best, (0..<pool.count).reduce(0) { $0 + rates[$1] } / Double(pool.count))
        }
        return best
    }

    /// `count` images of random pixels and labels (a step's time does not depend on their values).
    public static func synthetic(count: Int, rows: Int, cols: Int, channels: Int = 1, classes: Int = Dataset.standardClasses,
                                 seed: UInt64) -> Dataset {
        var rng = SplitMix64(seed: seed)
        let pixels = (0..<(count * rows * cols * channels)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let labels = (0..<count).map { _ in Int32(rng.next() % UInt64(classes)) }
        return Dataset(count: count, shape: Shape(h: rows, w: cols, c: channels), pixels: pixels, labels: labels,
                       classNames: (0..<classes).map { "class \($0)" })
    }

    /// The images `bench` times: `input`'s shape, `classes` classes.
    static func benchData(batch: Int, steps: Int, warmup: Int, input: Shape, classes: Int) -> Dataset {
        synthetic(count: max(batch * (steps + warmup), batch), rows: input.h, cols: input.w, channels: input.c, classes: classes, seed: 1)
    }

    public static func run(spec: ModelSpec, threads: [Int], batch: Int, steps: Int, warmup: Int,
                           profile: Bool = false, precision: Precision = .fp32,
                           input: Shape = Shape(h: 28, w: 28, c: 1), classes: Int = Dataset.standardClasses,
                           group: ProcessGroup = .single, log: (String) -> Void) throws -> [BenchRow] {
        let data = benchData(batch: batch, steps: steps, warmup: warmup, input: input, classes: classes)
        var rows: [BenchRow] = []
        var base: (sps: Double, threads: Int)?  // the first row: speedups are against it
        for t in threads {
            var c = TrainConfig()
            c.spec = spec; c.threads = t; c.batch = batch; c.precision = precision
            let trainer = try Trainer(config: c, data: data, group: group)
            for _ in 0..<warmup { trainer.trainStep() }
            var times: [Double] = [], comm: [Double] = [], compute: [Double] = [], peaks: [Double] = []
            var modelRatios: [Double] = [], executedRatios: [Double] = []
            let rates = UnsafeMutablePointer<Double>.allocate(capacity: trainer.network.pool.count)
            defer { rates.deallocate() }
            let net = trainer.network, perStep = Double(batch) / Double(group.size)  // a rank's share of the batch (ranks alike)
            let bytes0 = group.bytesReceived
            for _ in 0..<steps {
                // Each rank measures its own cores; the job's peak is that times the ranks.
                let peak = probePeak(net.pool, precision: precision, rates: rates)
                group.barrier()  // so one rank's probe is not the others' wait in the step
                let start = DispatchTime.now().uptimeNanoseconds, comm0 = group.nanos
                trainer.trainStep()
                let sec = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9, commSec = Double(group.nanos - comm0) / 1e9
                times.append(sec); comm.append(commSec); compute.append(sec - commSec); peaks.append(peak)
                let available = peak * 1e9 * Double(net.pool.count) * sec
                modelRatios.append(net.trainingFlopsPerSample * perStep / available)
                executedRatios.append(net.executedFlopsPerSample * perStep / available)
            }
            // The upper middle of an even count, as the step time has always been reported; a
            // ratio falls as the time rises, so its median is the lower middle (the same step's).
            func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
            func medianRatio(_ xs: [Double]) -> Double { xs.sorted()[(xs.count - 1) / 2] }
            let step = median(times)
            let sps = Double(batch) / step
            if base == nil { base = (sps, t) }
            let speedup = sps / base!.sps
            let threadRatio = Double(t) / Double(base!.threads)
            let gflops = net.trainingFlopsPerSample * sps / 1e9
            let row = BenchRow(ranks: group.size, threads: t, medianStepSec: step, samplesPerSec: sps, speedup: speedup,
                               efficiency: speedup / threadRatio, gflops: gflops, percentOfPeak: 100 * medianRatio(modelRatios),
                               executedPercentOfPeak: 100 * medianRatio(executedRatios), peakPerCore: median(peaks),
                               medianCommSec: median(comm), medianComputeSec: median(compute),
                               bytesPerStep: Double(group.bytesReceived - bytes0) / Double(steps))
            var line = String(format: "%7d  %10.1f  %9.0f  %7.2f  %9.0f%%  %7.1f  %6.1f%%  %6.1f%%  %9.1f", t, step * 1000, sps, speedup,
                              row.efficiency * 100, gflops, row.percentOfPeak, row.executedPercentOfPeak, row.peakPerCore)
            if group.size > 1 {
                line += String(format: "  %10.1f  %7.1f  %7.2f", row.medianComputeSec * 1000, row.medianCommSec * 1000, row.bytesPerStep / 1e6)
            }
            log(line)
            rows.append(row)
            if profile { profileSteps(trainer, steps: steps, log: log) }
        }
        return rows
    }

    /// Where a step goes: mean milliseconds per stage and pass over `steps` further steps (timed
    /// apart from the table above, since reading the clock around every stage costs a little).
    static func profileSteps(_ trainer: Trainer, steps: Int, log: (String) -> Void) {
        let net = trainer.network
        net.startProfiling()
        trainer.lossNanos = 0
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<steps { trainer.trainStep() }
        let total = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6 / Double(steps)
        net.stopProfiling()
        let b = Double(trainer.config.batch), names = net.stageNames, flops = net.stageFlopsPerSample
        func ms(_ ns: UInt64) -> Double { Double(ns) / 1e6 / Double(steps) }
        func rate(_ f: Double, _ t: Double) -> String { f > 0 && t > 0 ? String(format: "%8.1f", f * b / t / 1e6) : "       -" }
        // The name column as wide as the longest name (a ResNet's run past a fixed width).
        let width = max(32, names.map(\.count).max() ?? 0)
        func pad(_ s: String) -> String { "   " + s.padding(toLength: width, withPad: " ", startingAt: 0) }
        log(pad("stage") + "  fwd ms  GFLOP/s   bwd ms  GFLOP/s   (executed arithmetic)")
        var accounted = 0.0
        for (i, name) in names.enumerated() {
            let f = ms(net.profile.forward[i]), bw = ms(net.profile.backward[i])
            accounted += f + bw
            log(pad(name) + String(format: " %7.2f %@  %7.2f %@", f, rate(flops[i].0, f), bw, rate(flops[i].1, bw)))
        }
        let reduce = ms(net.profile.reduce)
        let reduceGBs = reduce > 0 ? Double(net.reduceBytes(batch: trainer.config.batch)) / reduce / 1e6 : 0
        log(pad("conv grad all-reduce") + String(format: " %7.2f  %6.1f GB/s (%d shards)", reduce, reduceGBs,
                                                     Network.shardCount(batch: trainer.config.batch)))
        let loss = ms(trainer.lossNanos), optimizer = ms(net.profile.optimizer)
        accounted += reduce + loss + optimizer
        log(pad("loss") + String(format: " %7.2f", loss))
        log(pad("optimizer (rest)") + String(format: " %7.2f   (fc weights: in their bwd)", optimizer))
        log(pad("other (batch copy)") + String(format: " %7.2f   (step %.2f ms)", max(total - accounted, 0), total))
    }

    /// Each row's `peak_gflops_per_core` is the peak its percentages are of (the bf16 tile's in
    /// bf16, else the FMAs').
    public static func json(_ rows: [BenchRow], batch: Int, precision: Precision = .fp32) -> String {
        let p = precision.checkpointFields
        return "[\n" + rows.map { r in
            "  {\"precision\": \"\(p.precision)\", \"bf16_path\": \"\(p.path)\", " + String(format: "\"ranks\": %d, \"threads\": %d, \"batch\": %d, \"median_step_ms\": %.3f, \"samples_per_sec\": %.1f, \"speedup\": %.3f, \"efficiency\": %.3f, \"gflops\": %.2f, \"percent_of_peak\": %.2f, \"executed_percent_of_peak\": %.2f, \"peak_gflops_per_core\": %.1f, \"median_compute_ms\": %.3f, \"median_comm_ms\": %.3f, \"bytes_received_per_step\": %.0f}",
                   r.ranks, r.threads, batch, r.medianStepSec * 1000, r.samplesPerSec, r.speedup, r.efficiency, r.gflops, r.percentOfPeak,
                   r.executedPercentOfPeak, r.peakPerCore, r.medianComputeSec * 1000, r.medianCommSec * 1000, r.bytesPerStep)
        }.joined(separator: ",\n") + "\n]\n"
    }

    /// Speedup against threads with the ideal line.
    public static func svg(_ rows: [BenchRow]) -> String {
        svg(points: rows.map { ($0.threads, $0.speedup) }, title: "ptrain speedup vs threads", axis: "threads")
    }

    /// Speedup against a count (threads, or the model's cores) with the ideal line.
    public static func svg(points: [(count: Int, speedup: Double)], title: String, axis: String) -> String {
        let w = 520.0, h = 360.0, l = 60.0, b = 50.0, top = 30.0, r = 20.0
        let maxT = Double(points.map(\.count).max() ?? 1)
        let maxS = max(maxT, points.map(\.speedup).max() ?? 1)
        func x(_ t: Double) -> Double { l + t / maxT * (w - l - r) }
        func y(_ s: Double) -> Double { h - b - s / maxS * (h - b - top) }
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        out += "<text x=\"\(w / 2)\" y=\"18\" text-anchor=\"middle\">\(title)</text>\n"
        out += "<line x1=\"\(x(0))\" y1=\"\(y(0))\" x2=\"\(x(maxT))\" y2=\"\(y(maxT))\" stroke=\"#aaa\" stroke-dasharray=\"4 3\"/>\n"
        out += "<text x=\"\(x(maxT) - 4)\" y=\"\(y(maxT) + 14)\" text-anchor=\"end\" fill=\"#888\">ideal</text>\n"
        out += "<rect x=\"\(l)\" y=\"\(top)\" width=\"\(w - l - r)\" height=\"\(h - b - top)\" fill=\"none\" stroke=\"#888\"/>\n"
        let pts = points.map { String(format: "%.1f,%.1f", x(Double($0.count)), y($0.speedup)) }.joined(separator: " ")
        out += "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"\(pts)\"/>\n"
        for p in points {
            out += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#1f77b4\"/>\n", x(Double(p.count)), y(p.speedup))
            out += "<text x=\"\(x(Double(p.count)))\" y=\"\(h - b + 16)\" text-anchor=\"middle\">\(p.count)</text>\n"
        }
        for i in 0...4 {
            let s = maxS * Double(i) / 4
            out += "<text x=\"\(l - 6)\" y=\"\(y(s) + 4)\" text-anchor=\"end\">\(String(format: "%.3g", s))</text>\n"
        }
        out += "<text x=\"\(w / 2)\" y=\"\(h - 12)\" text-anchor=\"middle\">\(axis)</text>\n"
        out += "<text x=\"16\" y=\"\(h / 2)\" transform=\"rotate(-90 16 \(h / 2))\" text-anchor=\"middle\">speedup</text>\n</svg>\n"
        return out
    }
}
