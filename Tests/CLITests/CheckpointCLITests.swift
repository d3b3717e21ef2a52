// Checkpoints as a user meets them: resume, Ctrl-C, kill -9, a full disk, eval, predict, Python.
import CZlib
import Foundation
import PTTestSupport
import PTTraining
import Testing

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
let ckSpec = "conv(4,3) relu maxpool(2) fc(16) relu dropout(0.5) fc(10)"

func runDir() throws -> String {
    Scratch.directory("ck")
}

func contents(_ path: String) -> Data? { FileManager.default.contents(atPath: path) }

@Test func resumeWithOtherThreadsGivesTheSameFile() throws {
    let data = try tinyData(), dir = try runDir()
    defer { Scratch.remove(data); Scratch.remove(dir) }
    let common = ["--data", data, "--spec", ckSpec, "--batch", "10", "--lr", "0.01", "--seed", "4"]
    let whole = try ptrain(common + ["--steps", "70", "--threads", "2", "--checkpoint", dir + "/whole.st"])
    #expect(whole.status == 0, "\(whole.err)")
    let half = try ptrain(common + ["--steps", "35", "--threads", "1", "--checkpoint", dir + "/half.st"])
    #expect(half.status == 0, "\(half.err)")
    let rest = try ptrain(["--data", data, "--resume", dir + "/half.st", "--steps", "70", "--threads", "3", "--checkpoint", dir + "/half.st"])
    #expect(rest.status == 0, "\(rest.err)")
    #expect(rest.out.contains("resumed from"))
    #expect(contents(dir + "/whole.st") == contents(dir + "/half.st"))
    // A flag that contradicts the checkpoint is refused, not silently ignored.
    expectCleanError(try ptrain(["--data", data, "--resume", dir + "/half.st", "--batch", "20"]), code: 2, mentions: ["--batch 20", "checkpoint's 10"])
    expectCleanError(try ptrain(["--data", data, "--resume", dir + "/nope.st"]), code: 1, mentions: ["nope.st", "no such file"])
    expectCleanError(try ptrain(["--data", data, "--save-every", "5"]), code: 2, mentions: ["--save-every", "--checkpoint"])
    expectCleanError(try ptrain(["--data", data, "--checkpoint", dir + "/no/dir/ck.st"]), code: 2, mentions: ["does not exist"])
}

/// Waits for `p` to exit; kills it (and records an issue) if it outlives `seconds`.
func waitOrKill(_ p: Process, seconds: Double = 60) {
    let deadline = Date().addingTimeInterval(seconds)
    while p.isRunning && Date() < deadline { usleep(10_000) }
    if p.isRunning {
        kill(p.processIdentifier, SIGKILL)
        Issue.record("ptrain did not exit within \(seconds) s")
    }
    p.waitUntilExit()
}

/// Starts ptrain (or `executable`, e.g. mpirun) and returns once its stdout shows `marker`.
func startAndWait(_ args: [String], for marker: String, dir: String, executable: String = binary) throws -> Process {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    _ = FileManager.default.createFile(atPath: dir + "/live.out", contents: nil)
    p.standardOutput = FileHandle(forWritingAtPath: dir + "/live.out")
    p.standardError = FileHandle.nullDevice
    try p.run()
    let deadline = Date().addingTimeInterval(60)
    while Date() < deadline {
        if let s = try? String(contentsOfFile: dir + "/live.out", encoding: .utf8), s.contains(marker) { return p }
        usleep(20_000)
    }
    kill(p.processIdentifier, SIGKILL)
    Issue.record("ptrain never printed '\(marker)'")
    return p
}

