// Checkpoints: safetensors files in PyTorch's layouts and names, plus everything needed to
// continue bit for bit (Adam's moments, the step, the seed, the data position).
//
//   convN.weight [out, in, kh, kw]   convN.bias [out]    (none for a conv with bias=false)
//   bnN.weight, bnN.bias [c]         bnN.running_mean, bnN.running_var [c], bnN.num_batches_tracked []
//   fcN.weight   [out, in]           fcN.bias   [out]   (in: the input flattened as (c, h, w))
//   adam.m.<name>, adam.v.<name>     Adam's (and AdamW's) moments, same names and layouts
//   sgd.momentum_buffer.<name>       SGD's momentum (PyTorch's name for it), same names and layouts
// The metadata holds the format version, spec, input shape, classes and their names, the input
// normalisation (per-channel mean and std), step, seed, batch, the training-set size (with seed,
// step and batch it fixes the data position), the optimizer's settings, the learning-rate schedule
// and warmup, the augmentation, and the side images were resized to as they loaded (or "none").
// Version 2 wrote SGD's momentum as adam.m.* beside zeros as adam.v.*: still read.
import Foundation
import PTKernels
import PTModel

public struct CheckpointState: Equatable, Sendable {
    public var spec: String
    public var input: Shape
    public var classNames: [String]
    public var classes: Int { classNames.count }
    /// What the model's inputs were normalised with.
    public var normalization: Normalization
    public var step: Int
    public var seed: UInt64
    public var batch: Int
    public var trainCount: Int
    public var optimizer: OptimizerSettings
    public var augmentation: Augmentation
    /// What the run's multiply-adds ran in (fp32 for checkpoints that do not say).
    public var precision = Precision.fp32
    /// The format version the file was written in (this ptrain writes `Checkpoint.version`).
    public var formatVersion = Checkpoint.version
    /// The side images were resized and centre-cropped to as they loaded (`--resize`); nil: none.
    public var resize: Int?
    /// False for a version-1 checkpoint, which stored no class names (`classNames` are then
    /// "class 0", ...): whoever reads it with data takes the data's names instead.
    public var namesStored = true

    public init(spec: String, input: Shape, classNames: [String], normalization: Normalization, step: Int, seed: UInt64,
                batch: Int, trainCount: Int, optimizer: OptimizerSettings, augmentation: Augmentation = .none,
                precision: Precision = .fp32, resize: Int? = nil) {
        self.spec = spec; self.input = input; self.classNames = classNames; self.normalization = normalization
        self.step = step; self.seed = seed
        self.batch = batch; self.trainCount = trainCount
        self.optimizer = optimizer; self.augmentation = augmentation; self.precision = precision
        self.resize = resize
    }
}

public enum Checkpoint {
    public static let format = "ptrain-checkpoint"
    public static let version = "3"
    /// Versions this ptrain reads: 1 had no class names (they read as "class 0", ...) and no
    /// normalisation (inputs were pixels / 255); 1 and 2 saved SGD's momentum as adam.m.* and a
    /// second moment of zeros as adam.v.*.
    public static let readable = ["1", "2", "3"]

    /// The optimizer's buffers in a file of `version` for `kind`, each a prefix of the parameters'
    /// names: Adam's two moments, or SGD's momentum.
    static func optimizerBuffers(_ net: Network, kind: OptimizerKind, version: String) -> [(prefix: String, buffer: UnsafeMutablePointer<Float>)] {
        switch kind {
        case .adam, .adamw: return [("adam.m.", net.parameters.moment1), ("adam.v.", net.parameters.moment2!)]
        case .sgd: return [(sgdInAdamNames(version) ? "adam.m." : "sgd.momentum_buffer.", net.parameters.moment1)]
        }
    }

    /// Whether a file of `version` wrote SGD's momentum as adam.m.* (beside zeros as adam.v.*).
    static func sgdInAdamNames(_ version: String) -> Bool { version == "1" || version == "2" }

    /// Prefixes of optimizer state, which a model-only load passes over.
    static let optimizerPrefixes = ["adam.", "sgd."]

    /// The tensor in PyTorch's layout.
    public static func torchLayout(_ t: ParameterTensor, _ src: UnsafePointer<Float>) -> (shape: [Int], values: [Float]) {
        var out = [Float](repeating: 0, count: t.count)
        switch t.kind {
        case let .convWeight(k, cin, cout):
            for o in 0..<cout { for c in 0..<cin { for kh in 0..<k { for kw in 0..<k {
                out[((o * cin + c) * k + kh) * k + kw] = src[((kh * k + kw) * cin + c) * cout + o]
            } } } }
            return ([cout, cin, k, k], out)
        case let .denseWeight(s, outputs):
            for o in 0..<outputs { for c in 0..<s.c { for h in 0..<s.h { for w in 0..<s.w {
                out[o * s.count + (c * s.h + h) * s.w + w] = src[((h * s.w + w) * s.c + c) * outputs + o]
            } } } }
            return ([outputs, s.count], out)
        case .bias, .vector:
            for i in 0..<t.count { out[i] = src[i] }
            return ([t.count], out)
        case .scalar:
            return ([], [src[0]])
        }
    }

