// The binary on CIFAR-10 files and image folders: train, eval and predict show the data's class
// names, use its normalisation, and the Python reader agrees; bad data is one clean line.
import Foundation
import PTTestSupport
import Testing

/// A CIFAR-10-format directory: 200 training and 40 test records of three classes told apart by
/// which colour plane is bright.
func tinyCIFAR() throws -> String {
    let dir = try runDir()
    func batch(_ n: Int, seed: Int) -> [UInt8] {
        (0..<n).flatMap { r -> [UInt8] in
            let label = (r * 7 + seed) % 3
            var planes: [UInt8] = []
            for c in 0..<3 { for p in 0..<1024 { planes.append(UInt8((c == label ? 160 : 20) + (p * 13 + r * 5 + c) % 60)) } }
            return [UInt8(label)] + planes
        }
    }
    _ = FileManager.default.createFile(atPath: dir + "/data_batch_1.bin", contents: Data(batch(120, seed: 0)))
    _ = FileManager.default.createFile(atPath: dir + "/data_batch_2.bin", contents: Data(batch(80, seed: 1)))
    _ = FileManager.default.createFile(atPath: dir + "/test_batch.bin", contents: Data(batch(40, seed: 2)))
    _ = FileManager.default.createFile(atPath: dir + "/batches.meta.txt", contents: Data("red\ngreen\nblue\n".utf8))
    return dir
}

@Test func cifarTrainsEvaluatesAndPredictsWithItsClassNames() throws {
    let data = try tinyCIFAR(), dir = try runDir(), ck = dir + "/ck.st"
    defer { Scratch.remove(data); Scratch.remove(dir) }
    let train = try ptrain(["--data", data, "--spec", "conv(4,3,stride=2) relu maxpool(2) fc(3)", "--batch", "20",
                            "--steps", "40", "--lr", "0.01", "--checkpoint", ck])
    #expect(train.status == 0, "\(train.err)")
    #expect(train.out.contains("200 training / 40 test images of 32x32x3, 3 classes (CIFAR-10 binary); inputs normalised, mean "), "\(train.out)")
    let eval = try ptrain(["eval", "--checkpoint", ck, "--data", data])
    #expect(eval.status == 0, "\(eval.err)")
    #expect(eval.out.contains("test accuracy 100.00%"), "\(eval.out)")
    for name in ["red", "green", "blue"] { #expect(eval.out.contains("\n" + name.padding(toLength: 6, withPad: " ", startingAt: 0))) }

    // predict on a test image by index names its label and classes; numpy agrees with the
    // probabilities through the checkpoint's normalisation.
    let ours = try ptrain(["predict", "--checkpoint", ck, "--data", data, "--index", "5"])
    #expect(ours.status == 0, "\(ours.err)")
    let label = ["red", "green", "blue"][(5 * 7 + 2) % 3]
    #expect(ours.out.hasPrefix("test[5] (label \((5 * 7 + 2) % 3), \(label)): \(label) "), "\(ours.out)")
    let numpy = try python(["predict", ck, "--data", data, "--index", "5"])
    let probs = numpy.split(separator: "\n")[0].split(separator: " ").dropFirst().map { Double($0)! }
    for part in ours.out.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":", maxSplits: 1)[1].split(separator: ",") {
        let w = part.split(separator: " "), cls = ["red", "green", "blue"].firstIndex(of: String(w[0]))!
        #expect(abs(Double(w[1])! - probs[cls]) < 1e-5, "\(part) vs numpy \(probs)")
    }

    // The same picture as an RGB PNG file gives the same answer.
    let record = Array([UInt8](contents(data + "/test_batch.bin")!)[(5 * 3073 + 1)..<(6 * 3073)])
    var rgb: [UInt8] = []
    for p in 0..<1024 { rgb += [record[p], record[1024 + p], record[2048 + p]] }
    writePNG(dir + "/five.png", width: 32, height: 32, channels: 3, pixels: rgb)
    let file = try ptrain(["predict", "--checkpoint", ck, dir + "/five.png"])
    #expect(file.status == 0, "\(file.err)")
    #expect(file.out.split(separator: ":", maxSplits: 1)[1] == ours.out.split(separator: ":", maxSplits: 1)[1])
}

