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
            --eps, --seed, --eval-every N, --log-every N, --metrics FILE,
            --checkpoint PATH, --save-every N, --resume PATH.

            """ + Train.specHelp,
        subcommands: [Train.self, Eval.self, Predict.self, Bench.self, Plot.self],
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
    @Option(help: "Model spec (see below; default: the reference network).")
    var spec: String?
    @Option(help: "Worker threads, 1...1024 (default: the machine's cores).")
    var threads: Int?
    @Option(help: "Samples per mini-batch (default 50).")
    var batch: Int?
    @Option(help: "Train until this step (default 3000; with --resume, the total, not the extra).")
    var steps: Int?
    @Option(help: "Train for this many whole epochs instead of --steps.")
    var epochs: Int?
    @Option(help: "Adam learning rate (default 1e-4).")
    var lr: Double?
    @Option(help: "Adam beta1 (default 0.9).")
    var beta1: Double?
    @Option(help: "Adam beta2 (default 0.999).")
    var beta2: Double?
    @Option(help: "Adam epsilon (default 1e-8).")
    var eps: Double?
    @Option(help: "Seed for initialisation, shuffling and dropout (default 1).")
    var seed: UInt64?
    @Option(help: "Evaluate on the test set every N steps (0: only at the end).")
    var evalEvery = 0
    @Option(help: "Print a line and a metrics record every N steps.")
    var logEvery = 100
    @Option(help: "Write JSON Lines metrics to FILE.")
    var metrics: String?
    @Option(help: "Save a safetensors checkpoint to PATH at the end, every --save-every steps and on Ctrl-C.")
    var checkpoint: String?
    @Option(help: "Save the checkpoint every N steps (needs --checkpoint).")
    var saveEvery: Int?
    @Option(help: "Continue exactly from the checkpoint at PATH (its spec, seed, batch and Adam settings).")
    var resume: String?

    func validate() throws {
        if let threads, !(1...1024).contains(threads) {
            throw ValidationError("--threads must be from 1 to 1024, not \(threads)")
        }
        if let batch, batch < 1 { throw ValidationError("--batch must be at least 1, not \(batch)") }
        if let steps, steps < 1 { throw ValidationError("--steps must be at least 1, not \(steps)") }
        if let epochs, epochs < 1 { throw ValidationError("--epochs must be at least 1, not \(epochs)") }
        if steps != nil && epochs != nil { throw ValidationError("--steps and --epochs conflict; give one") }
        if let lr, !(lr.isFinite && lr > 0) { throw ValidationError("--lr must be a finite number above 0, not \(lr)") }
        if let beta1, !(beta1 >= 0 && beta1 < 1) { throw ValidationError("--beta1 must be in [0, 1), not \(beta1)") }
        if let beta2, !(beta2 >= 0 && beta2 < 1) { throw ValidationError("--beta2 must be in [0, 1), not \(beta2)") }
        if let eps, !(eps.isFinite && eps > 0) { throw ValidationError("--eps must be a finite number above 0, not \(eps)") }
        guard evalEvery >= 0 else { throw ValidationError("--eval-every must be 0 or more, not \(evalEvery)") }
        guard logEvery >= 1 else { throw ValidationError("--log-every must be at least 1, not \(logEvery)") }
        if let saveEvery {
            guard saveEvery >= 1 else { throw ValidationError("--save-every must be at least 1, not \(saveEvery)") }
            guard checkpoint != nil else { throw ValidationError("--save-every needs --checkpoint PATH") }
        }
        if let spec { do { _ = try ModelSpec(parsing: spec) } catch let e as SpecError { throw ValidationError("--spec: \(e)") } }
    }

    func run() throws {
        // Resuming: the checkpoint fixes everything that shapes the run; a flag that disagrees is an error.
        var resumed: (state: CheckpointState, tensors: [String: SafetensorsTensor])?
        if let resume { resumed = try Checkpoint.load(resume) }
        var config = TrainConfig()
        // More workers than CPUs only makes them wait for each other's time slices (measured: about
        // half the samples/s at 16 workers on 2 CPUs), and the result is the same bits at any
        // thread count, so run one worker per CPU. `ptrain bench` runs exactly what it is asked.
        let cpus = Numa.shared.cpuCount
        config.threads = min(threads ?? cpus, cpus)
        let oversubscribed = (threads ?? 0) > cpus
        if let r = resumed?.state {
            func agree<T: Equatable>(_ flag: String, _ given: T?, _ saved: T) throws -> T {
                if let given, given != saved {
                    throw UsageError(description: "\(flag) \(given) conflicts with the checkpoint's \(saved) (\(resume!)); drop the flag to resume")
                }
                return saved
            }
            if let spec, try ModelSpec(parsing: spec).layers != ModelSpec(parsing: r.spec).layers {
                throw UsageError(description: "--spec differs from the checkpoint's '\(r.spec)' (\(resume!)); drop the flag to resume")
            }
            config.spec = r.spec
            config.batch = try agree("--batch", batch, r.batch)
            config.seed = try agree("--seed", seed, r.seed)
            config.lr = try agree("--lr", lr, r.lr)
            config.beta1 = try agree("--beta1", beta1, r.beta1)
            config.beta2 = try agree("--beta2", beta2, r.beta2)
            config.epsilon = try agree("--eps", eps, r.epsilon)
        } else {
            config.spec = spec ?? ModelSpec.reference
            config.batch = batch ?? 50
            config.seed = seed ?? 1
            config.lr = lr ?? 1e-4
            config.beta1 = beta1 ?? 0.9
            config.beta2 = beta2 ?? 0.999
            config.epsilon = eps ?? 1e-8
        }
        // Under mpirun rank 0 alone writes files; every rank reads the data (and --resume).
        let rank0 = ProcessGroup.launched.rank == 0
        if let checkpoint, rank0 { try checkWritable(checkpoint) }

        let train = try Dataset.load(directory: data, split: .train)
        let test = try Dataset.load(directory: data, split: .test)
        guard test.rows == train.rows, test.cols == train.cols else {
            throw DataError(data, "test images are \(test.rows)x\(test.cols) but training images are \(train.rows)x\(train.cols)")
        }
        if config.batch > train.count {
            throw UsageError(description: "--batch \(config.batch) is larger than the training set (\(train.count) images in \(data))")
        }
        if let r = resumed?.state {
            guard r.input == Shape(h: train.rows, w: train.cols, c: 1), r.trainCount == train.count else {
                throw UsageError(description: "the checkpoint was trained on \(r.trainCount) images of \(r.input) but \(data) has \(train.count) of \(train.rows)x\(train.cols)x1")
            }
        }
        let group = try ProcessGroup.world()
        let trainer: Trainer
        do { trainer = try Trainer(config: config, data: train, group: group) } catch let e as ShapeError {
            throw UsageError(description: "\(e.message) (input \(train.rows)x\(train.cols)x1)")
        }
        if let r = resumed {
            try Checkpoint.restore(trainer.network, from: r.tensors, path: resume!, optimizer: true)
            trainer.restore(step: r.state.step)
        }
        let totalSteps = epochs.map { $0 * trainer.stepsPerEpoch } ?? steps ?? 3000
        let writer = rank0 ? try metrics.map { try MetricsWriter(path: $0) } : nil
        let interactive = rank0 && ProgressReporter.stderrIsTerminal
        let net = trainer.network
        debugBuildNotice()
        print("ptrain: \(net.spec.text)")
        print("ptrain: \(net.parameterCount) parameters, \(train.count) training / \(test.count) test images, batch \(config.batch), \(totalSteps) steps, \(group.size > 1 ? "\(group.size) ranks x " : "")\(config.threads) threads")
        if let why = Numa.shared.unavailableReason { print("ptrain: NUMA placement off (\(why)); using plain allocation") }
        if oversubscribed {
            print("ptrain: --threads \(threads!) but this process may use \(cpus) CPUs: running \(cpus) workers (the results do not depend on the thread count)")
        }
        if let resume { print("ptrain: resumed from \(resume) at step \(trainer.step)") }
        func save(announce: Bool) throws {
            guard let checkpoint else { return }
            net.gatherDenseState()  // every rank takes part; rank 0 writes
            guard rank0 else { return }
            try Checkpoint.save(net, state: trainer.checkpointState, to: checkpoint)
            if announce { print("ptrain: saved checkpoint at step \(trainer.step) to \(checkpoint)") }
        }
        let progress = ProgressReporter(totalSteps: totalSteps, startStep: trainer.step, batch: config.batch,
                                        interactive: interactive, logEvery: logEvery, metrics: writer)
        Interrupts.install()
        let start = Date(), firstStep = trainer.step
        while trainer.step < totalSteps {
            let loss = trainer.trainStep()
            let step = trainer.step
            guard loss.isFinite, trainer.gradientsFinite else {
                progress.clearLine()
                let layer = trainer.nonFiniteGradient().map { ", first non-finite gradient in \($0)" } ?? ""
                let kept = checkpoint.map { "; the last checkpoint in \($0) is untouched" } ?? ""
                throw DataError("training", "loss became \(loss) at step \(step)\(layer)\(kept); lower --lr or check the data")
            }
            progress.stepDone(step: step, epoch: (step - 1) / trainer.stepsPerEpoch, loss: loss)
            // Every rank stops after the same step: the one after which any rank had a signal.
            let signal = group.maximum(Interrupts.received ?? 0)
            if signal != 0 {
                progress.clearLine()
                let name = signal == SIGINT ? "interrupt" : "SIGTERM"
                if checkpoint != nil { try save(announce: true) } else { print("ptrain: no --checkpoint given; nothing saved") }
                print("ptrain: stopped by \(name) after step \(step)")
                fflush(nil)
                group.barrier()  // no rank exits (and has mpirun end the job) before rank 0 has saved
                group.finish()
                Foundation.exit(128 + signal)
            }
            if let saveEvery, step % saveEvery == 0, step != totalSteps { try save(announce: false) }
            if evalEvery > 0 && step % evalEvery == 0 && step != totalSteps {
                progress.evaluation(step: step, trainer.evaluate(test))
            }
        }
        let wall = Date().timeIntervalSince(start)
        try save(announce: true)
        let final = trainer.evaluate(test)
        progress.evaluation(step: trainer.step, final)
        let done = trainer.step - firstStep
        print(String(format: "done: %d steps in %.1f s, %.0f samples/s, test accuracy %.2f%%, test loss %.4f",
                     done, wall, Double(done * config.batch) / max(wall, 1e-9), final.accuracy * 100, final.loss))
        fflush(nil)
        group.finish()
    }
}

/// Refuses an output path whose directory cannot take the file, before any work is done.
func checkWritable(_ path: String) throws {
    let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
        throw UsageError(description: "\(path): directory \(dir) does not exist")
    }
    guard access(dir, W_OK) == 0 else { throw UsageError(description: "\(path): directory \(dir) is not writable") }
    if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
        throw UsageError(description: "\(path) is a directory")
    }
}

/// Loads a checkpoint's model (not its optimizer state) for eval and predict.
func loadModel(_ path: String, group: ProcessGroup = .single) throws -> (Network, CheckpointState) {
    let (state, tensors) = try Checkpoint.load(path)
    let spec: ModelSpec
    do { spec = try ModelSpec(parsing: state.spec) } catch { throw DataError(path, "checkpoint spec does not parse: \(error)") }
    let net: Network
    do {
        net = try Network(spec: spec, input: state.input, classes: state.classes, capacity: 100,
                          threads: Numa.shared.cpuCount, seed: 0, group: group)
    } catch let e as ShapeError { throw DataError(path, "checkpoint spec: \(e.message)") }
    try Checkpoint.restore(net, from: tensors, path: path, optimizer: false)
    return (net, state)
}

func classNames(_ classes: Int, data: String) -> [String] {
    classes == 10 && data == Dataset.defaultDirectory ? Dataset.fashionNames : (0..<classes).map { "class \($0)" }
}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Test loss, accuracy and confusion matrix of a checkpoint.")
    @Option(help: "A checkpoint written by --checkpoint.")
    var checkpoint: String
    @Option(help: "Directory with MNIST-format IDX files.")
    var data = Dataset.defaultDirectory

    func run() throws {
        let (net, state) = try loadModel(checkpoint, group: try ProcessGroup.world())
        let test = try Dataset.load(directory: data, split: .test)
        guard state.input == Shape(h: test.rows, w: test.cols, c: 1) else {
            throw DataError(data, "images are \(test.rows)x\(test.cols) but the checkpoint's model takes \(state.input)")
        }
        var confusion = [[Int]](repeating: [Int](repeating: 0, count: state.classes), count: state.classes)
        let e = Trainer.evaluate(net, test) { label, predicted in confusion[label][predicted] += 1 }
        print("checkpoint: \(checkpoint) (step \(state.step))")
        print(String(format: "test loss %.4f, test accuracy %.2f%% (%d/%d)", e.loss, e.accuracy * 100, e.correct, e.count))
        let names = classNames(state.classes, data: data)
        let width = max(names.map(\.count).max() ?? 5, 6)
        print("confusion matrix (rows: true class, columns: predicted)")
        print(String(repeating: " ", count: width + 2) + (0..<state.classes).map { String(format: "%5d", $0) }.joined())
        for (i, row) in confusion.enumerated() {
            let label = names[i].padding(toLength: width, withPad: " ", startingAt: 0)
            print("\(label)  " + row.map { String(format: "%5d", $0) }.joined() + "   \(i)")
        }
        fflush(nil)
        net.group.finish()
    }
}

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Classify PGM/PNG images (or test-set images) with a checkpoint: top-3 classes.")
    @Option(help: "A checkpoint written by --checkpoint.")
    var checkpoint: String
    @Option(help: "Predict test-set image i instead of files.")
    var index: Int?
    @Option(help: "Directory with MNIST-format IDX files (for --index and class names).")
    var data = Dataset.defaultDirectory
    @Argument(help: "Grayscale or RGB PNG/PGM images of the model's input size.")
    var images: [String] = []

    func validate() throws {
        if index == nil && images.isEmpty { throw ValidationError("give image files or --index i") }
        if index != nil && !images.isEmpty { throw ValidationError("--index and image files conflict; give one") }
        if let index, index < 0 { throw ValidationError("--index must be 0 or more, not \(index)") }
    }

    func run() throws {
        let (net, state) = try loadModel(checkpoint)
        let size = state.input.count
        var inputs: [(String, [Float])] = []
        if let index {
            let test = try Dataset.load(directory: data, split: .test)
            guard index < test.count else { throw UsageError(description: "--index \(index) is past the \(test.count) test images") }
            var x = [Float](repeating: 0, count: size)
            test.copySample(index, to: &x)
            inputs.append(("test[\(index)] (label \(test.labels[index]))", x))
        } else {
            for path in images {
                let img = try GrayImage.read(path)
                guard img.width == state.input.w, img.height == state.input.h else {
                    throw DataError(path, "image is \(img.width)x\(img.height) but the model takes \(state.input.w)x\(state.input.h)")
                }
                inputs.append((path, img.pixels.map { Float($0) * (1 / 255) }))
            }
        }
        let names = classNames(state.classes, data: data)
        var start = 0
        while start < inputs.count {
            let n = min(net.capacity, inputs.count - start)
            for s in 0..<n { for j in 0..<size { net.input[s * size + j] = inputs[start + s].1[j] } }
            net.forward(count: n, training: false)
            for s in 0..<n {
                let probs = softmax(net.logits + s * state.classes, state.classes)
                let top = probs.enumerated().sorted { $0.element > $1.element }.prefix(3)
                print(inputs[start + s].0 + ": " + top.map { names[$0.offset] + String(format: " %.6f", $0.element) }.joined(separator: ", "))
            }
            start += n
        }
    }

    func softmax(_ logits: UnsafeMutablePointer<Float>, _ n: Int) -> [Double] {
        let l = (0..<n).map { Double(logits[$0]) }
        let m = l.max()!
        let e = l.map { Foundation.exp($0 - m) }
        let sum = e.reduce(0, +)
        return e.map { $0 / sum }
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
        do { _ = try ModelSpec(parsing: spec) } catch let e as SpecError { throw ValidationError("--spec: \(e)") }
        if let modelCores {
            let parts = modelCores.split(separator: ",", omittingEmptySubsequences: false)
            guard !parts.isEmpty, parts.allSatisfy({ Int($0).map { (1...1024).contains($0) } ?? false }) else {
                throw ValidationError("--model-cores must be a comma-separated list of counts from 1 to 1024, not '\(modelCores)'")
            }
        }
        guard bandwidth.isFinite && bandwidth > 0 else { throw ValidationError("--bandwidth must be a number of GB/s above 0, not \(bandwidth)") }
    }

    func run() throws {
        if let modelCores { return try runModel(cores: modelCores.split(separator: ",").map { Int($0)! }) }
        let counts = threads.split(separator: ",").map { Int($0)! }
        let cores = Numa.shared.cpuCount
        debugBuildNotice()
        let peak = PTTraining.Bench.peakGFLOPS(cores: 1)
        print(String(format: "FMA peak: %.1f GFLOP/s per core (measured), %d cores; batch %d, %d timed steps after %d warm-up",
                     peak, cores, batch, steps, warmup))
        // GFLOP/s and % peak count the model's arithmetic (convs as direct ones: 127.1 MFLOP a
        // reference sample); FMA % is what the FMA units did (a Winograd conv does 4/9 of that).
        let group = try ProcessGroup.world()
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
                                            peakPerCore: peak, cores: cores, profile: profile, group: group) { print($0); fflush(nil) }
        } catch let e as ShapeError { throw UsageError(description: e.message) }
        if group.rank == 0 {
            if let json { try AtomicFile.write(json, data: Data(PTTraining.Bench.json(rows, batch: batch, peakPerCore: peak).utf8)) }
            if let svg { try AtomicFile.write(svg, data: Data(PTTraining.Bench.svg(rows).utf8)) }
        }
        fflush(nil)
        group.finish()
    }
}

extension Bench {
    /// `--model-cores`: the scaling model's table (one process; the model is of one machine's cores).
    func runModel(cores: [Int]) throws {
        debugBuildNotice()
        print("batch \(batch), \(steps) recorded steps after \(warmup) warm-up; every row is a prediction")
        let result: (rows: [ModelRow], validation: ModelValidation)
        do {
            result = try PTTraining.Bench.model(spec: spec, batch: batch, cores: cores, steps: steps, warmup: warmup,
                                                bandwidth: bandwidth) { print($0); fflush(nil) }
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

struct Plot: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Draw loss and test accuracy from a --metrics file as SVG.")

    @Argument(help: "A JSON Lines file written by --metrics.")
    var file: String
    @Option(help: "Where to write the SVG.")
    var svg: String

    func run() throws {
        let (loss, acc) = try MetricsPlot.read(file)
        let text = MetricsPlot.svg(loss: loss, accuracy: acc, title: (file as NSString).lastPathComponent)
        try AtomicFile.write(svg, data: Data(text.utf8))
        print("wrote \(svg)")
    }
}

/// A debug build optimises the numeric modules (Package.swift) but not the CLI, data loading and
/// checkpoint code: it trains at about two thirds of the release build's speed. Said once, at start.
func debugBuildNotice() {
    #if DEBUG
    print("ptrain: debug build: the kernels are optimised, data loading and checkpoints are not (about 2/3 of release speed); swift run -c release ptrain ... runs the release build")
    #endif
}

func fail(_ message: String, code: Int32) -> Never {
    // Under mpirun every rank meets the same bad input: rank 0 alone says so.
    if ProcessGroup.launched.rank == 0 { FileHandle.standardError.write(Data("ptrain: error: \(message)\n".utf8)) }
    exit(code)
}

// Under mpirun every rank runs this program; rank 0 alone prints (and writes metrics and checkpoints).
if ProcessGroup.launched.rank > 0 { _ = dup2(open("/dev/null", O_WRONLY), STDOUT_FILENO) }

// A write past RLIMIT_FSIZE should fail with EFBIG (reported, old checkpoint kept), not kill us.
signal(SIGXFSZ, SIG_IGN)

do {
    var command = try PTrain.parseAsRoot()
    try command.run()
} catch let e as UsageError {
    fail(e.description, code: 2)
} catch let e as DataError {
    fail(e.description, code: 1)
} catch let e as ShapeError {
    fail(e.message, code: 2)
} catch let e as LaunchError {
    fail(e.description, code: 2)
} catch {
    let code = PTrain.exitCode(for: error)
    if code == .success { PTrain.exit(withError: error) }  // --help, --version
    let message = PTrain.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
    fail(message, code: code == .validationFailure ? 2 : code.rawValue)
}
