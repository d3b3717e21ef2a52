// Image files for image-folder data sets and `ptrain predict`: PGM (P2/P5, 8 or 16 bit, grey)
// parsed here, PNG decoded by libpng's simplified API (any PNG, converted by libpng to grey or
// RGB as asked), JPEG by libjpeg-turbo (JPEG.swift). The format is told by the file's first
// bytes; which files are images at all, by their extension (as torchvision's ImageFolder does).
import CPNG
import Foundation

/// A decoded image: `channels` bytes a pixel (1: grey, 3: RGB), rows top to bottom.
public struct ImageFile {
    public var width, height, channels: Int
    public var pixels: [UInt8]

    /// Extensions of the files ptrain decodes.
    public static let readable: Set<String> = ["png", "pgm", "jpg", "jpeg"]
    /// Extensions torchvision's ImageFolder takes for images: a folder's other files are not
    /// images and are skipped; these but not `readable` are images ptrain cannot read (an error).
    public static let imageExtensions: Set<String> = readable.union(["ppm", "bmp", "tif", "tiff", "webp"])

    /// The lower-cased extension of `path`.
    public static func fileExtension(_ path: String) -> String { (path as NSString).pathExtension.lowercased() }

    /// What a file holds without decoding it: its size and whether it is in colour (a PGM is
    /// grey). Throws a `DataError` naming the file when it is not a PNG, JPEG or PGM image.
    public static func probe(_ path: String) throws -> (width: Int, height: Int, colour: Bool) {
        let bytes = try head(path)
        if JPEG.isJPEG(bytes) {
            let info = try JPEG.probe(path)
            return (Int(info.width), Int(info.height), info.components >= 3)
        }
        if isPNG(bytes) {
            return try withPNG(path) {
                (Int($0.pointee.width), Int($0.pointee.height), $0.pointee.format & UInt32(PNG_FORMAT_FLAG_COLOR) != 0)
            }
        }
        let img = try pgm(try head(path, all: true), path, pixels: false)
        return (img.width, img.height, false)
    }

    /// Reads a PNG, JPEG or PGM file as `channels` (1 or 3) bytes a pixel: colour becomes grey
    /// and grey becomes RGB as libpng (PNG) and Pillow (JPEG) convert them (a PGM's grey is copied
    /// to all three).
    public static func read(_ path: String, channels: Int = 1) throws -> ImageFile {
        precondition(channels == 1 || channels == 3)
        // libpng and libjpeg read from the file itself; only a PGM is read here whole.
        let bytes = try head(path)
        if JPEG.isJPEG(bytes) {
            let info = try JPEG.probe(path)
            let w = Int(info.width), h = Int(info.height)
            var pixels = [UInt8](repeating: 0, count: w * h * channels)
            try pixels.withUnsafeMutableBytes { try JPEG.decode(path, shrink: 1, channels: channels, width: w, height: h, into: $0) }
            return ImageFile(width: w, height: h, channels: channels, pixels: pixels)
        }
        if isPNG(bytes) { return try png(path, channels: channels) }
        var img = try pgm(try head(path, all: true), path)
        if channels == 3 {
            img.pixels = img.pixels.flatMap { [$0, $0, $0] }
            img.channels = 3
        }
        return img
    }