    /// The inverse of `torchLayout`.
    public static func fromTorchLayout(_ t: ParameterTensor, _ v: [Float], into dst: UnsafeMutablePointer<Float>) {
        switch t.kind {
        case let .convWeight(k, cin, cout):
            for o in 0..<cout { for c in 0..<cin { for kh in 0..<k { for kw in 0..<k {
                dst[((kh * k + kw) * cin + c) * cout + o] = v[((o * cin + c) * k + kh) * k + kw]
            } } } }
        case let .denseWeight(s, outputs):
            for o in 0..<outputs { for c in 0..<s.c { for h in 0..<s.h { for w in 0..<s.w {
                dst[((h * s.w + w) * s.c + c) * outputs + o] = v[o * s.count + (c * s.h + h) * s.w + w]
            } } } }
        case .bias, .vector, .scalar:
            for i in 0..<t.count { dst[i] = v[i] }
        }
    }

    public static func save(_ net: Network, state: CheckpointState, to path: String) throws {
        var tensors: [SafetensorsTensor] = []
        for (prefix, buffer) in [("", net.weights)] + optimizerBuffers(net, kind: state.optimizer.kind, version: version) {
            for t in net.parameters.tensors {
                let (shape, values) = torchLayout(t, buffer + t.offset)
                tensors.append(SafetensorsTensor(name: prefix + t.name, shape: shape, values: values))
            }
        }
        for t in net.state.tensors {
            let (shape, values) = torchLayout(t, net.state.values + t.offset)
            tensors.append(SafetensorsTensor(name: t.name, shape: shape, values: values))
        }
        let s = state, o = state.optimizer
        let metadata: [(String, String)] = [
            ("format", format), ("format_version", version), ("spec", s.spec),
            ("input_shape", "\(s.input.h),\(s.input.w),\(s.input.c)"), ("classes", "\(s.classes)"),
            ("class_names", String(decoding: try JSONEncoder().encode(s.classNames), as: UTF8.self)),
            ("input_mean", s.normalization.text.mean), ("input_std", s.normalization.text.std),
            ("step", "\(s.step)"), ("seed", "\(s.seed)"), ("batch", "\(s.batch)"), ("train_count", "\(s.trainCount)"),
            ("optimizer", o.kind.rawValue), ("lr", "\(o.lr)"), ("beta1", "\(o.beta1)"), ("beta2", "\(o.beta2)"), ("eps", "\(o.epsilon)"),
            ("weight_decay", "\(o.weightDecay)"), ("momentum", "\(o.momentum)"), ("lr_schedule", o.schedule.description),
            ("warmup", "\(o.warmup)"), ("augment", s.augmentation.description),
            ("precision", s.precision.checkpointFields.precision), ("bf16_path", s.precision.checkpointFields.path),
            ("flatten", "chw"), ("resize", s.resize.map(String.init) ?? "none"),
        ]
        try Safetensors.write(path, tensors: tensors, metadata: metadata)
    }