@Test(arguments: [(SIGINT, Int32(130)), (SIGTERM, Int32(143))])
func interruptFinishesTheStepSavesAndExits(_ c: (Int32, Int32)) throws {
    let data = try tinyData(), dir = try runDir()
    defer { Scratch.remove(data); Scratch.remove(dir) }
    let p = try startAndWait(["--data", data, "--spec", ckSpec, "--batch", "10", "--steps", "10000000", "--threads", "2",
                              "--log-every", "50", "--checkpoint", dir + "/ck.st"], for: "step 50/", dir: dir)
    kill(p.processIdentifier, c.0)
    usleep(1000)
    kill(p.processIdentifier, c.0)  // a second signal during the save must not tear it
    waitOrKill(p)
    #expect(p.terminationReason == .exit && p.terminationStatus == c.1)
    let out = try String(contentsOfFile: dir + "/live.out", encoding: .utf8)
    #expect(out.contains("saved checkpoint at step") && out.contains("stopped by"))
    let (state, _) = try Checkpoint.load(dir + "/ck.st")
    #expect(state.step >= 50)
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".tmp-") }.isEmpty)
}

@Test func killNineNeverLeavesAnUnreadableCheckpoint() throws {
    let data = try tinyData(), dir = try runDir()
    defer { Scratch.remove(data); Scratch.remove(dir) }
    var seen = Set<Int>()
    for round in 0..<6 {
        let p = try startAndWait(["--data", data, "--spec", "conv(8,3) relu maxpool(2) fc(256) relu fc(10)", "--batch", "10",
                                  "--steps", "10000000", "--threads", "2", "--log-every", "1", "--save-every", "1",
                                  "--checkpoint", dir + "/ck.st"], for: "step 3/", dir: dir)
        usleep(UInt32(20_000 + round * 37_000))
        kill(p.processIdentifier, SIGKILL)
        waitOrKill(p)
        #expect(p.terminationReason == .uncaughtSignal)
        let (state, tensors) = try Checkpoint.load(dir + "/ck.st")  // throws if torn
        #expect(tensors.count == 18 && state.step >= 1)
        seen.insert(state.step)
    }
    #expect(seen.count >= 2, "the kills landed at the same step every time: \(seen)")
}

@Test func fullDiskKeepsThePreviousCheckpoint() throws {
    let data = try tinyData(), dir = try runDir()
    defer { Scratch.remove(data); Scratch.remove(dir) }
    let spec = "conv(4,3) relu maxpool(2) fc(512) relu fc(10)"  // ~400 KB checkpoint
    let first = try ptrain(["--data", data, "--spec", spec, "--batch", "10", "--steps", "5", "--checkpoint", dir + "/ck.st"])
    #expect(first.status == 0, "\(first.err)")
    let before = contents(dir + "/ck.st")
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/bash")
    // ulimit -f: writes past 100 KB fail with EFBIG, as on a full disk.
    p.arguments = ["-c", "ulimit -f 100; exec \"$0\" \"$@\"", binary, "--data", data, "--resume", dir + "/ck.st",
                   "--steps", "10", "--checkpoint", dir + "/ck.st"]
    let errPath = dir + "/err"
    _ = FileManager.default.createFile(atPath: errPath, contents: nil)
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle(forWritingAtPath: errPath)
    try p.run()
    waitOrKill(p)
    let err = try String(contentsOfFile: errPath, encoding: .utf8)
    #expect(p.terminationReason == .exit && p.terminationStatus == 1, "\(err)")
    #expect(err.contains("ck.st") && err.contains("unchanged") && err.split(separator: "\n").count == 1, "\(err)")
    #expect(contents(dir + "/ck.st") == before)
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["ck.st", "err"])
}

