// The values a network is made of: shapes, parameter tensors, and each stage's geometry and
// buffers, decided once when the network is built.
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
    }
    public var name: String
    public var offset: Int
    public var count: Int
    /// Shape in ptrain's own layout ([K, K, Cin, Cout], [in, out] or [out]).
    public var shape: [Int]
    public var kind: Kind
}

struct ConvStage {
    var window: Window
    var cout: Int
    var relu: Bool
    var weight: Int, bias: Int
    var path: ConvPath
    /// fp32, or bf16 multiply-adds (on the GEMM paths; the one-channel direct path stays fp32).
    var precision: Precision = .fp32
    // The weights packed once a step for the per-sample GEMMs: W as the forward's B, and Wᵀ as
    // the input gradient's B (not for the first layer, which needs no input gradient). None on
    // the one-channel path, which reads the weights as stored.
    var packedW: UnsafeMutablePointer<Float>!
    var packedWt: UnsafeMutablePointer<Float>?
    /// On the Winograd path the weights are transformed once a step into `u` ([16][cin][cout])
    /// and packed per position ξ as the GEMMs' B (`packedW`, 16 blocks of `packedStride`) and
    /// Bᵀ (`packedWt`, 16 blocks of `packedStrideT`).
    var u: UnsafeMutablePointer<Float>?
    var packedStride = 0, packedStrideT = 0
    /// A max-pool right after this conv runs inside the conv's per-sample jobs: the conv's output
    /// and its gradient live only in the worker's scratch, and the pool applies the ReLU mask.
    var fusedPool: PoolStage?
}

struct PoolStage {
    var window: Window
    var isMax: Bool
    var argmax: UnsafeMutablePointer<Int32>?
    var masksRelu = false  // fused after a conv with ReLU: its backward applies the ReLU mask
    var fused = false      // run by the conv before it (see ConvStage.fusedPool)
}

struct DenseStage {
    var inputs, outputs: Int
    var relu: Bool
    var weight: Int, bias: Int
    var precision: Precision = .fp32
    // For the input gradient as dXᵀ = W · dYᵀ: dYᵀ packed as the GEMM's B, and dXᵀ with its
    // batch dimension padded to whole register tiles (so every tile is stored in place).
    var packedDy: UnsafeMutablePointer<Float>?
    var inputGradT: UnsafeMutablePointer<Float>?
    // dY packed as the weight gradient's B (dW is computed a few rows at a time, and B would
    // otherwise be packed again for each).
    var packedDyRows: UnsafeMutablePointer<Float>!
    var finiteSlot = 0  // its weights' slot in Network.finiteFlags
    /// In bf16: the layer's input rounded once a step as the forward GEMM's A (each of the GEMM's
    /// column parts would otherwise round all of it again).
    var inputBF16: UnsafeMutablePointer<UInt16>?
    /// Under mpirun: the partial sums of the forward chain, [capacity x outputs] by column blocks.
    var chainBuffer: UnsafeMutablePointer<Float>?
}

struct DropoutStage {
    var keep: Float
    var units: Int
    var scales: UnsafeMutablePointer<Float>!  // allocated with the other buffers
}

enum Stage {
    case conv(ConvStage)
    case pool(PoolStage)
    case dense(DenseStage)
    case dropout(DropoutStage)
}

extension [Stage] {
    /// The index of the first dense stage (or the count): the stages before it are the conv
    /// stack, which works a sample (or shard) at a time.
    var firstDense: Int { firstIndex { if case .dense = $0 { return true }; return false } ?? count }
}

extension DenseStage {
    /// The rows of W (in tiles of Gemm.mr rows) that part `rank` of `parts` updates: under
    /// mpirun each rank's share of the layer. They are also the rank's share of the forward's K,
    /// whose sums continue from rank to rank: in bf16 a share starts at a multiple of 32 rows (a
    /// tile instruction's k-block), so the chain runs the same instructions as one process.
    func ownedTiles(rank: Int, of parts: Int) -> Range<Int> {
        let tiles = (inputs + Gemm.mr - 1) / Gemm.mr
        guard precision.isBF16 else { return ProcessGroup.share(tiles, part: rank, of: parts) }
        var unit = 32
        while unit % Gemm.mr != 0 { unit += 32 }
        let perUnit = unit / Gemm.mr, units = ProcessGroup.share((tiles + perUnit - 1) / perUnit, part: rank, of: parts)
        return min(units.lowerBound * perUnit, tiles)..<min(units.upperBound * perUnit, tiles)
    }
}
