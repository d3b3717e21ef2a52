// `ptrain bench`: steps timed at several thread counts, or the many-core model (--model-cores).
import ArgumentParser
import Foundation
import PTModel
import PTRuntime
import PTTraining

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time training steps at several thread counts (medians), against the measured FMA peak.",
        discussion: "Uses synthetic images (28x28x1 and 10 classes unless --input and --classes say otherwise): a step's time does not depend on pixel values. Speedup and efficiency are against the first thread count given.")

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
    var input = Shape(h: 28, w: 28, c: 1)
    @Option(help: "Classes of the synthetic labels: the spec's last fc must have as many outputs (default 10).")
    var classes = 10
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
        guard (1...(1 << 20)).contains(classes) else { throw ValidationError("--classes must be from 1 to 1048576, not \(classes)") }
        guard bandwidth.isFinite && bandwidth > 0 else { throw ValidationError("--bandwidth must be a number of GB/s above 0, not \(bandwidth)") }
    }

    func run() throws {
        if let modelCores { return try runModel(cores: modelCores.split(separator: ",").map { Int($0)! }) }
        let counts = threads.split(separator: ",").map { Int($0)! }
        let cores = Numa.shared.cpuCount
        let precision = try precisionFlag(self.precision)
        debugBuildNotice()
        print("ptrain: \(precision.startupLine)")
        var peak = PTTraining.Bench.peakGFLOPS(cores: 1)
        print(String(format: "FMA peak: %.1f GFLOP/s per core (measured), %d cores; batch %d of %@ images, %d timed steps after %d warm-up",
                     peak, cores, batch, "\(input)", steps, warmup))
        if case let .bf16(path) = precision {
            // The columns then read against the bf16 units' peak: most of the step's arithmetic is theirs.
            peak = PTTraining.Bench.bf16PeakGFLOPS(path: path)
            print(String(format: "bf16 peak on %@: %.1f GFLOP/s per core (measured: a 32x32 tile from L1/L2); %% peak and FMA %% below are of it",
                         "\(path)", peak))
        }
        // GFLOP/s and % peak count the model's arithmetic (convs as direct ones: 127.1 MFLOP a
        // reference sample); FMA % is what the FMA units did (a Winograd conv does 4/9 of that).
        let group = try ProcessGroup.world()
        try agreeAcrossRanks(precision, group: group)
        if group.size > 1 {
            // Threads are per rank; batch and samples/s are the whole job's; comm ms is rank 0's time in
            // collectives (waiting for the slowest rank included), MB recv what rank 0 received a step.
            print("\(group.size) ranks; threads are per rank, batch and samples/s the whole job's")
            print("threads  step ms(med)  samples/s  speedup  efficiency  GFLOP/s  % peak   FMA %  compute ms  comm ms  MB recv")
        } else {
            print("threads  step ms(med)  samples/s  speedup  efficiency  GFLOP/s  % peak   FMA %")
        }
        let rows: [BenchRow]
        do {
            rows = try PTTraining.Bench.run(spec: spec, threads: counts, batch: batch, steps: steps, warmup: warmup,
                                            peakPerCore: peak, cores: cores, profile: profile, precision: precision,
                                            input: input, classes: classes, group: group) { print($0); fflush(nil) }
        } catch let e as ShapeError { throw UsageError(description: e.message) }
        if group.rank == 0 {
            if let json { try AtomicFile.write(json, data: Data(PTTraining.Bench.json(rows, batch: batch, peakPerCore: peak, precision: precision).utf8)) }
            if let svg { try AtomicFile.write(svg, data: Data(PTTraining.Bench.svg(rows).utf8)) }
        }
        fflush(nil)
        group.finish()
    }
}

extension Bench {
    /// `--model-cores`: the scaling model's table (one process; the model is of one machine's cores).
    func runModel(cores: [Int]) throws {
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
