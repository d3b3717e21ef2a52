import Foundation
import PTKernels
import PTModel
import PTTestSupport
import PTTraining
import Testing

func bits(_ p: UnsafeMutablePointer<Float>, _ n: Int) -> [UInt32] { (0..<n).map { p[$0].bitPattern } }

@Test func torchLayoutRoundTripsAndMatchesPyTorchIndexing() throws {
    let spec = try ModelSpec(parsing: "conv(3,2) relu maxpool(2) conv(4,3,pad=valid,bias=false) bn relu fc(5) bn relu fc(10)")
    let net = try Network(spec: spec, input: Shape(h: 9, w: 8, c: 2), classes: 10, capacity: 1, threads: 1, seed: 3)
    #expect(net.parameters.tensors.map(\.name) == ["conv1.weight", "conv1.bias", "conv2.weight", "bn1.weight", "bn1.bias", "fc1.weight", "fc1.bias",
                                        "bn2.weight", "bn2.bias", "fc2.weight", "fc2.bias"])
    #expect(net.state.tensors.map(\.name) == ["bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked",
                                             "bn2.running_mean", "bn2.running_var", "bn2.num_batches_tracked"])
    for t in net.state.tensors {
        #expect(Checkpoint.torchLayout(t, net.state.values + t.offset).shape == (t.name.hasSuffix("tracked") ? [] : [t.count]))
    }
    for t in net.parameters.tensors {
        let (shape, v) = Checkpoint.torchLayout(t, net.weights + t.offset)
        var back = [Float](repeating: .nan, count: t.count)
        Checkpoint.fromTorchLayout(t, v, into: &back)
        #expect(back.map(\.bitPattern) == bits(net.weights + t.offset, t.count), "\(t.name)")
        switch t.kind {
        case let .convWeight(k, cin, cout):
            #expect(shape == [cout, cin, k, k])
            // torch [o][c][kh][kw] == ptrain [kh][kw][c][o], spot-checked at the last element of each axis.
            let (o, c, kh, kw) = (cout - 1, cin - 1, k - 1, 0)
            #expect(v[((o * cin + c) * k + kh) * k + kw] == net.weights[t.offset + ((kh * k + kw) * cin + c) * cout + o])
        case let .denseWeight(s, out):
            #expect(shape == [out, s.count])
            if s.h > 1 {
                // torch flattens (c, h, w); ptrain (h, w, c).
                let (o, c, h, w) = (out - 1, 1, s.h - 1, 0)
                #expect(v[o * s.count + (c * s.h + h) * s.w + w] == net.weights[t.offset + ((h * s.w + w) * s.c + c) * out + o])
            }
        case .bias, .vector:
            #expect(shape == [t.count])
        case .scalar:
            #expect(shape == [])
        }
    }
}

@Test(arguments: [(1, 3), (2, 1), (4, 2)])
func resumeIsExactAcrossThreadCounts(_ threads: (Int, Int)) throws {
    try checkResume(smallSpec, threads)
}

/// Batch norm's running statistics are part of what a checkpoint carries: the resumed run's
/// statistics, weights and moments are the unbroken run's (a net with every ResNet stage).
@Test(arguments: [(1, 2), (2, 3)])
func resumeIsExactWithBatchNormAndGlobalPooling(_ threads: (Int, Int)) throws {
    try checkResume("conv(8,3,bias=false) bn relu maxpool(2) res(conv(8,3,bias=false) bn relu conv(8,3,bias=false) bn) relu res(conv(16,3,2,bias=false) bn relu conv(16,3,bias=false) bn) relu gap fc(16,bias=false) bn relu fc(10)", threads)
}

