// The pool's start and finish: the fast path takes no lock while everyone spins, and the sleeping
// paths (a worker asleep on `wake`, the caller asleep on `done`) must never lose a wake-up.
import Foundation
import Testing
import PTRuntime

/// An item that takes a while: the caller outwaits its spin and sleeps until the last item ends.
struct SlowCountJob: ParallelJob, @unchecked Sendable {  // an item writes its own slot
    var runs: UnsafeMutablePointer<Int>
    func run(_ item: Int, _ worker: Int) { usleep(300); runs[item] += 1 }
}

/// Regions started while the workers spin, after pauses long enough for them to fall asleep, with
/// more workers than CPUs (they sleep almost at once), and with items slow enough for the caller
/// to sleep: every item runs once and every region ends. The regions run on a thread of their own,
/// so that a lost wake-up fails the test after a minute instead of hanging the suite.
@Test(arguments: [2, 5])
func regionsStartAndFinishWhetherWorkersSpinOrSleep(_ threads: Int) {
    final class Outcome: @unchecked Sendable { var wrong = 0 }  // written by the thread before it signals
    let outcome = Outcome(), finished = DispatchSemaphore(value: 0)
    Thread.detachNewThread {
        let pool = WorkerPool(threads: threads, scratchFloats: 16, pin: false)
        let runs = UnsafeMutablePointer<Int>.allocate(capacity: 64)
        for r in 0..<4000 {
            let items = 1 + r % 40
            runs.initialize(repeating: 0, count: 64)
            if r % 200 == 7 { pool.run(items: items, SlowCountJob(runs: runs)) } else { pool.run(items: items, CountJob(runs: runs)) }
            if !(0..<items).allSatisfy({ runs[$0] == 1 }) || runs[items] != 0 { outcome.wrong += 1 }
            if r % 100 == 0 { usleep(3000) }  // longer than a worker's spin: the next region wakes sleepers
        }
        runs.deallocate()
        finished.signal()
    }
    let ended = finished.wait(timeout: .now() + 60) == .success
    #expect(ended, "a region never ended: a lost wake-up")
    #expect(ended && outcome.wrong == 0, "\(outcome.wrong) regions ran an item other than once")
}
