// Placement by owner on a stand-in two-node machine: which node each large buffer's parts ask
// for, and that dealing work by node changes no bit.
import Testing
import PTModel
import PTRuntime
import PTKernels

/// Two steps of a small network on `threads` workers of `machine`; its weights' bits.
private func train(_ net: Network) -> [UInt32] {
    var r = SplitMix64(seed: 4)
    for step in 1...2 {
        for i in 0..<(net.capacity * 64) { net.input[i] = Float(r.nextUnit()) }
        for s in 0..<net.capacity { net.labels[s] = Int32((s * 7 + step) % 10) }
        net.forward(count: net.capacity, training: true, step: step, seed: 2)
        _ = net.lossAndGradient(count: net.capacity)
        _ = net.backward(count: net.capacity, adam: AdamStep(lr: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, t: step))
    }
    return (0..<net.parameters.count).map { net.weights[$0].bitPattern }
}

private let spec = "conv(16,3) relu maxpool(2) conv(16,3) relu fc(64) relu dropout(0.5) fc(10)"

private func network(threads: Int, numa: Numa = .shared) throws -> Network {
    try Network(spec: ModelSpec(parsing: spec), input: Shape(h: 8, w: 8, c: 1), classes: 10, capacity: 12,
                threads: threads, seed: 8, numa: numa)
}

@Test func onTwoNodesEachNodesShareOfTheBigBuffersAsksForThatNode() throws {
    let machine = Numa(nodes: [[0], [1]])
    let net = try network(threads: 2, numa: machine)
    let placed = machine.placements
    func parts(of base: UnsafeMutableRawPointer, floats: Int) -> [(Range<Int>, Int)] {
        let lo = UnsafeRawPointer(base), hi = lo + 4 * floats
        return placed.filter { $0.start >= lo && $0.start < hi }.map { (((($0.start - lo) / 4))..<((($0.start - lo) + $0.bytes) / 4), $0.node) }
    }
    // fc1 (256 -> 64): its rows (whole register tiles) half on each node, in W, m, v and the gradient.
    let fc1 = try #require(net.parameters.tensors.first { $0.name == "fc1.weight" })
    let half = (256 / Gemm.mr + 1) / 2 * Gemm.mr
    for buffer in [net.weights, net.parameters.moment1, net.parameters.moment2!, net.parameters.gradients] {
        let fc1Parts = parts(of: buffer, floats: net.parameters.count).filter { $0.0.lowerBound >= fc1.offset && $0.0.lowerBound < fc1.offset + fc1.count }
        #expect(fc1Parts.map(\.1) == [0, 1])
        #expect(fc1Parts.first?.0.lowerBound == fc1.offset)
        #expect(fc1Parts.last?.0.upperBound == fc1.offset + fc1.count)
        let split = fc1Parts.first?.0.upperBound ?? 0
        #expect(abs(split - (fc1.offset + half * 64)) <= Gemm.mr * 64, "rows split near the middle")
    }
    // The input batch: 12 samples of 64 floats, 6 on each node.
    #expect(parts(of: net.input, floats: 12 * 64).map { $0.0 } == [0..<(6 * 64), (6 * 64)..<(12 * 64)])
    #expect(parts(of: net.input, floats: 12 * 64).map(\.1) == [0, 1])
    // Every placement asks for node 0 or 1, and some ask for each.
    #expect(Set(placed.map(\.node)) == [0, 1])
}

@Test func dealingWorkByNodeChangesNoBit() throws {
    let plain = train(try network(threads: 1))
    #expect(train(try network(threads: 2, numa: Numa(nodes: [[0], [1]]))) == plain)
    #expect(train(try network(threads: 3, numa: Numa(nodes: [[0], [1]]))) == plain)
}
