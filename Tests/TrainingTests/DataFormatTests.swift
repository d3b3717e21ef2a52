// Each data layout from files the tests write: rank-4 IDX, CIFAR-10 batches, image folders (grey
// and RGB PNG, PGM), their errors, and the normalisation computed from them.
import Foundation
import PTModel
import PTTestSupport
import PTTraining
import Testing

func makeDirectory(_ path: String) {
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
}

@Test func rankFourIDXImagesKeepTheirChannels() throws {
    let dir = tempDir()
    defer { Scratch.remove(dir) }
    let pixels: [UInt8] = (0..<90).map { (i: Int) -> UInt8 in UInt8(i * 7 % 256) }
    write(idxBytes(dims: [5, 2, 3, 3], data: pixels), "\(dir)/train-images-idx4-ubyte")
    write(idxBytes(dims: [5], data: [0, 1, 2, 1, 0]), "\(dir)/train-labels-idx1-ubyte")
    #expect(try Dataset.layout(of: dir) == .idx)
    let d = try Dataset.load(directory: dir, split: .train)
    #expect(d.count == 5 && d.shape == Shape(h: 2, w: 3, c: 3) && d.pixels == pixels && d.labels == [0, 1, 2, 1, 0])
    write(idxBytes(dims: [1, 2, 2, 2], data: [UInt8](repeating: 0, count: 8)), "\(dir)/bad")
    #expect { _ = try IDX.images("\(dir)/bad") } throws: { "\($0)".contains("2 channels; ptrain reads 1 (grey) or 3 (RGB)") }
}

/// Record r of a test CIFAR batch: label `label`, and pixel p's red, green and blue planes
/// holding (r + p), (r + 2p) and (r + 3p) mod 256.
func cifarRecord(_ r: Int, label: UInt8) -> [UInt8] {
    [label] + (0..<1024).map { UInt8(($0 + r) % 256) } + (0..<1024).map { UInt8((2 * $0 + r) % 256) } + (0..<1024).map { UInt8((3 * $0 + r) % 256) }
}

@Test func cifarBatchesReadAsInterleavedRGBInBatchOrder() throws {
    let root = tempDir(), dir = root + "/cifar-10-batches-bin"
    defer { Scratch.remove(root) }
    makeDirectory(dir)
    write(cifarRecord(0, label: 3) + cifarRecord(1, label: 9) + cifarRecord(2, label: 0), "\(dir)/data_batch_1.bin")
    write(cifarRecord(3, label: 5) + cifarRecord(4, label: 5), "\(dir)/data_batch_2.bin")
    write(cifarRecord(5, label: 1), "\(dir)/test_batch.bin")
    #expect(try Dataset.layout(of: root) == .cifar)
    let train = try Dataset.load(directory: root, split: .train), test = try Dataset.load(directory: root, split: .test)
    #expect(train.count == 5 && train.shape == Shape(h: 32, w: 32, c: 3) && train.labels == [3, 9, 0, 5, 5])
    #expect(train.classNames == CIFAR.names && test.count == 1 && test.labels == [1])
    for (r, p) in [(0, 0), (1, 77), (4, 1023)] {
        let at = (r * 1024 + p) * 3
        #expect(Array(train.pixels[at..<(at + 3)]) == [UInt8((p + r) % 256), UInt8((2 * p + r) % 256), UInt8((3 * p + r) % 256)])
    }
    // The archive's batches.meta.txt names the classes.
    write(Array(CIFAR.names.reversed().joined(separator: "\n").utf8) + [10, 10], "\(dir)/batches.meta.txt")
    #expect(try Dataset.load(directory: root, split: .train).classNames == CIFAR.names.reversed())
}

