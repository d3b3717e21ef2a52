// Grayscale images for `ptrain predict`: PGM (P2/P5, 8 or 16 bit) parsed here, PNG decoded by
// libpng's simplified API (any PNG; colour is converted to gray by libpng).
import CPNG
import Foundation

public struct GrayImage {
    public var width, height: Int
    public var pixels: [UInt8]

    public static func read(_ path: String) throws -> GrayImage {
        guard let data = FileManager.default.contents(atPath: path) else {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
                throw DataError(path, "is a directory, expected an image")
            }
            throw DataError(path, FileManager.default.fileExists(atPath: path) ? "cannot read" : "no such file")
        }
        let bytes = [UInt8](data)
        if bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]) { return try png(path) }
        if bytes.count >= 2, bytes[0] == UInt8(ascii: "P"), bytes[1] == UInt8(ascii: "5") || bytes[1] == UInt8(ascii: "2") {
            return try pgm(bytes, path)
        }
        throw DataError(path, "not a PNG or PGM image")
    }

    static func png(_ path: String) throws -> GrayImage {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        func message() -> String {
            withUnsafeBytes(of: image.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
        guard png_image_begin_read_from_file(&image, path) != 0 else {
            let m = message()
            png_image_free(&image)
            throw DataError(path, "cannot decode PNG: \(m)")
        }
        image.format = UInt32(PNG_FORMAT_GRAY)
        let w = Int(image.width), h = Int(image.height)
        guard w > 0, h > 0, w <= 16384, h <= 16384 else {
            png_image_free(&image)
            throw DataError(path, "PNG size \(w)x\(h) is out of range")
        }
        var pixels = [UInt8](repeating: 0, count: w * h)
        let ok = pixels.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, Int32(w), nil) }
        guard ok != 0 else {
            let m = message()
            png_image_free(&image)
            throw DataError(path, "cannot decode PNG: \(m)")
        }
        return GrayImage(width: w, height: h, pixels: pixels)
    }

    static func pgm(_ b: [UInt8], _ path: String) throws -> GrayImage {
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
        var pixels = [UInt8](repeating: 0, count: w * h)
        func scale(_ v: Int) -> UInt8 { UInt8((v * 255 + maxval / 2) / maxval) }
        if b[1] == UInt8(ascii: "5") {
            i += 1  // the single whitespace after maxval
            let bpp = maxval < 256 ? 1 : 2
            guard b.count - i >= w * h * bpp else { throw DataError(path, "PGM data is truncated") }
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
        return GrayImage(width: w, height: h, pixels: pixels)
    }
}
