// The safetensors format: an 8-byte little-endian header length, a JSON header, raw
// little-endian tensor bytes. Only F32 tensors. Reading is defensive: every length, offset and
// shape is checked against the file before any tensor is used, and nothing in a file can run.
import Foundation

public struct SafetensorsTensor {
    public var name: String
    public var shape: [Int]
    public var values: [Float]
    public init(name: String, shape: [Int], values: [Float]) { self.name = name; self.shape = shape; self.values = values }
}

public enum Safetensors {
    static let maxHeader = 100 << 20

    /// Writes tensors (in the given order) and string metadata atomically to `path`.
    public static func write(_ path: String, tensors: [SafetensorsTensor], metadata: [(String, String)]) throws {
        var entries: [String] = []
        entries.append("\"__metadata__\":{" + metadata.map { "\(quote($0.0)):\(quote($0.1))" }.joined(separator: ",") + "}")
        var offset = 0
        for t in tensors {
            precondition(t.shape.reduce(1, *) == t.values.count, "tensor \(t.name): shape does not match its values")
            let end = offset + 4 * t.values.count
            entries.append("\(quote(t.name)):{\"dtype\":\"F32\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        var header = Array(("{" + entries.joined(separator: ",") + "}").utf8)
        while header.count % 8 != 0 { header.append(UInt8(ascii: " ")) }  // align the data to 8 bytes
        // One buffer: [length][header][tensor bytes...]. Floats are stored in memory order, which
        // is little-endian on every machine ptrain builds for (x86-64, arm64).
        var out = [UInt8]()
        out.reserveCapacity(8 + header.count + offset)
        for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: UInt64(header.count) >> (8 * UInt64(i)))) }
        out += header
        for t in tensors { t.values.withUnsafeBytes { out.append(contentsOf: $0) } }
        try out.withUnsafeBytes { try AtomicFile.write(path, parts: [$0]) }
    }

    /// Reads and validates a whole file.
    public static func read(_ path: String) throws -> (tensors: [String: SafetensorsTensor], metadata: [String: String]) {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw DataError(path, "no such file") }
        if isDir.boolValue { throw DataError(path, "is a directory, expected a safetensors checkpoint") }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DataError(path, "cannot read: \(String(cString: strerror(errno)))")
        }
        return try parse([UInt8](data), path: path)
    }

    public static func parse(_ bytes: [UInt8], path: String) throws -> (tensors: [String: SafetensorsTensor], metadata: [String: String]) {
        func bad(_ m: String) -> DataError { DataError(path, "not a valid safetensors checkpoint: \(m)") }
        guard bytes.count >= 8 else { throw bad("\(bytes.count) bytes, shorter than the 8-byte header length") }
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        guard n <= UInt64(bytes.count - 8) else { throw bad("header length \(n) runs past the end of the \(bytes.count)-byte file") }
        guard n <= UInt64(maxHeader) else { throw bad("header length \(n) is over the 100 MB limit") }
        let headerEnd = 8 + Int(n)
        guard let json = try? JSONSerialization.jsonObject(with: Data(bytes[8..<headerEnd])),
              let obj = json as? [String: Any] else { throw bad("the header is not a JSON object") }
        let dataLen = bytes.count - headerEnd
        var metadata: [String: String] = [:]
        var tensors: [String: SafetensorsTensor] = [:]
        var ranges: [(Int, Int, String)] = []
        for (name, value) in obj {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else { throw bad("__metadata__ is not an object") }
                for (k, v) in m {
                    guard let s = v as? String else { throw bad("metadata '\(k)' is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard let t = value as? [String: Any] else { throw bad("tensor '\(name)' is not an object") }
            guard let dtype = t["dtype"] as? String else { throw bad("tensor '\(name)' has no dtype") }
            guard dtype == "F32" else { throw bad("tensor '\(name)' has dtype \(dtype); ptrain reads F32 only") }
            guard let shapeAny = t["shape"] as? [Any], shapeAny.count <= 8 else { throw bad("tensor '\(name)' has no valid shape") }
            var shape: [Int] = []
            var count = 1
            for d in shapeAny {
                guard let num = d as? NSNumber, num.doubleValue == num.doubleValue.rounded(), num.doubleValue >= 0,
                      num.doubleValue <= 1e12 else { throw bad("tensor '\(name)' has an invalid dimension") }
                let v = num.intValue
                shape.append(v)
                let (prod, overflow) = count.multipliedReportingOverflow(by: v)
                guard !overflow, prod <= dataLen / 4 + 1 else { throw bad("tensor '\(name)' shape \(shape) is larger than the file") }
                count = prod
            }
            guard let offs = t["data_offsets"] as? [Any], offs.count == 2,
                  let b = (offs[0] as? NSNumber)?.doubleValue, let e = (offs[1] as? NSNumber)?.doubleValue,
                  b >= 0, e >= b, e <= Double(dataLen), b == b.rounded(), e == e.rounded()
            else { throw bad("tensor '\(name)' has data_offsets outside the \(dataLen) data bytes") }
            let begin = Int(b), end = Int(e)
            guard end - begin == 4 * count else {
                throw bad("tensor '\(name)' has \(end - begin) bytes but shape \(shape) needs \(4 * count)")
            }
            ranges.append((begin, end, name))
            var values = [Float](repeating: 0, count: count)
            values.withUnsafeMutableBytes { dst in
                bytes.withUnsafeBytes { src in
                    dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[(headerEnd + begin)..<(headerEnd + end)]))
                }
            }
            tensors[name] = SafetensorsTensor(name: name, shape: shape, values: values)
        }
        ranges.removeAll { $0.0 == $0.1 }  // empty tensors occupy no bytes
        ranges.sort { $0.0 < $1.0 }
        for i in ranges.indices.dropFirst() where ranges[i].0 < ranges[i - 1].1 {
            throw bad("tensors '\(ranges[i - 1].2)' and '\(ranges[i].2)' overlap")
        }
        return (tensors, metadata)
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}