@Test func anImageFolderTrainsAndItsErrorsAreOneLine() throws {
    let root = try runDir(), dir = try runDir()
    defer { Scratch.remove(root); Scratch.remove(dir) }
    for split in ["train", "test"] {
        for (c, name) in ["dark", "light"].enumerated() {
            try FileManager.default.createDirectory(atPath: "\(root)/\(split)/\(name)", withIntermediateDirectories: true)
            for i in 0..<(split == "train" ? 30 : 10) {
                let px = (0..<36).map { p in UInt8(c == 0 ? (p * 3 + i) % 60 : 190 + (p * 5 + i) % 60) }
                _ = FileManager.default.createFile(atPath: "\(root)/\(split)/\(name)/\(i).pgm", contents: Data(Array("P5 6 6 255\n".utf8) + px))
            }
        }
    }
    let ck = dir + "/ck.st"
    let train = try ptrain(["--data", root, "--spec", "fc(8) relu fc(2)", "--batch", "10", "--steps", "30", "--lr", "0.01",
                            "--checkpoint", ck, "--no-normalize"])
    #expect(train.status == 0, "\(train.err)")
    #expect(train.out.contains("60 training / 20 test images of 6x6x1, 2 classes (image folder); inputs as pixels / 255"), "\(train.out)")
    let eval = try ptrain(["eval", "--checkpoint", ck, "--data", root])
    #expect(eval.status == 0 && eval.out.contains("test accuracy 100.00%") && eval.out.contains("\nlight "), "\(eval.out)")
    // Resuming with a conflicting flag, and data that is not what the checkpoint was trained on.
    // A resume keeps the checkpoint's normalisation (none here) without the flag, and refuses a
    // flag that contradicts it.
    let resumed = try ptrain(["--data", root, "--resume", ck, "--steps", "35"])
    #expect(resumed.status == 0 && resumed.out.contains("inputs as pixels / 255"), "\(resumed.out) \(resumed.err)")
    let normalised = try ptrain(["--data", root, "--spec", "fc(8) relu fc(2)", "--batch", "10", "--steps", "2", "--checkpoint", dir + "/n.st"])
    #expect(normalised.status == 0 && normalised.out.contains("inputs normalised"), "\(normalised.out)")
    expectCleanError(try ptrain(["--data", root, "--resume", dir + "/n.st", "--steps", "4", "--no-normalize"]), code: 2,
                     mentions: ["--no-normalize", "n.st"])
    expectCleanError(try ptrain(["--data", try tinyData(), "--resume", ck, "--steps", "40", "--no-normalize"]), code: 1,
                     mentions: ["outside the 2 classes"])

    // Bad folders: one clean line naming the file.
    _ = FileManager.default.createFile(atPath: "\(root)/train/light/big.pgm", contents: Data(Array("P5 7 6 255\n".utf8) + [UInt8](repeating: 9, count: 42)))
    expectCleanError(try ptrain(["--data", root, "--steps", "1"]), code: 1, mentions: ["big.pgm", "7x6", "6x6", "--resize N"])
    try FileManager.default.removeItem(atPath: "\(root)/train/light/big.pgm")
    try FileManager.default.createDirectory(atPath: "\(root)/train/empty", withIntermediateDirectories: true)
    expectCleanError(try ptrain(["--data", root, "--steps", "1"]), code: 1, mentions: ["train/empty", "has no images"])
    try FileManager.default.removeItem(atPath: "\(root)/train/empty")
    try FileManager.default.createDirectory(atPath: "\(root)/test/other", withIntermediateDirectories: true)
    _ = FileManager.default.createFile(atPath: "\(root)/test/other/x.pgm", contents: Data(Array("P5 6 6 255\n".utf8) + [UInt8](repeating: 9, count: 36)))
    expectCleanError(try ptrain(["--data", root, "--steps", "1"]), code: 1, mentions: ["test/other", "not one of the training set's 2 classes"])
    expectCleanError(try ptrain(["--data", dir, "--steps", "1"]), code: 1, mentions: [dir, "holds no data"])
    // A spec whose classes disagree with the data's.
    try FileManager.default.removeItem(atPath: "\(root)/test/other")
    expectCleanError(try ptrain(["--data", root, "--spec", "fc(10)", "--steps", "1"]), code: 2, mentions: ["2 classes", "10 outputs"])
}

/// Through the command line: a run stopped inside its warmup and resumed ends with the file an
/// unbroken run writes. The first part names the cosine's horizon (`cosine:20`), as the unbroken
/// run's `cosine` over --steps 20 fixes it; the resume takes everything from the checkpoint.
@Test func aScheduledRunResumedInsideItsWarmupWritesTheSameFile() throws {
    let data = try tinyCIFAR(), dir = try runDir()
    defer { Scratch.remove(data); Scratch.remove(dir) }
    let common = ["--data", data, "--spec", "conv(4,3,stride=2) relu maxpool(2) fc(3)", "--batch", "20", "--lr", "0.05",
                  "--optimizer", "adamw", "--weight-decay", "0.01", "--warmup", "10", "--augment", "flip", "--augment", "crop=3"]
    let whole = try ptrain(common + ["--lr-schedule", "cosine", "--steps", "20", "--checkpoint", dir + "/whole.st", "--threads", "2"])
    #expect(whole.status == 0, "\(whole.err)")
    #expect(whole.out.contains("adamw lr 0.05, schedule cosine:20, warmup 10 steps, weight decay 0.01; augment flip,crop=3"), "\(whole.out)")
    let part = try ptrain(common + ["--lr-schedule", "cosine:20", "--steps", "6", "--checkpoint", dir + "/part.st", "--threads", "1"])
    #expect(part.status == 0, "\(part.err)")
    let resumed = try ptrain(["--data", data, "--resume", dir + "/part.st", "--steps", "20", "--checkpoint", dir + "/part.st",
                              "--threads", "2", "--lr-schedule", "cosine"])
    #expect(resumed.status == 0, "\(resumed.err)")
    #expect(contents(dir + "/part.st") == contents(dir + "/whole.st"))
    // Flags that contradict the checkpoint are refused.
    expectCleanError(try ptrain(["--data", data, "--resume", dir + "/whole.st", "--optimizer", "sgd"]), code: 2, mentions: ["--optimizer", "adamw"])
    expectCleanError(try ptrain(["--data", data, "--resume", dir + "/whole.st", "--augment", "flip"]), code: 2, mentions: ["--augment"])
    expectCleanError(try ptrain(["--data", data, "--resume", dir + "/whole.st", "--lr-schedule", "step:5:0.5"]), code: 2, mentions: ["--lr-schedule"])
    for bad in [["--lr-schedule", "linear"], ["--augment", "rotate"], ["--optimizer", "lion"], ["--momentum", "1"], ["--warmup", "-1"],
                ["--weight-decay", "nan"]] {
        expectCleanError(try ptrain(["--data", data] + bad), code: 2, mentions: [bad[0]])
    }
}

