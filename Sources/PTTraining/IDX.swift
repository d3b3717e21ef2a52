// MNIST-format IDX files (idx3 unsigned-byte images, idx1 unsigned-byte labels), gzip or raw.
// Headers are validated against the decompressed length before anything is used: magic, rank,
// dimensions, exact data length (no truncation, no trailing bytes).
import CZlib
import Foundation

public struct DataError: Error, CustomStringConvertible {
    public var path: String
    public var message: String
    public init(_ path: String, _ message: String) { self.path = path; self.message = message }
    public var description: String { "\(path): \(message)" }
}

public enum IDX {
    /// Largest decompressed file accepted: far above any MNIST-style set, far below this machine.
    public static let maxBytes = 1 << 31

    /// The decompressed bytes of a gzip or plain file.
    public static func readBytes(_ path: String) throws -> [UInt8] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw DataError(path, "no such file")
        }
        if isDir.boolValue { throw DataError(path, "is a directory, expected an IDX file") }
        guard let f = gzopen(path, "rb") else {
            throw DataError(path, "cannot open: \(String(cString: strerror(errno)))")
        }
        defer { gzclose(f) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { gzread(f, $0.baseAddress, UInt32($0.count)) }
            if n < 0 {
                var code: Int32 = 0
                let msg = gzerror(f, &code).map { String(cString: $0) } ?? "read error"
                throw DataError(path, code == Z_ERRNO ? "cannot read: \(String(cString: strerror(errno)))" : "corrupt gzip data (\(msg))")
            }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<Int(n)])
            if out.count > maxBytes { throw DataError(path, "larger than \(maxBytes) bytes decompressed; not an MNIST-style file") }
        }
        // zlib reports a gzip stream cut short as a clean end of file; ask it explicitly.
        var code: Int32 = 0
        if let msg = gzerror(f, &code), code != Z_OK && code != Z_STREAM_END {
            throw DataError(path, "corrupt gzip data (\(String(cString: msg)))")
        }
        if out.isEmpty { throw DataError(path, "empty file") }
        return out
    }

    /// The dimensions, checked against `limits` (absurd sizes) and then against the data length.
    static func header(_ b: [UInt8], _ path: String, rank: Int, what: String, limits: [Int]) throws -> [Int] {
        guard b.count >= 4 + 4 * rank else {
            throw DataError(path, "truncated header: \(b.count) bytes, an \(what) file needs \(4 + 4 * rank)")
        }
        guard b[0] == 0, b[1] == 0 else {
            throw DataError(path, "bad magic \(b[0..<4].map { String(format: "%02x", $0) }.joined()): not an IDX file")
        }
        guard b[2] == 0x08 else { throw DataError(path, "element type 0x\(String(b[2], radix: 16)), expected 0x08 (unsigned byte)") }
        guard Int(b[3]) == rank else { throw DataError(path, "rank \(b[3]), expected \(rank) for an \(what) file") }
        var dims: [Int] = []
        for d in 0..<rank {
            let o = 4 + 4 * d
            let v = Int(b[o]) << 24 | Int(b[o + 1]) << 16 | Int(b[o + 2]) << 8 | Int(b[o + 3])
            guard v > 0 else { throw DataError(path, "dimension \(d) is 0") }
            guard v <= limits[d] else { throw DataError(path, "dimension \(d) is \(v), absurd for an \(what) file (at most \(limits[d]))") }
            dims.append(v)
        }
        let expected = dims.reduce(1, *)
        let have = b.count - 4 - 4 * rank
        if have < expected { throw DataError(path, "truncated: header promises \(expected) bytes of data, file has \(have)") }
        if have > expected { throw DataError(path, "\(have - expected) trailing bytes after the \(expected) the header promises") }
        return dims
    }

    public static func images(_ path: String) throws -> (count: Int, rows: Int, cols: Int, pixels: [UInt8]) {
        try images(bytes: readBytes(path), path: path)
    }

    /// Parses the decompressed bytes of an idx3 file; `path` only names it in errors.
    public static func images(bytes b: [UInt8], path: String) throws -> (count: Int, rows: Int, cols: Int, pixels: [UInt8]) {
        let d = try header(b, path, rank: 3, what: "images (idx3)", limits: [100_000_000, 4096, 4096])
        return (d[0], d[1], d[2], Array(b[16...]))
    }

    public static func labels(_ path: String, classes: Int) throws -> [UInt8] {
        try labels(bytes: readBytes(path), path: path, classes: classes)
    }

    /// Parses the decompressed bytes of an idx1 file; `path` only names it in errors.
    public static func labels(bytes b: [UInt8], path: String, classes: Int) throws -> [UInt8] {
        _ = try header(b, path, rank: 1, what: "labels (idx1)", limits: [100_000_000])
        let labels = Array(b[8...])
        if let i = labels.firstIndex(where: { Int($0) >= classes }) {
            throw DataError(path, "label \(labels[i]) at index \(i) is outside the \(classes) classes 0...\(classes - 1)")
        }
        return labels
    }
}

