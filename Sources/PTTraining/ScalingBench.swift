// `ptrain bench --model-cores 4,8,16,32,64`: a step recorded at one worker, item by item, replayed
// for P workers (ScalingModel), and checked against a step measured at 2 workers in the same run.
import PTKernels
import Foundation
import PTModel
import PTRuntime

public struct ModelRow: Sendable {
    public var cores: Int
    public var predictedStepSec: Double
    public var predictedSamplesPerSec: Double
    public var speedup: Double
    public var efficiency: Double
    /// The efficiency of the step's ceiling (`ScalingModel.Prediction.ceilingNanos`): what no
    /// cut of the work can beat on this target.
    public var ceilingEfficiency: Double
    public var limitingRegion: String
}

public struct ModelValidation: Sendable {
    public var predictedStepSec: Double
    public var measuredStepSec: Double
    public var errorPercent: Double { 100 * (predictedStepSec - measuredStepSec) / measuredStepSec }
}

/// A region with nothing to do: what starting and finishing one costs.
private struct EmptyJob: ParallelJob {
    func run(_ item: Int, _ worker: Int) {}
}

extension Bench {
    /// A region's start and finish on `pool` (nanoseconds): the fastest of 9 batches of 500
    /// regions. Another process taking a core only adds time (a batch that loses a worker for a
    /// time slice costs 30 times the others on this shared machine), so the fastest is the cost.
    public static func regionCost(_ pool: WorkerPool) -> Double {
        var best = Double.infinity
        for _ in 0..<9 {
            let t0 = RegionRecorder.now()
            for _ in 0..<500 { pool.run(items: pool.count, EmptyJob()) }
            best = min(best, Double(RegionRecorder.now() - t0) / 500)
        }
        return best
    }

