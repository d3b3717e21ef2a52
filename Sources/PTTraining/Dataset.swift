// A data set in memory: images as bytes (h x w x c, channels interleaved, converted to floats a
// batch at a time), labels, and the class names. Loaded from a directory in any of three
// layouts (docs/DATA.md): MNIST-format IDX files, CIFAR-10 binary batches, or an image folder.
import Foundation
import PTModel

public struct DataError: Error, CustomStringConvertible {
    public var path: String
    public var message: String
    public init(_ path: String, _ message: String) { self.path = path; self.message = message }
    public var description: String { "\(path): \(message)" }
}

public struct Dataset: Sendable {
    public static let defaultDirectory = "/usr/share/datasets/fashion-mnist"
    public static let fashionNames = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    /// Labels are indices into `classNames`; MNIST-format and CIFAR-10 sets are read with at
    /// least this many classes (their files do not say how many there are).
    public static let standardClasses = 10

    public var count: Int
    /// One image's shape: height, width, channels (1: grey, 3: RGB).
    public var shape: Shape
    public var pixels: [UInt8]
    public var labels: [Int32]
    public var classNames: [String]
    public var classes: Int { classNames.count }
    public var sampleSize: Int { shape.count }

    public init(count: Int, shape: Shape, pixels: [UInt8], labels: [Int32], classNames: [String]) {
        self.count = count; self.shape = shape; self.pixels = pixels; self.labels = labels; self.classNames = classNames
    }

    public enum Split: String, Sendable { case train, test }

    public enum Layout: String, Sendable {
        case idx = "MNIST-format IDX", cifar = "CIFAR-10 binary", imageFolder = "image folder"
    }

    /// What to do when `directory` is missing: the default one comes from a Debian package that
    /// the repository's setup script installs.
    public static func missingHint(_ directory: String) -> String {
        directory == defaultDirectory
            ? " (it comes from Debian's dataset-fashion-mnist: run scripts/setup in the ptrain checkout to install it, or use another data directory)"
            : ""
    }

