// Damaged image files (cut short, bit-flipped, lying headers) are one-line errors naming the file
// and the reason, from every decoding path; none aborts or traps, whatever the bytes.
import Foundation
import PTTestSupport
import PTTraining
import Testing

/// One decode of `bytes` as a file: the pixels, or the error's text.
func decodeFile(_ bytes: [UInt8], in dir: String, channels: Int = 1) -> Result<ImageFile, DataError> {
    let path = dir + "/image.png"
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
    defer { try? FileManager.default.removeItem(atPath: path) }
    do { return .success(try ImageFile.read(path, channels: channels)) } catch let e as DataError {
        return .failure(e)
    } catch {
        Issue.record("not a DataError: \(error)")
        return .failure(DataError(path, "\(error)"))
    }
}

func expectOneLine(_ e: DataError, naming path: String, says reason: String, _ what: String) {
    #expect(e.path == path && e.description.hasPrefix(path + ": "), "\(what): \(e)")
    #expect(e.message.contains(reason), "\(what): \(e)")
    #expect(!e.description.contains("\n") && !e.message.hasSuffix(": "), "\(what): \(e)")
}

@Test(arguments: [1, 3])
func eachDamageIsItsOwnOneLineError(channels: Int) throws {
    let dir = tempDir()
    defer { Scratch.remove(dir) }
    let (png, pixels) = DamagedPNG.sample(width: 28, height: 28, in: dir)
    for damage in DamagedPNG.all(of: png) {
        switch (decodeFile(damage.bytes, in: dir, channels: channels), damage.error) {
        case let (.failure(e), reason?): expectOneLine(e, naming: dir + "/image.png", says: reason, damage.name)
        case let (.success(img), nil):
            // Every pixel was there: the same image as the whole file.
            #expect(img.width == 28 && img.height == 28 && img.pixels == (channels == 1 ? pixels : pixels.flatMap { [$0, $0, $0] }))
        case let (result, reason): Issue.record("\(damage.name): expected \(reason ?? "a decoded image"), got \(result)")
        }
    }
}

/// Every prefix of a PNG and every single-bit flip of it: an image of the right size or a one-line
/// error naming the file, never a trap (libpng's simplified API aborted here on a cut-short file).
@Test func everyPrefixAndEveryBitFlipDecodesOrFailsCleanly() throws {
    let dir = tempDir()
    defer { Scratch.remove(dir) }
    let (png, _) = DamagedPNG.sample(width: 9, height: 7, in: dir)
    var variants: [(String, [UInt8])] = (4..<png.count).map { ("first \($0) bytes", Array(png[..<$0])) }
    for i in 0..<png.count {
        for bit in [0, 3, 7] {
            var b = png
            b[i] ^= 1 << bit
            variants.append(("byte \(i) bit \(bit)", b))
        }
    }
    var failures = 0
    for (what, bytes) in variants {
        switch decodeFile(bytes, in: dir) {
        case let .success(img): #expect(img.pixels.count == img.width * img.height && img.width > 0, "\(what)")
        case let .failure(e):
            failures += 1
            #expect(e.description.hasPrefix(dir + "/image.png: ") && !e.description.contains("\n") && !e.message.hasSuffix(": "), "\(what): \(e)")
        }
    }
    #expect(failures >= png.count - 10, "most damages must be noticed (\(failures) of \(variants.count))")
}

/// The image-folder loader (training and `eval --data`) names the damaged file and the reason.
@Test func theFolderLoaderNamesADamagedFile() throws {
    let root = tempDir()
    defer { Scratch.remove(root) }
    let (png, _) = DamagedPNG.sample(width: 8, height: 8, in: root)
    for damage in DamagedPNG.all(of: png) {
        try? FileManager.default.removeItem(atPath: root + "/train")
        for c in ["a", "b"] {
            makeDirectory(root + "/train/" + c)
            _ = FileManager.default.createFile(atPath: root + "/train/\(c)/good.png", contents: Data(png))
        }
        let bad = root + "/train/b/hurt.png"
        _ = FileManager.default.createFile(atPath: bad, contents: Data(damage.bytes))
        do {
            let set = try Dataset.load(directory: root, split: .train)
            #expect(damage.error == nil && set.count == 3, "\(damage.name): loaded")
        } catch let e as DataError {
            if let reason = damage.error { expectOneLine(e, naming: bad, says: reason, damage.name) }
            else { Issue.record("\(damage.name): \(e)") }
        }
    }
}
