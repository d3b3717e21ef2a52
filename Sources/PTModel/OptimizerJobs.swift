// The optimizer over the parameters that the dense layers' backward passes do not update themselves.
import PTKernels
import PTRuntime

/// The optimizer's step on the parameters the dense layers did not update in their backward pass
/// (conv parameters and biases), as slices listed once at build time; a flag per worker for
/// non-finite gradients.
struct OptimizerRangesJob: ParallelJob, @unchecked Sendable {  // an item writes its slice of the parameters and moments, and its worker's flag
    var step: OptimizerStep
    var w, g, m: UnsafeMutablePointer<Float>
    var v: UnsafeMutablePointer<Float>?  // Adam's second moment; nil for SGD
    var slices: OptimizerSlices
    var finite: UnsafeMutablePointer<Bool>  // the slot's flags, one per worker
    func run(_ item: Int, _ worker: Int) {
        let lo = slices.starts[item]
        if !OptimizerUpdate.apply(step, w: w + lo, g: g + lo, m: m + lo, v: v.map { $0 + lo }, count: slices.counts[item]) {
            finite[worker] = false
        }
    }
}

extension OptimizerRangesJob {
    /// w, g, m, v read; w, m, v written.
    func bytesMoved(items: Int) -> Int { MemoryLayout<Float>.size * 7 * (0..<items).reduce(0) { $0 + slices.counts[$1] } }
}