@Test func evalAndPredictAgreeWithAPythonReader() throws {
    let data = try tinyData(), dir = try runDir()
    defer { Scratch.remove(data); Scratch.remove(dir) }
    let ck = dir + "/ck.st"
    let train = try ptrain(["--data", data, "--spec", "conv(4,3) relu maxpool(2) conv(6,3,stride=2) relu fc(16) relu fc(10)",
                            "--batch", "10", "--steps", "60", "--lr", "0.01", "--checkpoint", ck])
    #expect(train.status == 0, "\(train.err)")

    let eval = try ptrain(["eval", "--checkpoint", ck, "--data", data])
    #expect(eval.status == 0, "\(eval.err)")
    #expect(eval.out.contains("test accuracy") && eval.out.contains("confusion matrix"))
    let rows = eval.out.split(separator: "\n").filter { $0.hasPrefix("class ") }
    #expect(rows.count == 10)
    let total = rows.flatMap { $0.split(separator: " ").dropFirst(2).dropLast().compactMap { Int($0) } }.reduce(0, +)
    #expect(total == 100)  // every test image lands in one cell

    // Python (numpy only) reads exactly the tensors ptrain wrote.
    let py = try python(["tensors", ck])
    let (_, tensors) = try Checkpoint.load(ck)
    let lines = py.split(separator: "\n")
    #expect(lines.count == tensors.count)
    for line in lines {
        let f = line.split(separator: " ").map(String.init)
        guard let t = tensors[f[0]] else { Issue.record("python saw unknown tensor \(f[0])"); continue }
        #expect(f[1] == t.shape.map(String.init).joined(separator: ","))
        let crc = t.values.withUnsafeBytes { crc32(0, $0.bindMemory(to: UInt8.self).baseAddress, UInt32($0.count)) }
        #expect(f[2] == String(format: "%08lx", crc), "\(f[0])")
    }
    #expect(tensors["conv1.weight"]?.shape == [4, 1, 3, 3] && tensors["fc1.weight"]?.shape == [16, 24])

    // A numpy forward pass in PyTorch's layouts gives ptrain's probabilities to 1e-5.
    let indices = ["0", "1", "7", "42"]
    let numpy = try python(["predict", ck, "--data", data, "--index"] + indices)
    for (n, line) in numpy.split(separator: "\n").enumerated() {
        let probs = line.split(separator: " ").dropFirst().map { Double($0)! }
        let ours = try ptrain(["predict", "--checkpoint", ck, "--data", data, "--index", indices[n]])
        #expect(ours.status == 0, "\(ours.err)")
        // "test[0] (label 3): class 3 0.912345, class 1 0.051234, ..."
        let parts = ours.out.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":", maxSplits: 1)[1].split(separator: ",")
        #expect(parts.count == 3)
        for p in parts {
            let w = p.split(separator: " ")
            let cls = Int(w[1])!, prob = Double(w[2])!
            #expect(abs(prob - probs[cls]) < 1e-5, "image \(indices[n]) class \(cls): ptrain \(prob), numpy \(probs[cls])")
        }
    }

    // Image files: a PGM and an RGB PNG of test image 7's pixels give test image 7's answer.
    let imgs = [UInt8](contents(data + "/t10k-images-idx3-ubyte")!)[16...].map { $0 }
    let px = Array(imgs[(7 * 64)..<(8 * 64)])
    _ = FileManager.default.createFile(atPath: dir + "/seven.pgm", contents: Data(Array("P5\n# test\n8 8\n255\n".utf8) + px))
    writePNG(dir + "/seven.png", width: 8, height: 8, channels: 3, pixels: px.flatMap { [$0, $0, $0] })
    let byIndex = try ptrain(["predict", "--checkpoint", ck, "--data", data, "--index", "7"])
    let byFiles = try ptrain(["predict", "--checkpoint", ck, "--data", data, dir + "/seven.pgm", dir + "/seven.png"])
    #expect(byFiles.status == 0, "\(byFiles.err)")
    let answer = byIndex.out.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":", maxSplits: 1)[1]
    for line in byFiles.out.split(separator: "\n") { #expect(line.split(separator: ":", maxSplits: 1)[1] == answer) }

    _ = FileManager.default.createFile(atPath: dir + "/big.pgm", contents: Data(Array("P5 9 8 255\n".utf8) + [UInt8](repeating: 0, count: 72)))
    expectCleanError(try ptrain(["predict", "--checkpoint", ck, dir + "/big.pgm"]), code: 1, mentions: ["big.pgm", "9x8", "8x8"])
    _ = FileManager.default.createFile(atPath: dir + "/junk.png", contents: Data([0x89, 0x50, 0x4E, 0x47, 1, 2, 3]))
    expectCleanError(try ptrain(["predict", "--checkpoint", ck, dir + "/junk.png"]), code: 1, mentions: ["junk.png", "PNG"])
    expectCleanError(try ptrain(["predict", "--checkpoint", ck]), code: 2, mentions: ["--index"])
    expectCleanError(try ptrain(["eval", "--checkpoint", dir + "/seven.pgm", "--data", data]), code: 1, mentions: ["seven.pgm", "safetensors"])
}

