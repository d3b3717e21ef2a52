// An image folder, the layout torchvision's ImageFolder made familiar: `DIR/train/CLASS/*.jpg`
// (or .jpeg, .png, .pgm) and `DIR/test/CLASS/*`. Classes are the training folder's sorted names;
// samples go class by class, files sorted by name; names starting with '.', and files that are not
// images by their extension, are skipped. Every image has one size, or is made one size as it
// loads (`--resize`). Loading decodes in parallel straight into one byte buffer: a pass over the
// headers (sizes, colour), then one decode of each image into its place.
import Foundation
import PTRuntime
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

    /// Loads a split: every image decoded in parallel into one buffer, each made `resize` x
    /// `resize` (torchvision's Resize + CenterCrop) when given, else all of one size. `announce`
    /// hears, before any image is decoded, how many there are and the memory they will take, and
    /// how many files were skipped as not images.
    static func load(_ root: String, split: Dataset.Split, classNames given: [String]?, channels wanted: Int?,
                     resize: Int?, announce: ((String) -> Void)?, progress: ((Int, Int) -> Void)?) throws -> Dataset {
        let dir = (root as NSString).appendingPathComponent(split.rawValue)
        guard isDirectory(dir) else { throw DataError(root, "has train/ but no \(split.rawValue)/ folder of class folders") }
        // Files that are not images by their extension are skipped, as torchvision's ImageFolder
        // skips them (Thumbs.db, README.txt, .DS_Store beside the photos); so are files beside
        // the class folders.
        var skipped: [String] = []
        var folders: [String] = []
        for name in try entries(dir) {
            let path = (dir as NSString).appendingPathComponent(name)
            if isDirectory(path) { folders.append(name) } else { skipped.append(path) }
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
            var count = 0
            for image in try entries(path) {
                let file = (path as NSString).appendingPathComponent(image)
                if isDirectory(file) { throw DataError(file, "is a folder; a class folder holds image files only") }
                let ext = ImageFile.fileExtension(image)
                guard ImageFile.imageExtensions.contains(ext) else { skipped.append(file); continue }
                guard ImageFile.readable.contains(ext) else {
                    throw DataError(file, ".\(ext) images are not read (ptrain reads \(readableList)): convert it, or move it out of the folder")
                }
                files.append(file)
                labels.append(Int32(label))
                count += 1
            }
            if count == 0 { throw DataError(path, "has no images (\(readableList))") }
        }
        let n = files.count, paths = files
        if n == 0 { throw DataError(dir, "has no class folders") }
        if let first = skipped.first {
            announce?("\(dir): skipped \(skipped.count) file\(skipped.count == 1 ? "" : "s") that \(skipped.count == 1 ? "is" : "are") not images by extension (\(readableList)), e.g. \(first)")
        }
        // Pass 1: every image's size and colour (headers only).
        let probes = UnsafeMutableBufferPointer<(width: Int, height: Int, colour: Bool)>.allocate(capacity: n)
        defer { probes.deallocate() }
        nonisolated(unsafe) let probeOut = probes
        try parallel(n, progress: nil) { i in probeOut[i] = try ImageFile.probe(paths[i]) }
        let channels = wanted ?? (probes.contains { $0.colour } ? 3 : 1)
        let width: Int, height: Int
        if let resize {
            width = resize; height = resize
        } else {
            width = probes[0].width; height = probes[0].height
            if let bad = probes.firstIndex(where: { $0.width != width || $0.height != height }) {
                throw DataError(files[bad], "image is \(probes[bad].width)x\(probes[bad].height) but \(files[0]) and the images before it are \(width)x\(height): give --resize N to make every image N x N as it loads (torchvision's Resize(N) + CenterCrop(N))")
            }
        }
        // What the images will take, said (and checked) before any is decoded.
        let size = width * height * channels
        let (total, overflow) = n.multipliedReportingOverflow(by: size)
        let scratch = resize.map { side in
            ProcessInfo.processInfo.activeProcessorCount
                * probes.map { ImageFile.resizeScratch(width: $0.width, height: $0.height, side: side, channels: channels) }.max()!
        } ?? 0
        let shape = "\(width)x\(height)x\(channels)" + (resize.map { " (--resize \($0))" } ?? "")
        if let available = AvailableMemory.bytes(), overflow || total + scratch > available {
            let need = overflow ? "more than \(AvailableMemory.describe(.max))" : AvailableMemory.describe(total + scratch)
            throw DataError(dir, "\(n) images of \(shape) need \(need) but \(AvailableMemory.describe(available)) of memory is available" + (resize == nil ? "; give --resize N to shrink them as they load" : "; give a smaller --resize") + ", or use fewer images")
        }
        announce?("\(dir): \(n) images of \(shape), \(AvailableMemory.describe(total)) in memory")
        // Pass 2: decode each image into its place in the one buffer.
        var pixels = [UInt8](repeating: 0, count: total)
        try pixels.withUnsafeMutableBytes { buffer in
            nonisolated(unsafe) let out = buffer
            try parallel(n, progress: progress) { i in
                let place = UnsafeMutableRawBufferPointer(rebasing: out[(i * size)..<((i + 1) * size)])
                if let resize {
                    try ImageFile.decode(paths[i], side: resize, channels: channels, into: place)
                } else {
                    try ImageFile.decode(paths[i], width: width, height: height, channels: channels, into: place)
                }
            }
        }
        return Dataset(count: n, shape: Shape(h: height, w: width, c: channels), pixels: pixels, labels: labels, classNames: names)
    }

    static let readableList = ImageFile.readable.sorted().map { "." + $0 }.joined(separator: " ")
}
