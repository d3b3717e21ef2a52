// A persistent pool of worker threads, pinned to CPUs node by node. `run(items:)` hands out item
// indices [0, items) to the calling thread (worker 0) and the pool's threads; each item runs
// exactly once. Which worker runs an item is left to timing, so callers make each item's
// arithmetic independent of that (it writes only its own outputs).
//
// On several NUMA nodes a region's items are dealt by node: node k's workers take the k-th share
// of the items (in proportion to its workers, `nodeRanges`) first, then help the other nodes. A
// caller that places each share's buffers on its node (`Network` does) gets local memory for
// nearly all of them; the arithmetic is the same whoever runs an item.
//
// Waiting: a worker spins briefly for the next region, then sleeps on a condition variable, so
// a pool with more threads than cores degrades gracefully instead of burning the cores. The
// mutex is taken only when someone sleeps: a region between spinning threads costs a counter
// store and the cache-line transfers (0.2 us at 2 workers here, against 0.35 us when every start
// and finish took the mutex).
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import CThreadSetup

/// One parallel region's work as a value: `run(item, worker)` is called once for every item, on
/// any of the pool's threads, so a job is `Sendable`. Jobs hold raw pointers into the network's
/// buffers, which Swift cannot check: each job states with `@unchecked Sendable` and a line why
/// that its items write disjoint parts of them (and only read what no item of the region writes).
public protocol ParallelJob: Sendable {
    func run(_ item: Int, _ worker: Int)
    /// Bytes that `items` of its items read and write in memory, each operand counted once (what
    /// streams from memory however many workers share it): the scaling model's bandwidth floor.
    func bytesMoved(items: Int) -> Int
}

extension ParallelJob {
    /// Work whose operands stay in cache.
    public func bytesMoved(items: Int) -> Int { 0 }
}

public final class WorkerPool: @unchecked Sendable {
    public let count: Int
    /// The NUMA node of each worker.
    public let nodes: [Int]

    private let generation = Atomic<Int>(0)
    private let nextItem = Atomic<Int>(0)
    /// With workers on several nodes: one queue of the region's items per node, and the index of
    /// each worker's node among them.
    private let queues: [NodeQueue]
    private let queueOfWorker: [Int]
    /// The first worker of each node the pool uses, and then `count`.
    private let nodeFirstWorker: [Int]
    /// The node (as numbered by the machine) of each range of `nodeRanges`. (Stored: a step asks
    /// for it, and must not allocate.)
    public let rangeNodes: [Int]
    private let running = Atomic<Int>(0)
    /// Workers asleep on `wake`, and whether the caller is asleep on `done`: a region's start
    /// and finish take the mutex only when someone sleeps (the spinning fast path takes none).
    private let sleepers = Atomic<Int>(0)
    private let callerAsleep = Atomic<Bool>(false)
    private var itemCount = 0
    // The running region: a ParallelJob value on the caller's stack, read through a pointer. (A
    // closure would cost a heap allocation a region: withoutActuallyEscaping allocates.)
    private var jobValue: UnsafeRawPointer?
    private var jobType: (any ParallelJob.Type)?
    private var stopping = false
    private let spinLimit: Int
    /// When set on a one-worker pool, every region's items are timed one by one (`ptrain bench
    /// --model-cores`; never during training).
    public var recorder: RegionRecorder?
    /// How many workers regions are cut into items for: `count`, except while a recorder stands
    /// in for a pool of another size (`ptrain bench --model-cores`). Never changes a bit: items
    /// are cut at tile boundaries.
    public var splitCount: Int

    private var mutex = pthread_mutex_t()
    private var wake = pthread_cond_t()
    private var done = pthread_cond_t()
    private var threads: [pthread_t] = []

    /// Per-worker scratch for kernels, allocated by the worker itself on first use (first touch
    /// on its own node).
    private let scratch: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>
    public let scratchFloats: Int

    /// The machine's topology: `Numa.shared`, or a stand-in (`Numa(nodes:)`) in tests.
    public let numa: Numa