/// A version-1 checkpoint (no class names, no normalisation, Adam only) still evaluates, predicts
/// and resumes; it takes the data's class names, which must be as many as the model's outputs.
@Test func aVersion1CheckpointTakesTheDatasClassNames() throws {
    let data = try tinyData(), dir = try runDir(), ck = dir + "/v1.st"
    defer { Scratch.remove(data); Scratch.remove(dir) }
    let names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    let made = try ptrain(["--data", data, "--spec", ckSpec, "--batch", "10", "--steps", "20", "--no-normalize", "--checkpoint", ck])
    try #require(made.status == 0, "\(made.err)")
    // What version 1 wrote: the same tensors, and none of version 2's metadata.
    var (header, payload) = try checkpointParts(ck)
    var meta = header["__metadata__"] as! [String: String]
    for key in ["class_names", "input_mean", "input_std", "optimizer", "weight_decay", "momentum", "lr_schedule", "warmup", "augment"] {
        #expect(meta.removeValue(forKey: key) != nil, "\(key)")
    }
    meta["format_version"] = "1"
    header["__metadata__"] = meta
    try writeCheckpoint(ck, header: header, data: payload)
    let before = try ptrain(["eval", "--checkpoint", ck, "--data", data])
    #expect(before.status == 0, "\(before.err)")
    #expect(before.out.contains("\nclass 7 "), "no classes.txt: the placeholders, \(before.out)")

    _ = FileManager.default.createFile(atPath: data + "/classes.txt", contents: Data(names.joined(separator: "\n").utf8))
    let eval = try ptrain(["eval", "--checkpoint", ck, "--data", data])
    #expect(eval.status == 0, "\(eval.err)")
    // The same model and data: the same result, under the data's names.
    #expect(eval.out.split(separator: "\n")[1] == before.out.split(separator: "\n")[1])
    for name in names { #expect(eval.out.contains("\n" + name + " "), "\(name): \(eval.out)") }
    let label = try ptrain(["predict", "--checkpoint", ck, "--data", data, "--index", "3"])
    #expect(label.status == 0, "\(label.err)")
    #expect(label.out.hasPrefix("test[3] (label 1, one): "), "\(label.out)")  // tinyData's class of sample i is 7i mod 10
    // Resumed, it stores the data's names (version 2 from then on).
    let resumed = try ptrain(["--data", data, "--resume", ck, "--steps", "22", "--checkpoint", dir + "/v2.st"])
    #expect(resumed.status == 0, "\(resumed.err)")
    let (state, _) = try Checkpoint.load(dir + "/v2.st")
    #expect(state.classNames == names && state.namesStored)
    // Data with other classes than the model's outputs: one clean line.
    _ = FileManager.default.createFile(atPath: data + "/classes.txt", contents: Data((names + ["ten"]).joined(separator: "\n").utf8))
    expectCleanError(try ptrain(["eval", "--checkpoint", ck, "--data", data]), code: 1, mentions: [data, "11 classes", "10"])
}

func python(_ args: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", repoRoot + "/scripts/ptrain_checkpoint.py"] + args
    let pipe = Pipe()
    p.standardOutput = pipe
    try p.run()
    let out = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    #expect(p.terminationStatus == 0, "python \(args) failed")
    return String(decoding: out, as: UTF8.self)
}

/// A small ResNet (batch norm, identity and projection shortcuts, global pooling, convs without a
/// bias): numpy's forward pass from the checkpoint (eval-mode batch norm on the running
/// statistics) gives ptrain's probabilities.
private let resNetSpecForPython = "conv(8,3,bias=false) bn relu res(conv(8,3,bias=false) bn relu conv(8,3,bias=false) bn) relu res(conv(16,3,2,bias=false) bn relu conv(16,3,bias=false) bn) relu gap fc(16,bias=false) bn relu fc(10)"

private func trainedResNet(_ data: String, _ dir: String) throws -> String {
    let ck = dir + "/res.st"
    let train = try ptrain(["--data", data, "--spec", resNetSpecForPython, "--batch", "10", "--steps", "40", "--lr", "0.01", "--checkpoint", ck])
    try #require(train.status == 0, "\(train.err)")
    return ck
}

/// ptrain's top-3 for test image `index` as (class, probability).
private func ptrainTop3(_ ck: String, _ data: String, _ index: String) throws -> [(Int, Double)] {
    let ours = try ptrain(["predict", "--checkpoint", ck, "--data", data, "--index", index])
    #expect(ours.status == 0, "\(ours.err)")
    return ours.out.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":", maxSplits: 1)[1].split(separator: ",").map {
        let w = $0.split(separator: " ")
        return (Int(w[1])!, Double(w[2])!)
    }
}