@Test(arguments: [
    ("record length", cifarRecord(0, label: 1) + [1, 2, 3], "3076 bytes is not a whole number of 3073-byte CIFAR-10 records"),
    ("label", cifarRecord(0, label: 1) + cifarRecord(1, label: 10), "record 1 has label 10, outside the 10 classes"),
    ("empty", [], "empty file"),
])
func badCIFARBatchesAreRefused(_ c: (String, [UInt8], String)) {
    let dir = tempDir()
    defer { Scratch.remove(dir) }
    write(c.1, "\(dir)/data_batch_1.bin")
    write(cifarRecord(0, label: 1), "\(dir)/test_batch.bin")
    #expect { _ = try Dataset.load(directory: dir, split: .train) } throws: { e in
        "\(e)".contains(c.2) && "\(e)".hasPrefix("\(dir)/data_batch_1.bin: ") && !"\(e)".contains("\n")
    }
}

/// A folder of two classes: `b_dog` (two grey PNGs and a PGM) and `a_cat` (one RGB PNG), 3x2.
func writeFolder(_ root: String) {
    for dir in ["train/a_cat", "train/b_dog", "test/b_dog"] { makeDirectory(root + "/" + dir) }
    writePNG(root + "/train/a_cat/x.png", width: 3, height: 2, channels: 3, pixels: (0..<18).map { UInt8($0 * 10) })
    writePNG(root + "/train/b_dog/2.png", width: 3, height: 2, channels: 1, pixels: [1, 2, 3, 4, 5, 6])
    writePNG(root + "/train/b_dog/1.png", width: 3, height: 2, channels: 1, pixels: [9, 8, 7, 6, 5, 4])
    _ = FileManager.default.createFile(atPath: root + "/train/b_dog/3.pgm", contents: Data(Array("P5 3 2 255\n".utf8) + [0, 50, 100, 150, 200, 250]))
    _ = FileManager.default.createFile(atPath: root + "/train/b_dog/.DS_Store", contents: Data([0]))
    writePNG(root + "/test/b_dog/t.png", width: 3, height: 2, channels: 1, pixels: [7, 7, 7, 7, 7, 7])
}

@Test func anImageFolderReadsClassesAndFilesInNameOrder() throws {
    let root = tempDir()
    defer { Scratch.remove(root) }
    writeFolder(root)
    #expect(try Dataset.layout(of: root) == .imageFolder)
    // One RGB image makes the set RGB; grey images are read with r = g = b.
    let train = try Dataset.load(directory: root, split: .train)
    #expect(train.classNames == ["a_cat", "b_dog"] && train.labels == [0, 1, 1, 1] && train.shape == Shape(h: 2, w: 3, c: 3))
    #expect(Array(train.pixels[0..<18]) == (0..<18).map { UInt8($0 * 10) })
    #expect(Array(train.pixels[18..<36]) == [9, 8, 7, 6, 5, 4].flatMap { [$0, $0, $0] })   // 1.png before 2.png
    #expect(Array(train.pixels[54..<72]) == [0, 50, 100, 150, 200, 250].flatMap { [$0, $0, $0] })
    let test = try Dataset.load(directory: root, split: .test, classNames: train.classNames, channels: 3)
    #expect(test.labels == [1] && test.classNames == train.classNames && test.shape == train.shape)
    // Read as grey, as a grey model's test split would be.
    let grey = try Dataset.load(directory: root, split: .train, channels: 1)
    #expect(grey.shape == Shape(h: 2, w: 3, c: 1) && Array(grey.pixels[6..<12]) == [9, 8, 7, 6, 5, 4])
    var reported: [Int] = []
    _ = try Dataset.load(directory: root, split: .train, progress: { done, total in reported.append(done); #expect(total == 4) })
    #expect(reported.last == 4)
}

@Test(arguments: ["mixed sizes", "empty class", "missing file", "only files that are not images", "not an image inside",
                  "folder inside a class", "one class", "unknown test class", "an image type ptrain does not read"])
func badImageFoldersNameTheFileAndTheProblem(_ what: String) throws {
    let root = tempDir()
    defer { Scratch.remove(root) }
    writeFolder(root)
    var split = Dataset.Split.train, path = "", message = ""
    switch what {
    case "mixed sizes":
        path = root + "/train/b_dog/2.png"
        writePNG(path, width: 2, height: 3, channels: 1, pixels: [1, 2, 3, 4, 5, 6])
        message = "image is 2x3 but \(root)/train/a_cat/x.png and the images before it are 3x2"
    case "empty class":
        path = root + "/train/c_empty"; makeDirectory(path); message = "has no images (.jpeg .jpg .pgm .png)"
    case "missing file":
        path = root + "/train/b_dog/4.png"
        try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: root + "/nowhere.png")
        message = "no such file"
    case "only files that are not images":
        path = root + "/train/c_notes"; makeDirectory(path)
        _ = FileManager.default.createFile(atPath: path + "/notes.txt", contents: Data("hi".utf8)); message = "has no images"
    case "not an image inside":
        path = root + "/train/b_dog/5.png"
        _ = FileManager.default.createFile(atPath: path, contents: Data("not really a picture".utf8)); message = "not a PNG, JPEG or PGM image"
    case "folder inside a class":
        path = root + "/train/b_dog/sub.png"; makeDirectory(path); message = "is a folder"
    case "one class":
        try FileManager.default.removeItem(atPath: root + "/train/a_cat")
        path = root + "/train"; message = "one class folder (b_dog); a classifier needs at least 2"
    case "unknown test class":
        split = .test
        path = root + "/test/zebra"; makeDirectory(path)
        writePNG(path + "/z.png", width: 3, height: 2, channels: 1, pixels: [1, 2, 3, 4, 5, 6])
        message = "class 'zebra' is not one of the training set's 2 classes"
    default:
        path = root + "/train/b_dog/scan.tiff"
        _ = FileManager.default.createFile(atPath: path, contents: Data([0x49, 0x49, 42, 0]))
        message = ".tiff images are not read"
    }
    let names = split == .test ? ["a_cat", "b_dog"] : nil
    #expect { _ = try Dataset.load(directory: root, split: split, classNames: names) } throws: { e in
        let text = "\(e)"
        return text.hasPrefix(path + ": ") && text.contains(message) && !text.contains("\n")
    }
}

