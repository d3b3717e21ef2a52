// `--precision fp32|bf16` as a Precision, and how a checkpoint records it. bf16 runs on the fastest
// path this CPU has (AMX, then AVX512-BF16, then the portable one), or on the one the environment
// variable PTRAIN_BF16_PATH names (amx, avx512 or portable: for tests and comparisons).
import Foundation
import PTKernels

public struct PrecisionError: Error, CustomStringConvertible {
    public var description: String
}

extension Precision {
    public static let pathVariable = "PTRAIN_BF16_PATH"

    /// The precision `text` names on this machine.
    public static func parse(_ text: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws(PrecisionError) -> Precision {
        switch text {
        case "fp32": return .fp32
        case "bf16":
            guard let name = environment[pathVariable], !name.isEmpty else { return .bf16(.best) }
            guard let path = BF16Path(rawValue: name) else {
                throw PrecisionError(description: "\(pathVariable)=\(name) is not one of \(BF16Path.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            guard BF16Path.available.contains(path) else {
                throw PrecisionError(description: "\(pathVariable)=\(name): this CPU has no \(path) (it has \(BF16Path.available.map(\.rawValue).joined(separator: ", ")))")
            }
            return .bf16(path)
        default: throw PrecisionError(description: "--precision must be fp32 or bf16, not '\(text)'")
        }
    }

    /// As a checkpoint's metadata says it: "fp32", or "bf16" and the path ("amx", "avx512", "portable").
    public var checkpointFields: (precision: String, path: String) {
        switch self {
        case .fp32: return ("fp32", "")
        case let .bf16(p): return ("bf16", p.rawValue)
        }
    }

    public init?(checkpointPrecision precision: String, path: String) {
        switch precision {
        case "fp32": self = .fp32
        case "bf16": guard let p = BF16Path(rawValue: path) else { return nil }; self = .bf16(p)
        default: return nil
        }
    }

    /// A line for the start of a run: what the multiply-adds run on.
    public var startupLine: String {
        switch self {
        case .fp32: return "precision fp32"
        case let .bf16(p):
            let emulated = BF16Path.best == .portable ? ": this CPU has neither AMX nor AVX512-BF16, so bf16 is emulated, and slow"
                : " (emulated, and slow: this CPU also has \(BF16Path.best))"
            return "precision bf16 (conv and dense multiply-adds; fp32 weights, optimizer, loss and sums) on \(p)"
                + (p == .portable ? emulated : "")
        }
    }
}
