// An image folder, the layout torchvision's ImageFolder made familiar: `DIR/train/CLASS/*.png`
// (or .pgm) and `DIR/test/CLASS/*`. Classes are the training folder's sorted names; samples
// go class by class, files sorted by name; names starting with '.' are skipped. Every image has
// one size. Loading decodes in parallel straight into one byte buffer: a pass over the headers
// (sizes, colour), then one decode of each image into its place.
import Foundation
import PTModel

public enum ImageFolder {
    /// Files decoded between two progress reports.
    static let chunk = 512

    static func entries(_ dir: String) throws -> [String] {
        do {
            return try FileManager.default.contentsOfDirectory(atPath: dir).filter { !$0.hasPrefix(".") }.sorted()
        } catch {
            throw DataError(dir, "cannot list: \((error as NSError).localizedDescription)")
        }
    }

    static func isDirectory(_ path: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
    }

    /// Runs `body` for each of `count` items on all cores, in chunks with `progress` between them;
    /// throws the error of the first item (by index) that failed.
    static func parallel(_ count: Int, progress: ((Int, Int) -> Void)?, _ body: @Sendable (Int) throws -> Void) throws {
        let lock = NSLock()
        nonisolated(unsafe) var firstError: (Int, Error)?
        var start = 0
        while start < count {
            let end = min(start + chunk, count), base = start
            DispatchQueue.concurrentPerform(iterations: end - start) { k in
                do { try body(base + k) } catch {
                    lock.lock()
                    if firstError == nil || firstError!.0 > base + k { firstError = (base + k, error) }
                    lock.unlock()
                }
            }
            if let (_, error) = firstError { throw error }
            start = end
            progress?(start, count)
        }
    }

    static func load(_ root: String, split: Dataset.Split, classNames given: [String]?, channels wanted: Int?,
                     progress: ((Int, Int) -> Void)?) throws -> Dataset {
        let dir = (root as NSString).appendingPathComponent(split.rawValue)
        guard isDirectory(dir) else { throw DataError(root, "has train/ but no \(split.rawValue)/ folder of class folders") }
        let folders = try entries(dir)
        for name in folders where !isDirectory((dir as NSString).appendingPathComponent(name)) {
            throw DataError((dir as NSString).appendingPathComponent(name), "is not a folder: \(dir) holds one folder per class")
        }
        let names = given ?? folders
        if given == nil && names.count < 2 {
            throw DataError(dir, names.isEmpty ? "has no class folders" : "has one class folder (\(names[0])); a classifier needs at least 2")
        }
        var files: [String] = [], labels: [Int32] = []
        for folder in folders {
            let path = (dir as NSString).appendingPathComponent(folder)
            guard let label = names.firstIndex(of: folder) else {
                throw DataError(path, "class '\(folder)' is not one of the training set's \(names.count) classes")
            }
            let images = try entries(path)
            if images.isEmpty { throw DataError(path, "empty class folder") }
            for image in images {
                let file = (path as NSString).appendingPathComponent(image)
                if isDirectory(file) { throw DataError(file, "is a folder; a class folder holds image files only") }
                let ext = (image as NSString).pathExtension.lowercased()
                guard ext == "png" || ext == "pgm" else { throw DataError(file, "not a .png or .pgm file") }
                files.append(file)
                labels.append(Int32(label))
            }
        }
        let n = files.count, paths = files
        if n == 0 { throw DataError(dir, "has no class folders") }
        // Pass 1: every image's size and colour (headers only).
        let probes = UnsafeMutableBufferPointer<(width: Int, height: Int, colour: Bool)>.allocate(capacity: n)
        defer { probes.deallocate() }
        nonisolated(unsafe) let probeOut = probes
        try parallel(n, progress: nil) { i in probeOut[i] = try ImageFile.probe(paths[i]) }
        let width = probes[0].width, height = probes[0].height
        if let bad = probes.firstIndex(where: { $0.width != width || $0.height != height }) {
            throw DataError(files[bad], "image is \(probes[bad].width)x\(probes[bad].height) but \(files[0]) and the images before it are \(width)x\(height): every image must have one size")
        }
        let channels = wanted ?? (probes.contains { $0.colour } ? 3 : 1)
        // Pass 2: decode each image into its place in the one buffer.
        let size = width * height * channels
        var pixels = [UInt8](repeating: 0, count: n * size)
        try pixels.withUnsafeMutableBytes { buffer in
            nonisolated(unsafe) let out = buffer
            try parallel(n, progress: progress) { i in
                try ImageFile.decode(paths[i], width: width, height: height, channels: channels,
                                     into: UnsafeMutableRawBufferPointer(rebasing: out[(i * size)..<((i + 1) * size)]))
            }
        }
        return Dataset(count: n, shape: Shape(h: height, w: width, c: channels), pixels: pixels, labels: labels, classNames: names)
    }
}
