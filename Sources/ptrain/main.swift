// ptrain: a thin command line over PTTraining. Usage errors exit 2, run-time failures exit 1,
// each with one line on stderr.
import ArgumentParser
import Foundation
import PTModel
import PTRuntime
import PTTraining

struct PTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ptrain",
        abstract: "Data-parallel CPU training of convolutional networks, with the same bits at any thread count.",
        discussion: """
            Training flags (see 'ptrain train --help'): --data DIR, --spec SPEC,
            --threads N, --batch N, --steps N | --epochs N, --lr, --beta1, --beta2,
            --eps, --seed, --eval-every N, --log-every N, --metrics FILE.

            """ + Train.specHelp,
        subcommands: [Train.self, Bench.self, Plot.self],
        defaultSubcommand: Train.self)
}

struct UsageError: Error, CustomStringConvertible {
    var description: String
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model (the default command).", discussion: specHelp)

    static let specHelp = """
        MODEL SPEC (--spec), layers separated by spaces, commas or '->':
          conv(OUT,K[,STRIDE][,pad=same|valid])  KxK conv + bias; stride 1, SAME
          relu                                   after a conv or fc
          maxpool(SIZE[,STRIDE])                 max pooling; stride = SIZE
          avgpool(SIZE[,STRIDE])                 average pooling; stride = SIZE
          fc(OUT)                                fully connected + bias
          dropout(KEEP)                          keep probability in (0, 1]
        Order: [[conv relu]* pool?]* [fc relu dropout?]* fc(CLASSES).
        The default is the reference network:
          conv(64,3) relu maxpool(2) conv(128,3) relu maxpool(2)
          fc(1024) relu dropout(0.5) fc(10)
        """

    @Option(help: "Directory with MNIST-format IDX files (train-*/t10k-*, .gz or raw).")
    var data = Dataset.defaultDirectory
    @Option(help: "Model spec (see below).")
    var spec = ModelSpec.reference
    @Option(help: "Worker threads, 1...1024 (default: the machine's cores).")
    var threads: Int?
    @Option(help: "Samples per mini-batch.")
    var batch = 50
    @Option(help: "Optimizer steps (default 3000 unless --epochs is given).")
    var steps: Int?
    @Option(help: "Train for whole epochs instead of --steps.")
    var epochs: Int?
    @Option(help: "Adam learning rate.")
    var lr = 1e-4
    @Option(help: "Adam beta1.")
    var beta1 = 0.9
    @Option(help: "Adam beta2.")
    var beta2 = 0.999
    @Option(help: "Adam epsilon.")
    var eps = 1e-8
    @Option(help: "Seed for initialisation, shuffling and dropout.")
    var seed: UInt64 = 1
    @Option(help: "Evaluate on the test set every N steps (0: only at the end).")
    var evalEvery = 0
    @Option(help: "Print a line and a metrics record every N steps.")
    var logEvery = 100
    @Option(help: "Write JSON Lines metrics to FILE.")
    var metrics: String?

    func validate() throws {
        if let threads, !(1...1024).contains(threads) {
            throw ValidationError("--threads must be from 1 to 1024, not \(threads)")
        }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1, not \(batch)") }
        if let steps, steps < 1 { throw ValidationError("--steps must be at least 1, not \(steps)") }
        if let epochs, epochs < 1 { throw ValidationError("--epochs must be at least 1, not \(epochs)") }
        if steps != nil && epochs != nil { throw ValidationError("--steps and --epochs conflict; give one") }
        guard lr.isFinite && lr > 0 else { throw ValidationError("--lr must be a finite number above 0, not \(lr)") }
        guard beta1 >= 0 && beta1 < 1 else { throw ValidationError("--beta1 must be in [0, 1), not \(beta1)") }
        guard beta2 >= 0 && beta2 < 1 else { throw ValidationError("--beta2 must be in [0, 1), not \(beta2)") }
        guard eps.isFinite && eps > 0 else { throw ValidationError("--eps must be a finite number above 0, not \(eps)") }
        guard evalEvery >= 0 else { throw ValidationError("--eval-every must be 0 or more, not \(evalEvery)") }
        guard logEvery >= 1 else { throw ValidationError("--log-every must be at least 1, not \(logEvery)") }
        do { _ = try ModelSpec(parsing: spec) } catch let e as SpecError { throw ValidationError("--spec: \(e)") }
    }

