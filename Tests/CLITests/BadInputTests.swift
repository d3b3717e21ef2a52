// Every kind of bad data or checkpoint, through the binary: exit 1, one line on stderr naming the
// file and the problem, no crash, and no output file created.
import CZlib
import Foundation
import PTTestSupport
import PTTraining
import Testing

func idx(_ dims: [Int], _ data: [UInt8], magic: [UInt8]? = nil) -> [UInt8] {
    var b = magic ?? [0, 0, 8, UInt8(dims.count)]
    for d in dims { b += [UInt8(d >> 24 & 255), UInt8(d >> 16 & 255), UInt8(d >> 8 & 255), UInt8(d & 255)] }
    return b + data
}

/// What to do to a copy of the tiny data set.
enum Damage: Sendable, CustomTestStringConvertible {
    case replace(String, [UInt8])
    case gzipThenCorrupt(String)
    case directory(String)
    case remove(String)
    case link(String, String)
    var testDescription: String {
        switch self {
        case let .replace(f, b): return "\(f) = \(b.count) bytes"
        case let .gzipThenCorrupt(f): return "corrupt \(f).gz"
        case let .directory(f): return "\(f) is a directory"
        case let .remove(f): return "no \(f)"
        case let .link(f, to): return "\(f) -> \(to)"
        }
    }
}

let trainImages = "train-images-idx3-ubyte", trainLabels = "train-labels-idx1-ubyte"

@Test(arguments: [
    (Damage.replace(trainImages, idx([300, 8, 8], [], magic: [7, 7, 8, 3])), "bad magic"),
    (Damage.replace(trainImages, idx([300, 64], [UInt8](repeating: 0, count: 300 * 64))), "rank 2, expected 3"),
    (Damage.replace(trainImages, idx([0, 8, 8], [])), "dimension 0 is 0"),
    (Damage.replace(trainImages, idx([300, 8, 99999], [])), "absurd"),
    (Damage.replace(trainImages, idx([300, 8, 8], [UInt8](repeating: 0, count: 300 * 64 - 1))), "truncated"),
    (Damage.replace(trainImages, idx([300, 8, 8], [UInt8](repeating: 0, count: 300 * 64 + 5))), "5 trailing bytes"),
    (Damage.replace(trainLabels, idx([299], [UInt8](repeating: 0, count: 299))), "299 labels but"),
    // Training labels fix the classes (up to 10 makes 11); a test label beyond them is an error.
    (Damage.replace("t10k-labels-idx1-ubyte", idx([100], [UInt8](repeating: 0, count: 99) + [10])), "label 10 at index 99 is outside the 10 classes"),
    (Damage.replace(trainImages, []), "empty file"),
    (Damage.gzipThenCorrupt(trainImages), "gzip"),
    (Damage.directory(trainLabels), "is a directory"),
    (Damage.remove(trainLabels), "missing train-labels-idx1-ubyte"),
    // A file that exists but cannot be read (reading /proc/self/mem at offset 0 fails with EIO;
    // permissions would not stop root).
    (Damage.link(trainImages, "/proc/self/mem"), "cannot read"),
])
func badDataIsRefusedCleanly(_ c: (Damage, String)) throws {
    let data = try tinyData(), out = try runDir()
    defer { Scratch.remove(data); Scratch.remove(out) }
    var named = ""
    switch c.0 {
    case let .replace(f, b):
        _ = _ = FileManager.default.createFile(atPath: "\(data)/\(f)", contents: Data(b)); named = f
    case let .gzipThenCorrupt(f):
        let raw = [UInt8](contents("\(data)/\(f)")!)
        try FileManager.default.removeItem(atPath: "\(data)/\(f)")
        let gz = gzopen("\(data)/\(f).gz", "wb")!
        _ = raw.withUnsafeBytes { gzwrite(gz, $0.baseAddress, UInt32($0.count)) }
        gzclose(gz)
        var bytes = [UInt8](contents("\(data)/\(f).gz")!)
        for i in stride(from: bytes.count / 3, to: bytes.count - 8, by: 7) { bytes[i] ^= 0x5A }
        _ = _ = FileManager.default.createFile(atPath: "\(data)/\(f).gz", contents: Data(bytes)); named = f
    case let .directory(f):
        try FileManager.default.removeItem(atPath: "\(data)/\(f)")
        try FileManager.default.createDirectory(atPath: "\(data)/\(f)", withIntermediateDirectories: false); named = f
    case let .remove(f):
        try FileManager.default.removeItem(atPath: "\(data)/\(f)"); named = data
    case let .link(f, to):
        try FileManager.default.removeItem(atPath: "\(data)/\(f)")
        try FileManager.default.createSymbolicLink(atPath: "\(data)/\(f)", withDestinationPath: to); named = f
    }
    let r = try ptrain(["--data", data, "--spec", ckSpec, "--batch", "10", "--steps", "2",
                        "--metrics", out + "/m.jsonl", "--checkpoint", out + "/ck.st"])
    expectCleanError(r, code: 1, mentions: [named, c.1])
    #expect(try FileManager.default.contentsOfDirectory(atPath: out).isEmpty, "an output file was created")
}