    /// Which layout `directory` holds: IDX files (`train-images-idx3-ubyte[.gz]`), CIFAR-10
    /// batches (`data_batch_1.bin`, in it or in its `cifar-10-batches-bin`), or `train/` and
    /// `test/` folders.
    public static func layout(of directory: String) throws -> Layout {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDir) else {
            throw DataError(directory, "data directory does not exist\(missingHint(directory))")
        }
        guard isDir.boolValue else { throw DataError(directory, "is not a directory") }
        let fm = FileManager.default
        func has(_ name: String) -> Bool { fm.fileExists(atPath: (directory as NSString).appendingPathComponent(name)) }
        if ["train-images-idx3-ubyte", "train-images-idx4-ubyte"].contains(where: { has($0) || has($0 + ".gz") }) { return .idx }
        if CIFAR.directory(in: directory) != nil { return .cifar }
        if has("train") { return .imageFolder }
        throw DataError(directory, "holds no data ptrain reads: expected train-images-idx3-ubyte[.gz] and its t10k- files (MNIST format), data_batch_1.bin ... test_batch.bin (CIFAR-10), or train/ and test/ folders of class folders of images")
    }

    /// Loads a split. `classNames`, when given (the training set's, or a checkpoint's), are the
    /// classes this split's labels must be among; otherwise they come from the data.
    /// `channels` (1 or 3), when given, is what an image folder's images are read as; otherwise
    /// 3 when any training image is in colour. `resize`: an image folder's images made that size
    /// (square) as they load; the other layouts' images have one size and are refused it.
    /// `announce` hears one-line facts before an image folder decodes (how many images, the
    /// memory they take, files skipped); `progress(done, total)` is called while it loads.
    public static func load(directory: String, split: Split, classNames: [String]? = nil, channels: Int? = nil,
                            resize: Int? = nil, announce: ((String) -> Void)? = nil,
                            progress: ((Int, Int) -> Void)? = nil) throws -> Dataset {
        let layout = try layout(of: directory)
        if let resize, layout != .imageFolder {
            throw DataError(directory, "holds \(layout.rawValue) data, whose images have one size already; --resize \(resize) applies to image folders")
        }
        switch layout {
        case .idx: return try loadIDX(directory, split: split, classNames: classNames)
        case .cifar: return try CIFAR.load(directory, split: split, classNames: classNames)
        case .imageFolder:
            return try ImageFolder.load(directory, split: split, classNames: classNames, channels: channels, resize: resize,
                                        announce: announce, progress: progress)
        }
    }

    /// Class names from `classes.txt` in `directory` (one a line), if there is one.
    static func namesFile(_ directory: String) throws -> [String]? {
        try names(file: (directory as NSString).appendingPathComponent("classes.txt"))
    }

    /// Class names from a text file of one a line (blank lines skipped), if it exists.
    static func names(file path: String) throws -> [String]? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw DataError(path, "cannot read as UTF-8 text") }
        let names = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard names.count >= 2 else { throw DataError(path, "names \(names.count) class\(names.count == 1 ? "" : "es"); a classifier needs at least 2") }
        return names
    }

    /// `DIR/{train,t10k}-images-idx3-ubyte[.gz]` (or `-idx4-`, rank 4) and
    /// `-labels-idx1-ubyte[.gz]`. Class names: `classes.txt` if present, Fashion-MNIST's in the
    /// default directory, else "class 0", "class 1", ... (at least ten, as many as the labels need).
    static func loadIDX(_ directory: String, split: Split, classNames given: [String]?) throws -> Dataset {
        let prefix = split == .train ? "train" : "t10k"
        func find(_ stems: [String]) throws -> String {
            for stem in stems {
                for name in [stem, stem + ".gz"] {
                    let p = (directory as NSString).appendingPathComponent(name)
                    if FileManager.default.fileExists(atPath: p) { return p }
                }
            }
            throw DataError(directory, "missing \(stems[0]) (or \(stems[0]).gz)")
        }
        let imagePath = try find(["\(prefix)-images-idx3-ubyte", "\(prefix)-images-idx4-ubyte"])
        let labelPath = try find(["\(prefix)-labels-idx1-ubyte"])
        let img = try IDX.images(imagePath)
        var names = try given ?? namesFile(directory)
        let lab = try IDX.labels(labelPath, classes: names?.count ?? 256)
        guard lab.count == img.count else {
            throw DataError(labelPath, "\(lab.count) labels but \(imagePath) has \(img.count) images")
        }
        if names == nil {
            let needed = max(standardClasses, Int(lab.max() ?? 0) + 1)
            names = needed == 10 && directory == defaultDirectory ? fashionNames : (0..<needed).map { "class \($0)" }
        }
        return Dataset(count: img.count, shape: img.shape, pixels: img.pixels, labels: lab, classNames: names!)
    }

    /// The first `n` samples.
    public func prefix(_ n: Int) -> Dataset {
        let n = min(n, count)
        return Dataset(count: n, shape: shape, pixels: Array(pixels[0..<(n * sampleSize)]), labels: Array(labels[0..<n]),
                       classNames: classNames)
    }

    /// Writes sample `i` as floats into `dst` (`sampleSize` of them): each byte through
    /// `table` (`Normalization.table`: 256 values a channel).
    @inline(__always)
    public func copySample(_ i: Int, to dst: UnsafeMutablePointer<Float>, table: UnsafePointer<Float>) {
        pixels.withUnsafeBufferPointer { p in
            Self.convert(p.baseAddress! + i * sampleSize, count: sampleSize, channels: shape.c, table: table, to: dst)
        }
    }

    /// Pixel bytes (channels interleaved) to floats through a per-channel table.
    @inline(__always)
    static func convert(_ src: UnsafePointer<UInt8>, count: Int, channels: Int, table: UnsafePointer<Float>,
                        to dst: UnsafeMutablePointer<Float>) {
        if channels == 1 {
            for j in 0..<count { dst[j] = table[Int(src[j])] }
            return
        }
        var j = 0
        while j < count {
            for c in 0..<channels { dst[j + c] = table[c * 256 + Int(src[j + c])] }
            j += channels
        }
    }
}
