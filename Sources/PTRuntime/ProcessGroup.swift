// The processes of a run. A run is one process (rank 0 of 1) unless ptrain was built with the MPI
// trait and started by mpirun with more than one rank; then it is MPI_COMM_WORLD. A group of one
// calls no MPI function, so a single process needs no MPI installed, and the default build does
// not link it.
//
// Only the main thread calls MPI (MPI_THREAD_FUNNELED): the worker pool's threads never do.
#if canImport(Glibc)
import Glibc
#endif
#if MPI
import CMPI
#endif

public struct LaunchError: Error, CustomStringConvertible {
    public var description: String
}

public final class ProcessGroup: @unchecked Sendable {
    public let rank: Int
    public let size: Int
    /// Bytes this rank received in collectives and the time it spent in them, since the start
    /// (for `ptrain bench`'s communication columns).
    public private(set) var bytesReceived = 0
    public private(set) var nanos: UInt64 = 0
    /// MPI's per-rank counts and displacements, allocated once (a step allocates nothing).
    private let counts, displs: UnsafeMutablePointer<Int32>
    #if MPI
    /// Outstanding nonblocking sends and receives (a step has a few dozen at most).
    private let requests: UnsafeMutablePointer<MPI_Request?>
    private var pending = 0
    static let maxRequests = 256
    #endif

    /// A group of more than one is MPI_COMM_WORLD; a group of one calls no MPI function.
    private init(rank: Int, size: Int) {
        self.rank = rank
        self.size = size
        counts = .allocate(capacity: size)
        displs = .allocate(capacity: size)
        counts.initialize(repeating: 0, count: size)
        displs.initialize(repeating: 0, count: size)
        #if MPI
        requests = .allocate(capacity: Self.maxRequests)
        requests.initialize(repeating: nil, count: Self.maxRequests)
        #endif
    }

    /// One process, no MPI.
    public static let single = ProcessGroup(rank: 0, size: 1)