    /// Reads a checkpoint and its state; `restore` then loads it into a network built from the state.
    public static func load(_ path: String) throws -> (state: CheckpointState, tensors: [String: SafetensorsTensor]) {
        let (tensors, m) = try Safetensors.read(path)
        func field(_ k: String) throws -> String {
            guard let v = m[k] else { throw DataError(path, "checkpoint metadata has no '\(k)'") }
            return v
        }
        func number<T: LosslessStringConvertible>(_ k: String, _: T.Type) throws -> T {
            guard let v = T(try field(k)) else { throw DataError(path, "checkpoint metadata '\(k)' is not a number") }
            return v
        }
        guard m["format"] == format else { throw DataError(path, "not a ptrain checkpoint (metadata format is \(m["format"].map { "'\($0)'" } ?? "missing"))") }
        guard let v = m["format_version"], readable.contains(v) else {
            throw DataError(path, "checkpoint format version \(m["format_version"] ?? "?") is not supported (this ptrain reads \(readable.joined(separator: " and ")))")
        }
        let dims = try field("input_shape").split(separator: ",").compactMap { Int($0) }
        guard dims.count == 3, dims.allSatisfy({ $0 > 0 && $0 <= 4096 }) else { throw DataError(path, "checkpoint input_shape is invalid") }
        let classes = try number("classes", Int.self)
        guard classes >= 1 && classes <= 1 << 20 else { throw DataError(path, "checkpoint metadata has an invalid classes") }
        var names = (0..<classes).map { "class \($0)" }, normalization = Normalization.identity(channels: dims[2])
        // Version 1 knew Adam at a constant rate only: the other settings' defaults.
        var optimizer = OptimizerSettings()
        optimizer.lr = try number("lr", Double.self); optimizer.epsilon = try number("eps", Double.self)
        optimizer.beta1 = try number("beta1", Double.self); optimizer.beta2 = try number("beta2", Double.self)
        var augmentation = Augmentation.none
        if v != "1" {
            guard let kind = OptimizerKind(rawValue: try field("optimizer")) else {
                throw DataError(path, "checkpoint optimizer '\(m["optimizer"]!)' is not one of \(OptimizerKind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            optimizer.kind = kind
            optimizer.weightDecay = try number("weight_decay", Double.self); optimizer.momentum = try number("momentum", Double.self)
            optimizer.warmup = try number("warmup", Int.self)
            guard optimizer.weightDecay.isFinite, optimizer.weightDecay >= 0, optimizer.momentum.isFinite, optimizer.momentum >= 0,
                  optimizer.momentum < 1, optimizer.warmup >= 0 else {
                throw DataError(path, "checkpoint weight_decay, momentum or warmup is out of range")
            }
            switch LRSchedule.parse(try field("lr_schedule"), totalSteps: 1) {
            case let .success(s): optimizer.schedule = s
            case let .failure(e): throw DataError(path, "checkpoint lr_schedule: \(e)")
            }
            switch Augmentation.parse([try field("augment")]) {
            case let .success(a): augmentation = a
            case let .failure(e): throw DataError(path, "checkpoint augment: \(e)")
            }
            guard let decoded = try? JSONDecoder().decode([String].self, from: Data(try field("class_names").utf8)), decoded.count == classes else {
                throw DataError(path, "checkpoint class_names is not a JSON list of \(classes) names")
            }
            guard let n = Normalization(mean: try field("input_mean"), std: try field("input_std")), n.channels == dims[2] else {
                throw DataError(path, "checkpoint input_mean/input_std are not \(dims[2]) finite numbers each (std above 0)")
            }
            names = decoded; normalization = n
        }
        var state = CheckpointState(
            spec: try field("spec"), input: Shape(h: dims[0], w: dims[1], c: dims[2]), classNames: names,
            normalization: normalization, step: try number("step", Int.self), seed: try number("seed", UInt64.self),
            batch: try number("batch", Int.self), trainCount: try number("train_count", Int.self),
            optimizer: optimizer, augmentation: augmentation)
        state.namesStored = v != "1"
        state.formatVersion = v
        if let p = m["precision"] {
            guard let precision = Precision(checkpointPrecision: p, path: m["bf16_path"] ?? "") else {
                throw DataError(path, "checkpoint precision '\(p)' (bf16_path '\(m["bf16_path"] ?? "")') is not fp32 or bf16 on amx, avx512 or portable")
            }
            state.precision = precision
        }
        // Absent in checkpoints written before --resize existed: none.
        if let r = m["resize"], r != "none" {
            guard let side = Int(r), (1...4096).contains(side), side == state.input.h, side == state.input.w else {
                throw DataError(path, "checkpoint resize '\(r)' is not 'none' or the input's side (\(state.input.h))")
            }
            state.resize = side
        }
        guard state.step >= 0, state.batch >= 1, state.trainCount >= 1 else {
            throw DataError(path, "checkpoint metadata has an invalid step, batch, classes or train_count")
        }
        return (state, tensors)
    }

    /// Copies the tensors into `net` (built from the same spec), checking that every tensor is
    /// there with its shape and nothing else is. With `optimizer` (the file's state), the
    /// optimizer's buffers too; without, any optimizer state in the file is passed over.
    public static func restore(_ net: Network, from tensors: [String: SafetensorsTensor], path: String,
                               optimizer: CheckpointState?) throws {
        var expected = Set<String>()
        var buffers = [("", net.weights, net.parameters.tensors)]
        if let s = optimizer {
            buffers += optimizerBuffers(net, kind: s.optimizer.kind, version: s.formatVersion).map { ($0.prefix, $0.buffer, net.parameters.tensors) }
        }
        buffers.append(("", net.state.values, net.state.tensors))
        for (prefix, buffer, list) in buffers {
            for t in list {
                let name = prefix + t.name
                expected.insert(name)
                guard let got = tensors[name] else { throw DataError(path, "checkpoint has no tensor '\(name)' that the model spec needs") }
                let want = torchLayout(t, buffer + t.offset).shape
                guard got.shape == want else {
                    throw DataError(path, "tensor '\(name)' has shape \(got.shape) but the model spec needs \(want)")
                }
                if let bad = got.values.firstIndex(where: { !$0.isFinite }) {
                    throw DataError(path, "tensor '\(name)' holds a non-finite value at index \(bad)")
                }
            }
        }
        // Optimizer state is allowed to be present when only the model is loaded; an SGD run of
        // version 1 or 2 wrote zeros as adam.v.*, which nothing reads.
        let oldSGDZeros = optimizer.map { $0.optimizer.kind == .sgd && sgdInAdamNames($0.formatVersion) } ?? false
        let extra = tensors.keys.filter { name in
            !expected.contains(name) && !(optimizer == nil && optimizerPrefixes.contains { name.hasPrefix($0) })
                && !(oldSGDZeros && name.hasPrefix("adam.v."))
        }.sorted()
        if let first = extra.first {
            throw DataError(path, "checkpoint has tensor '\(first)' that the model spec does not have\(extra.count > 1 ? " (and \(extra.count - 1) more)" : "")")
        }
        for (prefix, buffer, list) in buffers {
            for t in list { fromTorchLayout(t, tensors[prefix + t.name]!.values, into: buffer + t.offset) }
        }
    }
}
