// JPEG files and any-size image folders: decoding (grey, RGB, CMYK; baseline and progressive;
// EXIF), torchvision's Resize + CenterCrop (equal to Pillow's pixels where Pillow is installed),
// skipped non-image files, the memory check before decoding, and damaged files as one line.
import Foundation
import PTModel
import PTRuntime
import PTTestSupport
import PTTraining
import Testing

/// The RGB (or grey) picture a source of `components` bytes a pixel is meant to be, converted as
/// the decoder promises: CMYK (stored inverted) through Pillow's formula, grey through Pillow's luma.
func expectedPixels(_ src: [UInt8], components: Int, channels: Int) -> [UInt8] {
    let n = src.count / components
    var out: [UInt8] = []
    func muldiv255(_ a: Int, _ b: Int) -> Int { let t = a * b + 128; return ((t >> 8) + t) >> 8 }
    for p in 0..<n {
        var rgb: [Int]
        switch components {
        case 1: rgb = [Int(src[p]), Int(src[p]), Int(src[p])]
        case 3: rgb = (0..<3).map { Int(src[3 * p + $0]) }
        default:
            let nk = Int(src[4 * p + 3])
            rgb = (0..<3).map { nk - muldiv255(255 - Int(src[4 * p + $0]), nk) }
        }
        if channels == 3 { out += rgb.map { UInt8($0) } }
        else if components == 1 { out.append(src[p]) }
        else { out.append(UInt8((19595 * rgb[0] + 38470 * rgb[1] + 7471 * rgb[2] + 32768) >> 16)) }
    }
    return out
}

@Test(arguments: [1, 3, 4])
func jpegsDecodeAsTheirSourceInGreyAndColour(_ components: Int) throws {
    let dir = tempDir()
    defer { Scratch.remove(dir) }
    let w = 37, h = 23, src = smoothPicture(width: w, height: h, components: components)
    writeJPEG(dir + "/a.jpg", width: w, height: h, components: components, pixels: src, quality: 100)
    writeJPEG(dir + "/p.jpeg", width: w, height: h, components: components, pixels: src, quality: 100, progressive: true)
    // An EXIF block (camera files carry one before the image) changes nothing.
    writeJPEG(dir + "/e.JPG", width: w, height: h, components: components, pixels: src, quality: 100,
              exif: Array("Exif\0\0II*\0\u{8}\0\0\0\0\0".utf8))
    let probe = try ImageFile.probe(dir + "/a.jpg")
    #expect(probe.width == w && probe.height == h && probe.colour == (components >= 3))
    for channels in [1, 3] {
        let img = try ImageFile.read(dir + "/a.jpg", channels: channels)
        #expect(img.width == w && img.height == h && img.channels == channels)
        // Quality 100 quantises every DCT coefficient by 1 (rounding: at most ~1 level a pixel); the
        // picture's colours change by under 3 levels a pixel, so 2x2 chroma subsampling adds at most
        // as much. 4 levels bounds both; a wrong colour conversion is off by tens.
        let want = expectedPixels(src, components: components, channels: channels)
        let worst = zip(img.pixels, want).map { abs(Int($0) - Int($1)) }.max()!
        #expect(worst <= 4, "components \(components) channels \(channels): off by \(worst)")
        // Progressive holds the same quantised coefficients in another order: the same pixels.
        #expect(try ImageFile.read(dir + "/p.jpeg", channels: channels).pixels == img.pixels)
        #expect(try ImageFile.read(dir + "/e.JPG", channels: channels).pixels == img.pixels)
    }
}

/// `jpeg` with its SOF0 header saying `height` x `width` (the pixel data left as it is).
func withHeaderSize(_ jpeg: [UInt8], height h: Int, width w: Int) -> [UInt8] {
    var b = jpeg
    let sof = (0..<(b.count - 1)).first { b[$0] == 0xFF && b[$0 + 1] == 0xC0 }!
    b[sof + 5] = UInt8(h >> 8); b[sof + 6] = UInt8(h & 255); b[sof + 7] = UInt8(w >> 8); b[sof + 8] = UInt8(w & 255)
    return b
}

