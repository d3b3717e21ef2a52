// `ptrain bench`: steps timed at several thread counts, or the many-core model (--model-cores).
import ArgumentParser
import Foundation
import PTModel
import PTRuntime
import PTTraining

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time training steps at several thread counts (medians), against the measured FMA peak.",
        discussion: "Uses synthetic images (28x28x1 and 10 classes unless --input and --classes, or --data, say otherwise): a step's time does not depend on pixel values. With --data the training split is loaded first, timed (images/s, peak memory), and gives the shape and classes. Speedup and efficiency are against the first thread count given.")

    @Option(help: "Comma-separated thread counts.")
    var threads = "1,2"
    @Option(help: "Samples per mini-batch.")
    var batch = TrainConfig().batch
    @Option(help: "Timed steps per thread count (the median is reported).")
    var steps = 20
    @Option(help: "Untimed steps first.")
    var warmup = 3
    @Option(help: "Model spec (default: the reference network).", transform: { try ModelSpec(parsing: $0) })
    var spec = ModelSpec.referenceModel
    @Option(help: "The images' shape, HxWxC (default 28x28x1).", transform: { text in
        let d = text.lowercased().split(separator: "x", omittingEmptySubsequences: false).map { Int($0) }
        guard d.count == 3, let h = d[0], let w = d[1], let c = d[2], (1...4096).contains(h), (1...4096).contains(w), (1...64).contains(c) else {
            throw ValidationError("--input must be HxWxC (each from 1, at most 4096x4096x64), as in 32x32x3, not '\(text)'")
        }
        return Shape(h: h, w: w, c: c)
    })
    var input: Shape?
    @Option(help: "Classes of the synthetic labels: the spec's last fc must have as many outputs (default 10).")
    var classes: Int?
    @Option(help: "Take the input shape and classes from this data directory's training split (loaded and timed first), instead of --input and --classes.")
    var data: String?
    @Option(help: "With --data: make an image folder's images N x N as they load, as train --resize does.")
    var resize: Int?
    @Option(help: "Write the rows as a JSON array to FILE.")
    var json: String?
    @Option(help: "Draw speedup against threads (with the ideal line) to FILE.")
    var svg: String?
    @Option(help: "fp32 or bf16: the multiply-adds of convs and dense layers (bf16: on AMX, else AVX512-BF16, else emulated).")
    var precision = "fp32"
    @Flag(help: "After each row, time every stage's forward and backward pass, the loss and Adam.")
    var profile = false
    @Option(help: "Instead of the thread sweep: predict these core counts from a step recorded at one worker, item by item (checked against 2 workers in the same run).")
    var modelCores: String?
    @Option(help: "With --model-cores: the target machine's memory bandwidth in GB/s (default 200: a current 8-channel DDR5 server socket sustains about that).")
    var bandwidth = 200.0

    func validate() throws {
        let parts = threads.split(separator: ",", omittingEmptySubsequences: false)
        guard !parts.isEmpty, parts.allSatisfy({ Int($0).map { (1...1024).contains($0) } ?? false }) else {
            throw ValidationError("--threads must be a comma-separated list of counts from 1 to 1024, not '\(threads)'")
        }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1, not \(batch)") }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1, not \(steps)") }
        guard warmup >= 0 else { throw ValidationError("--warmup must be 0 or more, not \(warmup)") }
        if let modelCores {
            let parts = modelCores.split(separator: ",", omittingEmptySubsequences: false)
            guard !parts.isEmpty, parts.allSatisfy({ Int($0).map { (1...1024).contains($0) } ?? false }) else {
                throw ValidationError("--model-cores must be a comma-separated list of counts from 1 to 1024, not '\(modelCores)'")
            }
        }
        if let classes, !(1...(1 << 20)).contains(classes) { throw ValidationError("--classes must be from 1 to 1048576, not \(classes)") }
        if data != nil && (input != nil || classes != nil) {
            throw ValidationError("--data gives the input shape and classes; drop --input and --classes, or --data")
        }
        if let resize {
            guard data != nil else { throw ValidationError("--resize applies to the images --data loads; give --data DIR") }
            guard (1...4096).contains(resize) else { throw ValidationError("--resize must be from 1 to 4096, not \(resize)") }
        }
        guard bandwidth.isFinite && bandwidth > 0 else { throw ValidationError("--bandwidth must be a number of GB/s above 0, not \(bandwidth)") }
    }

    /// The input shape and classes: --data's (its training split loaded, and the load timed), or
    /// --input's and --classes'.
    func shapeAndClasses() throws -> (Shape, Int) {
        guard let data else { return (input ?? Shape(h: 28, w: 28, c: 1), classes ?? Dataset.standardClasses) }
        let start = DispatchTime.now().uptimeNanoseconds
        let set = try loadData(data, .train, resize: resize)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        if ProcessGroup.launched.rank == 0 {
            print(String(format: "loaded %d training images of %@ (%d classes) from %@ in %.2f s: %.0f images/s; peak memory %@",
                         set.count, "\(set.shape)", set.classes, data, seconds, Double(set.count) / max(seconds, 1e-9),
                         AvailableMemory.describe(peakResidentBytes())))
        }
        return (set.shape, set.classes)
    }

    func run() throws {
        let (input, classes) = try shapeAndClasses()
        if let modelCores { return try runModel(cores: modelCores.split(separator: ",").map { Int($0)! }, input: input, classes: classes) }
        let counts = threads.split(separator: ",").map { Int($0)! }
        let cores = Numa.shared.cpuCount
        let precision = try precisionFlag(self.precision)
        debugBuildNotice()
        print("ptrain: \(precision.startupLine)")
        let peak = PTTraining.Bench.peakGFLOPS(cores: 1)
        print(String(format: "FMA peak: %.1f GFLOP/s per core (measured), %d cores; batch %d of %@ images, %d timed steps after %d warm-up",
                     peak, cores, batch, "\(input)", steps, warmup))
        if case let .bf16(path) = precision {
            // The columns then read against the bf16 units' peak: most of the step's arithmetic is theirs.
            print(String(format: "bf16 peak on %@: %.1f GFLOP/s per core (measured: a 32x32 tile from L1/L2); %% peak and FMA %% below are of this tile's peak, measured beside each step",
                         "\(path)", PTTraining.Bench.peakGFLOPS(cores: 1, precision: precision)))
        }
        // GFLOP/s and % peak count the model's arithmetic (convs as direct ones: 127.1 MFLOP a
        // reference sample); FMA % is what the FMA units did (a Winograd conv does 4/9 or 1/4 of that).
        // Both are medians of each step against the peak measured just before it on all the
        // row's workers at once (peak/core: the median of those), since the machine's speed drifts.
        let group = try ProcessGroup.world()
        try agreeAcrossRanks(precision, group: group)
        if group.size > 1 {
            // Threads are per rank; batch and samples/s are the whole job's; comm ms is rank 0's time in
            // collectives (waiting for the slowest rank included), MB recv what rank 0 received a step.
            print("\(group.size) ranks; threads are per rank, batch and samples/s the whole job's")
            print("threads  step ms(med)  samples/s  speedup  efficiency  GFLOP/s  % peak   FMA %  peak/core  compute ms  comm ms  MB recv")
        } else {
            print("threads  step ms(med)  samples/s  speedup  efficiency  GFLOP/s  % peak   FMA %  peak/core")
        }
        let rows: [BenchRow]
        do {
            rows = try PTTraining.Bench.run(spec: spec, threads: counts, batch: batch, steps: steps, warmup: warmup,
                                            profile: profile, precision: precision,
                                            input: input, classes: classes, group: group) { print($0); fflush(nil) }
        } catch let e as ShapeError { throw UsageError(description: e.message) }
        if group.rank == 0 {
            if let json { try AtomicFile.write(json, data: Data(PTTraining.Bench.json(rows, batch: batch, precision: precision).utf8)) }
            if let svg { try AtomicFile.write(svg, data: Data(PTTraining.Bench.svg(rows).utf8)) }
        }
        fflush(nil)
        group.finish()
    }
}

