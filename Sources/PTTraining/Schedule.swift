// Learning-rate schedules and warmup: the rate of step t (1-based, as the optimizer counts) is
// lr x warmup(t) x schedule(t), computed in Double from the step number alone, so a resumed run
// takes the rates an unbroken one would.
import Foundation

public enum LRSchedule: Equatable, Sendable, CustomStringConvertible {
    case constant
    /// Cosine decay from lr to 0 over the steps after warmup, up to `steps` (the run's length
    /// when it started: a resumed run keeps it).
    case cosine(steps: Int)
    /// lr x factor^k after k x `every` steps (after warmup): steps 1...every at lr, then lr x factor, ...
    case step(every: Int, factor: Double)

    /// `constant`, `cosine` (over `totalSteps`) or `step:EVERY:FACTOR`; nil and a reason when the
    /// text is none of them. The stored form of cosine, `cosine:STEPS`, parses too.
    public static func parse(_ text: String, totalSteps: Int) -> Result<LRSchedule, SettingError> {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        switch parts[0] {
        case "constant" where parts.count == 1: return .success(.constant)
        case "cosine" where parts.count == 1: return .success(.cosine(steps: totalSteps))
        case "cosine" where parts.count == 2:
            guard let n = Int(parts[1]), n >= 1 else { return .failure(SettingError("cosine:STEPS needs a whole number of steps of at least 1, not '\(parts[1])'")) }
            return .success(.cosine(steps: n))
        case "step" where parts.count == 3:
            guard let every = Int(parts[1]), every >= 1 else { return .failure(SettingError("step:EVERY:FACTOR needs EVERY a whole number of at least 1, not '\(parts[1])'")) }
            guard let factor = Double(parts[2]), factor.isFinite, factor > 0 else {
                return .failure(SettingError("step:EVERY:FACTOR needs FACTOR a number above 0, not '\(parts[2])'"))
            }
            return .success(.step(every: every, factor: factor))
        default:
            return .failure(SettingError("'\(text)' is not constant, cosine or step:EVERY:FACTOR"))
        }
    }

    /// The form `parse` reads back to this value.
    public var description: String {
        switch self {
        case .constant: return "constant"
        case let .cosine(n): return "cosine:\(n)"
        case let .step(every, factor): return "step:\(every):\(factor)"
        }
    }

    /// The rate of step `t` (1-based) as a multiple of the base rate, with `warmup` steps of
    /// linear warmup first (t / warmup for t <= warmup).
    public func factor(step t: Int, warmup: Int) -> Double {
        let warm = warmup > 0 && t <= warmup ? Double(t) / Double(warmup) : 1
        let after = max(t - warmup, 0)  // steps past warmup; 0 during it
        switch self {
        case .constant:
            return warm
        case let .cosine(n):
            let span = max(n - warmup, 1)
            let progress = min(Double(max(after - 1, 0)) / Double(span), 1)
            return warm * 0.5 * (1 + cos(Double.pi * progress))
        case let .step(every, factor):
            return warm * pow(factor, Double(max(after - 1, 0) / every))
        }
    }
}

/// A training setting's text (a schedule, an augmentation) that does not parse, and why.
public struct SettingError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}
