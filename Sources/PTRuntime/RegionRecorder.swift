// The raw material of `ptrain bench --model-cores`: a one-worker pool with a recorder times every
// item of every parallel region one by one, and when each region starts and ends (what lies
// between regions is the step's serial part). `ScalingModel` replays the items for P workers.
#if canImport(Glibc)
import Glibc
#endif

public final class RegionRecorder {
    public struct Region {
        /// What ran: the caller's label (a stage and pass) and the job's type.
        public var label: String
        public var job: String
        public var start, end: UInt64
        /// Its items' times are `itemNanos[firstItem ..< firstItem + items]`, in item order.
        public var firstItem, items: Int
        /// Bytes the region reads and writes in memory, as the job counts them (0: not a streaming job).
        public var bytes: Int
        public init(label: String, job: String, start: UInt64, end: UInt64, firstItem: Int, items: Int, bytes: Int) {
            self.label = label; self.job = job; self.start = start; self.end = end
            self.firstItem = firstItem; self.items = items; self.bytes = bytes
        }
    }
    public private(set) var regions: [Region] = []
    public private(set) var itemNanos: [UInt64] = []
    /// Set by the caller before the regions it labels (a stage's name and pass).
    public var label = ""

    public init() {
        regions.reserveCapacity(1 << 12)
        itemNanos.reserveCapacity(1 << 16)
    }

    public func clear() {
        regions.removeAll(keepingCapacity: true)
        itemNanos.removeAll(keepingCapacity: true)
    }

    /// Runs the region's items on the calling thread, timing each.
    func record<Job: ParallelJob>(items: Int, _ job: Job) {
        let start = Self.now()
        let first = itemNanos.count
        for i in 0..<items {
            let t0 = Self.now()
            job.run(i, 0)
            itemNanos.append(Self.now() &- t0)
        }
        regions.append(Region(label: label, job: Self.name(of: Job.self), start: start, end: Self.now(),
                              firstItem: first, items: items, bytes: job.bytesMoved(items: items)))
    }

    static func name<Job>(of: Job.Type) -> String {
        var s = String(describing: Job.self)
        // Shifted<ConvForwardJob> (a rank's part of a batch) is a ConvForwardJob.
        if s.hasPrefix("Shifted<") && s.hasSuffix(">") { s = String(s.dropFirst(8).dropLast()) }
        return s
    }

    /// The monotonic clock in nanoseconds (also what `ProcessGroup` times its collectives with).
    public static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}