extension Bench {
    /// `--model-cores`: the scaling model's table (one process; the model is of one machine's cores).
    func runModel(cores: [Int], input: Shape, classes: Int) throws {
        let precision = try precisionFlag(self.precision)
        debugBuildNotice()
        print("ptrain: \(precision.startupLine)")
        print("batch \(batch), \(steps) recorded steps after \(warmup) warm-up; every row is a prediction; the target's memory bandwidth \(bandwidth) GB/s (--bandwidth)")
        let result: (rows: [ModelRow], validation: ModelValidation)
        do {
            result = try PTTraining.Bench.model(spec: spec, batch: batch, cores: cores, steps: steps, warmup: warmup,
                                                bandwidth: bandwidth, precision: precision, input: input, classes: classes) { print($0); fflush(nil) }
        } catch let e as ShapeError { throw UsageError(description: e.message) }
        guard ProcessGroup.launched.rank == 0 else { return }  // (under mpirun every rank models alone)
        if let json {
            try AtomicFile.write(json, data: Data(PTTraining.Bench.modelJSON(result.rows, validation: result.validation,
                                                                            batch: batch, bandwidth: bandwidth).utf8))
        }
        if let svg {
            let points = result.rows.map { (count: $0.cores, speedup: $0.speedup) }
            try AtomicFile.write(svg, data: Data(PTTraining.Bench.svg(points: points, title: "ptrain predicted speedup (model)", axis: "cores").utf8))
        }
    }
}

/// The most memory this process has held at once (the kernel's high-water mark of resident pages).
func peakResidentBytes() -> Int {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return usage.ru_maxrss * 1024
}
