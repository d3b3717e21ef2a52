import CZlib
import Foundation
import PTModel
import PTTestSupport
import PTTraining
import Testing

/// A fresh temporary directory for one test.
func tempDir() -> String {
    Scratch.directory("test")
}

func idxBytes(dims: [Int], data: [UInt8], magic: [UInt8]? = nil) -> [UInt8] {
    var b = magic ?? [0, 0, 8, UInt8(dims.count)]
    for d in dims { b += [UInt8(d >> 24 & 255), UInt8(d >> 16 & 255), UInt8(d >> 8 & 255), UInt8(d & 255)] }
    return b + data
}

func write(_ bytes: [UInt8], _ path: String, gzip: Bool = false) {
    if gzip {
        let f = gzopen(path, "wb")!
        _ = bytes.withUnsafeBytes { gzwrite(f, $0.baseAddress, UInt32($0.count)) }
        gzclose(f)
    } else {
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
    }
}

/// A small valid MNIST-format set: `n` images of 4x3 with labels i % 10.
func writeSet(_ dir: String, split: String, n: Int, gzip: Bool) {
    let ext = gzip ? ".gz" : ""
    write(idxBytes(dims: [n, 4, 3], data: (0..<(n * 12)).map { UInt8($0 % 256) }), "\(dir)/\(split)-images-idx3-ubyte\(ext)", gzip: gzip)
    write(idxBytes(dims: [n], data: (0..<n).map { UInt8($0 % 10) }), "\(dir)/\(split)-labels-idx1-ubyte\(ext)", gzip: gzip)
}

@Test(arguments: [false, true])
func readsRawAndGzipSets(_ gzip: Bool) throws {
    let dir = tempDir()
    defer { Scratch.remove(dir) }
    writeSet(dir, split: "train", n: 25, gzip: gzip)
    let d = try Dataset.load(directory: dir, split: .train)
    #expect(d.count == 25 && d.shape == Shape(h: 4, w: 3, c: 1))
    #expect(d.labels[13] == 3)
    // Ten classes at least (labels 0...9 here), named by number outside the default directory.
    #expect(d.classNames == (0..<10).map { "class \($0)" })
    var x = [Float](repeating: -1, count: 12)
    let identity = Normalization.identity(channels: 1).table
    identity.withUnsafeBufferPointer { d.copySample(2, to: &x, table: $0.baseAddress!) }
    // Unnormalised inputs are exactly pixel * (1 / 255), as before normalisation existed.
    #expect(x[0].bitPattern == (Float(24) * (1 / 255)).bitPattern && x[11].bitPattern == (Float(35) * (1 / 255)).bitPattern)
}

@Test(arguments: [
    ("wrong magic", idxBytes(dims: [2, 2, 2], data: [UInt8](repeating: 0, count: 8), magic: [1, 2, 8, 3]), "bad magic"),
    ("wrong type", idxBytes(dims: [2, 2, 2], data: [UInt8](repeating: 0, count: 8), magic: [0, 0, 0x0D, 3]), "element type"),
    ("wrong rank", idxBytes(dims: [2, 4], data: [UInt8](repeating: 0, count: 8)), "rank 2, expected 3"),
    ("zero dimension", idxBytes(dims: [0, 2, 2], data: []), "dimension 0 is 0"),
    ("absurd size", idxBytes(dims: [1, 5000, 5000], data: [UInt8](repeating: 0, count: 10)), "dimension 1 is 5000, absurd"),
    ("truncated", idxBytes(dims: [3, 2, 2], data: [UInt8](repeating: 0, count: 11)), "truncated: header promises 12"),
    ("trailing", idxBytes(dims: [3, 2, 2], data: [UInt8](repeating: 0, count: 13)), "1 trailing bytes"),
    ("short header", [0, 0, 8, 3, 0], "truncated header"),
    ("empty", [], "empty file"),
])
func badImageFilesAreRefused(_ c: (String, [UInt8], String)) {
    let dir = tempDir()
    defer { Scratch.remove(dir) }
    let path = "\(dir)/img"
    write(c.1, path)
    #expect { _ = try IDX.images(path) } throws: { e in
        let text = "\(e)"
        return text.contains(c.2) && text.hasPrefix(path) && !text.contains("\n")
    }
}

@Test func corruptGzipIsRefused() {
    let dir = tempDir()
    defer { Scratch.remove(dir) }
    var gz = [UInt8]()
    write(idxBytes(dims: [50, 4, 4], data: (0..<800).map { UInt8($0 % 7) }), "\(dir)/ok.gz", gzip: true)
    gz = [UInt8](FileManager.default.contents(atPath: "\(dir)/ok.gz")!)
    var flipped = gz
    flipped[gz.count / 2] ^= 0xFF
    write(flipped, "\(dir)/flipped.gz")
    write(Array(gz[0..<(gz.count - 12)]), "\(dir)/cut.gz")
    for name in ["flipped.gz", "cut.gz"] {
        #expect(throws: DataError.self, "\(name)") { _ = try IDX.images("\(dir)/\(name)") }
    }
}

@Test func setLevelErrors() throws {
    let dir = tempDir()
    defer { Scratch.remove(dir) }
    #expect { _ = try Dataset.load(directory: dir + "/nope", split: .train) } throws: { "\($0)".contains("does not exist") }
    #expect { _ = try Dataset.load(directory: Dataset.defaultDirectory + "-missing", split: .train) } throws: { "\($0)".contains("does not exist") }
    // The default directory, when missing, names the command that installs it.
    #expect(Dataset.missingHint(Dataset.defaultDirectory).contains("scripts/setup"))
    #expect(Dataset.missingHint("/elsewhere").isEmpty)
    #expect { _ = try Dataset.load(directory: dir, split: .train) } throws: { e in
        ["holds no data", "train-images-idx3-ubyte", "data_batch_1.bin", "train/ and test/"].allSatisfy { "\(e)".contains($0) }
    }
    // Counts that differ.
    write(idxBytes(dims: [3, 2, 2], data: [UInt8](repeating: 0, count: 12)), "\(dir)/train-images-idx3-ubyte")
    write(idxBytes(dims: [4], data: [0, 1, 2, 3]), "\(dir)/train-labels-idx1-ubyte")
    #expect { _ = try Dataset.load(directory: dir, split: .train) } throws: { "\($0)".contains("4 labels but") }
    // A label outside the classes that classes.txt names; without it, labels up to 10 make 11 classes.
    write(idxBytes(dims: [3], data: [0, 10, 2]), "\(dir)/train-labels-idx1-ubyte")
    #expect(try Dataset.load(directory: dir, split: .train).classes == 11)
    write(Array("cat\ndog\n\nbird\n".utf8), "\(dir)/classes.txt")
    #expect { _ = try Dataset.load(directory: dir, split: .train) } throws: { "\($0)".contains("label 10 at index 1 is outside the 3 classes") }
    write(idxBytes(dims: [3], data: [0, 1, 2]), "\(dir)/train-labels-idx1-ubyte")
    #expect(try Dataset.load(directory: dir, split: .train).classNames == ["cat", "dog", "bird"])
    try FileManager.default.removeItem(atPath: "\(dir)/classes.txt")
    // A directory where a file should be.
    try FileManager.default.removeItem(atPath: "\(dir)/train-labels-idx1-ubyte")
    try FileManager.default.createDirectory(atPath: "\(dir)/train-labels-idx1-ubyte", withIntermediateDirectories: false)
    #expect { _ = try Dataset.load(directory: dir, split: .train) } throws: { "\($0)".contains("is a directory") }
}
