// A small network trained with ptrain's library: the public API a program of its own would use.
import Foundation
import PTKernels
import PTModel

let spec = try ModelSpec(parsing: "conv(16,3) relu maxpool(2) fc(32) relu fc(4)")
let batch = 8
let net = try Network(spec: spec, input: Shape(h: 8, w: 8, c: 1), classes: 4, capacity: batch, threads: 2, seed: 1)
// Each sample is bright in one quadrant, and that quadrant is its class.
for s in 0..<batch {
    let label = s % 4
    net.labels[s] = Int32(label)
    for y in 0..<8 {
        for x in 0..<8 { net.input[s * 64 + y * 8 + x] = (y / 4) * 2 + x / 4 == label ? 1 : 0 }
    }
}
var losses: [Float] = []
for step in 1...30 {
    net.forward(count: batch, training: true, step: step, seed: 1)
    losses.append(net.lossAndGradient(count: batch))
    _ = net.backward(count: batch, adam: AdamStep(lr: 1e-2, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, t: step))
}
print("loss \(losses.first!) -> \(losses.last!)")
if !(losses.last! < losses.first! / 4) {
    print("the loss did not fall")
    exit(1)
}
