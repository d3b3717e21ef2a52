// Predicts a step's time on P workers from one recorded at one worker (`RegionRecorder`): each
// region's items are replayed through the pool's own policy (a worker that is free takes the next
// item, in item order), the region costs at least its bytes at the target's memory bandwidth, and
// each region with more than one item pays the pool's start-and-finish cost; the serial part
// (between regions) stays as it was.

public enum ScalingModel {
    /// The time `workers` workers take for items of these durations when each free worker takes
    /// the next item in order (ties to the lowest worker), as `WorkerPool` hands them out.
    public static func makespan(_ durations: ArraySlice<UInt64>, workers: Int) -> UInt64 {
        precondition(workers >= 1)
        if workers == 1 { return durations.reduce(0, &+) }
        var free = [UInt64](repeating: 0, count: min(workers, max(durations.count, 1)))
        for d in durations {
            var w = 0
            for i in 1..<free.count where free[i] < free[w] { w = i }
            free[w] &+= d
        }
        return free.max() ?? 0
    }

    public struct Target {
        /// Memory bandwidth of the target machine (bytes a second) and the measured cost of one
        /// region's start and finish at 2 workers (nanoseconds), taken to grow with each worker
        /// woken: `regionCost2 * (P - 1)`.
        public var bandwidth: Double
        public var regionCost2: Double
        public init(bandwidth: Double, regionCost2: Double) { self.bandwidth = bandwidth; self.regionCost2 = regionCost2 }
    }

    public struct Prediction {
        public var workers: Int
        public var stepNanos: Double
        /// The region (label and job) that loses the most time against a perfect split of its
        /// one-worker time, and that loss.
        public var limiting: String
        public var limitingLossNanos: Double
        /// Every region's loss against a perfect split (nanoseconds), largest first.
        public var losses: [(region: String, nanos: Double)]
        /// The best this step could do on this target: every region's one-worker time split
        /// perfectly (time / P), but no less than its bytes at the bandwidth, plus the pool's
        /// start and finish; the serial part as recorded. No cut of the work can beat it; only
        /// a cheaper region start, more bandwidth or less serial work moves it.
        public var ceilingNanos: Double
    }

    /// Each region's total item time: what it costs on one worker.
    public static func work(_ regions: [RegionRecorder.Region], items: [UInt64]) -> [Double] {
        regions.map { r in Double(items[r.firstItem ..< r.firstItem + r.items].reduce(0, &+)) }
    }

    /// One recorded step (its regions, their items' times, its wall time at one worker) on P
    /// workers. `oneWorker`: each region's time when cut for one worker (`work` of such a
    /// recording), against which a region's loss is counted; cutting a region finer can cost
    /// more in all (a GEMM split by rows repacks B for each part), and that counts as loss too.
    public static func predict(_ regions: [RegionRecorder.Region], items: [UInt64], wall: UInt64,
                               workers: Int, target: Target, oneWorker: [Double]? = nil) -> Prediction {
        var total = 0.0, inRegions = 0.0, ceiling = 0.0
        var loss: [String: Double] = [:]
        for (index, r) in regions.enumerated() {
            inRegions += Double(r.end &- r.start)
            let slice = items[r.firstItem ..< r.firstItem + r.items]
            let work = Double(slice.reduce(0, &+))
            var t = Double(makespan(slice, workers: workers))
            t = max(t, Double(r.bytes) / target.bandwidth * 1e9)
            let start = workers > 1 ? target.regionCost2 * Double(workers - 1) : 0
            if r.items > 1 { t += start }
            total += t
            let base = oneWorker.map { $0.count == regions.count ? $0[index] : work } ?? work
            // Split perfectly, or left on one worker (inline, no start) where that is faster.
            ceiling += min(max(base / Double(workers), Double(r.bytes) / target.bandwidth * 1e9) + start,
                           max(base, Double(r.bytes) / target.bandwidth * 1e9))
            loss["\(r.label) (\(r.job))", default: 0] += t - base / Double(workers)
        }
        let serial = max(Double(wall) - inRegions, 0)
        total += serial
        ceiling += serial
        loss["serial part (loss, batch copy, between regions)"] = serial - serial / Double(workers)
        let sorted = loss.map { (region: $0.key, nanos: $0.value) }.sorted { $0.nanos > $1.nanos }
        let worst = sorted.first ?? (region: "-", nanos: 0)
        return Prediction(workers: workers, stepNanos: total, limiting: worst.region, limitingLossNanos: worst.nanos, losses: sorted,
                          ceilingNanos: ceiling)
    }
}