/// Images kept as bytes (converted to [0, 1] floats per batch) with their labels.
public struct Dataset: Sendable {
    public static let classes = 10
    public static let defaultDirectory = "/usr/share/datasets/fashion-mnist"
    public static let fashionNames = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

    public var count, rows, cols: Int
    public var pixels: [UInt8]
    public var labels: [UInt8]

    public init(count: Int, rows: Int, cols: Int, pixels: [UInt8], labels: [UInt8]) {
        self.count = count; self.rows = rows; self.cols = cols; self.pixels = pixels; self.labels = labels
    }

    public enum Split: String { case train, test = "t10k" }

    /// What to do when `directory` is missing: the default one comes from a Debian package that
    /// the repository's setup script installs.
    public static func missingHint(_ directory: String) -> String {
        directory == defaultDirectory
            ? " (it comes from Debian's dataset-fashion-mnist: run scripts/setup in the ptrain checkout to install it, or use another MNIST-format directory)"
            : ""
    }

    /// Loads `DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.
    public static func load(directory: String, split: Split) throws -> Dataset {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDir) else {
            throw DataError(directory, "data directory does not exist\(missingHint(directory))")
        }
        guard isDir.boolValue else { throw DataError(directory, "is not a directory") }
        func find(_ stem: String) throws -> String {
            for name in [stem, stem + ".gz"] {
                let p = (directory as NSString).appendingPathComponent(name)
                if FileManager.default.fileExists(atPath: p) { return p }
            }
            throw DataError(directory, "missing \(stem) (or \(stem).gz)")
        }
        let imagePath = try find("\(split.rawValue)-images-idx3-ubyte")
        let labelPath = try find("\(split.rawValue)-labels-idx1-ubyte")
        let img = try IDX.images(imagePath)
        let lab = try IDX.labels(labelPath, classes: classes)
        guard lab.count == img.count else {
            throw DataError(labelPath, "\(lab.count) labels but \(imagePath) has \(img.count) images")
        }
        return Dataset(count: img.count, rows: img.rows, cols: img.cols, pixels: img.pixels, labels: lab)
    }

    /// The first `n` samples.
    public func prefix(_ n: Int) -> Dataset {
        let n = min(n, count)
        return Dataset(count: n, rows: rows, cols: cols, pixels: Array(pixels[0..<(n * rows * cols)]), labels: Array(labels[0..<n]))
    }

    /// Writes sample `i` scaled to [0, 1] into `dst` (rows * cols floats).
    @inline(__always)
    public func copySample(_ i: Int, to dst: UnsafeMutablePointer<Float>) {
        let size = rows * cols
        pixels.withUnsafeBufferPointer { p in Self.scale(p.baseAddress! + i * size, count: size, to: dst) }
    }

    /// Pixel bytes to floats in [0, 1].
    @inline(__always)
    static func scale(_ src: UnsafePointer<UInt8>, count: Int, to dst: UnsafeMutablePointer<Float>) {
        for j in 0..<count { dst[j] = Float(src[j]) * (1 / 255) }
    }
}
