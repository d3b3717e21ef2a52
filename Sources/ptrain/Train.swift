// `ptrain` / `ptrain train`: train a model, with progress, evaluations, checkpoints and interrupts.
import ArgumentParser
import Foundation
import PTKernels
import PTModel
import PTRuntime
import PTTraining

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model (the default command).", discussion: specHelp)

    static let specHelp = """
        MODEL SPEC (--spec), layers separated by spaces, commas or '->':
          conv(OUT,K[,STRIDE][,pad=same|valid])  KxK conv + bias; stride 1, SAME
          relu                                   after a conv, fc, bn or res(...)
          bn                                     batch norm after a conv or fc
          res(...)                               x + F(x): convs, bn, relu inside
          maxpool(SIZE[,STRIDE])                 max pooling; stride = SIZE
          avgpool(SIZE[,STRIDE])                 average pooling; stride = SIZE
          gap                                    global average pooling
          fc(OUT)                                fully connected + bias
          dropout(KEEP)                          keep probability in (0, 1]
        conv(...,bias=false) and fc(...,bias=false) have no bias (before a bn).
        Order: [[conv|res bn? relu?]* pool?]* gap? [fc bn? relu dropout?]* fc(N).
        The default is the reference network:
          conv(64,3) relu maxpool(2) conv(128,3) relu maxpool(2)
          fc(1024) relu dropout(0.5) fc(10)
        README shows a ResNet-8 and a ResNet-20.
        """

    @Option(help: "Data directory: MNIST-format IDX files (train-*/t10k-*, .gz or raw), CIFAR-10 binary batches, or train/ and test/ image folders (docs/DATA.md).")
    var data = Dataset.defaultDirectory
    @Option(help: "Make every image of an image folder N x N as it loads, as torchvision's Resize(N) + CenterCrop(N) do (shorter side to N, antialiased; then the centre). Stored in the checkpoint: eval and predict do the same.")
    var resize: Int?
    @Flag(help: "Feed pixels as [0, 1] instead of normalising each channel by the training set's mean and std.")
    var noNormalize = false
    @Option(help: "Model spec (see below; default: the reference network).", transform: { try ModelSpec(parsing: $0) })
    var spec: ModelSpec?
    @Option(help: "Worker threads, 1...1024 (default: the machine's cores).")
    var threads: Int?
    @Option(help: "Samples per mini-batch (default \(TrainConfig().batch)).")
    var batch: Int?
    @Option(help: "Train until this step (default \(TrainConfig.defaultSteps); with --resume, the total, not the extra).")
    var steps: Int?
    @Option(help: "Train for this many whole epochs instead of --steps.")
    var epochs: Int?
    @Option(help: "adam, adamw or sgd (default \(TrainConfig().optimizer.kind.rawValue)).", transform: { text in
        guard let kind = OptimizerKind(rawValue: text) else { throw ValidationError("--optimizer must be adam, adamw or sgd, not '\(text)'") }
        return kind
    })
    var optimizer: OptimizerKind?
    @Option(help: "Learning rate (default \(TrainConfig().optimizer.lr)); the schedule scales it.")
    var lr: Double?
    @Option(help: "constant, cosine (to 0 at the last step) or step:EVERY:FACTOR (default constant).")
    var lrSchedule: String?
    @Option(help: "Steps of linear warmup to --lr before the schedule (default 0).")
    var warmup: Int?
    @Option(help: "Weight decay: added to the gradient for adam and sgd, decoupled for adamw (default 0).")
    var weightDecay: Double?
    @Option(help: "SGD momentum (default \(TrainConfig().optimizer.momentum)).")
    var momentum: Double?
    @Option(help: "Adam beta1 (default \(TrainConfig().optimizer.beta1)).")
    var beta1: Double?
    @Option(help: "Adam beta2 (default \(TrainConfig().optimizer.beta2)).")
    var beta2: Double?
    @Option(help: "Adam epsilon (default \(TrainConfig().optimizer.epsilon)).")
    var eps: Double?
    @Option(help: "Augment training images: flip (horizontal), crop=N (random crop after N pixels of zero padding); repeat or comma-separate.")
    var augment: [String] = []
    @Option(help: "Seed for initialisation, shuffling and dropout (default \(TrainConfig().seed)).")
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
    @Option(help: "Continue exactly from the checkpoint at PATH (its spec, seed, batch, optimizer, schedule, augmentation and precision).")
    var resume: String?
    @Option(help: "fp32 or bf16: the multiply-adds of convs and dense layers (bf16: bf16 operands, fp32 sums, weights and optimizer; on AMX, else AVX512-BF16, else emulated). Default fp32.")
    var precision: String?
    @Flag(help: "With --resume: continue in the --precision given although the checkpoint was trained in another (the bits then differ from an unbroken run).")
    var changePrecision = false

    func validate() throws {
        if let threads, !(1...1024).contains(threads) {
            throw ValidationError("--threads must be from 1 to 1024, not \(threads)")
        }
        if let batch, batch < 1 { throw ValidationError("--batch must be at least 1, not \(batch)") }
        if let resize, !(1...4096).contains(resize) { throw ValidationError("--resize must be from 1 to 4096, not \(resize)") }
        if let steps, steps < 1 { throw ValidationError("--steps must be at least 1, not \(steps)") }
        if let epochs, epochs < 1 { throw ValidationError("--epochs must be at least 1, not \(epochs)") }
        if steps != nil && epochs != nil { throw ValidationError("--steps and --epochs conflict; give one") }
        if let lr, !(lr.isFinite && lr > 0) { throw ValidationError("--lr must be a finite number above 0, not \(lr)") }
        if let beta1, !(beta1 >= 0 && beta1 < 1) { throw ValidationError("--beta1 must be in [0, 1), not \(beta1)") }
        if let beta2, !(beta2 >= 0 && beta2 < 1) { throw ValidationError("--beta2 must be in [0, 1), not \(beta2)") }
        if let eps, !(eps.isFinite && eps > 0) { throw ValidationError("--eps must be a finite number above 0, not \(eps)") }
        if let weightDecay, !(weightDecay.isFinite && weightDecay >= 0) {
            throw ValidationError("--weight-decay must be a finite number of 0 or more, not \(weightDecay)")
        }
        if let momentum, !(momentum >= 0 && momentum < 1) { throw ValidationError("--momentum must be in [0, 1), not \(momentum)") }
        if let warmup, warmup < 0 { throw ValidationError("--warmup must be 0 or more, not \(warmup)") }
        if let lrSchedule, case let .failure(e) = LRSchedule.parse(lrSchedule, totalSteps: 1) {
            throw ValidationError("--lr-schedule: \(e)")
        }
        if case let .failure(e) = Augmentation.parse(augment) { throw ValidationError("--augment: \(e)") }
        guard evalEvery >= 0 else { throw ValidationError("--eval-every must be 0 or more, not \(evalEvery)") }
        guard logEvery >= 1 else { throw ValidationError("--log-every must be at least 1, not \(logEvery)") }
        if changePrecision && (resume == nil || precision == nil) {
            throw ValidationError("--change-precision needs --resume PATH and --precision")
        }
        if let saveEvery {
            guard saveEvery >= 1 else { throw ValidationError("--save-every must be at least 1, not \(saveEvery)") }
            guard checkpoint != nil else { throw ValidationError("--save-every needs --checkpoint PATH") }
        }
    }

    /// The optimizer's numeric flags with where each lives in the settings: a new one is added
    /// here (besides its declaration and range check), and both a fresh run and a resume take it.
    private var optimizerFlags: [(flag: String, given: Double?, setting: WritableKeyPath<OptimizerSettings, Double>)] {
        [("--lr", lr, \.lr), ("--beta1", beta1, \.beta1), ("--beta2", beta2, \.beta2), ("--eps", eps, \.epsilon),
         ("--weight-decay", weightDecay, \.weightDecay), ("--momentum", momentum, \.momentum)]
    }

    /// The run's settings from the flags, or from the checkpoint being resumed (which fixes
    /// everything that shapes the run: a flag may repeat a setting, not change it).
    private func configuration(resuming resumed: CheckpointState?) throws -> TrainConfig {
        var config = TrainConfig()
        if let r = resumed {
            do { config = try TrainConfig(resuming: r) } catch { throw DataError(resume!, "checkpoint spec does not parse: \(error)") }
        }
        // More workers than CPUs only makes them wait for each other's time slices (measured: about
        // half the samples/s at 16 workers on 2 CPUs), and the result is the same bits at any
        // thread count, so run one worker per CPU. `ptrain bench` runs exactly what it is asked.
        let cpus = Numa.shared.cpuCount
        config.threads = min(threads ?? cpus, cpus)
        if let r = resumed {
            // The checkpoint's settings stand; a flag may repeat one, not change it.
            func agree<T: Equatable>(_ flag: String, _ given: T?, _ saved: T) throws {
                if let given, given != saved {
                    throw UsageError(description: "\(flag) \(given) conflicts with the checkpoint's \(saved) (\(resume!)); drop the flag to resume")
                }
            }
            if let spec, spec.layers != config.spec.layers {
                throw UsageError(description: "--spec differs from the checkpoint's '\(r.spec)' (\(resume!)); drop the flag to resume")
            }
            if let resize, resize != r.resize {
                throw UsageError(description: "--resize \(resize) conflicts with the checkpoint's \(r.resize.map { "--resize \($0)" } ?? "images of one size (no --resize)") (\(resume!)); drop the flag to resume")
            }
            try agree("--batch", batch, r.batch)
            try agree("--seed", seed, r.seed)
            for f in optimizerFlags { try agree(f.flag, f.given, r.optimizer[keyPath: f.setting]) }
            try agree("--optimizer", optimizer, r.optimizer.kind)
            try agree("--warmup", warmup, r.optimizer.warmup)
            var steps = 1
            if case let .cosine(n) = r.optimizer.schedule { steps = n }  // "cosine" given again means the saved one
            try agree("--lr-schedule", try lrSchedule.map { try LRSchedule.parse($0, totalSteps: steps).get() }, r.optimizer.schedule)
            try agree("--augment", augment.isEmpty ? nil : try Augmentation.parse(augment).get(), r.augmentation)
            // The precision and its bf16 path fix the bits: another one only when asked.
            let wanted = try precision.map(precisionFlag)
            if let wanted, wanted != r.precision {
                guard changePrecision else {
                    throw UsageError(description: "--precision \(wanted) conflicts with the checkpoint's \(r.precision) (\(resume!)); add --change-precision to continue in \(wanted) (the bits then differ from an unbroken run)")
                }
                config.precision = wanted
            } else if case let .bf16(p) = r.precision, !BF16Path.available.contains(p) {
                throw UsageError(description: "the checkpoint was trained in \(r.precision), which this CPU lacks (\(resume!)); give --precision bf16 or fp32 with --change-precision to continue on this machine")
            }
        } else {
            // Each flag not given keeps TrainConfig's default.
            if let spec { config.spec = spec }
            if let batch { config.batch = batch }
            config.resize = resize
            if let seed { config.seed = seed }
            for f in optimizerFlags { if let v = f.given { config.optimizer[keyPath: f.setting] = v } }
            if let optimizer { config.optimizer.kind = optimizer }
            if let warmup { config.optimizer.warmup = warmup }
            config.augmentation = try Augmentation.parse(augment).get()
            config.precision = try precision.map(precisionFlag) ?? .fp32
        }
        return config
    }

    func run() throws {
        var resumed: (state: CheckpointState, tensors: [String: SafetensorsTensor])?
        if let resume { resumed = try Checkpoint.load(resume) }
        var config = try configuration(resuming: resumed?.state)
        // Under mpirun rank 0 alone writes files; every rank reads the data (and --resume).
        let rank0 = ProcessGroup.launched.rank == 0
        if let checkpoint, rank0 { try checkWritable(checkpoint) }
        let (train, test) = try loadSplits(resumed: resumed?.state, &config)
        let totalSteps = epochs.map { $0 * (train.count / config.batch) } ?? steps ?? TrainConfig.defaultSteps
        if resumed == nil, let lrSchedule { config.optimizer.schedule = try LRSchedule.parse(lrSchedule, totalSteps: totalSteps).get() }
        let group = try ProcessGroup.world()
        try agreeAcrossRanks(config.precision, group: group)
        let trainer: Trainer
        do { trainer = try Trainer(config: config, data: train, group: group) } catch let e as ShapeError {
            throw UsageError(description: "\(e.message) (input \(train.shape), \(train.classes) classes)")
        }
        if let r = resumed {
            try Checkpoint.restore(trainer.network, from: r.tensors, path: resume!, optimizer: r.state)
            trainer.restore(step: r.state.step)
        }
        let writer = rank0 ? try metrics.map { try MetricsWriter(path: $0) } : nil
        try printStartup(trainer, train: train, test: test, resumed: resumed?.state, totalSteps: totalSteps, ranks: group.size)
        let progress = ProgressReporter(totalSteps: totalSteps, startStep: trainer.step, batch: config.batch,
                                        interactive: rank0 && ProgressReporter.stderrIsTerminal, logEvery: logEvery, metrics: writer)
        Interrupts.install()
        let settings = RunSettings(steps: totalSteps, checkpoint: checkpoint, saveEvery: saveEvery, evalEvery: evalEvery)
        let end: RunEnd
        do {
            end = try trainer.run(settings, test: test, stopRequested: { Interrupts.received ?? 0 }) { event in
                switch event {
                case let .step(step, epoch, loss, lr): progress.stepDone(step: step, epoch: epoch, loss: loss, lr: lr)
                case let .saved(step, path, periodic):
                    if !periodic { progress.clearLine(); print("ptrain: saved checkpoint at step \(step) to \(path)") }
                case let .evaluated(step, e): progress.evaluation(step: step, e)
                }
            }
        } catch let diverged as TrainingDiverged {
            progress.clearLine()
            let kept = checkpoint.map { "; the last checkpoint in \($0) is untouched" } ?? ""
            throw RunFailure(description: "\(diverged)\(kept); lower --lr or check the data")
        }
        switch end {
        case let .stopped(signal, step):
            progress.clearLine()
            if checkpoint == nil { print("ptrain: no --checkpoint given; nothing saved") }
            print("ptrain: stopped by \(signal == SIGINT ? "interrupt" : "SIGTERM") after step \(step)")
            fflush(nil)
            group.finish()
            Foundation.exit(128 + signal)
        case let .finished(done, wall, final):
            print(String(format: "done: %d steps in %.1f s, %.0f samples/s, test accuracy %.2f%%, test loss %.4f",
                         done, wall, Double(done * config.batch) / max(wall, 1e-9), final.accuracy * 100, final.loss))
        }
        fflush(nil)
        group.finish()
    }

    /// The training and test splits, checked against each other, the batch and a resumed
    /// checkpoint; --no-normalize settles the configuration's normalisation.
    private func loadSplits(resumed: CheckpointState?, _ config: inout TrainConfig) throws -> (train: Dataset, test: Dataset) {
        let train = try resumed.map { try loadData(data, .train, for: $0) } ?? loadData(data, .train, resize: config.resize)
        let test = try loadData(data, .test, classNames: train.classNames, channels: train.shape.c, resize: config.resize)
        guard test.shape == train.shape else {
            throw DataError(data, "test images are \(test.shape) but training images are \(train.shape)")
        }
        if config.batch > train.count {
            throw UsageError(description: "--batch \(config.batch) is larger than the training set (\(train.count) images in \(data))")
        }
        if let r = resumed {
            guard r.input == train.shape, r.trainCount == train.count else {
                throw UsageError(description: "the checkpoint was trained on \(r.trainCount) images of \(r.input) but \(data) has \(train.count) of \(train.shape)")
            }
            if noNormalize && r.normalization != .identity(channels: r.input.c) {
                throw UsageError(description: "--no-normalize conflicts with the checkpoint's normalised inputs (\(resume!)); drop the flag to resume")
            }
        } else if noNormalize {
            config.normalization = .identity(channels: train.shape.c)
        }
        return (train, test)
    }

    /// The lines a run starts with: the model, the data and its normalisation, the optimizer,
    /// the precision, the sizes, and what the machine or a resume changed.
    private func printStartup(_ trainer: Trainer, train: Dataset, test: Dataset, resumed: CheckpointState?,
                              totalSteps: Int, ranks: Int) throws {
        let net = trainer.network, config = trainer.config, n = trainer.normalization
        debugBuildNotice()
        print("ptrain: \(net.spec.text)")
        print("ptrain: \(data): \(train.count) training / \(test.count) test images of \(train.shape), \(train.classes) classes (\(try Dataset.layout(of: data).rawValue)); inputs " + (n == .identity(channels: n.channels) ? "as pixels / 255" : "normalised, mean " + n.mean.map { String(format: "%.3f", $0) }.joined(separator: "/") + " std " + n.std.map { String(format: "%.3f", $0) }.joined(separator: "/")))
        print("ptrain: \(config.optimizer)" + (config.augmentation.isNone ? "" : "; augment \(config.augmentation)"))
        print("ptrain: \(config.precision.startupLine)")
        if let r = resumed, r.precision != config.precision {
            print("ptrain: the checkpoint was trained in \(r.precision); continuing in \(config.precision) (--change-precision): the bits differ from an unbroken run")
        }
        print("ptrain: \(net.parameters.count) parameters, batch \(config.batch), \(totalSteps) steps, \(ranks > 1 ? "\(ranks) ranks x " : "")\(config.threads) threads")
        if let why = Numa.shared.unavailableReason { print("ptrain: NUMA placement off (\(why)); using plain allocation") }
        if let threads, threads > config.threads {
            print("ptrain: --threads \(threads) but this process may use \(config.threads) CPUs: running \(config.threads) workers (the results do not depend on the thread count)")
        }
        if let resume { print("ptrain: resumed from \(resume) at step \(trainer.step)") }
    }
}