@Test func damagedJPEGsAreOneLineErrors() throws {
    let dir = tempDir()
    defer { Scratch.remove(dir) }
    let src = smoothPicture(width: 120, height: 90, components: 3)
    writeJPEG(dir + "/good.jpg", width: 120, height: 90, components: 3, pixels: src)
    let bytes = [UInt8](FileManager.default.contents(atPath: dir + "/good.jpg")!)
    func file(_ name: String, _ content: [UInt8]) -> String {
        _ = FileManager.default.createFile(atPath: dir + "/" + name, contents: Data(content)); return dir + "/" + name
    }
    let cases: [(String, String)] = [
        (file("cut.jpg", Array(bytes.prefix(bytes.count * 3 / 4))), "file ends early"),
        (file("header-only.jpg", Array(bytes.prefix(40))), "cannot decode JPEG: "),
        (file("garbage.jpg", [0xFF, 0xD8, 0xFF] + [UInt8](repeating: 0x41, count: 200)), "cannot decode JPEG: "),
        (file("huge.jpg", withHeaderSize(bytes, height: 60000, width: 60000)), "JPEG size 60000x60000 is out of range"),
        (file("zero.jpg", withHeaderSize(bytes, height: 0, width: 40)), "cannot decode JPEG: "),
    ]
    for (path, message) in cases {
        #expect { _ = try ImageFile.read(path, channels: 3) } throws: { e in
            let text = "\(e)"
            return e is DataError && text.hasPrefix(path + ": ") && text.contains(message) && !text.contains("\n")
                && !text.hasSuffix(": ")
        }
        #expect(throws: DataError.self) {
            var out = [UInt8](repeating: 0, count: 8 * 8 * 3)
            try out.withUnsafeMutableBytes { try ImageFile.decode(path, side: 8, channels: 3, into: $0) }
        }
    }
}

@Test func resizeFollowsTorchvisionsArithmetic() throws {
    // Shorter side to N, the longer in proportion, truncated.
    #expect(Resize.resizedSize(width: 500, height: 375, side: 64) == (85, 64))
    #expect(Resize.resizedSize(width: 375, height: 500, side: 64) == (64, 85))
    #expect(Resize.resizedSize(width: 30, height: 30, side: 64) == (64, 64))
    #expect(Resize.resizedSize(width: 99, height: 100, side: 10) == (10, 10))
    // The crop's start: half the excess, rounded half to even (Python's round).
    #expect(Resize.cropStart(65, 64) == 0 && Resize.cropStart(67, 64) == 2 && Resize.cropStart(85, 64) == 10)
    // A flat picture stays flat at any size, up or down; an image of the target size is unchanged.
    for (w, h, side) in [(50, 30, 16), (7, 5, 20), (16, 16, 16)] {
        let flat = [UInt8](repeating: 173, count: w * h * 3)
        var out = [UInt8](repeating: 0, count: side * side * 3)
        flat.withUnsafeBufferPointer { src in out.withUnsafeMutableBufferPointer {
            Resize.resizeAndCrop(src, width: w, height: h, channels: 3, side: side, into: $0)
        } }
        #expect(out.allSatisfy { $0 == 173 }, "\(w)x\(h) to \(side)")
    }
    let pic = smoothPicture(width: 16, height: 16, components: 1)
    var same = [UInt8](repeating: 0, count: 256)
    pic.withUnsafeBufferPointer { src in same.withUnsafeMutableBufferPointer {
        Resize.resizeAndCrop(src, width: 16, height: 16, channels: 1, side: 16, into: $0)
    } }
    #expect(same == pic)
}

@Test func aJPEGShrinksByItsDCTBeforeTheResize() throws {
    #expect(JPEG.shrink(width: 500, height: 375, side: 64) == 4)
    #expect(JPEG.shrink(width: 1000, height: 1000, side: 64) == 8)
    #expect(JPEG.shrink(width: 130, height: 200, side: 64) == 2)
    #expect(JPEG.shrink(width: 100, height: 100, side: 64) == 1)
    let dir = tempDir()
    defer { Scratch.remove(dir) }
    let w = 500, h = 375, src = smoothPicture(width: w, height: h, components: 3)
    writeJPEG(dir + "/big.jpg", width: w, height: h, components: 3, pixels: src, quality: 95)
    var shrunk = [UInt8](repeating: 0, count: 64 * 64 * 3), full = shrunk
    try shrunk.withUnsafeMutableBytes { try ImageFile.decode(dir + "/big.jpg", side: 64, channels: 3, into: $0) }
    let whole = try ImageFile.read(dir + "/big.jpg", channels: 3)
    whole.pixels.withUnsafeBufferPointer { src in full.withUnsafeMutableBufferPointer {
        Resize.resizeAndCrop(src, width: w, height: h, channels: 3, side: 64, into: $0)
    } }
    // Two low-pass filters of a smooth picture (the DCT's 4x shrink then a small resize, against one
    // wide resize): they agree to a level or two, where a misplaced crop or a swapped side is off by
    // tens on this picture's gradients.
    let diffs = zip(shrunk, full).map { abs(Int($0) - Int($1)) }
    #expect(diffs.max()! <= 3, "worst \(diffs.max()!)")
}

