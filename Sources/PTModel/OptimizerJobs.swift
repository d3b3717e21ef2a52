// Adam over the parameters that the dense layers' backward passes do not update themselves.
import PTKernels
import PTRuntime

/// Adam over the parameters the dense layers did not update in their backward pass (conv
/// parameters and biases), as slices listed once at build time; a flag per worker for
/// non-finite gradients.
struct AdamRangesJob: ParallelJob, @unchecked Sendable {  // an item writes its slice of the parameters and moments, and its worker's flag
    var adam: AdamStep
    var w, g, m, v: UnsafeMutablePointer<Float>
    var starts, counts: UnsafeMutablePointer<Int>
    var finite: UnsafeMutablePointer<Bool>
    func run(_ item: Int, _ worker: Int) {
        let lo = starts[item]
        if !AdamUpdate.apply(adam, w: w + lo, g: g + lo, m: m + lo, v: v + lo, count: counts[item]) { finite[worker] = false }
    }
}