@Test func resNetCheckpointsPredictTheSameInNumpy() throws {
    let data = try tinyData(), dir = try runDir()
    defer { Scratch.remove(data); Scratch.remove(dir) }
    let ck = try trainedResNet(data, dir)
    let (_, tensors) = try Checkpoint.load(ck)
    for name in ["bn1.running_mean", "bn1.running_var", "bn5.num_batches_tracked", "res2.proj.weight", "res2.proj.bias"] {
        #expect(tensors[name] != nil, "\(name) missing")
    }
    #expect(tensors["conv1.bias"] == nil && tensors["res1.proj.weight"] == nil && tensors["fc1.bias"] == nil)
    #expect(tensors["bn5.num_batches_tracked"]?.values == [40] && tensors["bn5.num_batches_tracked"]?.shape == [])
    let indices = ["0", "3", "9"]
    let lines = try python(["predict", ck, "--data", data, "--index"] + indices).split(separator: "\n")
    #expect(lines.count == indices.count)
    for (n, line) in lines.enumerated() {
        let probs = line.split(separator: " ").dropFirst().map { Double($0)! }
        for (cls, p) in try ptrainTop3(ck, data, indices[n]) {
            #expect(abs(p - probs[cls]) < 1e-5, "image \(indices[n]) class \(cls): ptrain \(p), numpy \(probs[cls])")
        }
    }
}

private let torchInstalled = (try? launch("/usr/bin/env", ["python3", "-c", "import torch"]))?.status == 0

/// The torch.nn model that ptrain_checkpoint.py builds for the spec, its state_dict loaded from the
/// checkpoint's names as they are, gives ptrain's probabilities (eval mode) and its accuracy.
@Test(.enabled(if: torchInstalled, "torch is not installed (python3 -m pip install torch)"))
func resNetCheckpointsEvaluateTheSameInTorch() throws {
    let data = try tinyData(), dir = try runDir()
    defer { Scratch.remove(data); Scratch.remove(dir) }
    let ck = try trainedResNet(data, dir)
    let indices = ["0", "3", "9"]
    let lines = try python(["predict", ck, "--data", data, "--torch", "--index"] + indices).split(separator: "\n")
    #expect(lines.count == indices.count)
    for (n, line) in lines.enumerated() {
        let probs = line.split(separator: " ").dropFirst().map { Double($0)! }
        for (cls, p) in try ptrainTop3(ck, data, indices[n]) {
            #expect(abs(p - probs[cls]) < 1e-5, "image \(indices[n]) class \(cls): ptrain \(p), torch \(probs[cls])")
        }
    }
    let eval = try ptrain(["eval", "--checkpoint", ck, "--data", data])
    #expect(eval.status == 0, "\(eval.err)")
    // Both end their accuracy line with the count of right answers: "(87/100)".
    let accuracy = try #require(eval.out.split(separator: "\n").first { $0.contains("test accuracy") }?.split(separator: " ").last)
    let torch = try python(["eval", ck, "--data", data])
    #expect(torch.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ").last == accuracy, "\(torch) vs \(eval.out)")
}