/// A valid checkpoint's header and data, to damage one field at a time.
func checkpointParts(_ path: String) throws -> (header: [String: Any], data: [UInt8]) {
    let bytes = [UInt8](contents(path)!)
    var n = 0
    for i in 0..<8 { n |= Int(bytes[i]) << (8 * i) }
    let header = try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + n)])) as! [String: Any]
    return (header, Array(bytes[(8 + n)...]))
}

func writeCheckpoint(_ path: String, header: [String: Any], data: [UInt8], rawHeader: [UInt8]? = nil) throws {
    let h = try rawHeader ?? [UInt8](JSONSerialization.data(withJSONObject: header))
    var out = [UInt8]()
    for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: h.count >> (8 * i))) }
    _ = FileManager.default.createFile(atPath: path, contents: Data(out + h + data))
}

/// Batch norm over one value a channel (after a dense layer or global pooling, at batch 1) is
/// refused up front with one line, as PyTorch refuses to train it, for train and bench alike.
@Test func aBatchOfOneUnderBatchNormAfterPoolingIsRefused() throws {
    let data = try tinyData()
    defer { Scratch.remove(data) }
    let spec = "conv(4,3,bias=false) bn relu gap fc(8,bias=false) bn relu fc(10)"
    expectCleanError(try ptrain(["--data", data, "--spec", spec, "--batch", "1", "--steps", "1"]), code: 2,
                     mentions: ["a batch of 1", "bn2", "at least 2"])
    expectCleanError(try ptrain(["bench", "--spec", spec, "--batch", "1", "--threads", "1", "--steps", "1"]), code: 2,
                     mentions: ["a batch of 1", "bn2"])
    // A batch norm after a conv sees the image's positions: a batch of 1 is fine there.
    let ok = try ptrain(["--data", data, "--spec", "conv(4,3,bias=false) bn relu gap fc(10)", "--batch", "1", "--steps", "2"])
    #expect(ok.status == 0, "\(ok.err)")
}

@Test func badCheckpointsAreRefusedCleanly() throws {
    let data = try tinyData(), dir = try runDir()
    defer { Scratch.remove(data); Scratch.remove(dir) }
    let good = dir + "/good.st"
    let made = try ptrain(["--data", data, "--spec", ckSpec, "--batch", "10", "--steps", "3", "--checkpoint", good])
    #expect(made.status == 0, "\(made.err)")
    let (header, payload) = try checkpointParts(good)
    func tensor(_ name: String) -> [String: Any] { header[name] as! [String: Any] }
    func with(_ name: String, _ key: String, _ value: Any) -> [String: Any] {
        var h = header, t = tensor(name)
        t[key] = value; h[name] = t
        return h
    }
    var cases: [(String, [String: Any], [UInt8]?, [UInt8], String)] = []
    cases.append(("len", header, nil, Array(payload.prefix(100)), "not a valid safetensors checkpoint"))  // data cut short
    cases.append(("json", header, Array("{\"a\": [1, 2".utf8), payload, "not a JSON object"))
    let fcOffsets = tensor("fc1.weight")["data_offsets"] as! [Int]
    cases.append(("outside", with("fc1.weight", "data_offsets", [fcOffsets[0], payload.count + 4]), nil, payload, "outside"))
    let convOffsets = tensor("conv1.weight")["data_offsets"] as! [Int]
    cases.append(("overlap", with("conv1.bias", "data_offsets", [convOffsets[0], convOffsets[0] + 16]), nil, payload, "overlap"))
    cases.append(("dtype", with("fc2.bias", "dtype", "F64"), nil, payload, "dtype F64"))
    cases.append(("shape", with("fc2.bias", "shape", [5, 2]), nil, payload, "fc2.bias' has shape [5, 2]"))
    var missing = header
    missing["fc2.bias"] = nil
    cases.append(("missing", missing, nil, payload, "no tensor 'fc2.bias'"))
    var extra = header
    extra["fc9.weight"] = ["dtype": "F32", "shape": [0], "data_offsets": [0, 0]]
    cases.append(("extra", extra, nil, payload, "'fc9.weight' that the model spec does not have"))
    var otherSpec = header, meta = header["__metadata__"] as! [String: String]
    meta["spec"] = "conv(5,3) relu maxpool(2) fc(16) relu dropout(0.5) fc(10)"
    otherSpec["__metadata__"] = meta
    cases.append(("spec", otherSpec, nil, payload, "conv1.weight"))
    var notOurs = header
    notOurs["__metadata__"] = ["format": "pt"]
    cases.append(("format", notOurs, nil, payload, "not a ptrain checkpoint"))

    for (name, h, raw, body, fragment) in cases {
        let path = "\(dir)/\(name).st"
        try writeCheckpoint(path, header: h, data: body, rawHeader: raw)
        let before = contents(path)
        expectCleanError(try ptrain(["eval", "--checkpoint", path, "--data", data]), code: 1, mentions: ["\(name).st", fragment])
        let out = dir + "/resumed-\(name).st"
        expectCleanError(try ptrain(["--data", data, "--resume", path, "--steps", "5", "--checkpoint", out]), code: 1, mentions: ["\(name).st"])
        #expect(!FileManager.default.fileExists(atPath: out))
        #expect(contents(path) == before)
    }
}
