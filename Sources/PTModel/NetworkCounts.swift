// What a network's passes count: the multiply-adds of each stage, for GFLOP/s and % of peak.
import Foundation
import PTKernels
import PTRuntime

extension Network {
    /// Multiply-adds x 2 that each stage executes for one sample: (forward, backward). A Winograd
    /// conv does 16 multiply-adds per 2x2 tile and channel pair where a direct one does 36, or 36
    /// per 4x4 tile where a direct one does 144.
    public var stageFlopsPerSample: [(Double, Double)] { flopsPerSample(asDirect: false) }

    /// The same counted as the model's arithmetic: every conv as a direct convolution, which is
    /// how FLOPs of a network are usually quoted (127.1 MFLOP a training sample for the reference).
    public var modelStageFlopsPerSample: [(Double, Double)] { flopsPerSample(asDirect: true) }

    private func flopsPerSample(asDirect: Bool) -> [(Double, Double)] {
        stages.enumerated().map { idx, s in
            // The backward pass: the weight gradient, and the input gradient but for the first stage.
            let f = s.flopsPerSample(asDirect: asDirect)
            return (f, (idx == 0 ? 1.0 : 2.0) * f)
        }
    }

    /// Multiply-adds x 2 of one training step per sample: forward, weight gradients and the
    /// input gradients that are needed (none for the first layer).
    /// Counted as the model's arithmetic (`modelStageFlopsPerSample`); `executedFlopsPerSample`
    /// is what the FMA units actually do.
    public var trainingFlopsPerSample: Double { modelStageFlopsPerSample.reduce(0) { $0 + $1.0 + $1.1 } }
    public var executedFlopsPerSample: Double { stageFlopsPerSample.reduce(0) { $0 + $1.0 + $1.1 } }
}