/// A resume takes the checkpoint's optimizer settings: each optimizer flag may repeat its value
/// and is refused with one line when it would change it (one table feeds both paths).
@Test(arguments: [("--lr", "0.5"), ("--beta1", "0.8"), ("--beta2", "0.99"), ("--eps", "1e-6"), ("--weight-decay", "0.1"),
                  ("--momentum", "0.5"), ("--optimizer", "sgd"), ("--warmup", "5")])
func aResumeRefusesOptimizerFlagsThatChangeTheCheckpoints(_ flag: (String, String)) throws {
    let data = try tinyData(), dir = try runDir(), ck = dir + "/ck.st"
    defer { Scratch.remove(data); Scratch.remove(dir) }
    let made = try ptrain(["--data", data, "--spec", "fc(8) relu fc(10)", "--batch", "10", "--steps", "2", "--lr", "0.002", "--checkpoint", ck])
    try #require(made.status == 0, "\(made.err)")
    expectCleanError(try ptrain(["--data", data, "--resume", ck, "--steps", "3", flag.0, flag.1]), code: 2,
                     mentions: ["\(flag.0) ", "conflicts with the checkpoint's", "ck.st"])
    let same = try ptrain(["--data", data, "--resume", ck, "--steps", "3", "--lr", "0.002", "--beta1", "0.9", "--momentum", "0.9"])
    #expect(same.status == 0, "\(same.err)")
}

private let onnxInstalled = (try? launch("/usr/bin/env", ["python3", "-c", "import torch, onnx, onnxscript, onnxruntime"]))?.status == 0

/// A checkpoint exported to ONNX (normalisation and softmax inside, pixels in) and run in
/// onnxruntime gives ptrain's predictions on the whole test set: the same top class for every image,
/// probabilities to 1e-5. Two networks: a small ResNet on normalised inputs, and the tutorial's
/// family (pools, dropout) on pixels / 255.
@Test(.enabled(if: onnxInstalled, "skipped: torch, onnx, onnxscript or onnxruntime is not installed (scripts/setup --python installs them)"),
      arguments: ["resnet", "tutorial"])
func anONNXExportPredictsAsPtrainDoes(_ which: String) throws {
    let data = try tinyData(), dir = try runDir()
    defer { Scratch.remove(data); Scratch.remove(dir) }
    let ck: String
    if which == "resnet" {
        ck = try trainedResNet(data, dir)
    } else {
        ck = dir + "/tutorial.st"
        let train = try ptrain(["--data", data, "--spec", "conv(6,3) relu maxpool(2) conv(8,3,pad=valid) relu avgpool(2,1) fc(16) relu dropout(0.5) fc(10)",
                                "--batch", "10", "--steps", "30", "--lr", "0.01", "--no-normalize", "--checkpoint", ck])
        try #require(train.status == 0, "\(train.err)")
    }
    let model = dir + "/model.onnx"
    let export = try python(["onnx", ck, model])
    #expect(export.contains("input images uint8 [N, 8, 8, 1], outputs probabilities and logits [N, 10]"), "\(export)")
    let indices = (0..<100).map(String.init)
    let theirs = try python(["predict", ck, "--onnx", model, "--data", data, "--index"] + indices).split(separator: "\n")
    let ours = try ptrain(["predict", "--checkpoint", ck, "--data", data, "--index"] + indices)
    #expect(ours.status == 0, "\(ours.err)")
    let lines = ours.out.split(separator: "\n").filter { $0.hasPrefix("test[") }
    try #require(lines.count == 100 && theirs.count == 100, "\(lines.count) and \(theirs.count) lines")
    for (n, line) in lines.enumerated() {
        let probs = theirs[n].split(separator: " ").dropFirst().map { Double($0)! }
        let top3 = line.split(separator: ":", maxSplits: 1)[1].split(separator: ",").map {
            let w = $0.split(separator: " ")
            return (Int(w[1])!, Double(w[2])!)
        }
        #expect(top3[0].0 == probs.indices.max { probs[$0] < probs[$1] }, "image \(n): ptrain's top class \(top3[0].0), onnx's \(probs)")
        for (cls, p) in top3 { #expect(abs(p - probs[cls]) < 1e-5, "image \(n) class \(cls): ptrain \(p), onnx \(probs[cls])") }
    }
}