    /// The rank and world size a launcher gave this process in its environment (Open MPI's
    /// mpirun, or a PMI-based launcher such as Slurm's srun), read before MPI is started:
    /// (0, 1) when none did.
    public static var launched: (rank: Int, size: Int) {
        func env(_ names: [String]) -> Int? {
            for n in names { if let v = getenv(n), let i = Int(String(cString: v)) { return i } }
            return nil
        }
        let size = env(["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]) ?? 1
        let rank = env(["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"]) ?? 0
        return size > 1 && (0..<size).contains(rank) ? (rank, size) : (0, 1)
    }

    // Set once, by `world()`, which only the main thread calls (MPI was started on that thread).
    nonisolated(unsafe) private static var started: ProcessGroup?

    /// The run's processes, starting MPI on first use when a launcher started more than one rank.
    /// Main thread only.
    public static func world() throws -> ProcessGroup {
        if let started { return started }
        let (rank, size) = launched
        let group: ProcessGroup
        if size == 1 {
            group = .single
        } else {
            #if MPI
            var provided: Int32 = 0
            var argc: Int32 = 0
            guard MPI_Init_thread(&argc, nil, Int32(MPI_THREAD_FUNNELED), &provided) == MPI_SUCCESS else {
                throw LaunchError(description: "MPI_Init_thread failed (rank \(rank) of \(size))")
            }
            var r: Int32 = 0, n: Int32 = 0
            MPI_Comm_rank(ptmpi_comm_world(), &r)
            MPI_Comm_size(ptmpi_comm_world(), &n)
            group = ProcessGroup(rank: Int(r), size: Int(n))
            #else
            throw LaunchError(description: "started as one of \(size) ranks, but this ptrain was built without MPI: build it with 'swift build -c release --traits MPI' (needs libopenmpi-dev; scripts/setup --mpi installs it)")
            #endif
        }
        started = group
        return group
    }

    /// Ends MPI (every rank calls it once, after its last collective). Nothing for one process.
    public func finish() {
        #if MPI
        if size > 1 { MPI_Finalize() }
        #endif
    }

    /// `total` items split into `size` consecutive parts: this part's range for `part`.
    public static func share(_ total: Int, part: Int, of parts: Int) -> Range<Int> {
        (total * part / parts)..<(total * (part + 1) / parts)
    }

    /// Every rank holds the floats `part(rank)` of `buffer` and receives everyone else's, in place.
    public func allgather(_ buffer: UnsafeMutablePointer<Float>, part: (Int) -> Range<Int>) {
        if size == 1 { return }
        #if MPI
        let t0 = now()
        for r in 0..<size {
            let p = part(r)
            precondition(p.upperBound <= Int(Int32.max), "allgather: \(p) does not fit MPI's 32-bit counts")
            counts[r] = Int32(p.count)
            displs[r] = Int32(p.lowerBound)
        }
        MPI_Allgatherv(ptmpi_in_place(), 0, ptmpi_datatype_null(), buffer, counts, displs, ptmpi_float(), ptmpi_comm_world())
        bytesReceived += 4 * (0..<size).reduce(0) { $1 == rank ? $0 : $0 + Int(counts[$1]) }
        nanos &+= now() &- t0
        #endif
    }

    /// The largest of every rank's `value` (every rank gets it). The value itself for one process.
    public func maximum(_ value: Int32) -> Int32 {
        var result = value
        withUnsafeMutablePointer(to: &result) { maximum($0, count: 1) }
        return result
    }

    /// Each of `count` values becomes the largest over the ranks, in place.
    public func maximum(_ values: UnsafeMutablePointer<Int32>, count: Int) {
        if size == 1 { return }
        #if MPI
        let t0 = now()
        MPI_Allreduce(ptmpi_in_place(), values, Int32(count), ptmpi_int(), ptmpi_max(), ptmpi_comm_world())
        bytesReceived += 4 * count * (size - 1)
        nanos &+= now() &- t0
        #endif
    }

    /// Starts sending `count` floats to rank `to`; they must stay untouched until `waitAll`.
    public func send(_ p: UnsafeMutablePointer<Float>, count: Int, to: Int, tag: Int) {
        #if MPI
        precondition(pending < Self.maxRequests)
        MPI_Isend(p, Int32(count), ptmpi_float(), Int32(to), Int32(tag), ptmpi_comm_world(), requests + pending)
        pending += 1
        #endif
    }

    /// Starts receiving `count` floats from rank `from`; returns the ticket that `wait` takes.
    public func receive(_ p: UnsafeMutablePointer<Float>, count: Int, from: Int, tag: Int) -> Int {
        #if MPI
        precondition(pending < Self.maxRequests)
        MPI_Irecv(p, Int32(count), ptmpi_float(), Int32(from), Int32(tag), ptmpi_comm_world(), requests + pending)
        pending += 1
        bytesReceived += 4 * count
        return pending - 1
        #else
        return 0
        #endif
    }

    /// Waits for the send or receive `ticket`.
    public func wait(_ ticket: Int) {
        #if MPI
        let t0 = now()
        MPI_Wait(requests + ticket, ptmpi_status_ignore())
        nanos &+= now() &- t0
        #endif
    }

    /// Waits for every outstanding send and receive; tickets start again from 0.
    public func waitAll() {
        #if MPI
        let t0 = now()
        MPI_Waitall(Int32(pending), requests, ptmpi_statuses_ignore())
        pending = 0
        nanos &+= now() &- t0
        #endif
    }

    /// Rank `root`'s `count` floats to every rank.
    public func broadcast(_ p: UnsafeMutablePointer<Float>, count: Int, root: Int) {
        if size == 1 { return }
        #if MPI
        let t0 = now()
        MPI_Bcast(p, Int32(count), ptmpi_float(), Int32(root), ptmpi_comm_world())
        if rank != root { bytesReceived += 4 * count }
        nanos &+= now() &- t0
        #endif
    }

    /// Waits until every rank has reached this point.
    public func barrier() {
        #if MPI
        if size > 1 { MPI_Barrier(ptmpi_comm_world()) }
        #endif
    }

    private func now() -> UInt64 { RegionRecorder.now() }
}
