// Ways a real PNG file arrives damaged (a download cut short, a flipped bit, a lying header), for
// the tests of every path that decodes images.
import CZlib
import Foundation

public struct DamagedPNG: Sendable, CustomStringConvertible {
    public var name: String
    public var bytes: [UInt8]
    /// What the one-line error must say; nil where libpng has every pixel and decodes the file.
    public var error: String?
    public var description: String { name }

    /// A valid grey PNG of `width` x `height` (a gradient with some texture, so its IDAT is a real
    /// deflate stream), written by libpng through `dir`; and its pixels.
    public static func sample(width: Int, height: Int, in dir: String) -> (png: [UInt8], pixels: [UInt8]) {
        let pixels = (0..<(width * height)).map { UInt8(truncatingIfNeeded: $0 * 7 + ($0 * $0) % 13) }
        let path = dir + "/sample.png"
        writePNG(path, width: width, height: height, channels: 1, pixels: pixels)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return ([UInt8](FileManager.default.contents(atPath: path)!), pixels)
    }

    /// The damages of `png`, a valid PNG file of one IDAT chunk.
    public static func all(of png: [UInt8]) -> [DamagedPNG] {
        let chunks = PNGChunks(png)
        let idat = chunks.first("IDAT"), ihdr = chunks.first("IHDR")
        let end = png.count - 12  // IEND: length, type, CRC
        var flipped = png
        flipped[idat.data] ^= 0x10  // the zlib header's first byte
        var checksumFlip = png
        checksumFlip[idat.data + idat.length - 1] ^= 0x04  // the zlib stream's Adler-32 of the pixels
        var wrongCRC = png
        wrongCRC[ihdr.data + ihdr.length] ^= 1
        var huge = png
        for (i, b) in [UInt8(0), 0, 0xEA, 0x60, 0, 0, 0xEA, 0x60].enumerated() { huge[ihdr.data + i] = b }  // 60000x60000
        PNGChunks.fixCRC(&huge, ihdr)
        flipped = PNGChunks.withFixedCRC(flipped, idat)
        checksumFlip = PNGChunks.withFixedCRC(checksumFlip, idat)
        return [
            DamagedPNG(name: "cut inside the signature", bytes: Array(png[..<6]), error: "file ends early"),
            DamagedPNG(name: "cut inside IHDR", bytes: Array(png[..<(ihdr.data + 5)]), error: "file ends early"),
            DamagedPNG(name: "cut inside IDAT", bytes: Array(png[..<(idat.data + idat.length / 2)]), error: "file ends early"),
            DamagedPNG(name: "cut inside IDAT's CRC", bytes: Array(png[..<(idat.data + idat.length + 2)]), error: "file ends early"),
            DamagedPNG(name: "cut before IEND", bytes: Array(png[..<end]), error: nil),
            DamagedPNG(name: "bit flipped in IDAT's zlib header", bytes: flipped, error: "IDAT: incorrect header check"),
            DamagedPNG(name: "bit flipped in IDAT's Adler-32", bytes: checksumFlip, error: "IDAT: incorrect data check"),
            DamagedPNG(name: "wrong IHDR CRC", bytes: wrongCRC, error: "IHDR: CRC error"),
            DamagedPNG(name: "header promising 60000x60000", bytes: huge, error: "PNG size 60000x60000 is out of range"),
        ]
    }
}

/// A PNG file's chunks: where each one's data starts and how long it is.
public struct PNGChunks {
    public struct Chunk { public var type: String; public var data: Int; public var length: Int }
    public var chunks: [Chunk] = []

    public init(_ png: [UInt8]) {
        var at = 8
        while at + 8 <= png.count {
            let length = png[at..<(at + 4)].reduce(0) { $0 << 8 | Int($1) }
            chunks.append(Chunk(type: String(decoding: png[(at + 4)..<(at + 8)], as: UTF8.self), data: at + 8, length: length))
            at += 12 + length
        }
    }

    public func first(_ type: String) -> Chunk { chunks.first { $0.type == type }! }

    /// Rewrites `chunk`'s CRC to match its (changed) type and data, so only the change itself is wrong.
    public static func fixCRC(_ png: inout [UInt8], _ chunk: Chunk) {
        let crc = png[(chunk.data - 4)..<(chunk.data + chunk.length)].withContiguousStorageIfAvailable {
            UInt32(crc32(0, $0.baseAddress, UInt32($0.count)))
        }!
        for i in 0..<4 { png[chunk.data + chunk.length + i] = UInt8(truncatingIfNeeded: crc >> (24 - 8 * i)) }
    }

    public static func withFixedCRC(_ png: [UInt8], _ chunk: Chunk) -> [UInt8] {
        var copy = png
        fixCRC(&copy, chunk)
        return copy
    }
}
