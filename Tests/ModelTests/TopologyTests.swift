// Placement on a machine of several NUMA nodes, checked on a stand-in two-node machine (the real
// path, Numa.shared, runs everywhere else).
import Testing
import PTRuntime

/// Workers fill node 0's CPUs, then node 1's, then wrap; each worker's scratch asks for its node.
@Test func workersAreLaidOutNodeByNodeAndTheirScratchAsksForTheirNode() {
    let machine = Numa(nodes: [[0, 1], [2, 3]])
    #expect(machine.cpuCount == 4)
    #expect((0..<5).map { machine.cpu(forWorker: $0).cpu } == [0, 1, 2, 3, 0])
    #expect((0..<5).map { machine.cpu(forWorker: $0).node } == [0, 0, 1, 1, 0])
    let pool = WorkerPool(threads: 4, scratchFloats: 64, pin: false, numa: machine)
    #expect(pool.nodes == [0, 0, 1, 1])
    for w in [3, 0, 2, 1] { _ = pool.scratch(w) }
    #expect(machine.allocations.map(\.node) == [1, 0, 1, 0])
    #expect(machine.allocations.allSatisfy { $0.floats == 64 })
}

/// A region's items are dealt by node in proportion to each node's workers; every item runs once.
@Test func aRegionsItemsAreDealtByNodeAndEachRunsOnce() {
    let two = WorkerPool(threads: 3, scratchFloats: 16, pin: false, numa: Numa(nodes: [[0, 1], [2]]))
    #expect(two.rangeNodes == [0, 1])
    #expect(two.nodeRanges(9) == [0..<6, 6..<9])
    #expect(two.nodeRanges(1) == [0..<0, 0..<1])
    let one = WorkerPool(threads: 2, scratchFloats: 16, pin: false, numa: Numa(nodes: [[0, 1]]))
    #expect(one.nodeRanges(9) == [0..<9])
    let runs = UnsafeMutablePointer<Int>.allocate(capacity: 1000)
    defer { runs.deallocate() }
    for items in [1, 2, 3, 7, 1000] {
        runs.initialize(repeating: 0, count: 1000)
        two.run(items: items, CountJob(runs: runs))
        #expect((0..<items).allSatisfy { runs[$0] == 1 })
    }
}

struct CountJob: ParallelJob, @unchecked Sendable {  // an item writes its own slot
    var runs: UnsafeMutablePointer<Int>
    func run(_ item: Int, _ worker: Int) { runs[item] += 1 }
}
