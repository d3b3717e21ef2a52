// Shapes and parameter tensors: what a network's activations and flat parameter buffers hold.
import Foundation
import PTKernels
import PTRuntime

public struct Shape: Equatable, Sendable, CustomStringConvertible {
    public var h, w, c: Int
    public init(h: Int, w: Int, c: Int) { self.h = h; self.w = w; self.c = c }
    public var count: Int { h * w * c }
    public var description: String { "\(h)x\(w)x\(c)" }
}

public struct ShapeError: Error, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// One named parameter tensor inside the flat parameter buffer.
public struct ParameterTensor: Sendable {
    public enum Kind: Sendable {
        /// Stored [K, K, Cin, Cout].
        case convWeight(kernel: Int, inputs: Int, outputs: Int)
        /// Stored [in, out]; `input` is the per-sample shape flattened in (h, w, c) order.
        case denseWeight(input: Shape, outputs: Int)
        case bias
        /// A per-channel vector stored as is (batch norm's γ, running mean and variance).
        case vector
        /// One number (a batch norm's count of batches), a 0-dimensional tensor in PyTorch.
        case scalar
    }
    public var name: String
    public var offset: Int
    public var count: Int
    /// Shape in ptrain's own layout ([K, K, Cin, Cout], [in, out] or [out]).
    public var shape: [Int]
    public var kind: Kind
}

/// A network's trainable parameters as flat buffers of `count` floats each, the conv stack's
/// `convCount` first: the weights, their gradients and the optimizer's moments (Adam's two, or
/// SGD's momentum in `moment1`), and one buffer of `convCount` per shard of the batch for the
/// conv gradients, summed in shard order at the end of a backward pass.
public struct ParameterBuffers {
    public let tensors: [ParameterTensor]
    public let count: Int
    public let convCount: Int
    /// The weights. Outside the network they are taken through `Network.weights`, which marks the
    /// dense layers' bf16 copies stale.
    let values: UnsafeMutablePointer<Float>
    public let gradients, moment1: UnsafeMutablePointer<Float>
    /// nil in a network built for SGD (`secondMoment: false`), which has none.
    public let moment2: UnsafeMutablePointer<Float>?
    let shardGradients: UnsafeMutablePointer<Float>
}

/// What a network keeps besides its parameters, `count` floats at `values`: batch norm's running
/// statistics (updated by training's forward passes, read by eval's), saved in checkpoints.
public struct StateBuffers {
    public let tensors: [ParameterTensor]
    public let count: Int
    public let values: UnsafeMutablePointer<Float>
}