    public init(threads: Int, scratchFloats: Int, pin: Bool = true, numa: Numa = .shared) {
        precondition(threads >= 1)
        count = threads
        self.numa = numa
        splitCount = threads
        self.scratchFloats = scratchFloats
        scratch = .allocate(capacity: threads)
        scratch.initialize(repeating: nil, count: threads)
        let nodes = (0..<threads).map { numa.cpu(forWorker: $0).node }
        self.nodes = nodes
        // Workers are laid out node by node, so each node's workers are consecutive.
        var firsts = [0]
        for w in 1..<max(threads, 1) where nodes[w] != nodes[w - 1] { firsts.append(w) }
        nodeFirstWorker = firsts + [threads]
        rangeNodes = firsts.map { nodes[$0] }
        queues = firsts.count > 1 ? firsts.map { _ in NodeQueue() } : []
        queueOfWorker = (0..<threads).map { w in firsts.lastIndex { $0 <= w }! }
        // Oversubscribed: a spinning thread steals the core from the one doing the work.
        spinLimit = threads > numa.cpuCount ? 50 : 20_000
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&wake, nil)
        pthread_cond_init(&done, nil)
        pt_flush_denormals()  // every worker, the caller too: same arithmetic on every thread
        if pin && threads > 1 && threads <= numa.cpuCount { Self.pinCurrentThread(cpu: numa.cpu(forWorker: 0).cpu) }
        for w in 1..<max(threads, 1) {
            let box = Unmanaged.passRetained(WorkerStart(pool: self, worker: w,
                                                         cpu: pin && threads <= numa.cpuCount ? numa.cpu(forWorker: w).cpu : nil))
            var t = pthread_t()
            let rc = pthread_create(&t, nil, { arg in
                let start = Unmanaged<WorkerStart>.fromOpaque(arg!).takeRetainedValue()
                if let cpu = start.cpu { WorkerPool.pinCurrentThread(cpu: cpu) }
                pt_flush_denormals()
                start.pool.workerLoop(start.worker)
                return nil
            }, box.toOpaque())
            precondition(rc == 0, "pthread_create failed: \(rc)")
            self.threads.append(t)
        }
    }

    deinit {
        pthread_mutex_lock(&mutex)
        stopping = true
        generation.add(1, ordering: .releasing)
        pthread_cond_broadcast(&wake)
        pthread_mutex_unlock(&mutex)
        for t in threads { pthread_join(t, nil) }
        for w in 0..<count { if let p = scratch[w] { numa.deallocate(p, floats: scratchFloats) } }
        scratch.deallocate()
    }

    /// The calling worker's scratch buffer (valid inside a `run` body for that worker).
    @inline(__always) public func scratch(_ worker: Int) -> UnsafeMutablePointer<Float> {
        if let p = scratch[worker] { return p }
        let p = numa.allocate(floats: scratchFloats, node: nodes[worker])
        p.update(repeating: 0, count: scratchFloats)  // first touch by the owner
        scratch[worker] = p
        return p
    }

    /// Runs job.run(item, worker) for every item in [0, items), in parallel, without allocating;
    /// returns when all are done.
    public func run<Job: ParallelJob>(items: Int, _ job: Job) {
        if items <= 0 { return }
        pt_flush_denormals()  // the caller is worker 0, whichever thread it is
        if let recorder, count == 1 { recorder.record(items: items, job); return }
        if count == 1 || items == 1 {
            for i in 0..<items { job.run(i, 0) }
            return
        }
        withUnsafePointer(to: job) { pointer in
            // A job with no stored properties may be handed a null address, which the optional
            // would read as "no job"; it is never read through, so any address serves.
            jobValue = MemoryLayout<Job>.size == 0 ? UnsafeRawPointer(bitPattern: MemoryLayout<Job>.alignment) : UnsafeRawPointer(pointer)
            jobType = Job.self
            region(items)
            jobValue = nil
            jobType = nil
        }
    }

    /// Runs job.run(item, worker) for every item in `range` (a process's part of a batch under mpirun).
    public func run<Job: ParallelJob>(range: Range<Int>, _ job: Job) {
        run(items: range.count, Shifted(job: job, first: range.lowerBound))
    }

    /// The share of a region's `items` that the workers of each node the pool uses take first,
    /// in node order: in proportion to its workers. One range, all items, on one node.
    public func nodeRanges(_ items: Int) -> [Range<Int>] {
        (0..<(nodeFirstWorker.count - 1)).map { nodeShare(items, $0) }
    }

    /// Node k's share of `items`: one definition for the dealing and for callers placing memory.
    @inline(__always) private func nodeShare(_ items: Int, _ k: Int) -> Range<Int> {
        (items * nodeFirstWorker[k] / count)..<(items * nodeFirstWorker[k + 1] / count)
    }

    /// Wakes the workers for one region, works on it too, and waits for all of them.
    private func region(_ items: Int) {
        itemCount = items
        nextItem.store(0, ordering: .relaxed)
        for (k, q) in queues.enumerated() {
            let share = nodeShare(items, k)
            q.end = share.upperBound
            q.next.store(share.lowerBound, ordering: .relaxed)
        }
        running.store(count - 1, ordering: .relaxed)
        // Sequentially consistent with a worker's "sleepers + 1, then read generation": either it
        // sees the new generation, or this sees it asleep and wakes it under the mutex.
        generation.add(1, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(&mutex)
            pthread_cond_broadcast(&wake)
            pthread_mutex_unlock(&mutex)
        }
        work(0)
        var spins = 0
        while running.load(ordering: .acquiring) != 0 {
            spins += 1
            if spins > spinLimit {
                pthread_mutex_lock(&mutex)
                callerAsleep.store(true, ordering: .sequentiallyConsistent)
                while running.load(ordering: .sequentiallyConsistent) != 0 { pthread_cond_wait(&done, &mutex) }
                callerAsleep.store(false, ordering: .relaxed)
                pthread_mutex_unlock(&mutex)
            }
        }
    }

    private func work(_ worker: Int) {
        if let type = jobType, let value = jobValue { workOn(type, value, worker) }
    }

    private func workOn<Job: ParallelJob>(_: Job.Type, _ value: UnsafeRawPointer, _ worker: Int) {
        let job = value.assumingMemoryBound(to: Job.self)
        if queues.isEmpty {
            while true {
                let i = nextItem.wrappingAdd(1, ordering: .relaxed).oldValue
                if i >= itemCount { break }
                job.pointee.run(i, worker)
            }
            return
        }
        // Its own node's share first, then the next nodes' (whatever is left of them).
        let home = queueOfWorker[worker]
        for d in 0..<queues.count {
            let q = queues[(home + d) % queues.count]
            while true {
                let i = q.next.wrappingAdd(1, ordering: .relaxed).oldValue
                if i >= q.end { break }
                job.pointee.run(i, worker)
            }
        }
    }

    private func workerLoop(_ worker: Int) {
        var seen = 0
        while true {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                if spins > spinLimit {
                    pthread_mutex_lock(&mutex)
                    sleepers.add(1, ordering: .sequentiallyConsistent)
                    while generation.load(ordering: .sequentiallyConsistent) == seen { pthread_cond_wait(&wake, &mutex) }
                    sleepers.subtract(1, ordering: .relaxed)
                    pthread_mutex_unlock(&mutex)
                }
            }
            seen = generation.load(ordering: .acquiring)
            if stopping { return }
            work(worker)
            if running.wrappingSubtract(1, ordering: .sequentiallyConsistent).newValue == 0
                && callerAsleep.load(ordering: .sequentiallyConsistent) {
                pthread_mutex_lock(&mutex)
                pthread_cond_signal(&done)
                pthread_mutex_unlock(&mutex)
            }
        }
    }

    private static func pinCurrentThread(cpu: Int) {
        _ = pt_pin_current_thread(Int32(cpu))  // best effort: a refused pin only costs locality
    }
}

/// A node's share of a region's items: the next to take, and its end (set before the region
/// starts, published by the generation counter).
private final class NodeQueue {
    let next = Atomic<Int>(0)
    var end = 0
}

private final class WorkerStart {
    let pool: WorkerPool
    let worker: Int
    let cpu: Int?
    init(pool: WorkerPool, worker: Int, cpu: Int?) { self.pool = pool; self.worker = worker; self.cpu = cpu }
}

/// A job whose items start at `first` instead of 0.
private struct Shifted<Job: ParallelJob>: ParallelJob {
    var job: Job
    var first: Int
    func run(_ item: Int, _ worker: Int) { job.run(first + item, worker) }
    func bytesMoved(items: Int) -> Int { job.bytesMoved(items: items) }
}