@Test func normalisationIsEachChannelsMeanAndStdAndRoundTripsExactly() throws {
    // Channel 0: half 0, half 255 (mean 0.5, std 0.5); channel 1: always 51 (mean 0.2, std kept 1).
    let pixels = (0..<8).flatMap { i -> [UInt8] in [i % 2 == 0 ? 0 : 255, 51] }
    let set = Dataset(count: 2, shape: Shape(h: 2, w: 2, c: 2), pixels: pixels, labels: [0, 1], classNames: ["a", "b"])
    let n = Normalization.of(set)
    #expect(n.mean == [0.5, 0.2] && n.std == [0.5, 1])
    let table = n.table
    #expect(table[255] == (Float(255) * (1 / 255) - 0.5) / 0.5 && table[0] == -1 && table[256 + 51] == (Float(51) * (1 / 255) - 0.2) / 1)
    // Through checkpoint metadata: names with quotes and non-ASCII, statistics to the bit.
    let odd = Normalization(mean: [0.28604063, 1e-7], std: [0.35302424, 0.333333343])
    let net = try Network(spec: ModelSpec(parsing: "fc(3)"), input: Shape(h: 1, w: 1, c: 2), classes: 3, capacity: 1, threads: 1, seed: 1)
    let state = CheckpointState(spec: net.spec.text, input: net.inputShape, classNames: ["\"quoted\"", "café", "a,b"],
                                normalization: odd, step: 4, seed: 2, batch: 1, trainCount: 9,
                                optimizer: OptimizerSettings())
    let dir = tempDir(), path = dir + "/n.st"
    defer { Scratch.remove(dir) }
    try Checkpoint.save(net, state: state, to: path)
    let back = try Checkpoint.load(path).state
    #expect(back == state)
    #expect(back.normalization.mean.map(\.bitPattern) == odd.mean.map(\.bitPattern))
    #expect(back.normalization.std.map(\.bitPattern) == odd.std.map(\.bitPattern))
}
