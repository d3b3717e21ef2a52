// CIFAR-10's binary version: `data_batch_1.bin` ... `data_batch_5.bin` (training) and
// `test_batch.bin`, each a run of 3073-byte records: a label byte, then a 32x32 image as its
// red, green and blue planes (1024 bytes each, rows top to bottom). Read into ptrain's
// interleaved layout (r, g, b a pixel).
import Foundation
import PTModel

public enum CIFAR {
    public static let side = 32
    public static let recordBytes = 1 + 3 * side * side
    public static let names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    /// The directory holding the batches: `directory` itself, or the `cifar-10-batches-bin` that
    /// the CIFAR-10 archive unpacks to inside it.
    static func directory(in directory: String) -> String? {
        for dir in [directory, (directory as NSString).appendingPathComponent("cifar-10-batches-bin")] {
            if FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent("data_batch_1.bin")) { return dir }
        }
        return nil
    }

    /// Parses one batch file's bytes into labels and interleaved pixels; `path` only names it in
    /// errors. Labels must be below `classes`.
    public static func batch(bytes b: [UInt8], path: String, classes: Int) throws -> (labels: [Int32], pixels: [UInt8]) {
        guard !b.isEmpty, b.count % recordBytes == 0 else {
            throw DataError(path, "\(b.count) bytes is not a whole number of \(recordBytes)-byte CIFAR-10 records (a label byte, then 3x32x32 pixel bytes)")
        }
        let n = b.count / recordBytes, plane = side * side
        var labels = [Int32](repeating: 0, count: n), pixels = [UInt8](repeating: 0, count: n * 3 * plane)
        b.withUnsafeBufferPointer { src in
            pixels.withUnsafeMutableBufferPointer { dst in
                for r in 0..<n {
                    let rec = src.baseAddress! + r * recordBytes
                    labels[r] = Int32(rec[0])
                    let out = dst.baseAddress! + r * 3 * plane
                    for p in 0..<plane {
                        out[3 * p] = rec[1 + p]; out[3 * p + 1] = rec[1 + plane + p]; out[3 * p + 2] = rec[1 + 2 * plane + p]
                    }
                }
            }
        }
        if let r = labels.firstIndex(where: { Int($0) >= classes }) {
            throw DataError(path, "record \(r) has label \(labels[r]), outside the \(classes) classes 0...\(classes - 1)")
        }
        return (labels, pixels)
    }

    /// The training batches (every `data_batch_N.bin` from 1 up, in order) or the test batch.
    /// Class names: `batches.meta.txt` (as the archive has it) or `classes.txt` if present, else
    /// CIFAR-10's.
    static func load(_ root: String, split: Dataset.Split, classNames given: [String]?) throws -> Dataset {
        let dir = directory(in: root)!
        func path(_ name: String) -> String { (dir as NSString).appendingPathComponent(name) }
        var files: [String] = []
        if split == .train {
            var i = 1
            while FileManager.default.fileExists(atPath: path("data_batch_\(i).bin")) { files.append(path("data_batch_\(i).bin")); i += 1 }
        } else {
            guard FileManager.default.fileExists(atPath: path("test_batch.bin")) else { throw DataError(dir, "missing test_batch.bin") }
            files = [path("test_batch.bin")]
        }
        let names = try given ?? Dataset.names(file: path("batches.meta.txt")) ?? Dataset.namesFile(dir) ?? Self.names
        // Room for every record at once (from the files' sizes), so the set is never copied while it grows.
        let records = files.reduce(0) { n, f in
            n + ((try? FileManager.default.attributesOfItem(atPath: f)[.size] as? Int) ?? 0) / recordBytes
        }
        var labels: [Int32] = [], pixels: [UInt8] = []
        labels.reserveCapacity(records); pixels.reserveCapacity(records * (recordBytes - 1))
        for file in files {
            let b = try batch(bytes: IDX.readBytes(file), path: file, classes: names.count)
            labels += b.labels
            pixels += b.pixels
        }
        return Dataset(count: labels.count, shape: Shape(h: side, w: side, c: 3), pixels: pixels, labels: labels, classNames: names)
    }
}