@Test func aFolderOfMixedSizesLoadsResizedAndSkipsWhatIsNotAnImage() throws {
    let root = tempDir()
    defer { Scratch.remove(root) }
    writePhotoFolder(root)
    var said: [String] = []
    let train = try Dataset.load(directory: root, split: .train, resize: 16, announce: { said.append($0) })
    #expect(train.count == 6 && train.shape == Shape(h: 16, w: 16, c: 3) && train.labels == [0, 0, 0, 1, 1, 1])
    #expect(said.count == 2, "\(said)")
    #expect(said.first { $0.contains("skipped 3 files that are not images by extension (.jpeg .jpg .pgm .png), e.g. \(root)/train/LICENSE") } != nil, "\(said)")
    #expect(said.last == "\(root)/train: 6 images of 16x16x3 (--resize 16), 4.6 kB in memory", "\(said)")
    // Each image is the one-file decode, in file order; loading twice gives the same bytes.
    var one = [UInt8](repeating: 0, count: 16 * 16 * 3)
    try one.withUnsafeMutableBytes { try ImageFile.decode(root + "/train/dogs/1.jpg", side: 16, channels: 3, into: $0) }
    #expect(Array(train.pixels[(4 * 768)..<(5 * 768)]) == one)
    #expect(try Dataset.load(directory: root, split: .train, resize: 16).pixels == train.pixels)
    // Without --resize the sizes are an error that names the flag; a .webp is an image ptrain
    // cannot read (an error, not a skip); so is a file named .jpg that is not one.
    #expect { _ = try Dataset.load(directory: root, split: .train) } throws: { "\($0)".contains("give --resize N") }
    _ = FileManager.default.createFile(atPath: root + "/train/cats/x.webp", contents: Data([0]))
    #expect { _ = try Dataset.load(directory: root, split: .train, resize: 16) } throws: {
        "\($0)" == "\(root)/train/cats/x.webp: .webp images are not read (ptrain reads .jpeg .jpg .pgm .png): convert it, or move it out of the folder"
    }
    try FileManager.default.removeItem(atPath: root + "/train/cats/x.webp")
    _ = FileManager.default.createFile(atPath: root + "/train/cats/x.jpg", contents: Data("text".utf8))
    #expect { _ = try Dataset.load(directory: root, split: .train, resize: 16) } throws: {
        "\($0)" == "\(root)/train/cats/x.jpg: not a PNG, JPEG or PGM image"
    }
}

@Test func imagesThatWouldNotFitInMemoryAreRefusedBeforeDecoding() throws {
    let root = tempDir()
    defer { Scratch.remove(root) }
    // Small files whose headers promise 16000x16000 colour pictures: 768 MB each decoded, 40 of
    // them more than this machine (or any CI runner) has.
    let src = smoothPicture(width: 16, height: 16, components: 3)
    writeJPEG(root + "/seed.jpg", width: 16, height: 16, components: 3, pixels: src)
    let bytes = withHeaderSize([UInt8](FileManager.default.contents(atPath: root + "/seed.jpg")!), height: 16000, width: 16000)
    for c in ["a", "b"] {
        makeDirectory("\(root)/data/train/\(c)")
        for i in 0..<20 { _ = FileManager.default.createFile(atPath: "\(root)/data/train/\(c)/\(i).jpg", contents: Data(bytes)) }
    }
    let available = try #require(AvailableMemory.bytes())
    try #require(40 * 768_000_000 > available, "this machine has \(available) bytes available")
    var said: [String] = []
    #expect { _ = try Dataset.load(directory: root + "/data", split: .train, announce: { said.append($0) }) } throws: { e in
        let text = "\(e)"
        return text.hasPrefix("\(root)/data/train: 40 images of 16000x16000x3 need 30.7 GB but ") && text.contains("give --resize N")
            && !text.contains("\n")
    }
    #expect(said.isEmpty, "\(said)")
}

/// Pillow, where installed: its pixels are what torchvision hands a model.
let pillowInstalled = (try? runPython("import PIL")) != nil

