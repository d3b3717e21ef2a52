// A network's starting weights: He-normal before a ReLU, Glorot-uniform elsewhere, zero biases;
// and the seeded generator they (and the data's shuffling) come from.
import Foundation
import PTKernels
import PTRuntime

extension Network {
    /// He-normal weights for layers followed by ReLU, Glorot-uniform for the others; zero biases;
    /// batch norm's γ 1 and its running statistics those of a fresh PyTorch module.
    public func initialize(seed: UInt64) {
        packedWeightsCurrent = false
        var rng = SplitMix64(seed: seed)
        for s in stages { s.initialize(self, &rng) }
        for t in parameters.tensors where t.name.hasSuffix(".bias") { parameters.values.advanced(by: t.offset).update(repeating: 0, count: t.count) }
        parameters.moment1.update(repeating: 0, count: parameters.count)
        parameters.moment2?.update(repeating: 0, count: parameters.count)
    }
}

/// SplitMix64: a small seeded generator for initialisation and shuffling.
public struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1) with 53 random bits.
    public mutating func nextUnit() -> Double { Double(next() >> 11) * 0x1p-53 }
    /// Standard normal by Box-Muller.
    public mutating func nextNormal() -> Double {
        let u1 = 1 - nextUnit(), u2 = nextUnit()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}
