// What the multiply-adds of convolutions and dense layers run in, and on which bf16 unit: decided
// at run time from CPUID, XCR0 and Linux's permission for AMX tiles (CBF16's pt_bf16_paths).
import CBF16

/// Where bf16 multiply-adds run: decided at run time from CPUID and the OS.
public enum BF16Path: String, CaseIterable, Sendable, CustomStringConvertible {
    /// AMX tiles (TDPBF16PS): Intel Sapphire Rapids and later.
    case amx
    /// AVX-512 VDPBF16PS: AMD Zen 4 and later, Intel Cooper Lake and later.
    case avx512
    /// The same arithmetic as VDPBF16PS in plain fp32: any x86-64, and slow.
    case portable

    /// The paths this machine runs, fastest first (portable is always there).
    public static let available: [BF16Path] = {
        let bits = Int(pt_bf16_paths())
        return (bits & Int(PT_BF16_AMX) != 0 ? [.amx] : [])
            + (bits & Int(PT_BF16_AVX512) != 0 ? [.avx512] : []) + [.portable]
    }()
    public static var best: BF16Path { available[0] }

    public var description: String {
        switch self {
        case .amx: return "AMX"
        case .avx512: return "AVX512-BF16"
        case .portable: return "portable (bf16 emulated in fp32, slow)"
        }
    }
}

/// The arithmetic of convolutions and dense layers: fp32, or bf16 operands with fp32 sums on a path.
public enum Precision: Hashable, Sendable, CustomStringConvertible {
    case fp32
    case bf16(BF16Path)
    public var isBF16: Bool { bf16Path != nil }
    /// The bf16 path, or nil for fp32.
    public var bf16Path: BF16Path? { if case let .bf16(p) = self { return p }; return nil }
    public var description: String {
        switch self {
        case .fp32: return "fp32"
        case let .bf16(path): return "bf16 on \(path)"
        }
    }
}
