// The training loop the command line runs (`Trainer.run`), driven without a process: when it
// saves and evaluates, how it stops on request, and what it leaves when training diverges.
import Foundation
import PTModel
import PTTestSupport
import PTTraining
import Testing

private let runSpec = "conv(4,3) relu maxpool(2) fc(16) relu dropout(0.5) fc(10)"

private func runTrainer(threads: Int, lr: Double = 0.01) throws -> Trainer {
    var c = TrainConfig()
    c.spec = try ModelSpec(parsing: runSpec); c.threads = threads; c.batch = 10; c.seed = 9; c.optimizer.lr = lr
    return try Trainer(config: c, data: Bench.synthetic(count: 60, rows: 8, cols: 8, seed: 3))
}

private let testSet = Bench.synthetic(count: 30, rows: 8, cols: 8, seed: 4)

private func scratchDirectory() throws -> String {
    Scratch.directory("run")
}

@Test func checkpointsAndEvaluationsComeEveryNStepsAndAtTheEnd() throws {
    let dir = try scratchDirectory(), path = dir + "/ck.safetensors"
    defer { Scratch.remove(dir) }
    let trainer = try runTrainer(threads: 2)
    var steps: [Int] = [], saves: [(Int, Bool)] = [], evaluations: [Int] = []
    let end = try trainer.run(RunSettings(steps: 7, checkpoint: path, saveEvery: 3, evalEvery: 2), test: testSet, report: { event in
        switch event {
        case let .step(step, epoch, loss, _):
            steps.append(step)
            #expect(epoch == (step - 1) / 6 && loss.isFinite)
        case let .saved(step, p, periodic):
            saves.append((step, periodic))
            #expect(p == path)
        case let .evaluated(step, e):
            evaluations.append(step)
            #expect(e.count == 30 && e.loss.isFinite)
        }
    })
    #expect(steps == Array(1...7))
    // The end's save is not also a periodic one at step 6 + 1; a save-every step saves once.
    #expect(saves.map(\.0) == [3, 6, 7] && saves.map(\.1) == [true, true, false])
    #expect(evaluations == [2, 4, 6, 7])
    guard case let .finished(done, _, final) = end else { Issue.record("not finished: \(end)"); return }
    #expect(done == 7 && final.count == 30)
    #expect(try Checkpoint.load(path).state.step == 7)
}

/// A stop request after step 3 saves step 3 and ends the run; resuming from that checkpoint
/// reaches the same bits at step 6 as a run that was never stopped.
@Test(arguments: [1, 2])
func aStopSavesItsStepAndResumingFromItIsExact(threads: Int) throws {
    let dir = try scratchDirectory()
    defer { Scratch.remove(dir) }
    let whole = try runTrainer(threads: threads)
    _ = try whole.run(RunSettings(steps: 6, checkpoint: dir + "/whole.st"), test: testSet)

    let first = try runTrainer(threads: threads)
    var asked = 0
    let end = try first.run(RunSettings(steps: 6, checkpoint: dir + "/part.st"), test: testSet,
                            stopRequested: { asked += 1; return asked == 3 ? SIGINT : 0 })
    guard case let .stopped(signal, step) = end else { Issue.record("did not stop: \(end)"); return }
    #expect(signal == SIGINT && step == 3 && first.step == 3)
    let (state, tensors) = try Checkpoint.load(dir + "/part.st")
    #expect(state.step == 3)

    let second = try runTrainer(threads: threads)
    try Checkpoint.restore(second.network, from: tensors, path: dir + "/part.st", optimizer: state)
    second.restore(step: state.step)
    _ = try second.run(RunSettings(steps: 6, checkpoint: dir + "/resumed.st"), test: testSet)
    let a = FileManager.default.contents(atPath: dir + "/whole.st"), b = FileManager.default.contents(atPath: dir + "/resumed.st")
    #expect(a != nil && a == b)
}

/// With a learning rate of 1e30 the first step's update sends the weights to 1e30 and the next
/// forward pass overflows: the run throws at that step and the checkpoint keeps the last good step.
@Test func aDivergingRunThrowsAndKeepsTheLastGoodCheckpoint() throws {
    let dir = try scratchDirectory(), path = dir + "/ck.st"
    defer { Scratch.remove(dir) }
    let trainer = try runTrainer(threads: 2, lr: 1e30)
    var saved: [Int] = []
    do {
        _ = try trainer.run(RunSettings(steps: 50, checkpoint: path, saveEvery: 1), test: testSet, report: { event in
            if case let .saved(step, _, _) = event { saved.append(step) }
        })
        Issue.record("a run at lr 1e30 did not diverge")
    } catch let e as TrainingDiverged {
        #expect(e.step >= 2 && e.step < 50, "\(e)")
        #expect(saved == Array(1..<e.step))
        #expect(try Checkpoint.load(path).state.step == e.step - 1)
        #expect(e.description.contains("step \(e.step)"))
    }
}