@discardableResult
func runPython(_ code: String, _ args: [String] = []) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", "-c", code] + args
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = FileHandle.nullDevice
    try p.run()
    let out = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw DataError("python3", "exited \(p.terminationStatus)") }
    return String(decoding: out, as: UTF8.self)
}

/// Writes images with Pillow (and reads ours), then prints, for each file, mode and side (0: no
/// resize), the bytes torchvision's `Resize(side)` + `CenterCrop(side)` give on Pillow's decode —
/// where ptrain shrinks a JPEG by its DCT first (side 8 here: 1/4), on Pillow's `draft` decode,
/// which is the same shrink.
let pillowReference = """
import sys, os
from PIL import Image
d = sys.argv[1]
rgb = Image.open(os.path.join(d, 'rgb.png')).convert('RGB')
rgb.save(os.path.join(d, 'pil.jpg'), quality=90)
rgb.save(os.path.join(d, 'pil-progressive.jpg'), quality=85, progressive=True)
rgb.convert('CMYK').save(os.path.join(d, 'pil-cmyk.jpg'), quality=95)
rgb.convert('L').save(os.path.join(d, 'pil-grey.jpg'), quality=90, exif=b'Exif\\x00\\x00II*\\x00\\x08\\x00\\x00\\x00\\x00\\x00')
def torchvision(img, n):
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(n * long / short)
    img = img.resize((n, new_long) if w <= h else (new_long, n), Image.BILINEAR)
    w, h = img.size
    top, left = int(round((h - n) / 2.0)), int(round((w - n) / 2.0))
    return img.crop((left, top, left + n, top + n))
for name in ['rgb.png', 'grey.png', 'pil.jpg', 'pil-progressive.jpg', 'pil-cmyk.jpg', 'pil-grey.jpg']:
    for mode in ['L', 'RGB']:
        for n in [0, 8, 23, 40, 70]:
            img = Image.open(os.path.join(d, name))
            if n == 8 and name.endswith('.jpg'):
                img.draft(None, (n, n))
            img = img.convert(mode)
            out = img if n == 0 else torchvision(img, n)
            print(name, mode, n, out.tobytes().hex())
"""

@Test(.enabled(if: pillowInstalled, "skipped: Pillow is not installed (scripts/setup --python installs it)"))
func decodeAndResizeGivePillowsPixels() throws {
    let dir = tempDir()
    defer { Scratch.remove(dir) }
    // 53x41: odd sides, so the crop and the taps' edges are exercised; sides 23..70 shrink and
    // enlarge without a DCT shrink (41 / 2 < 23): the resize alone is compared there.
    writePNG(dir + "/rgb.png", width: 53, height: 41, channels: 3, pixels: smoothPicture(width: 53, height: 41, components: 3, seed: 3))
    writePNG(dir + "/grey.png", width: 41, height: 53, channels: 1, pixels: smoothPicture(width: 41, height: 53, components: 1, seed: 5))
    let lines = try runPython(pillowReference, [dir]).split(separator: "\n")
    #expect(lines.count == 6 * 2 * 5)
    for line in lines {
        let f = line.split(separator: " ")
        let path = dir + "/" + f[0], channels = f[1] == "RGB" ? 3 : 1, side = Int(f[2])!
        let want = stride(from: 0, to: f[3].count, by: 2).map { i -> UInt8 in
            let s = f[3].index(f[3].startIndex, offsetBy: i)
            return UInt8(f[3][s..<f[3].index(s, offsetBy: 2)], radix: 16)!
        }
        var got: [UInt8]
        if side == 0 {
            got = try ImageFile.read(path, channels: channels).pixels
        } else {
            got = [UInt8](repeating: 0, count: side * side * channels)
            try got.withUnsafeMutableBytes { try ImageFile.decode(path, side: side, channels: channels, into: $0) }
        }
        // PNG through libpng converts colour to grey its own way (not Pillow's): only its resize is
        // compared in colour, and grey files in grey.
        if f[0].hasSuffix(".png") && channels != (f[0] == "grey.png" ? 1 : 3) { continue }
        let worst = zip(got, want).map { abs(Int($0) - Int($1)) }.max() ?? 0
        #expect(got == want, "\(f[0]) \(f[1]) side \(side): \(zip(got, want).filter { $0 != $1 }.count) of \(want.count) bytes differ, worst by \(worst)")
    }
}
