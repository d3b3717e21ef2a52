// How a run updates its weights: the optimizer, its rate and that rate's schedule. One value,
// carried by a run's settings (`TrainConfig.optimizer`) and stored in its checkpoint
// (`CheckpointState.optimizer`), so a resumed run continues with exactly what it was given.
import PTKernels

/// The optimizers a run can take.
public enum OptimizerKind: String, Sendable, CaseIterable {
    /// Adam, with `weightDecay` added to the gradient (L2) as torch.optim.Adam does.
    case adam
    /// AdamW: `weightDecay` decoupled, the weights shrunk by lr x weightDecay before each step.
    case adamw
    /// SGD with `momentum` (and L2 `weightDecay`), as torch.optim.SGD.
    case sgd
}

public struct OptimizerSettings: Equatable, Sendable, CustomStringConvertible {
    public var kind = OptimizerKind.adam
    /// The base learning rate, before warmup and the schedule.
    public var lr = 1e-4
    public var beta1 = 0.9
    public var beta2 = 0.999
    public var epsilon = 1e-8
    public var weightDecay = 0.0
    /// SGD's momentum (Adam's is beta1).
    public var momentum = 0.9
    public var schedule = LRSchedule.constant
    /// Steps of linear warmup before the schedule.
    public var warmup = 0

    public init() {}

    /// "adam lr 0.0001"; then the schedule, warmup and decay where set, and SGD's momentum.
    public var description: String {
        "\(kind.rawValue) lr \(lr)" + (schedule == .constant ? "" : ", schedule \(schedule)")
            + (warmup > 0 ? ", warmup \(warmup) steps" : "") + (weightDecay > 0 ? ", weight decay \(weightDecay)" : "")
            + (kind == .sgd ? ", momentum \(momentum)" : "")
    }

    /// The learning rate of step `t` (from 1): the base rate through warmup and the schedule.
    public func learningRate(step t: Int) -> Double {
        lr * schedule.factor(step: t, warmup: warmup)
    }

    /// What the kernels apply at step `t`.
    public func update(step t: Int) -> OptimizerStep {
        let rate = learningRate(step: t)
        switch kind {
        case .adam: return .adam(AdamStep(lr: rate, beta1: beta1, beta2: beta2, epsilon: epsilon, t: t, weightDecay: weightDecay))
        case .adamw:
            return .adam(AdamStep(lr: rate, beta1: beta1, beta2: beta2, epsilon: epsilon, t: t, weightDecay: weightDecay, decoupled: true))
        case .sgd: return .sgd(SGDStep(lr: rate, momentum: momentum, weightDecay: weightDecay))
        }
    }
}