private func checkResume(_ spec: String, _ threads: (Int, Int)) throws {
    let data = try fashionSlice(800)
    let dir = tempDir()
    defer { Scratch.remove(dir) }
    var c = TrainConfig()
    c.spec = try ModelSpec(parsing: spec); c.batch = 40; c.seed = 9; c.optimizer.lr = 1e-3; c.threads = threads.0
    // 2N steps in one go (N = 12 crosses an epoch boundary: 800 / 40 = 20 steps an epoch).
    let whole = try Trainer(config: c, data: data)
    for _ in 0..<24 { whole.trainStep() }
    // N steps, save, a fresh process-like trainer at another thread count, resume, N more.
    let first = try Trainer(config: c, data: data)
    for _ in 0..<12 { first.trainStep() }
    try Checkpoint.save(first.network, state: first.checkpointState, to: dir + "/ck.safetensors")
    let (state, tensors) = try Checkpoint.load(dir + "/ck.safetensors")
    #expect(state == first.checkpointState)
    var c2 = c
    c2.threads = threads.1
    let second = try Trainer(config: c2, data: data)
    try Checkpoint.restore(second.network, from: tensors, path: "ck", optimizer: first.checkpointState)
    second.restore(step: state.step)
    for _ in 0..<12 { second.trainStep() }
    let n = whole.network.parameters.count
    #expect(firstDifference(bits(whole.network.weights, n), bits(second.network.weights, n)) == nil)
    #expect(firstDifference(bits(whole.network.parameters.moment1, n), bits(second.network.parameters.moment1, n)) == nil)
    #expect(firstDifference(bits(whole.network.parameters.moment2!, n), bits(second.network.parameters.moment2!, n)) == nil)
    let k = whole.network.state.count
    #expect(firstDifference(bits(whole.network.state.values, k), bits(second.network.state.values, k)) == nil)
    if k > 0 { #expect(whole.network.state.values[whole.network.state.tensors[2].offset] == 24) }  // bn1.num_batches_tracked
}

func safetensorsBytes(header: String, data: [UInt8]) -> [UInt8] {
    let h = Array(header.utf8)
    var out = [UInt8]()
    for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: UInt64(h.count) >> (8 * UInt64(i)))) }
    return out + h + data
}

