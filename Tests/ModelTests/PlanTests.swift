// The plan a spec becomes, read without building a network: each conv's path, which pools run
// inside their conv, where the parameters go, and the memory a batch needs.
import Testing
import PTKernels
import PTModel

/// In bf16 no conv is Winograd (the one-channel first layer stays direct, in fp32); a stride-1 SAME
/// conv reads its patches in place (`implicit`: 16 channels, or whole k-blocks a kernel row), the
/// others im2col; pools still fused.
@Test func aBF16PlanRunsNoWinograd() throws {
    let plan = try NetworkPlan(spec: .referenceModel, input: Shape(h: 28, w: 28, c: 1), classes: 10, precision: .bf16(.portable))
    #expect(plan.convPaths == [.fewChannels, .implicit])
    #expect(plan.fusedPools == [true, true])
    let pointwise = try NetworkPlan(spec: ModelSpec(parsing: "conv(16,1) relu conv(16,3) conv(32,3) fc(10)"), input: Shape(h: 8, w: 8, c: 1),
                                    classes: 10, precision: .bf16(.portable))
    // (16 -> 32: a kernel row's 48 values would pad to 64, so im2col's K of 144 stays.)
    #expect(pointwise.convPaths == [.pointwise, .implicit, .im2col])
    // An 8x8 map's rows over the padded width are 80 -> 96 against 64: im2col.
    let small = try NetworkPlan(spec: ModelSpec(parsing: "conv(32,3) relu conv(32,3) fc(10)"), input: Shape(h: 8, w: 8, c: 1),
                                classes: 10, precision: .bf16(.portable))
    #expect(small.convPaths == [.fewChannels, .im2col])
}

@Test func theReferencePlanTakesTheOneChannelAndWinogradPathsWithBothPoolsFused() throws {
    let plan = try NetworkPlan(spec: .referenceModel, input: Shape(h: 28, w: 28, c: 1), classes: 10)
    #expect(plan.convPaths == [.fewChannels, .winograd])
    #expect(plan.fusedPools == [true, true])
    #expect(plan.shapes == [Shape(h: 28, w: 28, c: 1), Shape(h: 28, w: 28, c: 64), Shape(h: 14, w: 14, c: 64),
                            Shape(h: 14, w: 14, c: 128), Shape(h: 7, w: 7, c: 128), Shape(h: 1, w: 1, c: 1024),
                            Shape(h: 1, w: 1, c: 1024), Shape(h: 1, w: 1, c: 10)])
    #expect(plan.tensors.map(\.name) == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                                         "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"])
    // 640 + 73,856 + 6,423,552 + 10,250: the tutorial's 3,274,634 with 64/128/1024 units.
    #expect(plan.parameterCount == 3 * 3 * 64 + 64 + 3 * 3 * 64 * 128 + 128 + 6272 * 1024 + 1024 + 1024 * 10 + 10)
    #expect(plan.convParams == 3 * 3 * 64 + 64 + 3 * 3 * 64 * 128 + 128)
    // Tensors tile the flat buffer in order.
    #expect(zip(plan.tensors, plan.tensors.dropFirst()).allSatisfy { $0.offset + $0.count == $1.offset })
}