/// Photos as they come — JPEG and PNG of several sizes, grey and colour, other files beside them —
/// trained with --resize; a resumed run writes the unbroken run's file, and predict on a file
/// of any size resizes it as training did (the checkpoint says how).
@Test func aPhotoFolderTrainsResizedResumesAndPredictsTheSame() throws {
    let root = try runDir(), dir = try runDir()
    defer { Scratch.remove(root); Scratch.remove(dir) }
    writePhotoFolder(root)
    let common = ["--data", root, "--resize", "12", "--spec", "conv(4,3) relu maxpool(2) fc(2)", "--batch", "3", "--lr", "0.01"]
    let whole = try ptrain(common + ["--steps", "6", "--checkpoint", dir + "/whole.st", "--threads", "2"])
    #expect(whole.status == 0, "\(whole.err)")
    #expect(whole.out.contains("ptrain: \(root)/train: skipped 3 files that are not images by extension"), "\(whole.out)")
    #expect(whole.out.contains("ptrain: \(root)/train: 6 images of 12x12x3 (--resize 12), 2.6 kB in memory"), "\(whole.out)")
    #expect(whole.out.contains("6 training / 2 test images of 12x12x3, 2 classes (image folder)"), "\(whole.out)")
    let part = try ptrain(common + ["--steps", "3", "--checkpoint", dir + "/part.st", "--threads", "1"])
    #expect(part.status == 0, "\(part.err)")
    // The resume takes --resize from the checkpoint; repeating it is accepted, changing it is not.
    let resumed = try ptrain(["--data", root, "--resume", dir + "/part.st", "--steps", "6", "--checkpoint", dir + "/part.st", "--resize", "12"])
    #expect(resumed.status == 0, "\(resumed.err)")
    #expect(contents(dir + "/part.st") == contents(dir + "/whole.st"))
    expectCleanError(try ptrain(["--data", root, "--resume", dir + "/whole.st", "--resize", "16"]), code: 2, mentions: ["--resize 16", "--resize 12"])

    // eval and predict load the images the same way: test image 0 (cats/0.jpg, 20x30) by index and
    // as a file give the same line after the name.
    let eval = try ptrain(["eval", "--checkpoint", dir + "/whole.st", "--data", root])
    #expect(eval.status == 0 && eval.out.contains("test accuracy"), "\(eval.out) \(eval.err)")
    let byIndex = try ptrain(["predict", "--checkpoint", dir + "/whole.st", "--data", root, "--index", "0"])
    let byFile = try ptrain(["predict", "--checkpoint", dir + "/whole.st", root + "/test/cats/0.jpg"])
    #expect(byIndex.status == 0 && byFile.status == 0, "\(byIndex.err) \(byFile.err)")
    let answer = { (out: String) in out.split(separator: "\n").last?.split(separator: ":", maxSplits: 1).last }
    #expect(answer(byIndex.out) != nil && answer(byIndex.out) == answer(byFile.out), "\(byIndex.out) vs \(byFile.out)")

    // Without --resize the sizes are one line naming the flag; --resize on IDX data is refused.
    expectCleanError(try ptrain(["--data", root, "--steps", "1"]), code: 1, mentions: ["1.jpg", "--resize N"])
    expectCleanError(try ptrain(["--data", try tinyData(), "--resize", "8", "--steps", "1"]), code: 1, mentions: ["--resize 8", "image folders"])
    expectCleanError(try ptrain(["--data", root, "--resize", "0"]), code: 2, mentions: ["--resize"])
    // bench takes the shape and classes from the folder.
    let bench = try ptrain(["bench", "--data", root, "--resize", "12", "--spec", "conv(4,3) relu maxpool(2) fc(2)", "--batch", "3",
                            "--threads", "1", "--steps", "2", "--warmup", "0"])
    #expect(bench.status == 0, "\(bench.err)")
    #expect(bench.out.contains("loaded 6 training images of 12x12x3 (2 classes) from \(root)") && bench.out.contains("batch 3 of 12x12x3 images"),
            "\(bench.out)")
    expectCleanError(try ptrain(["bench", "--data", root, "--input", "12x12x3"]), code: 2, mentions: ["--data", "--input"])
}
