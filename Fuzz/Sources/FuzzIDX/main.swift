// IDX headers and bodies, as images (idx3 or rank 4) and as labels (idx1): a parse either succeeds with
// sizes that match the input or throws; it never traps.
import FuzzSupport
import Glibc
import PTTraining

func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let img = try? IDX.images(bytes: bytes, path: "fuzz") {
        let header = bytes[3] == 4 ? 20 : 16
        precondition(img.pixels.count == img.count * img.shape.count && img.pixels.count + header == size)
    }
    if let labels = try? IDX.labels(bytes: bytes, path: "fuzz", classes: 10) {
        precondition(labels.count + 8 == size && labels.allSatisfy { $0 < 10 })
    }
    return 0
}

// libFuzzer's own main is not linked (SwiftPM gives every executable its main), so start its
// driver from ours.
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { fuzzOne($0, $1) })
