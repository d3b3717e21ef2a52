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