@Test(arguments: [
    ("short", [UInt8](repeating: 0, count: 5), "shorter than the 8-byte header length"),
    ("header past end", [255, 255, 0, 0, 0, 0, 0, 0, 123], "runs past the end"),
    ("huge header", [0, 0, 0, 0, 0, 0, 0, 1] + [UInt8](repeating: 32, count: 16), "runs past the end"),
    ("not json", safetensorsBytes(header: "{nope", data: []), "not a JSON object"),
    ("json array", safetensorsBytes(header: "[1,2]", data: []), "not a JSON object"),
    ("f16", safetensorsBytes(header: #"{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]), "dtype F16"),
    ("outside", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: [0, 0, 0, 0]), "outside the 4 data bytes"),
    ("negative", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}"#, data: [0, 0, 0, 0]), "data_offsets"),
    ("shape mismatch", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "needs 12"),
    ("huge shape", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[100000,100000,100000],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "larger than the file"),
    ("overlap", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "overlap"),
    ("metadata", safetensorsBytes(header: #"{"__metadata__":{"step":3}}"#, data: []), "metadata 'step' is not a string"),
])
func malformedSafetensorsAreRefused(_ c: (String, [UInt8], String)) {
    #expect { _ = try Safetensors.parse(c.1, path: "x.safetensors") } throws: { e in
        "\(e)".contains(c.2) && "\(e)".hasPrefix("x.safetensors: ")
    }
}

@Test func checkpointOfAnotherModelIsRefused() throws {
    let dir = tempDir()
    defer { Scratch.remove(dir) }
    let a = try Network(spec: ModelSpec(parsing: "conv(4,3) relu maxpool(2) fc(10)"), input: Shape(h: 8, w: 8, c: 1),
                        classes: 10, capacity: 1, threads: 1, seed: 1)
    let state = CheckpointState(spec: a.spec.text, input: a.inputShape, classNames: (0..<10).map { "c\($0)" },
                                normalization: .identity(channels: 1), step: 0, seed: 1, batch: 1, trainCount: 1,
                                optimizer: OptimizerSettings())
    try Checkpoint.save(a, state: state, to: dir + "/a.st")
    let (_, tensors) = try Checkpoint.load(dir + "/a.st")
    let wider = try Network(spec: ModelSpec(parsing: "conv(5,3) relu maxpool(2) fc(10)"), input: Shape(h: 8, w: 8, c: 1),
                            classes: 10, capacity: 1, threads: 1, seed: 1)
    #expect { try Checkpoint.restore(wider, from: tensors, path: "a.st", optimizer: nil) } throws: {
        "\($0)".contains("conv1.weight") && "\($0)".contains("[4, 1, 3, 3]")
    }
    let deeper = try Network(spec: ModelSpec(parsing: "conv(4,3) relu maxpool(2) fc(6) relu fc(10)"), input: Shape(h: 8, w: 8, c: 1),
                             classes: 10, capacity: 1, threads: 1, seed: 1)
    #expect { try Checkpoint.restore(deeper, from: tensors, path: "a.st", optimizer: nil) } throws: { "\($0)".contains("fc2") || "\($0)".contains("fc1.weight") }
    var missing = tensors
    missing["adam.v.fc1.bias"] = nil
    #expect { try Checkpoint.restore(a, from: missing, path: "a.st", optimizer: state) } throws: { "\($0)".contains("no tensor 'adam.v.fc1.bias'") }
    var extra = tensors
    extra["conv9.weight"] = SafetensorsTensor(name: "conv9.weight", shape: [1], values: [0])
    #expect { try Checkpoint.restore(a, from: extra, path: "a.st", optimizer: state) } throws: { "\($0)".contains("'conv9.weight'") }
    // The model loads without its optimizer state too.
    try Checkpoint.restore(a, from: tensors, path: "a.st", optimizer: nil)
}

@Test func atomicWriteLeavesTheOldFileWhenItCannotWrite() throws {
    let dir = tempDir()
    defer { Scratch.remove(dir) }
    try AtomicFile.write(dir + "/f", data: Data("old".utf8))
    #expect(throws: DataError.self) { try AtomicFile.write(dir + "/missing-dir/f", data: Data("x".utf8)) }
    // A directory where the target should be: rename fails, the temporary file is removed.
    try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: false)
    try FileManager.default.createDirectory(atPath: dir + "/sub/f", withIntermediateDirectories: false)
    _ = FileManager.default.createFile(atPath: dir + "/sub/f/keep", contents: Data("k".utf8))
    #expect(throws: DataError.self) { try AtomicFile.write(dir + "/sub/f", data: Data("x".utf8)) }
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/sub") == ["f"])
    #expect(try String(contentsOfFile: dir + "/f", encoding: .utf8) == "old")
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["f", "sub"])
}

/// A checkpoint records its precision and bf16 path; one written before they existed reads as fp32,
/// and a precision no ptrain writes is refused.
@Test func checkpointsRecordThePrecisionAndOldOnesReadAsFP32() throws {
    let dir = tempDir()
    defer { Scratch.remove(dir) }
    let net = try Network(spec: ModelSpec(parsing: "conv(4,3) relu maxpool(2) fc(10)"), input: Shape(h: 8, w: 8, c: 1),
                          classes: 10, capacity: 1, threads: 1, seed: 1)
    for precision in [Precision.fp32] + BF16Path.allCases.map(Precision.bf16) {
        let state = CheckpointState(spec: net.spec.text, input: net.inputShape, classNames: (0..<10).map { "c\($0)" },
                                    normalization: .identity(channels: 1), step: 0, seed: 1, batch: 1, trainCount: 1,
                                    optimizer: OptimizerSettings(), precision: precision)
        try Checkpoint.save(net, state: state, to: dir + "/p.st")
        #expect(try Checkpoint.load(dir + "/p.st").state.precision == precision)
    }
    // Without the two keys (as before them): fp32. With an unknown one: a one-line error.
    let (tensors, metadata) = try Safetensors.read(dir + "/p.st")
    let kept = metadata.filter { $0.key != "precision" && $0.key != "bf16_path" }.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    try Safetensors.write(dir + "/old.st", tensors: Array(tensors.values), metadata: kept)
    #expect(try Checkpoint.load(dir + "/old.st").state.precision == .fp32)
    try Safetensors.write(dir + "/odd.st", tensors: Array(tensors.values), metadata: kept + [("precision", "fp8")])
    #expect { _ = try Checkpoint.load(dir + "/odd.st") } throws: { e in
        "\(e)".hasPrefix(dir + "/odd.st: ") && "\(e)".contains("precision 'fp8'")
    }
}