    func run() throws {
        let train = try Dataset.load(directory: data, split: .train)
        let test = try Dataset.load(directory: data, split: .test)
        guard test.rows == train.rows, test.cols == train.cols else {
            throw DataError(data, "test images are \(test.rows)x\(test.cols) but training images are \(train.rows)x\(train.cols)")
        }
        if batch > train.count {
            throw UsageError(description: "--batch \(batch) is larger than the training set (\(train.count) images in \(data))")
        }
        var config = TrainConfig()
        config.spec = spec
        config.threads = threads ?? Numa.shared.cpuCount
        config.batch = batch
        config.lr = lr; config.beta1 = beta1; config.beta2 = beta2; config.epsilon = eps
        config.seed = seed
        let trainer: Trainer
        do { trainer = try Trainer(config: config, data: train) } catch let e as ShapeError {
            throw UsageError(description: "\(e.message) (input \(train.rows)x\(train.cols)x1)")
        }
        let totalSteps = epochs.map { $0 * trainer.stepsPerEpoch } ?? steps ?? 3000
        let writer = try metrics.map { try MetricsWriter(path: $0) }
        let interactive = ProgressReporter.stderrIsTerminal
        let net = trainer.network
        print("ptrain: \(net.spec.text)")
        print("ptrain: \(net.parameterCount) parameters, \(train.count) training / \(test.count) test images, batch \(batch), \(totalSteps) steps, \(config.threads) threads")
        if let why = Numa.shared.unavailableReason { print("ptrain: NUMA placement off (\(why)); using plain allocation") }
        let progress = ProgressReporter(totalSteps: totalSteps, batch: batch, interactive: interactive,
                                        logEvery: logEvery, metrics: writer)
        let start = Date()
        for _ in 0..<totalSteps {
            let loss = trainer.trainStep()
            let step = trainer.step
            guard loss.isFinite else {
                progress.clearLine()
                throw DataError("training", "loss became \(loss) at step \(step); lower --lr or check the data")
            }
            progress.stepDone(step: step, epoch: (step - 1) / trainer.stepsPerEpoch, loss: loss)
            if evalEvery > 0 && step % evalEvery == 0 && step != totalSteps {
                progress.evaluation(step: step, trainer.evaluate(test))
            }
        }
        let wall = Date().timeIntervalSince(start)
        let final = trainer.evaluate(test)
        progress.evaluation(step: trainer.step, final)
        print(String(format: "done: %d steps in %.1f s, %.0f samples/s, test accuracy %.2f%%, test loss %.4f",
                     totalSteps, wall, Double(totalSteps * batch) / wall, final.accuracy * 100, final.loss))
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time training steps at several thread counts (medians), against the measured FMA peak.",
        discussion: "Uses synthetic 28x28 images: a step's time does not depend on pixel values. Speedup and efficiency are against the first thread count given.")

    @Option(help: "Comma-separated thread counts.")
    var threads = "1,2"
    @Option(help: "Samples per mini-batch.")
    var batch = 50
    @Option(help: "Timed steps per thread count (the median is reported).")
    var steps = 20
    @Option(help: "Untimed steps first.")
    var warmup = 3
    @Option(help: "Model spec.")
    var spec = ModelSpec.reference
    @Option(help: "Write the rows as a JSON array to FILE.")
    var json: String?
    @Option(help: "Draw speedup against threads (with the ideal line) to FILE.")
    var svg: String?

    func validate() throws {
        let parts = threads.split(separator: ",", omittingEmptySubsequences: false)
        guard !parts.isEmpty, parts.allSatisfy({ Int($0).map { (1...1024).contains($0) } ?? false }) else {
            throw ValidationError("--threads must be a comma-separated list of counts from 1 to 1024, not '\(threads)'")
        }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1, not \(batch)") }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1, not \(steps)") }
        guard warmup >= 0 else { throw ValidationError("--warmup must be 0 or more, not \(warmup)") }
        do { _ = try ModelSpec(parsing: spec) } catch let e as SpecError { throw ValidationError("--spec: \(e)") }
    }

    func run() throws {
        let counts = threads.split(separator: ",").map { Int($0)! }
        let cores = Numa.shared.cpuCount
        let peak = PTTraining.Bench.peakGFLOPS(cores: 1)
        print(String(format: "FMA peak: %.1f GFLOP/s per core (measured), %d cores; batch %d, %d timed steps after %d warm-up",
                     peak, cores, batch, steps, warmup))
        print("threads  step ms(med)  samples/s  speedup  efficiency  GFLOP/s  % peak")
        let rows: [BenchRow]
        do {
            rows = try PTTraining.Bench.run(spec: spec, threads: counts, batch: batch, steps: steps, warmup: warmup,
                                            peakPerCore: peak, cores: cores) { print($0); fflush(stdout) }
        } catch let e as ShapeError { throw UsageError(description: e.message) }
        if let json { try writeAtomically(Data(PTTraining.Bench.json(rows, batch: batch, peakPerCore: peak).utf8), to: json) }
        if let svg { try writeAtomically(Data(PTTraining.Bench.svg(rows).utf8), to: svg) }
    }
}

struct Plot: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Draw loss and test accuracy from a --metrics file as SVG.")

    @Argument(help: "A JSON Lines file written by --metrics.")
    var file: String
    @Option(help: "Where to write the SVG.")
    var svg: String

    func run() throws {
        let (loss, acc) = try MetricsPlot.read(file)
        let text = MetricsPlot.svg(loss: loss, accuracy: acc, title: (file as NSString).lastPathComponent)
        try writeAtomically(Data(text.utf8), to: svg)
        print("wrote \(svg)")
    }
}

func fail(_ message: String, code: Int32) -> Never {
    FileHandle.standardError.write(Data("ptrain: error: \(message)\n".utf8))
    exit(code)
}

do {
    var command = try PTrain.parseAsRoot()
    try command.run()
} catch let e as UsageError {
    fail(e.description, code: 2)
} catch let e as DataError {
    fail(e.description, code: 1)
} catch let e as ShapeError {
    fail(e.message, code: 2)
} catch {
    let code = PTrain.exitCode(for: error)
    if code == .success { PTrain.exit(withError: error) }  // --help, --version
    let message = PTrain.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
    fail(message, code: code == .validationFailure ? 2 : code.rawValue)
}