/// The path follows the geometry: a first layer of 1 to 4 channels runs direct only when it is
/// first and 3x3 (in bf16 only with one channel: with more it stays a bf16 GEMM); 16 channels in and out, 3x3 SAME, run direct channels-last; more channels take Winograd;
/// channel counts that are not whole vectors, or a stride, take im2col; 1x1 stride 1 reads its
/// input in place; an average pool, or a max-pool after another pool, is not fused.
@Test func eachConvPathIsChosenFromItsGeometryAndPlace() throws {
    let spec = try ModelSpec(parsing: "conv(16,3) relu conv(16,3) relu avgpool(2) conv(16,1) conv(24,3,stride=2) maxpool(2) maxpool(1) conv(16,5) relu fc(10)")
    let plan = try NetworkPlan(spec: spec, input: Shape(h: 32, w: 32, c: 1), classes: 10)
    #expect(plan.convPaths == [.fewChannels, .direct, .pointwise, .im2col, .im2col])
    #expect(plan.fusedPools == [true, false])
    let wider = try ModelSpec(parsing: "conv(16,3) relu conv(32,3) relu conv(32,3) relu conv(16,3,pad=valid) fc(10)")
    #expect(try NetworkPlan(spec: wider, input: Shape(h: 8, w: 8, c: 1), classes: 10).convPaths == [.fewChannels, .winograd, .winograd, .winograd])
    let rgb = try NetworkPlan(spec: .referenceModel, input: Shape(h: 28, w: 28, c: 3), classes: 10)
    #expect(rgb.convPaths == [.fewChannels, .winograd])
    // Winograd F(4x4) where the output is whole 4x4 tiles, 4 or more (16x16, 8x8, 28x28, 16x20),
    // else F(2x2): the reference network's 14x14 and 8x10 (not whole tiles), a 4x4 output (one).
    // Samples are grouped so that a GEMM has 16 rows or more (an 8x8 output's F(4x4): 4 samples).
    #expect(rgb.winogradTiles == [.f2])
    let tiles = try ModelSpec(parsing: "conv(16,3) relu conv(32,3) relu conv(32,3,stride=2) relu conv(32,3) relu fc(10)")
    func tiled(_ h: Int, _ w: Int) throws -> NetworkPlan { try NetworkPlan(spec: tiles, input: Shape(h: h, w: w, c: 1), classes: 10) }
    #expect(try tiled(16, 16).winogradTiles == [.f4, .f4] && tiled(16, 16).winogradGroups == [1, 4])
    #expect(try tiled(28, 28).winogradTiles == [.f4, .f2] && tiled(28, 28).winogradGroups == [1, 1])
    #expect(try tiled(16, 20).winogradTiles == [.f4, .f2] && tiled(16, 20).winogradGroups == [1, 1])
    #expect(try tiled(32, 32).winogradTiles == [.f4, .f4] && tiled(32, 32).winogradGroups == [1, 1])
    #expect(try tiled(18, 16).winogradTiles == [.f2, .f2] && tiled(18, 16).winogradGroups == [1, 1])
    #expect(try tiled(8, 8).winogradTiles == [.f4, .f2] && tiled(8, 8).winogradGroups == [4, 4])
    let rgbBF16 = try NetworkPlan(spec: .referenceModel, input: Shape(h: 28, w: 28, c: 3), classes: 10, precision: .bf16(.portable))
    #expect(rgbBF16.convPaths == [.im2col, .implicit])
    let five = try NetworkPlan(spec: .referenceModel, input: Shape(h: 28, w: 28, c: 5), classes: 10)
    #expect(five.convPaths == [.im2col, .winograd])
    let noOneChannel = try ModelSpec(parsing: "conv(8,3) relu conv(16,3) relu fc(10)")
    #expect(try NetworkPlan(spec: noOneChannel, input: Shape(h: 8, w: 8, c: 1), classes: 10).convPaths == [.im2col, .im2col])
}

/// The estimate grows by the activations (and their gradients, argmaxes — a byte each, both pools
/// keep codes — and dropout scales) per sample and by the scratch per worker, and counts the
/// parameters four times. The convs' outputs live in scratch (their pools run inside them), and
/// the input has no gradient.
@Test func theMemoryEstimateCountsParametersActivationsAndScratch() throws {
    let plan = try NetworkPlan(spec: .referenceModel, input: Shape(h: 28, w: 28, c: 1), classes: 10)
    let one = plan.memoryEstimate(capacity: 32, threads: 1)
    let stored = plan.shapes.indices.filter { $0 != 1 && $0 != 3 }.reduce(0) { $0 + 2 * plan.shapes[$1].count } - 28 * 28
    let perSample = stored + 14 * 14 * 64 / 4 + 7 * 7 * 128 / 4 + 1024
    #expect(plan.memoryEstimate(capacity: 64, threads: 1) - one == 4 * 32 * perSample)
    #expect(plan.memoryEstimate(capacity: 32, threads: 3) - one > 0)
    #expect(plan.memoryEstimate(capacity: 32, threads: 3) - one == 2 * (plan.memoryEstimate(capacity: 32, threads: 2) - one))
    #expect(one > 4 * 4 * plan.parameterCount)
}

/// A residual block's shared buffers are not counted twice: the begin's output (its input), the
/// block's output (its last bn writes it over its own), the begin's input gradient (its output
/// gradient, added to in place) and the end's (its output gradient).
@Test func theMemoryEstimateCountsAResidualBlocksSharedBuffersOnce() throws {
    let plan = try NetworkPlan(spec: ModelSpec(parsing: "conv(16,3,bias=false) bn relu res(conv(16,3,bias=false) bn) relu gap fc(10)"),
                               input: Shape(h: 6, w: 6, c: 1), classes: 10)
    // Activations: input 36, conv, bn, begin, conv, bn, end (576 each), gap 16, fc 10.
    #expect(plan.shapes.map(\.count) == [36, 576, 576, 576, 576, 576, 576, 16, 10])
    // Values of their own: all but the begin's and the end's; gradients: all but the input's, the
    // begin's input gradient and the end's input gradient. Each bn keeps 2 x 16 sums a sample.
    let values = 36 + 4 * 576 + 16 + 10, gradients = 4 * 576 + 16 + 10
    let perSample = values + gradients + 2 * 2 * 16
    #expect(plan.memoryEstimate(capacity: 64, threads: 1) - plan.memoryEstimate(capacity: 32, threads: 1) == 4 * 32 * perSample)
}

@Test func aPlanThatDoesNotFitItsInputNamesTheColumn() throws {
    let spec = try ModelSpec(parsing: "conv(4,3) relu maxpool(2) maxpool(2) maxpool(2) maxpool(2) maxpool(2) fc(10)")
    #expect { try NetworkPlan(spec: spec, input: Shape(h: 28, w: 28, c: 1), classes: 10) } throws: { error in
        guard let e = error as? ShapeError else { return false }
        return e.message.contains("column 60") && e.message.contains("1x1x4")
    }
}
