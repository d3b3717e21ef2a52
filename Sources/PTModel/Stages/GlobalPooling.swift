// Global average pooling (`gap`): each channel's mean over the image, a sample at a time; its
// output is 1 x 1 x channels, as PyTorch's AdaptiveAvgPool2d(1) then flatten.
import PTKernels
import PTRuntime

private let f = MemoryLayout<Float>.size

struct GlobalPoolingStage: Stage {
    var positions, channels: Int

    static func plan(_ p: inout StagePlanner) {
        p.stages.append(GlobalPoolingStage(positions: p.shape.h * p.shape.w, channels: p.shape.c))
        p.shape = Shape(h: 1, w: 1, c: p.shape.c)
    }

    var name: String { "gap \(positions) positions" }

    func forward(_ net: Network, _ pass: StagePass) {
        net.pool.run(range: pass.samples, GlobalPoolingJob(positions: positions, channels: channels, x: pass.io.x, y: pass.io.y,
                                                           backward: false))
    }

    func backward(_ net: Network, _ pass: StagePass, optimizer: OptimizerStep?) {
        guard pass.needsInputGradient else { return }  // (the first stage's input is the batch itself)
        net.pool.run(range: pass.samples, GlobalPoolingJob(positions: positions, channels: channels, x: pass.io.dx, y: pass.io.dy,
                                                           backward: true))
    }
}

struct GlobalPoolingJob: ParallelJob, @unchecked Sendable {  // an item writes its sample's output (backward: its input gradient)
    var positions, channels: Int
    var x, y: UnsafeMutablePointer<Float>   // forward: x -> y; backward: y is dy, x is dx
    var backward: Bool
    func run(_ s: Int, _ worker: Int) {
        let size = positions * channels
        if backward {
            GlobalAvgPool.backward(positions: positions, channels: channels, dy: y + s * channels, dx: x + s * size)
        } else {
            GlobalAvgPool.forward(positions: positions, channels: channels, x: x + s * size, y: y + s * channels)
        }
    }
    func bytesMoved(items: Int) -> Int { items * f * (positions + 1) * channels }
}
