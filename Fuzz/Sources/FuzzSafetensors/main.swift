// safetensors files: a parse either throws or returns tensors whose values fill their shapes.
import FuzzSupport
import Glibc
import PTTraining

func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let (tensors, _) = try? Safetensors.parse(bytes, path: "fuzz") {
        for t in tensors.values { precondition(t.values.count == t.shape.reduce(1, *)) }
    }
    return 0
}

// libFuzzer's own main is not linked (SwiftPM gives every executable its main), so start its
// driver from ours.
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { fuzzOne($0, $1) })
