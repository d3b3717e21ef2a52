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