/// SGD keeps one buffer, its momentum: a network built for it has no second moment, and its
/// checkpoint holds `sgd.momentum_buffer.*` (PyTorch's name) and nothing of Adam's. A version-2
/// checkpoint of the same run — the momentum as `adam.m.*` beside zeros as `adam.v.*` — resumes to
/// the same bits.
@Test func sgdCheckpointsHoldItsMomentumAloneAndVersion2StillResumes() throws {
    let data = try fashionSlice(400)
    let dir = tempDir()
    defer { Scratch.remove(dir) }
    var c = TrainConfig()
    c.spec = try ModelSpec(parsing: "conv(4,3) relu maxpool(2) fc(10)"); c.batch = 40; c.threads = 2
    c.optimizer.kind = .sgd; c.optimizer.lr = 0.05; c.optimizer.momentum = 0.9; c.optimizer.weightDecay = 1e-3
    let first = try Trainer(config: c, data: data)
    #expect(first.network.parameters.moment2 == nil)
    for _ in 0..<5 { first.trainStep() }
    try Checkpoint.save(first.network, state: first.checkpointState, to: dir + "/v3.st")
    let (tensors, metadata) = try Safetensors.read(dir + "/v3.st")
    #expect(metadata["format_version"] == "3")
    #expect(tensors.keys.filter { $0.hasPrefix("sgd.momentum_buffer.") }.count == first.network.parameters.tensors.count)
    #expect(!tensors.keys.contains { $0.hasPrefix("adam.") })
    // The same state as version 2 wrote it.
    var old: [SafetensorsTensor] = tensors.values.map { t in
        t.name.hasPrefix("sgd.momentum_buffer.")
            ? SafetensorsTensor(name: "adam.m." + t.name.dropFirst("sgd.momentum_buffer.".count), shape: t.shape, values: t.values) : t
    }
    old += first.network.parameters.tensors.map { t in
        let like = tensors[t.name]!
        return SafetensorsTensor(name: "adam.v." + t.name, shape: like.shape, values: [Float](repeating: 0, count: like.values.count))
    }
    try Safetensors.write(dir + "/v2.st", tensors: old.sorted { $0.name < $1.name },
                          metadata: metadata.map { ($0.key, $0.key == "format_version" ? "2" : $0.value) }.sorted { $0.0 < $1.0 })
    for file in ["v3.st", "v2.st"] {
        let (state, saved) = try Checkpoint.load(dir + "/" + file)
        let second = try Trainer(config: try TrainConfig(resuming: state), data: data)
        try Checkpoint.restore(second.network, from: saved, path: file, optimizer: state)
        second.restore(step: state.step)
        #expect(bits(second.network.parameters.moment1, second.network.parameters.count) == bits(first.network.parameters.moment1, first.network.parameters.count))
        second.trainStep()
        try Checkpoint.save(second.network, state: second.checkpointState, to: dir + "/after-" + file)
    }
    first.trainStep()
    try Checkpoint.save(first.network, state: first.checkpointState, to: dir + "/after-whole.st")
    let whole = FileManager.default.contents(atPath: dir + "/after-whole.st")
    #expect(whole != nil && FileManager.default.contents(atPath: dir + "/after-v3.st") == whole)
    #expect(FileManager.default.contents(atPath: dir + "/after-v2.st") == whole)
    // A model-only load (eval, predict) passes over either kind of optimizer state.
    let model = try Network(spec: c.spec, input: data.shape, classes: 10, capacity: 1, threads: 1, seed: 1, secondMoment: false)
    try Checkpoint.restore(model, from: tensors, path: "v3.st", optimizer: nil)
    try Checkpoint.restore(model, from: try Safetensors.read(dir + "/v2.st").tensors, path: "v2.st", optimizer: nil)
}
