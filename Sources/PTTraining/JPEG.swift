// JPEG files (baseline and progressive; grey, colour, CMYK) through libjpeg-turbo. Damaged files
// come back as one-line errors naming the file (the C side catches libjpeg's jumps).
import CJPEG

public enum JPEG {
    /// Larger images are refused before decoding: 2^28 pixels is PNG's 16384x16384, and a
    /// progressive JPEG holds all its coefficients while it decodes.
    static let maxPixels = 1 << 28

    static func isJPEG(_ head: [UInt8]) -> Bool { head.starts(with: [0xFF, 0xD8, 0xFF]) }

    static func reason(_ err: [CChar]) -> String {
        let text = String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return text.isEmpty ? "libjpeg gave no reason" : text
    }

    /// The header: size, components (1 grey, 3 colour, 4 CMYK), progressive or not; the size checked.
    static func probe(_ path: String) throws -> pt_jpeg_info {
        var info = pt_jpeg_info(), err = [CChar](repeating: 0, count: 256)
        guard pt_jpeg_probe(path, &info, &err, err.count) == 0 else {
            throw DataError(path, "cannot decode JPEG: \(reason(err))")
        }
        guard info.width > 0, info.height > 0, Int(info.width) * Int(info.height) <= maxPixels else {
            throw DataError(path, "JPEG size \(info.width)x\(info.height) is out of range (at most \(maxPixels >> 20) megapixels)")
        }
        return info
    }

    /// The size libjpeg decodes a `width` x `height` image to at 1/`shrink`: each side rounded up.
    public static func scaled(_ width: Int, _ height: Int, by shrink: Int) -> (width: Int, height: Int) {
        ((width + shrink - 1) / shrink, (height + shrink - 1) / shrink)
    }

    /// The largest DCT shrink (1, 2, 4 or 8) that keeps the shorter side at least `side`: decoding
    /// fewer pixels is the cheap part of resizing a photo to a small input.
    public static func shrink(width: Int, height: Int, side: Int) -> Int {
        var s = 8
        while s > 1 && min(scaled(width, height, by: s).width, scaled(width, height, by: s).height) < side { s /= 2 }
        return s
    }

    /// Decodes at 1/`shrink` as `channels` bytes a pixel into `pixels`, which holds exactly the
    /// scaled image.
    static func decode(_ path: String, shrink: Int, channels: Int, width: Int, height: Int,
                       into pixels: UnsafeMutableRawBufferPointer) throws {
        precondition(pixels.count == width * height * channels)
        var err = [CChar](repeating: 0, count: 256)
        guard pt_jpeg_decode(path, Int32(shrink), Int32(channels), pixels.baseAddress!.assumingMemoryBound(to: UInt8.self),
                             Int32(width), Int32(height), &err, err.count) == 0 else {
            throw DataError(path, "cannot decode JPEG: \(reason(err))")
        }
    }
}