    static func isPNG(_ bytes: [UInt8]) -> Bool { bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]) }

    /// The file's bytes (the first few unless `all`), with errors that name what is wrong.
    static func head(_ path: String, all: Bool = false) throws -> [UInt8] {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
                throw DataError(path, "is a directory, expected an image")
            }
            throw DataError(path, FileManager.default.fileExists(atPath: path) ? "cannot read (permission denied?)" : "no such file")
        }
        defer { try? handle.close() }
        let data: Data?
        do { data = all ? try handle.readToEnd() : try handle.read(upToCount: 8) } catch {
            throw DataError(path, "cannot read: \(error.localizedDescription)")
        }
        guard let data, !data.isEmpty else { throw DataError(path, "empty file, expected an image") }
        return [UInt8](data)
    }

    /// Runs `body` on a PNG whose header has been read and whose size is checked. libpng's
    /// simplified reader keeps the address of the `png_image` it was begun with: on a damaged file
    /// its error handler writes the reason there and jumps back through it. A Swift value can
    /// move (returned, copied into a caller's variable), after which libpng writes into a dead
    /// stack slot and, finding no jump buffer there, aborts. So the struct lives on the heap,
    /// at one address, from begin to free.
    static func withPNG<T>(_ path: String, _ body: (UnsafeMutablePointer<png_image>) throws -> T) throws -> T {
        let image = UnsafeMutablePointer<png_image>.allocate(capacity: 1)
        image.initialize(to: png_image())
        image.pointee.version = UInt32(PNG_IMAGE_VERSION)
        defer {
            png_image_free(image)  // a no-op after libpng freed it on an error
            image.deallocate()
        }
        guard png_image_begin_read_from_file(image, path) != 0 else {
            throw DataError(path, "cannot decode PNG: \(pngReason(image))")
        }
        let w = Int(image.pointee.width), h = Int(image.pointee.height)
        guard w > 0, h > 0, w <= 16384, h <= 16384 else {
            throw DataError(path, "PNG size \(w)x\(h) is out of range (at most 16384x16384)")
        }
        return try body(image)
    }

    /// libpng's reason for a failed read, in words. Its stdio reader says "Read Error" when the
    /// file has fewer bytes than the PNG's structure promises: a cut-short file.
    static func pngReason(_ image: UnsafeMutablePointer<png_image>) -> String {
        let m = withUnsafeBytes(of: image.pointee.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        switch m {
        case "Read Error": return "file ends early"
        case "": return "libpng gave no reason"
        default: return m
        }
    }

    static func png(_ path: String, channels: Int) throws -> ImageFile {
        try withPNG(path) { image in
            let w = Int(image.pointee.width), h = Int(image.pointee.height)
            var pixels = [UInt8](repeating: 0, count: w * h * channels)
            try pixels.withUnsafeMutableBytes { try finishPNG(image, path, into: $0, channels: channels) }
            return ImageFile(width: w, height: h, channels: channels, pixels: pixels)
        }
    }

    /// Finishes reading a begun PNG into `pixels` (width x height x channels bytes; the
    /// channel count picks the format).
    static func finishPNG(_ image: UnsafeMutablePointer<png_image>, _ path: String,
                          into pixels: UnsafeMutableRawBufferPointer, channels: Int) throws {
        image.pointee.format = channels == 3 ? UInt32(PNG_FORMAT_RGB) : UInt32(PNG_FORMAT_GRAY)
        precondition(pixels.count == Int(image.pointee.width) * Int(image.pointee.height) * channels)
        guard png_image_finish_read(image, nil, pixels.baseAddress, Int32(Int(image.pointee.width) * channels), nil) != 0 else {
            throw DataError(path, "cannot decode PNG: \(pngReason(image))")
        }
    }

    /// Decodes the image at `path` (of `width` x `height`, checked) as `channels` bytes a pixel
    /// straight into `pixels`, which holds exactly that many bytes: an image folder's loader
    /// fills its one buffer this way, with no copy per image.
    public static func decode(_ path: String, width: Int, height: Int, channels: Int,
                              into pixels: UnsafeMutableRawBufferPointer) throws {
        let bytes = try head(path)
        if JPEG.isJPEG(bytes) {
            let info = try JPEG.probe(path)
            guard Int(info.width) == width, Int(info.height) == height else {
                throw DataError(path, "image is \(info.width)x\(info.height) but the others are \(width)x\(height)")
            }
            try JPEG.decode(path, shrink: 1, channels: channels, width: width, height: height, into: pixels)
            return
        }
        if isPNG(bytes) {
            try withPNG(path) { image in
                guard Int(image.pointee.width) == width, Int(image.pointee.height) == height else {
                    throw DataError(path, "image is \(image.pointee.width)x\(image.pointee.height) but the others are \(width)x\(height)")
                }
                try finishPNG(image, path, into: pixels, channels: channels)
            }
            return
        }
        let img = try read(path, channels: channels)
        guard img.width == width, img.height == height else {
            throw DataError(path, "image is \(img.width)x\(img.height) but the others are \(width)x\(height)")
        }
        img.pixels.withUnsafeBytes { pixels.copyMemory(from: $0) }
    }

    /// Decodes the image at `path` (any size) as `channels` bytes a pixel, made `side` x `side` as
    /// torchvision's `Resize(side)` + `CenterCrop(side)` make it (Resize.swift), into `pixels`
    /// (exactly that many bytes). A JPEG is first decoded at the largest DCT shrink (1/2, 1/4,
    /// 1/8) that keeps its shorter side at least `side`.
    public static func decode(_ path: String, side: Int, channels: Int, into pixels: UnsafeMutableRawBufferPointer) throws {
        let bytes = try head(path)
        var image: ImageFile, original: (width: Int, height: Int)
        if JPEG.isJPEG(bytes) {
            let info = try JPEG.probe(path)
            original = (Int(info.width), Int(info.height))
            let shrink = JPEG.shrink(width: original.width, height: original.height, side: side)
            let (w, h) = JPEG.scaled(original.width, original.height, by: shrink)
            image = ImageFile(width: w, height: h, channels: channels, pixels: [UInt8](repeating: 0, count: w * h * channels))
            try image.pixels.withUnsafeMutableBytes { try JPEG.decode(path, shrink: shrink, channels: channels, width: w, height: h, into: $0) }
        } else {
            image = try read(path, channels: channels)
            original = (image.width, image.height)
        }
        image.pixels.withUnsafeBufferPointer { src in
            Resize.resizeAndCrop(src, width: image.width, height: image.height, channels: channels, side: side,
                                 original: original, into: pixels.bindMemory(to: UInt8.self))
        }
    }

    /// At most the bytes one image takes while `decode(_:side:channels:into:)` works on it: the
    /// decoded image (a JPEG's DCT shrink makes it smaller; not counted) and the resize's rows.
    public static func resizeScratch(width: Int, height: Int, side: Int, channels: Int) -> Int {
        width * height * channels + height * side * channels
    }

    /// A PGM's header and, with `pixels`, its pixels scaled to bytes; anything else is refused as
    /// not an image.
    static func pgm(_ b: [UInt8], _ path: String, pixels wanted: Bool = true) throws -> ImageFile {
        guard b.count >= 2, b[0] == UInt8(ascii: "P"), b[1] == UInt8(ascii: "5") || b[1] == UInt8(ascii: "2") else {
            throw DataError(path, "not a PNG, JPEG or PGM image")
        }
        var i = 2
        func token() throws -> Int {
            while i < b.count {
                if b[i] == UInt8(ascii: "#") { while i < b.count && b[i] != 10 { i += 1 } }
                else if b[i] == 32 || (b[i] >= 9 && b[i] <= 13) { i += 1 }
                else { break }
            }
            let start = i
            while i < b.count, b[i] >= 48, b[i] <= 57, i - start < 7 { i += 1 }
            guard i > start, let v = Int(String(decoding: b[start..<i], as: UTF8.self)) else {
                throw DataError(path, "malformed PGM header")
            }
            return v
        }
        let w = try token(), h = try token(), maxval = try token()
        guard w > 0, h > 0, w <= 16384, h <= 16384 else { throw DataError(path, "PGM size \(w)x\(h) is out of range") }
        guard maxval > 0, maxval < 65536 else { throw DataError(path, "PGM maxval \(maxval) is out of range") }
        if !wanted { return ImageFile(width: w, height: h, channels: 1, pixels: []) }
        var pixels = [UInt8](repeating: 0, count: w * h)
        func scale(_ v: Int) -> UInt8 { UInt8((v * 255 + maxval / 2) / maxval) }
        if b[1] == UInt8(ascii: "5") {
            i += 1  // the single whitespace after maxval
            let bpp = maxval < 256 ? 1 : 2
            guard b.count - i >= w * h * bpp else { throw DataError(path, "file ends early: the PGM header promises \(w)x\(h) pixels") }
            for p in 0..<(w * h) {
                let v = bpp == 1 ? Int(b[i + p]) : Int(b[i + 2 * p]) << 8 | Int(b[i + 2 * p + 1])
                guard v <= maxval else { throw DataError(path, "PGM pixel \(v) exceeds maxval \(maxval)") }
                pixels[p] = scale(v)
            }
        } else {
            for p in 0..<(w * h) {
                let v = try token()
                guard v <= maxval else { throw DataError(path, "PGM pixel \(v) exceeds maxval \(maxval)") }
                pixels[p] = scale(v)
            }
        }
        return ImageFile(width: w, height: h, channels: 1, pixels: pixels)
    }
}
