// MNIST-format IDX files (idx3 unsigned-byte images, or rank-4 [N, H, W, C] ones; idx1
// unsigned-byte labels), gzip or raw.
// Headers are validated against the decompressed length before anything is used: magic, rank,
// dimensions, exact data length (no truncation, no trailing bytes).
import CZlib
import Foundation
import PTModel

public enum IDX {
    /// Largest decompressed file accepted: far above any MNIST-style set, far below this machine.
    public static let maxBytes = 1 << 31

    /// The decompressed bytes of a gzip or plain file.
    public static func readBytes(_ path: String) throws -> [UInt8] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw DataError(path, "no such file")
        }
        if isDir.boolValue { throw DataError(path, "is a directory, expected a data file") }
        guard let f = gzopen(path, "rb") else {
            throw DataError(path, "cannot open: \(String(cString: strerror(errno)))")
        }
        defer { gzclose(f) }
        var out: [UInt8] = []
        // Room for the whole file at once (a gzip file ends with its decompressed size mod 2^32),
        // so that it is never copied while growing: memory stays at the decompressed size.
        out.reserveCapacity(min(sizeHint(path), maxBytes))
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { gzread(f, $0.baseAddress, UInt32($0.count)) }
            if n < 0 {
                var code: Int32 = 0
                let msg = gzerror(f, &code).map { String(cString: $0) } ?? "read error"
                throw DataError(path, code == Z_ERRNO ? "cannot read: \(String(cString: strerror(errno)))" : "corrupt gzip data (\(msg))")
            }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<Int(n)])
            if out.count > maxBytes { throw DataError(path, "larger than \(maxBytes) bytes decompressed; too large for a data file") }
        }
        // zlib reports a gzip stream cut short as a clean end of file; ask it explicitly.
        var code: Int32 = 0
        if let msg = gzerror(f, &code), code != Z_OK && code != Z_STREAM_END {
            throw DataError(path, "corrupt gzip data (\(String(cString: msg)))")
        }
        if out.isEmpty { throw DataError(path, "empty file") }
        return out
    }

    /// The decompressed size a file announces: a gzip file's last four bytes (its size mod 2^32),
    /// else the file's size. Only a hint: the bytes read decide.
    static func sizeHint(_ path: String) -> Int {
        guard let h = FileHandle(forReadingAtPath: path) else { return 0 }
        defer { try? h.close() }
        guard let magic = try? h.read(upToCount: 2), let end = try? h.seekToEnd() else { return 0 }
        guard magic == Data([0x1F, 0x8B]) else { return Int(end) }
        guard end >= 4, (try? h.seek(toOffset: end - 4)) != nil, let tail = try? h.read(upToCount: 4), tail.count == 4 else { return 0 }
        let size = Int(tail[0]) | Int(tail[1]) << 8 | Int(tail[2]) << 16 | Int(tail[3]) << 24
        // Deflate expands at most about 1032 times: a larger claim is a damaged trailer.
        return min(size, Int(end) * 1032)
    }

    /// The dimensions, checked against `limits` (absurd sizes) and then against the data length.
    static func header(_ b: [UInt8], _ path: String, rank: Int, what: String, limits: [Int]) throws -> [Int] {
        guard b.count >= 4 + 4 * rank else {
            throw DataError(path, "truncated header: \(b.count) bytes, an \(what) file needs \(4 + 4 * rank)")
        }
        guard b[0] == 0, b[1] == 0 else {
            throw DataError(path, "bad magic \(b[0..<4].map { String(format: "%02x", $0) }.joined()): not an IDX file")
        }
        guard b[2] == 0x08 else { throw DataError(path, "element type 0x\(String(b[2], radix: 16)), expected 0x08 (unsigned byte)") }
        guard Int(b[3]) == rank else { throw DataError(path, "rank \(b[3]), expected \(rank) for an \(what) file") }
        var dims: [Int] = []
        for d in 0..<rank {
            let o = 4 + 4 * d
            let v = Int(b[o]) << 24 | Int(b[o + 1]) << 16 | Int(b[o + 2]) << 8 | Int(b[o + 3])
            guard v > 0 else { throw DataError(path, "dimension \(d) is 0") }
            guard v <= limits[d] else { throw DataError(path, "dimension \(d) is \(v), absurd for an \(what) file (at most \(limits[d]))") }
            dims.append(v)
        }
        let expected = dims.reduce(1, *)
        let have = b.count - 4 - 4 * rank
        if have < expected { throw DataError(path, "truncated: header promises \(expected) bytes of data, file has \(have)") }
        if have > expected { throw DataError(path, "\(have - expected) trailing bytes after the \(expected) the header promises") }
        return dims
    }

    public static func images(_ path: String) throws -> (count: Int, shape: Shape, pixels: [UInt8]) {
        try images(bytes: readBytes(path), path: path)
    }

    /// Parses the decompressed bytes of an image file: rank 3 `[N, H, W]` (grey, as MNIST) or
    /// rank 4 `[N, H, W, C]` (C bytes a pixel, interleaved); `path` only names it in errors. The
    /// pixels are the bytes themselves with the header removed in place (no second copy).
    public static func images(bytes: consuming [UInt8], path: String) throws -> (count: Int, shape: Shape, pixels: [UInt8]) {
        var b = bytes
        let rank = b.count >= 4 && b[0] == 0 && b[1] == 0 && b[3] == 4 ? 4 : 3
        let d: [Int], shape: Shape
        if rank == 4 {
            d = try header(b, path, rank: 4, what: "images (rank 4)", limits: [100_000_000, 4096, 4096, 4])
            guard d[3] == 1 || d[3] == 3 else { throw DataError(path, "images have \(d[3]) channels; ptrain reads 1 (grey) or 3 (RGB)") }
            shape = Shape(h: d[1], w: d[2], c: d[3])
        } else {
            d = try header(b, path, rank: 3, what: "images (idx3)", limits: [100_000_000, 4096, 4096])
            shape = Shape(h: d[1], w: d[2], c: 1)
        }
        b.removeSubrange(0..<(4 + 4 * rank))
        return (d[0], shape, b)
    }

    public static func labels(_ path: String, classes: Int) throws -> [Int32] {
        try labels(bytes: readBytes(path), path: path, classes: classes)
    }

    /// Parses the decompressed bytes of an idx1 file; `path` only names it in errors.
    public static func labels(bytes b: [UInt8], path: String, classes: Int) throws -> [Int32] {
        _ = try header(b, path, rank: 1, what: "labels (idx1)", limits: [100_000_000])
        let labels = b[8...].map { Int32($0) }
        if let i = labels.firstIndex(where: { Int($0) >= classes }) {
            throw DataError(path, "label \(labels[i]) at index \(i) is outside the \(classes) classes 0...\(classes - 1)")
        }
        return labels
    }
}
