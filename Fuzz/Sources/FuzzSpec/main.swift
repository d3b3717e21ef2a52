// Model specs: a parse either throws or gives layers whose printed form parses back to them,
// and building the network on a small input either throws a shape error or works.
import FuzzSupport
import Glibc
import PTModel

func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data else { return 0 }
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    guard let spec = try? ModelSpec(parsing: text) else { return 0 }
    guard let again = try? ModelSpec(parsing: spec.text), again.layers == spec.layers else {
        fatalError("'\(spec.text)' does not parse back to the same layers")
    }
    // Small enough layers only: the fuzzer looks for traps, not for out-of-memory.
    let small = spec.layers.allSatisfy {
        switch $0 {
        case let .conv(out, k, _, _, _): return out <= 64 && k <= 9
        case let .dense(out, _): return out <= 256
        case let .maxPool(s, st), let .avgPool(s, st): return s <= 9 && st <= 9
        default: return true
        }
    }
    if small { _ = try? Network(spec: spec, input: Shape(h: 12, w: 10, c: 2), classes: 10, capacity: 2, threads: 1, seed: 1) }
    return 0
}

// libFuzzer's own main is not linked (SwiftPM gives every executable its main), so start its
// driver from ours.
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { fuzzOne($0, $1) })
