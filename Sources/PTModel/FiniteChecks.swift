// What the optimizer pass after the backward pass updates, and the flags that say whether every
// gradient it took was finite.
import PTRuntime

/// Slices (start, count) of the parameters the optimizer updates after the backward pass: all but
/// the dense weights, which their own backward pass updates (`Network.backward(count:optimizer:)`);
/// listed once at build time (`NetworkPlan.optimizerSlices`), one job item each.
struct OptimizerSlices {
    let starts, counts: UnsafeMutablePointer<Int>
    let count: Int
    init(_ slices: [(start: Int, count: Int)]) {
        count = slices.count
        starts = .allocate(capacity: max(count, 1))
        counts = .allocate(capacity: max(count, 1))
        for (i, slice) in slices.enumerated() { starts[i] = slice.start; counts[i] = slice.count }
    }
    func deallocate() { starts.deallocate(); counts.deallocate() }
}

/// Flags, one per worker and slot, false when a gradient the worker handed to the optimizer was not
/// finite: slot 0 for the optimizer pass over conv parameters and biases, slot 1 + j for dense layer
/// j's weights (whose gradient the fused backward pass does not store). Each worker writes only its
/// own flag, so no flag is shared between threads.
struct FiniteChecks {
    let slots, workers: Int
    /// `[slot * workers + worker]`.
    let flags: UnsafeMutablePointer<Bool>
    /// Under mpirun: 1 per slot where this rank saw a non-finite gradient, then the ranks' maximum.
    private let votes: UnsafeMutablePointer<Int32>

    init(slots: Int, workers: Int) {
        self.slots = slots; self.workers = workers
        flags = .allocate(capacity: slots * workers)
        flags.initialize(repeating: true, count: slots * workers)
        votes = .allocate(capacity: slots)
        votes.initialize(repeating: 0, count: slots)
    }
    func deallocate() { flags.deallocate(); votes.deallocate() }

    func reset() { flags.update(repeating: true, count: slots * workers) }
    /// Slot `slot`'s flags, one per worker.
    func flags(slot: Int) -> UnsafeMutablePointer<Bool> { flags + slot * workers }
    func finite(slot: Int) -> Bool { !(0..<workers).contains { !flags[slot * workers + $0] } }
    var allFinite: Bool { !(0..<slots).contains { !finite(slot: $0) } }

    /// Under mpirun a rank saw only its rows of each dense layer's gradient: the ranks vote, slot by
    /// slot, so every rank reports the same.
    func vote(_ group: ProcessGroup) {
        guard group.size > 1 else { return }
        for slot in 0..<slots { votes[slot] = finite(slot: slot) ? 0 : 1 }
        group.maximum(votes, count: slots)
        for slot in 0..<slots where votes[slot] != 0 { flags[slot * workers] = false }
    }
}