    /// For each of `cores` (and 1 and 2), records `steps` steps at one worker with the regions cut
    /// into the items a pool of that many workers would take, and predicts its step; the 2-worker
    /// prediction is checked against steps timed at 2 workers before and after the recordings.
    public static func model(spec: ModelSpec, batch: Int, cores: [Int], steps: Int, warmup: Int, bandwidth: Double,
                             precision: Precision = .fp32, input: Shape = Shape(h: 28, w: 28, c: 1), classes: Int = Dataset.standardClasses,
                             log: (String) -> Void) throws -> (rows: [ModelRow], validation: ModelValidation) {
        let data = benchData(batch: batch, steps: steps, warmup: warmup, input: input, classes: classes)
        var c = TrainConfig()
        c.spec = spec; c.batch = batch; c.threads = 1; c.precision = precision
        let one = try Trainer(config: c, data: data)
        c.threads = 2
        let two = try Trainer(config: c, data: data)
        for _ in 0..<warmup { two.trainStep() }
        let target = ScalingModel.Target(bandwidth: bandwidth * 1e9, regionCost2: regionCost(two.network.pool))
        var measured: [Double] = []
        func timeTwo() {
            for _ in 0..<steps {
                let t0 = RegionRecorder.now()
                two.trainStep()
                measured.append(Double(RegionRecorder.now() - t0) / 1e9)
            }
        }
        timeTwo()
        let recorder = RegionRecorder()
        let pool = one.network.pool
        pool.recorder = recorder
        defer { pool.recorder = nil; pool.splitCount = pool.count }
        let counts = [1, 2] + cores
        // Per core count: every recorded step's item times, and its serial part.
        var runs = [[[UInt64]]](repeating: [], count: counts.count)
        var serials = [[UInt64]](repeating: [], count: counts.count)
        var regionsOf = [[RegionRecorder.Region]](repeating: [], count: counts.count)
        // Round robin over the core counts, so that every prediction sees the same machine.
        for s in 0..<(warmup + steps) {
            for (i, p) in counts.enumerated() {
                pool.splitCount = p
                recorder.clear()
                let r0 = RegionRecorder.now()
                one.trainStep()
                let wall = RegionRecorder.now() - r0
                guard s >= warmup else { continue }
                let inRegions = recorder.regions.reduce(0) { $0 + ($1.end &- $1.start) }
                runs[i].append(recorder.itemNanos)
                serials[i].append(wall > inRegions ? wall - inRegions : 0)
                regionsOf[i] = recorder.regions
            }
        }
        timeTwo()
        // A step is cut the same way every time, so each item is timed once a step: its median over
        // the steps (and the serial part's) is the step predicted. A worker preempted by another
        // process on this shared machine makes one slow item, which the median drops; a replay of
        // each step alone would keep it as that step's slowest worker.
        func medianStep(_ i: Int) -> (regions: [RegionRecorder.Region], items: [UInt64], wall: UInt64) {
            let count = runs[i].map(\.count).min() ?? 0
            let items = (0..<count).map { k in runs[i].map { $0[k] }.sorted()[runs[i].count / 2] }
            let serial = serials[i].sorted()[serials[i].count / 2]
            let inRegions = regionsOf[i].reduce(0) { $0 + ($1.end &- $1.start) }
            return (regionsOf[i], items, inRegions + serial)
        }
        let oneWorker = { let m = medianStep(0); return ScalingModel.work(m.regions, items: m.items) }()
        let predicted = counts.indices.map { i in
            let m = medianStep(i)
            return ScalingModel.predict(m.regions, items: m.items, wall: m.wall, workers: counts[i], target: target, oneWorker: oneWorker)
        }
        let regions = recorder.regions.count, items = recorder.itemNanos.count
        let base = predicted[0].stepNanos
        let validation = ModelValidation(predictedStepSec: predicted[1].stepNanos / 1e9, measuredStepSec: measured.sorted()[measured.count / 2])
        log(String(format: "model: a step recorded at 1 worker item by item (%d regions, %d items cut for %d workers); memory bandwidth %.0f GB/s; a region's start and finish %.2f us at 2 workers, taken as that x (P - 1)",
                   regions, items, counts.last!, bandwidth, target.regionCost2 / 1e3))
        log(String(format: "validation: 2 workers predicted %.2f ms, measured %.2f ms in this run (error %+.1f%%)",
                   validation.predictedStepSec * 1e3, validation.measuredStepSec * 1e3, validation.errorPercent))
        log("cores  step ms  samples/s  speedup  efficiency  ceiling  limiting region (time lost against a perfect split)")
        var rows: [ModelRow] = []
        for (i, p) in counts.enumerated() where i >= 2 {
            let m = predicted[i]
            let row = ModelRow(cores: p, predictedStepSec: m.stepNanos / 1e9, predictedSamplesPerSec: Double(batch) / (m.stepNanos / 1e9),
                               speedup: base / m.stepNanos, efficiency: base / m.stepNanos / Double(p),
                               ceilingEfficiency: base / m.ceilingNanos / Double(p), limitingRegion: m.limiting)
            log(String(format: "%5d  %7.2f  %9.0f  %7.2f  %9.0f%%  %6.0f%%  ", p, row.predictedStepSec * 1e3, row.predictedSamplesPerSec,
                       row.speedup, row.efficiency * 100, row.ceilingEfficiency * 100) + String(format: "%@ (%.2f ms)", m.limiting, m.limitingLossNanos / 1e6))
            rows.append(row)
        }
        let widest = predicted[counts.count - 1]
        log("at \(counts.last!) cores, time lost against a perfect split, by region: " +
            widest.losses.prefix(8).map { String(format: "%@ %.2f ms", $0.region, $0.nanos / 1e6) }.joined(separator: "; "))
        return (rows, validation)
    }

    public static func modelJSON(_ rows: [ModelRow], validation: ModelValidation, batch: Int, bandwidth: Double) -> String {
        func quoted(_ s: String) -> String {
            "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        }
        return "[\n" + rows.map { r in
            String(format: "  {\"cores\": %d, \"batch\": %d, \"predicted_step_ms\": %.3f, \"predicted_samples_per_sec\": %.1f, \"speedup\": %.3f, \"efficiency\": %.3f, \"ceiling_efficiency\": %.3f, \"limiting_region\": %@, \"bandwidth_gb_s\": %.1f, \"validation_predicted_2_ms\": %.3f, \"validation_measured_2_ms\": %.3f, \"validation_error_percent\": %.2f}",
                   r.cores, batch, r.predictedStepSec * 1e3, r.predictedSamplesPerSec, r.speedup, r.efficiency, r.ceilingEfficiency, quoted(r.limitingRegion),
                   bandwidth, validation.predictedStepSec * 1e3, validation.measuredStepSec * 1e3, validation.errorPercent)
        }.joined(separator: ",\n") + "\n]\n"
    }
}
