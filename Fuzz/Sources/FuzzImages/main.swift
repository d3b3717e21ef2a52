// CIFAR-10 batches, PNG/PGM/JPEG files and image folders: a parse either succeeds with sizes that
// match the input or throws a one-line error naming the file; it never traps. Files are decoded
// through the paths `ptrain predict` and the folder loader use (ImageFile.read and decode,
// Dataset.load). The input is read three ways: as a CIFAR-10 batch; as one image file (.png, .pgm
// and .jpg, grey and RGB, and resized); and as a folder tree described by its first bytes (train/
// and test/ class folders whose files are slices of the rest, some named .txt and skipped; loaded
// as they are and resized).
import Foundation
import FuzzSupport
import PTModel
import PTTraining

let root = NSTemporaryDirectory() + "ptrain-fuzz-images-\(getpid())"

func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let b = try? CIFAR.batch(bytes: bytes, path: "fuzz", classes: 10) {
        precondition(b.labels.count * CIFAR.recordBytes == size && b.pixels.count == b.labels.count * 3072)
        precondition(b.labels.allSatisfy { $0 >= 0 && $0 < 10 })
    }
    let fm = FileManager.default
    try? fm.removeItem(atPath: root)
    try! fm.createDirectory(atPath: root, withIntermediateDirectories: true)
    for ext in ["png", "pgm", "jpg"] {
        let file = root + "/one." + ext
        _ = fm.createFile(atPath: file, contents: Data(bytes))
        for channels in [1, 3] {
            do {
                let img = try ImageFile.read(file, channels: channels)
                precondition(img.channels == channels && img.pixels.count == img.width * img.height * channels)
            } catch {
                // The error a user sees: one line naming the file, with a reason (a lost libpng
                // message once left "cannot decode PNG: " and nothing after it).
                let text = "\(error)"
                precondition(error is DataError && text.hasPrefix(file + ": ") && !text.contains("\n") && !text.hasSuffix(": "), text)
            }
        }
        if let p = try? ImageFile.probe(file) { precondition(p.width > 0 && p.height > 0) }
        // Any size made 5 x 5 (--resize): the decode, a JPEG's DCT shrink, the resize and the crop.
        var small = [UInt8](repeating: 0, count: 5 * 5 * 3)
        do { try small.withUnsafeMutableBytes { try ImageFile.decode(file, side: 5, channels: 3, into: $0) } } catch {
            let text = "\(error)"
            precondition(error is DataError && text.hasPrefix(file + ": ") && !text.contains("\n") && !text.hasSuffix(": "), text)
        }
        try? fm.removeItem(atPath: file)
    }
    // A tree: byte 0 = classes in train (0...3), byte 1 = files a class (0...3), byte 2 = a test
    // class folder's name (0...4: 4 is one train does not have); each file is the next slice
    // of the input, named .png or .pgm by a bit.
    guard size >= 3 else { return 0 }
    let classes = Int(bytes[0] % 4), perClass = Int(bytes[1] % 4), testClass = Int(bytes[2] % 5)
    let body = Array(bytes[3...]), files = max(1, (classes + 1) * perClass)
    let slice = max(body.count / files, 1)
    var next = 0
    func write(_ dir: String, _ k: Int) {
        try! fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for f in 0..<perClass {
            let lo = min(next * slice, body.count), hi = min(lo + slice, body.count)
            let ext = lo < body.count ? ["png", "pgm", "jpg", "txt"][Int(body[lo] & 3)] : "png"
            _ = fm.createFile(atPath: "\(dir)/f\(f).\(ext)", contents: Data(body[lo..<hi]))
            next += 1
        }
    }
    for k in 0..<classes { write("\(root)/train/c\(k)", k) }
    write("\(root)/test/c\(testClass)", testClass)
    if let train = try? Dataset.load(directory: root, split: .train, resize: 3) {
        precondition(train.shape.h == 3 && train.shape.w == 3 && train.pixels.count == train.count * train.sampleSize)
    }
    if let train = try? Dataset.load(directory: root, split: .train) {
        // (.txt files are skipped; every class folder kept at least one image)
        precondition(train.classes == classes && train.classes >= 2 && train.count >= classes && train.count <= classes * perClass)
        precondition(train.pixels.count == train.count * train.sampleSize && train.labels.allSatisfy { $0 >= 0 && Int($0) < classes })
        if let test = try? Dataset.load(directory: root, split: .test, classNames: train.classNames, channels: train.shape.c) {
            precondition(test.shape.c == train.shape.c && test.labels.allSatisfy { Int($0) == testClass } && testClass < classes)
        }
    }
    return 0
}

// libFuzzer's own main is not linked (SwiftPM gives every executable its main), so start its
// driver from ours.
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { fuzzOne($0, $1) })
