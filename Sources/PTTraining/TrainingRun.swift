// A training run from where the trainer stands to its last step: a checkpoint every N steps and
// at the end, a test-set evaluation every N steps and at the end, and a clean stop after the step
// in which the process was asked to stop (Ctrl-C), with the checkpoint saved. The command line
// shows the events; tests drive the same loop without a process.
import Foundation
import PTModel
import PTRuntime

/// What a run does besides stepping.
public struct RunSettings: Sendable {
    /// Train until this step (a resumed trainer counts from its checkpoint's step).
    public var steps: Int
    /// Where checkpoints go (nil: none are written).
    public var checkpoint: String?
    /// Save every N steps as well as at the end and on a stop.
    public var saveEvery: Int?
    /// Evaluate every N steps as well as at the end (0: only at the end).
    public var evalEvery = 0
    public init(steps: Int, checkpoint: String? = nil, saveEvery: Int? = nil, evalEvery: Int = 0) {
        self.steps = steps; self.checkpoint = checkpoint; self.saveEvery = saveEvery; self.evalEvery = evalEvery
    }
}

public enum RunEvent {
    /// A step is done; `epoch` counts from 0; `lr` is the rate it took.
    case step(step: Int, epoch: Int, loss: Float, lr: Double)
    /// A checkpoint was written (on rank 0); `periodic` for `saveEvery`'s, not the end's or a stop's.
    case saved(step: Int, path: String, periodic: Bool)
    case evaluated(step: Int, Evaluation)
}

public enum RunEnd {
    case finished(steps: Int, seconds: Double, test: Evaluation)
    /// Stopped after `step` by `signal`; the checkpoint (if one was asked for) holds that step.
    case stopped(signal: Int32, step: Int)
}

extension Trainer {
    /// Trains to `settings.steps`. `stopRequested` returns a signal number once the process has
    /// been asked to stop (0 before): it is asked after every step, and under mpirun every rank
    /// stops after the same step, the first after which any rank had a request. Throws
    /// `TrainingDiverged` when the loss or a gradient stops being finite (no checkpoint is written
    /// over the last good one), or the error of a checkpoint that could not be written.
    public func run(_ settings: RunSettings, test: Dataset, stopRequested: () -> Int32 = { 0 },
                    report: (RunEvent) -> Void = { _ in }) throws -> RunEnd {
        let group = network.group
        func save(periodic: Bool) throws {
            guard let path = settings.checkpoint else { return }
            network.gatherDenseState()  // every rank takes part; rank 0 writes
            guard group.rank == 0 else { return }
            try Checkpoint.save(network, state: checkpointState, to: path)
            report(.saved(step: step, path: path, periodic: periodic))
        }
        let start = Date(), firstStep = step
        while step < settings.steps {
            let loss = trainStep()
            guard loss.isFinite, gradientsFinite else {
                throw TrainingDiverged(step: step, loss: loss, tensor: nonFiniteGradient())
            }
            report(.step(step: step, epoch: (step - 1) / stepsPerEpoch, loss: loss, lr: config.optimizer.learningRate(step: step)))
            let signal = group.maximum(stopRequested())
            if signal != 0 {
                try save(periodic: false)
                group.barrier()  // no rank exits (and has mpirun end the job) before rank 0 has saved
                return .stopped(signal: signal, step: step)
            }
            if let every = settings.saveEvery, step % every == 0, step != settings.steps { try save(periodic: true) }
            if settings.evalEvery > 0 && step % settings.evalEvery == 0 && step != settings.steps {
                report(.evaluated(step: step, evaluate(test)))
            }
        }
        let seconds = Date().timeIntervalSince(start)
        try save(periodic: false)
        let final = evaluate(test)
        report(.evaluated(step: step, final))
        return .finished(steps: step - firstStep, seconds: seconds, test: final)
    }
}
